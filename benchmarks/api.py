"""API benchmark: requests/s and median latency of /api/metrics next to a trivial FastAPI JSON route.

    python -m benchmarks.api [--seconds 5] [--clients 1 4]

Builds a warehouse from the sandbox org (extraction and `dbt build`, as a user
runs them) on DuckDB and on PostgreSQL, then serves `insights.api` with uvicorn
in its own process, with one extra route, `/trivial`, that returns a constant
JSON object from the same app, server and middleware. Each client is a thread
with its own keep-alive HTTP connection, asking again as soon as it is answered.
The ratio is what matters: the clients share the machine with the server.
"""

from __future__ import annotations

import argparse
import datetime
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from sandbox import SandboxOrg, SandboxServer
from tests.support.postgres import create_database, local_postgres
from tests.support.workspace import Workspace, make_workspace
from warehouse import PROJECT_ROOT

TOKEN = "benchmark-token"


def bench_app() -> Any:
    """The API as `python -m insights.api` serves it, plus the trivial route it is compared with."""
    import os

    from insights.api import create_app

    app = create_app(os.environ["BENCH_TARGET"])  # type: ignore[arg-type]

    @app.get("/trivial")
    async def trivial() -> dict[str, bool]:
        return {"ok": True}

    return app


def _serve(ws: Workspace, target: str) -> tuple[subprocess.Popen[str], str]:
    env = {**ws.env, "BENCH_TARGET": target, "API_TOKEN": TOKEN}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "benchmarks.api:bench_app",
            "--factory",
            "--port",
            "0",
            "--log-level",
            "info",
            "--no-access-log",
        ],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    for line in process.stderr:
        found = re.search(r"Uvicorn running on (http://\S+)", line)
        if found:
            threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()  # type: ignore[union-attr]
            return process, found.group(1)
    raise SystemExit("the API did not start")


def _load(url: str, path: str, clients: int, seconds: float) -> tuple[float, float]:
    """(requests per second, median latency in ms) of `clients` threads asking `path` for `seconds`."""
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client() -> None:
        mine: list[float] = []
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http:
            http.get(path).raise_for_status()  # warm: connection and the API's copy of the warehouse
            while (start := time.perf_counter()) < deadline:
                http.get(path).raise_for_status()
                mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, statistics.median(latencies) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement (default: 5)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--targets", nargs="+", default=["duckdb", "postgres"])
    args = parser.parse_args()

    org = SandboxOrg(seed=7, leads=1500, deals=600, timezone="Asia/Kolkata", today=datetime.date(2026, 11, 20))
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="crm-bench-api-") as tmp,
        local_postgres() as admin_url,
        SandboxServer(org, port=0) as server,
    ):
        for target in args.targets:
            ws = make_workspace(Path(tmp) / target)
            ws.env.update(server.env())
            if target == "postgres":
                ws.use_postgres(create_database(admin_url, "bench_api"))
            print(f"building the {target} warehouse (extract, dbt build) ...", file=sys.stderr, flush=True)
            ws.run("python", "-m", "pipelines.zoho", "--destination", target)
            ws.dbt_build(target)
            process, url = _serve(ws, target)
            try:
                for clients in args.clients:
                    trivial = _load(url, "/trivial", clients, args.seconds)
                    metrics = _load(url, "/api/metrics", clients, args.seconds)
                    rows.append((target, clients, *trivial, *metrics, metrics[0] / trivial[0]))
                    print(f"  {target} {clients} client(s) done", file=sys.stderr, flush=True)
            finally:
                process.terminate()
                process.wait(timeout=10)

    print(
        f"{'target':9} {'clients':>7} {'trivial req/s':>14} {'p50 ms':>7} {'metrics req/s':>14} {'p50 ms':>7} {'ratio':>6}"
    )
    for target, clients, t_rps, t_p50, m_rps, m_p50, ratio in rows:
        print(f"{target:9} {clients:>7} {t_rps:>14.0f} {t_p50:>7.2f} {m_rps:>14.0f} {m_p50:>7.2f} {ratio:>6.2f}")


if __name__ == "__main__":
    main()
