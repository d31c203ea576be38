"""Run a project command the way a user would and measure it: wall seconds and peak memory."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pipelines.warehouse import PROJECT_ROOT, libpq_env

DBT = str(Path(sys.executable).with_name("dbt"))


@dataclass
class Measured:
    seconds: float
    peak_mb: float
    stdout: str
    stderr: str


def base_env(workdir: Path) -> dict[str, str]:
    """An isolated user setup in `workdir`: its own DuckDB file, dlt folder and dbt profile."""
    profiles = workdir / "dbt"
    profiles.mkdir(parents=True, exist_ok=True)
    (profiles / "profiles.yml").write_text((PROJECT_ROOT / "profiles.example.yml").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZOHO_", "SOURCES__", "DESTINATION__", "PG"))}
    env.pop("DATABASE_URL", None)
    env.update(
        DUCKDB_PATH=str(workdir / "warehouse.duckdb"),
        DLT_DATA_DIR=str(workdir / "dlt"),
        DBT_PROFILES_DIR=str(profiles),
        RUNTIME__DLTHUB_TELEMETRY="false",
        DBT_SEND_ANONYMOUS_USAGE_STATS="false",
    )
    return env


def with_postgres(env: dict[str, str], url: str) -> dict[str, str]:
    return {**env, "DATABASE_URL": url, **libpq_env(url)}


def run(args: list[str], env: dict[str, str]) -> Measured:
    """Run `python -m ...` or `dbt ...` from the project root; fail loudly on a non-zero exit."""
    cmd = [sys.executable, *args[1:]] if args[0] == "python" else [DBT, *args[1:]] if args[0] == "dbt" else args
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}):\n{stdout[-3000:]}\n{stderr[-3000:]}")
    # ru_maxrss is in KiB on Linux: the largest resident set of the command's process.
    return Measured(seconds=seconds, peak_mb=usage.ru_maxrss / 1024, stdout=stdout, stderr=stderr)
