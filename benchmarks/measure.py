"""Run a project command the way a user would and measure it: wall seconds and peak memory."""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.workspace import Workspace
from warehouse import PROJECT_ROOT


@dataclass
class Measured:
    seconds: float
    peak_mb: float
    stdout: str
    stderr: str


def status_kb(pid: int | str, field: str = "VmHWM") -> int:
    """A memory figure of /proc/<pid>/status in kB (0 once the process is gone): VmHWM, the peak resident
    set of the process's own program, or VmRSS, its resident set now."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def measure(ws: Workspace, *args: str) -> Measured:
    """Run `args` in `ws` from the project root; exit loudly if it fails.

    Peak memory is the command's own high-water mark (VmHWM, read every 50 ms while it runs). Not
    `ru_maxrss` from `wait4`: Linux charges a child started by fork/vfork + exec with the parent's
    resident set at the fork, and the parent here serves the whole sandbox org, so that figure
    grows with the org whatever the command does.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(ws.command(*args), cwd=PROJECT_ROOT, env=ws.env, stdout=out, stderr=err, text=True)
        peak = 0
        done = threading.Event()

        def watch() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, status_kb(proc.pid))
                done.wait(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        _, status, _ = os.wait4(proc.pid, 0)
        done.set()
        watcher.join()
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}):\n{stdout[-3000:]}\n{stderr[-3000:]}")
    return Measured(seconds=seconds, peak_mb=peak / 1024, stdout=stdout, stderr=stderr)
