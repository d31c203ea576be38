"""Run a project command the way a user would and measure it: wall seconds and peak memory."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from dataclasses import dataclass

from warehouse import PROJECT_ROOT
from tests.support.workspace import Workspace


@dataclass
class Measured:
    seconds: float
    peak_mb: float
    stdout: str
    stderr: str


def measure(ws: Workspace, *args: str) -> Measured:
    """Run `args` in `ws` from the project root; exit loudly if it fails.

    Peak memory is the command process's max RSS (`wait4`), so the benchmark's
    own process and the sandbox serving it are not counted.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(ws.command(*args), cwd=PROJECT_ROOT, env=ws.env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}):\n{stdout[-3000:]}\n{stderr[-3000:]}")
    return Measured(seconds=seconds, peak_mb=usage.ru_maxrss / 1024, stdout=stdout, stderr=stderr)
