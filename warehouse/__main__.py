"""`python -m warehouse pg-env`: the libpq variables dbt needs, from DATABASE_URL."""

from warehouse import main

raise SystemExit(main())
