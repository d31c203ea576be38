"""The soak: 30 simulated days of faults and kills, the warehouse compared with the org after each.

    python -m benchmarks.soak [--days 30] [--leads 5000] [--deals 2000] [--fault-rate 0.02] [--seed 1]

Each day the sandbox org lives one day behind an API that fails a share of its calls in every way
Zoho and its network do (seeded), and the extract is run as a scheduler would, sometimes killed
with SIGKILL at a random moment and started again, until a run succeeds (see tests/support/soak.py).
Prints one line per day: runs, kills, faults, API calls against the minimum plus what the faults
forced, and whether the warehouse equalled the org.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from sandbox import SandboxOrg
from tests.support.soak import soak
from tests.support.workspace import make_workspace
from tests.test_extract import assert_warehouse_equals_org


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--leads", type=int, default=5000)
    parser.add_argument("--deals", type=int, default=2000)
    parser.add_argument("--fault-rate", type=float, default=0.1)
    parser.add_argument("--kill-chance", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="crm-soak-") as tmp:
        ws = make_workspace(Path(tmp) / "soak")
        equal_days = 0

        def compare(org: SandboxOrg) -> None:
            assert_warehouse_equals_org(ws, "duckdb", org, log_fields=False)

        print(
            f"Soak: {args.days} days, {args.leads:,} leads + {args.deals:,} deals, "
            f"{args.fault_rate:.0%} of calls faulted, kill chance {args.kill_chance:.0%} per run",
            flush=True,
        )
        for day in soak(
            ws,
            args.days,
            seed=args.seed,
            leads=args.leads,
            deals=args.deals,
            fault_rate=args.fault_rate,
            kill_chance=args.kill_chance,
            compare=compare,
        ):
            equal_days += 1  # compare() raised otherwise
            budget = "within" if day.within_budget else "OVER"
            print(f"  {day.line()} | warehouse = org | calls {budget} budget", flush=True)
        print(f"warehouse equal to the org after {equal_days} of {args.days} days")


if __name__ == "__main__":
    main()
