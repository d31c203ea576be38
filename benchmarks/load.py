"""Load benchmark: full loads at two sizes, the no-fetch floor, quiet and 1%-changed days, dbt build.

    python -m benchmarks.load [--sizes 50000:20000,500000:200000] [--targets duckdb,postgres]

For each size (leads:deals) a sandbox org is served in-process over HTTP and loaded in full into a
fresh DuckDB file and a fresh PostgreSQL database (a throwaway server, or TEST_DATABASE_URL), each
load in its own process as a user runs it. Printed per load: records per second, peak memory (max
RSS of the loading process, the sandbox not included), API calls, and the share of the time spent
in extract (the fetch: HTTP, JSON and dlt's extract), normalize and load. The same load is repeated
with the fetch removed: the same dlt resources read the records from local JSON lines files, which
shows how far a load is from its floor. On the first size, the incremental day is measured twice:
a quiet day (nothing changed) and a day on which 1% of the records changed, each against the minimum
number of calls (one page per 200 changed records of each module, one per deletion log, the users
check, each module's field list). The first sync's Stage History backfill (one call per deal) is turned off here.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import tempfile
from pathlib import Path

from benchmarks.measure import measure
from benchmarks.replay import record
from sandbox import SandboxOrg, SandboxServer
from tests.support.postgres import create_database, local_postgres
from tests.support.workspace import Workspace, make_workspace

PAGE = 200
# Runs one load in the measured process and prints its summary as JSON.
LOAD = (
    "import json, sys\n"
    "from pipelines.zoho.run import load\n"
    "from pipelines.zoho import ExtractSession\n"
    "session = None\n"
    "if len(sys.argv) > 2:\n"
    "    from pathlib import Path\n"
    "    from benchmarks.replay import ReplayClient\n"
    "    session = ExtractSession(client=ReplayClient(Path(sys.argv[2])))\n"
    "s = load(sys.argv[1], session=session)\n"
    "print(json.dumps({'records': s.records, 'api_calls': s.api_calls, 'seconds': s.seconds, 'phases': s.phases,"
    " 'loads': s.loads}))\n"
)


def _api_calls(stats: dict[str, int]) -> int:
    return sum(n for key, n in stats.items() if "/crm/" in key)


def _load(ws: Workspace, target: str, replay: Path | None = None) -> tuple[dict, float, float]:
    args = ["python", "-c", LOAD, target] + ([str(replay)] if replay else [])
    run = measure(ws, *args)
    return json.loads(run.stdout.strip().splitlines()[-1]), run.seconds, run.peak_mb


def _shares(phases: dict[str, float]) -> str:
    total = sum(phases.values()) or 1.0
    return " / ".join(f"{name} {100 * seconds / total:.0f}%" for name, seconds in phases.items())


def _fresh(tmp: Path, name: str, target: str, admin_url: str | None) -> Workspace:
    ws = make_workspace(tmp / name)
    # The first sync's Stage History backfill costs one call per deal (docs/performance.md); measured on
    # its own, it would hide what the load itself costs.
    ws.env["SOURCES__ZOHO__STAGE_HISTORY_BACKFILL"] = "false"
    if target == "postgres":
        assert admin_url is not None
        ws.use_postgres(create_database(admin_url, name.replace("-", "_")))
    return ws


def _change(org: SandboxOrg, share: float) -> dict[str, int]:
    """Edit `share` of each module's records through the org's write path (as users would)."""
    changed = {}
    for module in ("Leads", "Deals"):
        ids = [r["id"] for r in org.records(module)]
        picked = ids[:: max(1, round(1 / share))]
        for start in range(0, len(picked), 100):
            org.update(
                module,
                [{"id": i, "Description": "Edited for the benchmark"} for i in picked[start : start + 100]],
                org.current_user_id,
            )
        changed[module] = len(picked)
    return changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="50000:20000,500000:200000", help="leads:deals,... (default: %(default)s)")
    parser.add_argument("--targets", default="duckdb,postgres", help="default: %(default)s")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    sizes = [tuple(int(n) for n in size.split(":")) for size in args.sizes.split(",")]
    targets = args.targets.split(",")

    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="crm-bench-") as tmp_name, local_postgres() as admin_url:
        tmp = Path(tmp_name)
        for index, (leads, deals) in enumerate(sizes):
            org = SandboxOrg(
                seed=args.seed, leads=leads, deals=deals, timezone="Asia/Kolkata", today=datetime.date(2026, 11, 20)
            )
            records = len(org.records("Leads")) + len(org.records("Deals"))
            replay = record(org, tmp / f"replay-{index}")
            with SandboxServer(org, port=0) as server:
                for target in targets:
                    ws = _fresh(tmp, f"full-{index}-{target}", target, admin_url)
                    ws.env.update(server.env())
                    server.reset_stats()
                    summary, seconds, peak = _load(ws, target)
                    rows.append(
                        f"full load {records:,} records -> {target} | {seconds:.1f} s | "
                        f"{records / seconds:,.0f} rec/s | {peak:,.0f} MB peak | "
                        f"{_api_calls(server.stats())} API calls | {summary['loads']} loads | "
                        f"{_shares(summary['phases'])}"
                    )
                    floor_ws = _fresh(tmp, f"floor-{index}-{target}", target, admin_url)
                    floor_ws.env.update(server.env())
                    summary, seconds, peak = _load(floor_ws, target, replay)
                    rows.append(
                        f"  same load, no fetch (JSONL replay) -> {target} | {seconds:.1f} s | "
                        f"{records / seconds:,.0f} rec/s | {peak:,.0f} MB peak | {_shares(summary['phases'])}"
                    )
                    if index == 0 and target == targets[0]:
                        rows.extend(_days(org, server, ws, target))
                    if target == "duckdb" and index == 0:
                        build = measure(ws, "dbt", "build", "--target", target)
                        rows.append(
                            f"dbt build on {target} ({records:,} records) | {build.seconds:.1f} s | "
                            f"{build.peak_mb:,.0f} MB peak"
                        )

    print(f"\nLoad benchmark (sandbox org over HTTP, seed {args.seed})")
    for row in rows:
        print("  " + row)


def _days(org: SandboxOrg, server: SandboxServer, ws: Workspace, target: str) -> list[str]:
    rows = []
    server.reset_stats()
    summary, seconds, _ = _load(ws, target)
    # One page of each module (the overlap), each deletion log, the users check, each module's field list.
    minimum = 2 + 2 + 1 + 2
    rows.append(f"quiet day -> {target} | {_api_calls(server.stats())} API calls (minimum {minimum}) | {seconds:.1f} s")
    changed = _change(org, 0.01)
    server.reset_stats()
    summary, seconds, _ = _load(ws, target)
    minimum = sum(max(1, math.ceil(n / PAGE)) for n in changed.values()) + 2 + 1 + 2
    rows.append(
        f"1% changed day ({sum(changed.values()):,} records) -> {target} | "
        f"{_api_calls(server.stats())} API calls (minimum {minimum}) | {seconds:.1f} s"
    )
    return rows


if __name__ == "__main__":
    main()
