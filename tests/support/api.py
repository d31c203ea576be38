"""The metrics API as a user starts it, and the daily job run while clients keep asking it for metrics.

`serve` starts `python -m insights.api` in its own process on a free port.
`api_under_load` is the scenario of tests/test_concurrency.py (a few rounds)
and benchmarks/api_under_load.py (ten): before the API served from memory, its
open of the DuckDB file made 1 in 3 extractions and `dbt build`s fail on
DuckDB's "Conflicting lock is held".
"""

from __future__ import annotations

import queue
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from sandbox import SandboxOrg, SandboxServer
from tests.support.workspace import Workspace
from warehouse import PROJECT_ROOT, Target

TOKEN = "test-api-token-4b1d"


@dataclass
class RunningApi:
    url: str
    log: list[str] = field(default_factory=list)  # what the server printed until it was listening

    def get(self, path: str, token: str | None = TOKEN) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(self.url + path, headers=headers, timeout=30)


@contextmanager
def serve(
    env: dict[str, str], target: Target, token: str | None = TOKEN, cwd: Path = PROJECT_ROOT, port: int = 0
) -> Iterator[RunningApi]:
    """`python -m insights.api --target <target> --port <port>` in the project folder `cwd`, until the block ends
    (port 0: a free one)."""
    env = {k: v for k, v in env.items() if k != "API_TOKEN"}
    if token:
        env["API_TOKEN"] = token
    process = subprocess.Popen(
        [sys.executable, "-m", "insights.api", "--target", target, "--port", str(port)],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stderr], daemon=True).start()  # type: ignore[union-attr]
    seen: list[str] = []
    try:
        while True:
            try:
                line = lines.get(timeout=30)
            except queue.Empty:
                raise AssertionError("the API did not start:\n" + "".join(seen)) from None
            seen.append(line)
            started = re.search(r"Uvicorn running on (http://\S+)", line)
            if started:
                break
            if process.poll() is not None:
                raise AssertionError("the API exited:\n" + "".join(seen))
        yield RunningApi(started.group(1), seen)
    finally:
        process.terminate()
        process.wait(timeout=10)


def free_port() -> int:
    """A port nobody listens on now, for a server whose address must be known before it starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LoadRun:
    """What the daily job and the API's clients saw over the rounds."""

    rounds: int
    extractions_ok: int = 0
    dbt_ok: int = 0
    failures: list[str] = field(default_factory=list)  # a step that failed, or an answer other than 200
    answered: list[int] = field(default_factory=list)  # the status of every client request
    final: dict[str, Any] = field(default_factory=dict)  # /api/metrics once the rounds are over

    def line(self) -> str:
        return (
            f"extraction {self.extractions_ok}/{self.rounds}, dbt {self.dbt_ok}/{self.rounds}; "
            f"{len(self.answered)} requests, {sum(s != 200 for s in self.answered)} not answered 200"
        )


def api_under_load(ws: Workspace, org: SandboxOrg, rounds: int, clients: int = 4) -> LoadRun:
    """The API over `ws`'s DuckDB warehouse (built from `org`), `clients` threads asking for metrics without
    pause; meanwhile, `rounds` times, the org lives a day and the extraction and `dbt build` run."""
    from insights.api import RELOAD_INTERVAL_SECONDS

    run = LoadRun(rounds)
    stop = threading.Event()
    with SandboxServer(org, port=0) as server, serve(ws.env, "duckdb") as api:
        ws.env.update(server.env())

        def client() -> None:
            with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http:
                while not stop.is_set():
                    answer = http.get("/api/metrics")
                    run.answered.append(answer.status_code)
                    if answer.status_code != 200:
                        run.failures.append(f"the API answered {answer.status_code}: {answer.text[:300]}")

        threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
        for thread in threads:
            thread.start()
        try:
            for round_ in range(rounds):
                org.advance(1)
                for step in (
                    ("python", "-m", "pipelines.zoho", "--destination", "duckdb"),
                    ("dbt", "build", "--target", "duckdb", "--target-path", str(ws.root / "dbt-target")),
                ):
                    result = ws.run(*step, check=False)
                    if result.returncode == 0:
                        if step[0] == "python":
                            run.extractions_ok += 1
                        else:
                            run.dbt_ok += 1
                    else:
                        run.failures.append(
                            f"round {round_ + 1}: {step[0]} {step[2]} exited {result.returncode}: "
                            f"{(result.stderr + result.stdout)[-1500:]}"
                        )
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
        time.sleep(RELOAD_INTERVAL_SECONDS)
        run.final = api.get("/api/metrics").json()
    return run
