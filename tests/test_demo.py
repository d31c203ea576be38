"""`make demo` on a fresh clone: the README's first command runs the whole day end to end, and the commands
it prints next (make docs, make mf, make check, make api) read the demo's warehouse with no setting."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.api import free_port
from warehouse import PROJECT_ROOT

pytestmark = pytest.mark.slow


def _overlay_venv(clone: Path) -> None:
    """Give the clone a virtualenv that reuses this one's installed packages.

    Installing every dependency again would only test the package index; what
    this test checks is that the committed files alone run the demo. The clone's
    own code wins because `python -m` puts the working directory first on the path.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(clone / ".venv")], check=True)
    site = next((clone / ".venv" / "lib").glob("python3*/site-packages"))
    here = next(Path(sys.executable).parent.parent.joinpath("lib").glob("python3*/site-packages"))
    (site / "reuse-parent-venv.pth").write_text(f"{clone}\n{here}\n")
    for name, entry in (("dbt", "from dbt.cli.main import cli"), ("mf", "from dbt_metricflow.cli.main import cli")):
        script = clone / ".venv" / "bin" / name
        script.write_text(f"#!{clone / '.venv' / 'bin' / 'python'}\n{entry}\ncli()\n")
        script.chmod(0o755)
    (clone / ".venv" / "bin" / ".installed").touch()


def _run(clone: Path, env: dict[str, str], *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(command), cwd=clone, env=env, capture_output=True, text=True, timeout=600)


def _get_from_make_api(clone: Path, env: dict[str, str], *paths: str) -> dict[str, httpx.Response]:
    """`make api PORT=...` until it listens, the answers to `paths`, then the server stopped."""
    port = free_port()
    process = subprocess.Popen(
        ["make", "api", f"PORT={port}"],
        cwd=clone,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        log = []
        for line in process.stderr:  # type: ignore[union-attr]
            log.append(line)
            if "Uvicorn running on" in line:
                break
        else:
            raise AssertionError("make api did not start:\n" + "".join(log))
        return {path: httpx.get(f"http://127.0.0.1:{port}{path}", timeout=30) for path in paths}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)  # make and the server it started
        process.wait(timeout=30)


def test_make_demo_runs_the_whole_day_and_the_commands_it_prints_read_its_warehouse(tmp_path: Path) -> None:
    """GIVEN a fresh clone of the committed project and no account or server of any kind
    WHEN the user runs `make demo`
    THEN the sandbox org is extracted into DuckDB, the marts are built and tested, the KPIs
         are printed, the briefing is printed as a dry run, and the user is told how to query
         the marts, document them, ask MetricFlow and start the API
    AND at most 2% of the days and weeks kpi_anomalies judges on the demo's steady history are flagged.
    AND WHEN they run those commands as printed, with no setting: `make docs`, `make mf ARGS=...`,
         `make check` and `make api`
    THEN each reads demo.duckdb: dbt's catalog describes the demo's marts, MetricFlow answers the win rate
         month by month, the check finds the demo's warehouse reachable, the API serves its metrics; and
         none of them leaves an empty warehouse.duckdb behind."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(PROJECT_ROOT), str(clone)], check=True)
    _overlay_venv(clone)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ZOHO_", "TWILIO_", "DATABASE_URL", "PG", "DUCKDB_PATH", "DLT_", "DBT_"))
    }
    env["OLLAMA_BASE_URL"] = "http://127.0.0.1:9"  # nothing listens: the demo must say it falls back

    result = subprocess.run(["make", "demo"], cwd=clone, env=env, capture_output=True, text=True, timeout=600)

    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    assert "loaded" in output and "leads=" in output
    assert "open_pipeline_amount" in output
    assert "using the standard briefing because ollama_unreachable" in output  # said plainly
    assert "DRY RUN: nothing was sent" in output
    for printed in (
        "\n  make api\n",
        "\n  make docs && .venv/bin/dbt docs serve\n",
        '\n  make mf ARGS="query --metrics win_rate --group-by metric_time__month"\n',
    ):
        assert printed in output, output[-2000:]
    assert (clone / "demo.duckdb").exists()
    # The demo's history is drawn from steady weekday rates: each day or week kpi_anomalies flags is a false alarm.
    anomalies = _run(clone, env, ".venv/bin/python", "-m", "benchmarks.anomalies", "--duckdb", "demo.duckdb")
    print(anomalies.stdout)
    judged, flagged = map(int, anomalies.stdout.splitlines()[-1].split()[1:3])
    assert judged > 500 and flagged <= 0.02 * judged, anomalies.stdout

    docs = _run(clone, env, "make", "docs")
    mf = _run(clone, env, "make", "mf", "ARGS=query --metrics win_rate --group-by metric_time__month")
    check = _run(clone, env, "make", "check")
    api = _get_from_make_api(clone, env, "/api/metrics", "/api/health")

    assert docs.returncode == 0, (docs.stdout + docs.stderr)[-6000:]
    assert "reading the demo's warehouse demo.duckdb" in docs.stderr
    catalog = json.loads((clone / "target" / "catalog.json").read_text())
    kpi_daily = catalog["nodes"]["model.crm_intelligence.kpi_daily"]["metadata"]
    assert (kpi_daily["database"], kpi_daily["schema"]) == ("demo", "analytics")

    assert mf.returncode == 0, (mf.stdout + mf.stderr)[-6000:]
    months = re.findall(r"^(\d{4}-\d{2})-01T00:00:00\s+(0\.\d+|1\.0+)\s*$", mf.stdout, re.MULTILINE)
    assert len(months) >= 3, mf.stdout[-3000:]  # the sandbox org has months of wins and losses

    assert "ok    warehouse (duckdb)  demo.duckdb reachable and writable" in check.stdout, check.stdout + check.stderr

    assert api["/api/health"].status_code == 200 and api["/api/health"].json()["status"] == "ok"
    assert api["/api/metrics"].status_code == 200, api["/api/metrics"].text
    assert "win_rate" in api["/api/metrics"].json()["metrics"]

    assert not (clone / "warehouse.duckdb").exists()
