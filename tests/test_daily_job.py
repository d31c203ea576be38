"""The daily job as a scheduler or a person starts it: `scripts/daily.sh`, `make daily` and the workflow's step.

Each run is the real script in its own process, against a private copy of the
built warehouse (a DuckDB file, a PostgreSQL database), the sandbox org the
warehouse was built from, and the Twilio emulator. Two runs at once used to
break each other in dlt's working folder or on DuckDB's file lock, or load the
day twice; now the job holds a lock from the check to the briefing
(warehouse/job_lock.py) and a second run stops at once.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sandbox import SandboxOrg, SandboxServer
from tests.conftest import SANDBOX_ORG, SANDBOX_TODAY
from tests.support.workspace import Workspace
from tests.twilio_emulator import TwilioEmulator
from warehouse import PROJECT_ROOT

ANA = "+15550000001"
BUSY = "another daily run is in progress"
TARGETS = ["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture
def job(warehouse: Workspace) -> Iterator[tuple[Workspace, TwilioEmulator]]:
    """The built warehouse's copy, the org it was built from, Twilio (ANA wrote this morning), no Ollama."""
    org = SandboxOrg(today=dt.date.fromisoformat(SANDBOX_TODAY), **SANDBOX_ORG)
    with SandboxServer(org, port=0) as zoho, TwilioEmulator() as twilio:
        warehouse.env.update(zoho.env())
        warehouse.env.update(twilio.env(ANA))
        warehouse.env["OLLAMA_BASE_URL"] = "http://127.0.0.1:9"
        warehouse.env["TMPDIR"] = str(
            warehouse.root
        )  # this machine's temporary folder (the PostgreSQL job's lock file)
        twilio.inbound(ANA, "good morning")
        yield warehouse, twilio


