import sys

from evals.harness import main

sys.exit(main())
