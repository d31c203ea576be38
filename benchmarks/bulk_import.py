"""A bulk import at Zoho's real scale: 150,000 leads written in the same second, then a first load.

    python -m benchmarks.bulk_import [--imported 150000]

One page_token chain reaches 100,000 records and every Modified_Time query restarts inside that
second, so the extract reads the rest of the second by COQL (keyset on id) and those records by id.
Prints the load's seconds, records, peak memory and the calls per endpoint, and checks that every
lead arrived.
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
from contextlib import closing
from pathlib import Path

import duckdb

from benchmarks.measure import measure
from sandbox import SandboxOrg, SandboxServer
from tests.support.workspace import make_workspace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--imported", type=int, default=150_000)
    args = parser.parse_args()

    org = SandboxOrg(seed=3, leads=2000, deals=500, timezone="Asia/Kolkata", today=datetime.date(2026, 11, 20))
    org.insert(
        "Leads",
        [{"Last_Name": f"Imported {n}", "Company": "Import Co"} for n in range(args.imported)],
        org.current_user_id,
    )
    expected = {r["id"] for r in org.records("Leads")}
    with tempfile.TemporaryDirectory(prefix="crm-bulk-") as tmp, SandboxServer(org, port=0) as server:
        ws = make_workspace(Path(tmp) / "bulk")
        ws.env.update(server.env())
        run = measure(ws, "python", "-m", "pipelines.zoho")
        with closing(duckdb.connect(str(ws.duckdb_path), read_only=True)) as conn:
            stored = {row[0] for row in conn.execute("select id from zoho_raw.leads").fetchall()}
        calls = {k: v for k, v in sorted(server.stats().items()) if "/crm/" in k}

    print(f"\nBulk import: {args.imported:,} leads in one second, {len(expected):,} leads in all")
    print(f"  first load: {run.seconds:.1f} s, {run.peak_mb:,.0f} MB peak | {run.stdout.strip()}")
    print(f"  calls: {calls}")
    print(f"  every lead loaded: {stored == expected} ({len(stored):,} of {len(expected):,})")
    if stored != expected:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