class Run:
    """One run of a command in its own session (so the test can kill all of it), its output kept in files."""

    def __init__(self, ws: Workspace, *command: str, env: dict[str, str] | None = None) -> None:
        self.log = ws.root / f"run-{time.monotonic_ns()}.log"
        self.started = time.monotonic()
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                command,
                cwd=PROJECT_ROOT,
                env={**ws.env, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        self.ended: float | None = None
        self._waiter = threading.Thread(target=self._note_the_end, daemon=True)
        self._waiter.start()

    def _note_the_end(self) -> None:
        self.process.wait()
        self.ended = time.monotonic()

    def poll(self) -> int | None:
        return self.process.poll()

    def finish(self, timeout: float = 600) -> int:
        self._waiter.join(timeout=timeout)
        return self.process.wait(timeout=1)

    @property
    def seconds(self) -> float:
        assert self.ended is not None, "still running"
        return self.ended - self.started

    @property
    def output(self) -> str:
        return self.log.read_text()

    @property
    def last_line(self) -> str:
        return self.output.strip().splitlines()[-1]


def daily(ws: Workspace, target: str, **env: str) -> Run:
    return Run(ws, "bash", "scripts/daily.sh", target, env=env)


def make_daily(ws: Workspace, target: str) -> Run:
    # -o: the project is installed already and the profile is the workspace's; make must not reinstall it here.
    return Run(ws, "make", "--no-print-directory", "-o", "install", "-o", "profiles.yml", "daily", f"TARGET={target}")


def wait_until(condition: Any, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.1)


def stopped_at_once(run: Run) -> None:
    """The run said another one is in progress, exit 1, before doing anything."""
    assert run.poll() == 1, run.output[-3000:]
    assert BUSY in run.last_line, run.output[-3000:]
    assert "==>" not in run.output  # not even the check started
    assert run.seconds < 15, run.seconds  # generous on a busy machine: the time to start Python and ask for the lock


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_a_second_daily_run_stops_at_once_and_the_first_completes(job: Any, target: str, tmp_path: Path) -> None:
    """GIVEN two daily runs started together, the second as if on another machine sharing the warehouse (a
    temporary folder of its own), and Twilio slow to answer the first send
    WHEN `make daily` is started by hand while the winner sends the briefing
    THEN one run does the whole job (exit 0) and the briefing is sent once; the other run and `make daily`
    stop at once, before the check, with "another daily run is in progress" (exit 1, which make's last line
    reports: make itself exits 2)."""
    ws, twilio = job
    twilio.delay_next(10.0)
    (tmp_path / "other-machine").mkdir()
    runs = [daily(ws, target), daily(ws, target, TMPDIR=str(tmp_path / "other-machine"))]
    wait_until(
        lambda: twilio.create_requests() > 0 or all(run.poll() is not None for run in runs),
        "the briefing is being sent",
    )
    by_hand = make_daily(ws, target)
    by_hand.finish(timeout=60)

    codes = sorted((run.finish(), i) for i, run in enumerate(runs))
    [(_, winner), (_, loser)] = codes
    assert runs[winner].poll() == 0, runs[winner].output[-5000:]
    assert [line.split(" (")[0] for line in runs[winner].output.splitlines() if line.startswith("==> ")] == [
        "==> Checking the settings and connections",
        "==> Extracting Zoho CRM into zoho_raw",
        "==> Building and testing the marts",
        *(["==> Locking the project's schemas down"] * (target == "postgres")),
        "==> Writing and sending the briefing",
    ]
    stopped_at_once(runs[loser])
    assert by_hand.poll() == 2  # make's status for any failed recipe
    lines = by_hand.output.strip().splitlines()
    assert BUSY in lines[-3] and "==>" not in by_hand.output, by_hand.output[-3000:]
    assert lines[-2].startswith("make daily: the job exited 1: the run failed"), lines[-2:]
    assert "Error 1" in lines[-1], lines[-1]
    bodies = [m["body"] for m in twilio.messages]
    assert bodies and len(bodies) == len(set(bodies)) and {m["to"] for m in twilio.messages} == {f"whatsapp:{ANA}"}


@pytest.fixture
def silent_ollama() -> Iterator[str]:
    """An Ollama address that takes the connection and never answers: the check waits on it until its timeout."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


@pytest.mark.parametrize("target", TARGETS)
def test_a_run_whose_lock_holder_was_killed_does_not_block_the_next(job: Any, target: str, silent_ollama: str) -> None:
    """GIVEN a daily run in its check (waiting on an Ollama that never answers)
    WHEN the process holding the job's lock is killed with kill -9
    THEN the run goes no further (no extraction: the check it was in ends, and nothing follows), and the next
    run takes the lock: it runs its own check, which stops it on a wrong recipient (exit 2), not on the lock."""
    ws, _ = job
    first = daily(ws, target, OLLAMA_BASE_URL=silent_ollama)
    wait_until(lambda: "==> Checking" in first.output or first.poll() is not None, "the first run is checking")
    [holder] = _children(first.process.pid)
    assert "warehouse.job_lock" in Path(f"/proc/{holder}/cmdline").read_text()

    os.kill(holder, signal.SIGKILL)
    wait_until(
        lambda: first.poll() is not None and not _alive(first.process.pid),
        "every process of the killed run has ended",
        timeout=120,
    )

    assert "==> Extracting" not in first.output, first.output[-3000:]
    second = daily(ws, target, RECIPIENT_PHONE_NUMBER="+1555000000a")
    assert second.finish(timeout=120) == 2, second.output[-3000:]
    assert second.last_line.startswith("error: recipients"), second.output[-3000:]
    assert BUSY not in second.output


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _alive(group: int) -> bool:
    """Whether a process of the run's process group is still running (a zombie has ended: it only awaits its reaper)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            return True
    return False


WORKFLOW = PROJECT_ROOT / ".github" / "workflows" / "daily.yml"


@pytest.mark.postgres
def test_a_wrong_setting_reads_as_exit_2_in_make_daily_and_in_the_workflow(
    workspace: Workspace, postgres_url: str, tmp_path: Path
) -> None:
    """GIVEN a recipient's number that is not E.164, everything else right, on PostgreSQL
    WHEN the job runs as `make daily`, and as the workflow's job step (its script, as GitHub runs it)
    THEN make's last line before its own says the job exited 2, a setting to fix (make itself exits 2 for
    any failure); the workflow step exits 2 with the check's line naming the recipient, records status 2,
    and the failure report's summary says a setting is wrong."""
    org = SandboxOrg(seed=3, leads=50, deals=20, timezone="Asia/Kolkata", currencies=["USD"])
    with SandboxServer(org, port=0) as zoho, TwilioEmulator() as twilio:
        workspace.env.update(zoho.env())
        workspace.env.update(twilio.env("+1555000000a"))
        workspace.use_postgres(postgres_url)
        workspace.env["OLLAMA_BASE_URL"] = "http://127.0.0.1:9"
        workspace.env["TMPDIR"] = str(tmp_path)

        by_make = make_daily(workspace, "postgres")
        assert by_make.finish(timeout=120) == 2, by_make.output[-3000:]
        lines = by_make.output.strip().splitlines()
        assert lines[-3].startswith("error: recipients"), lines[-3:]
        assert lines[-2].startswith("make daily: the job exited 2: a setting is missing or wrong"), lines[-3:]

        steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["daily"]["steps"]
        [job_spec] = [step for step in steps if step.get("id") == "job"]
        github = {
            "RUNNER_TEMP": str(tmp_path),
            "GITHUB_OUTPUT": str(tmp_path / "output"),
            "GITHUB_STEP_SUMMARY": str(tmp_path / "summary"),
            "RECIPIENTS_YML": "",
            "REPORT_DATE": "",
            "DRY_RUN": "false",
        }
        job_step = Run(workspace, "bash", "-e", "-c", job_spec["run"], env=github)
        assert job_step.finish(timeout=120) == 2, job_step.output[-3000:]
        assert job_step.last_line.startswith("error: recipients"), job_step.output[-3000:]
        assert (tmp_path / "output").read_text() == "status=2\n"

    [report] = [step for step in steps if step.get("name") == "Report the failure"]
    summary = Run(workspace, "bash", "-e", "-c", report["run"], env={**github, "STATUS": "2"})
    assert summary.finish(timeout=30) == 0
    assert "exit 2: a setting or credential is wrong" in (tmp_path / "summary").read_text()
