"""The daily job under a busy API, ten rounds: how many extractions and `dbt build`s succeed.

    python -m benchmarks.api_under_load [--rounds 10] [--clients 4]

The scenario of tests/test_concurrency.py (`tests.support.api.api_under_load`),
played as many rounds as the issue asks ("10 times out of 10") where the suite
plays 4 for CI time: the sandbox org the tests build from, loaded and built on
DuckDB, the API serving it to clients that ask for metrics without pause, and
each round a day of the org, an extraction and a `dbt build`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

from sandbox import SandboxOrg, SandboxServer
from tests.conftest import SANDBOX_ORG, SANDBOX_TODAY
from tests.support.api import api_under_load
from tests.support.workspace import make_workspace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()

    org = SandboxOrg(today=dt.date.fromisoformat(SANDBOX_TODAY), **SANDBOX_ORG)
    with tempfile.TemporaryDirectory(prefix="crm-bench-api-load-") as tmp:
        ws = make_workspace(Path(tmp) / "workspace")
        print("building the duckdb warehouse (extract, dbt build) ...", file=sys.stderr, flush=True)
        with SandboxServer(org, port=0) as server:
            ws.env.update(server.env())
            ws.run("python", "-m", "pipelines.zoho", "--destination", "duckdb")
            ws.dbt_build("duckdb")
        print(f"{args.rounds} rounds with {args.clients} clients on the API ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        run = api_under_load(ws, org, args.rounds, args.clients)
        seconds = time.perf_counter() - started
    for failure in run.failures[:5]:
        print(f"  {failure[:300]}", file=sys.stderr)
    print(f"API under load ({args.clients} clients, {seconds:.0f} s): {run.line()}")


if __name__ == "__main__":
    main()
