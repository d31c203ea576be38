"""The soak: simulated days of a Zoho org on bad days, the extractor run as a scheduler would run it.

Each day the org lives one day (`advance`), the sandbox injects seeded random faults of every kind
(429s, 5xx, dropped and slow connections, garbled 200s, revoked tokens, expired page tokens, records
changing while a run pages), and the extract is started, sometimes killed with SIGKILL at a random
moment, and started again until a run succeeds. If the last run was itself mutated under (a
record edited while it paged), one more run with the faults off catches up, as the next day's run
would. Then the warehouse is compared with the org, and the day's API calls with the minimum (the
record pages from the cursor, the deletion logs and the two metadata checks) plus what the faults
forced (calls of killed runs, of the catch-up run, and two per injected fault).

Used by tests/test_soak.py (a few days) and benchmarks/soak.py (30 days).
"""

from __future__ import annotations

import datetime as dt
import math
import random
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sandbox import SandboxOrg, SandboxServer
from sandbox.faults import FAULT_KINDS, FaultPlan
from tests.support.workspace import Workspace

PAGE = 200
OVERLAP = dt.timedelta(minutes=10)
METADATA_CHECKS = (
    3  # users (If-Modified-Since) and each module's field list; stages and currencies only when a deal names a new one
)
MAX_RUNS = 8


@dataclass(frozen=True)
class SoakDay:
    day: int
    runs: int
    killed: int
    injected: int
    calls: int
    minimum: int
    forced: int
    seconds: float

    @property
    def within_budget(self) -> bool:
        return self.calls <= self.minimum + self.forced

    def line(self) -> str:
        return (
            f"day {self.day:>2} | {self.runs} run(s), {self.killed} killed | {self.injected:>2} faults | "
            f"{self.calls:>4} calls (minimum {self.minimum}, forced {self.forced}) | {self.seconds:.1f} s"
        )


def _crm_calls(server: SandboxServer) -> int:
    return sum(n for key, n in server.stats().items() if "/crm/" in key)


def _minimum_calls(org: SandboxOrg, cursors: dict[str, dt.datetime | None]) -> int:
    pages = 0
    for module, cursor in cursors.items():
        count = sum(
            cursor is None or dt.datetime.fromisoformat(r["Modified_Time"]) >= cursor - OVERLAP
            for r in org.records(module)
        )
        pages += max(1, math.ceil(count / PAGE))
    return pages + 2 + METADATA_CHECKS


def soak(
    workspace: Workspace,
    days: int,
    *,
    seed: int = 1,
    leads: int = 400,
    deals: int = 150,
    fault_rate: float = 0.03,
    kill_chance: float = 0.4,
    compare: Callable[[SandboxOrg], None] | None = None,
) -> Iterator[SoakDay]:
    """Play `days` days; yields each day's figures after `compare(org)` (which raises on a difference)."""
    from tests.test_extract import warehouse_rows  # the comparison helpers live with the extract tests

    rng = random.Random(f"soak:{seed}")
    org = SandboxOrg(seed=seed, leads=leads, deals=deals, timezone="Asia/Kolkata", today=dt.date(2026, 11, 2))
    with SandboxServer(org, port=0) as server:
        workspace.env.update(server.env())
        workspace.env["SOURCES__ZOHO__RETRY_BACKOFF_SECONDS"] = "0.05"
        workspace.env["SOURCES__ZOHO__RECORDS_PER_LOAD"] = str(max(PAGE, leads // 4))
        workspace.run("python", "-m", "pipelines.zoho")
        if compare is not None:
            compare(org)
        for day in range(1, days + 1):
            started = time.monotonic()
            org.advance(1)
            cursors = {
                module: max((row["modified_time"] for row in warehouse_rows(workspace, "duckdb", table)), default=None)
                for module, table in (("Leads", "leads"), ("Deals", "deals"))
            }
            minimum = _minimum_calls(org, cursors)
            server.faults = FaultPlan(rate=fault_rate, kinds=FAULT_KINDS, seed=seed * 1000 + day, slow_seconds=0.2)
            server.reset_stats()
            runs = killed = forced = 0
            err = ""
            while True:
                runs += 1
                if runs > MAX_RUNS:
                    raise AssertionError(
                        f"day {day}: no run succeeded in {MAX_RUNS} tries; the last said:\n{err[-3000:]}"
                    )
                before = _crm_calls(server)
                process = workspace.start("python", "-m", "pipelines.zoho")
                if killed < 2 and rng.random() < kill_chance:
                    try:
                        process.wait(timeout=rng.uniform(0.3, 3.0))
                    except subprocess.TimeoutExpired:
                        process.send_signal(signal.SIGKILL)
                        process.wait()
                        killed += 1
                        forced += _crm_calls(server) - before
                        continue
                out, err = process.communicate(timeout=600)
                if process.returncode == 0:
                    break
                forced += _crm_calls(server) - before  # a run the faults failed: its calls were forced too
            injected = server.faults.report()["injected"]
            server.faults = FaultPlan()
            if injected.get("mutate"):
                before = _crm_calls(server)
                workspace.run("python", "-m", "pipelines.zoho")
                runs += 1
                forced += _crm_calls(server) - before
            if compare is not None:
                compare(org)
            faults = sum(injected.values())
            yield SoakDay(
                day=day,
                runs=runs,
                killed=killed,
                injected=faults,
                calls=_crm_calls(server),
                minimum=minimum,
                forced=forced + 2 * faults,
                seconds=time.monotonic() - started,
            )
