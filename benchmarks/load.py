"""Load benchmark: a full load of 50,000 leads and 20,000 deals, one incremental day, and dbt build.

    python -m benchmarks.load [--leads 50000] [--deals 20000]

Runs against the in-process sandbox org over HTTP, into a fresh DuckDB file and
a fresh PostgreSQL database (a throwaway server, or TEST_DATABASE_URL), each
command in its own process as a user runs it. Prints records per second, peak
memory (max RSS of the command's process), API calls and seconds.
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
from pathlib import Path

from benchmarks.measure import measure
from sandbox import SandboxOrg, SandboxServer
from tests.support.postgres import create_database, local_postgres
from tests.support.workspace import make_workspace


def _api_calls(stats: dict[str, int]) -> int:
    return sum(n for key, n in stats.items() if "/crm/" in key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leads", type=int, default=50_000)
    parser.add_argument("--deals", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    rows: list[tuple[str, ...]] = []
    org = SandboxOrg(seed=args.seed, leads=args.leads, deals=args.deals, timezone="Asia/Kolkata",
                     today=datetime.date(2026, 11, 20))
    with tempfile.TemporaryDirectory(prefix="crm-bench-") as tmp, local_postgres() as admin_url, \
            SandboxServer(org, port=0) as server:
        spaces = {target: make_workspace(Path(tmp) / target) for target in ("duckdb", "postgres")}
        spaces["postgres"].use_postgres(create_database(admin_url, "bench_load"))
        for ws in spaces.values():
            ws.env.update(server.env())
        records = len(org.records("Leads")) + len(org.records("Deals"))

        for target, ws in spaces.items():
            server.reset_stats()
            full = measure(ws, "python", "-m", "pipelines.zoho", "--destination", target)
            rows.append((f"full load -> {target}", f"{records:,} records", f"{full.seconds:.1f} s",
                         f"{records / full.seconds:,.0f} rec/s", f"{full.peak_mb:,.0f} MB peak",
                         f"{_api_calls(server.stats())} API calls"))
            build = measure(ws, "dbt", "build", "--target", target)
            rows.append((f"dbt build on {target}", "", f"{build.seconds:.1f} s", "", f"{build.peak_mb:,.0f} MB peak", ""))

        changed = org.advance(days=1)
        changed_n = sum(v for module in changed.values() for v in module.values())
        for target, ws in spaces.items():
            server.reset_stats()
            inc = measure(ws, "python", "-m", "pipelines.zoho", "--destination", target)
            rows.append((f"incremental day -> {target}", f"{changed_n} changes", f"{inc.seconds:.1f} s", "",
                         f"{inc.peak_mb:,.0f} MB peak", f"{_api_calls(server.stats())} API calls"))

    print(f"\nLoad benchmark: {args.leads:,} leads + {args.deals:,} deals from the sandbox org")
    for row in rows:
        print("  " + " | ".join(cell for cell in row if cell))


if __name__ == "__main__":
    main()
