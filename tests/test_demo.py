"""`make demo` on a fresh clone: the README's first command runs the whole day end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    dbt = clone / ".venv" / "bin" / "dbt"
    dbt.write_text(f"#!{clone / '.venv' / 'bin' / 'python'}\nfrom dbt.cli.main import cli\ncli()\n")
    dbt.chmod(0o755)
    (clone / ".venv" / "bin" / ".installed").touch()


def test_make_demo_runs_the_whole_day_on_a_fresh_clone(tmp_path: Path) -> None:
    """GIVEN a fresh clone of the committed project and no account or server of any kind
    WHEN the user runs `make demo`
    THEN the sandbox org is extracted into DuckDB, the marts are built and tested, the KPIs
         are printed, the briefing is printed as a dry run, and the user is told how to query
         the marts and start the API."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(PROJECT_ROOT), str(clone)], check=True)
    _overlay_venv(clone)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZOHO_", "TWILIO_", "DATABASE_URL", "PG", "DUCKDB_PATH", "DLT_"))}
    env["OLLAMA_BASE_URL"] = "http://127.0.0.1:9"  # nothing listens: the demo must say it falls back

    result = subprocess.run(["make", "demo"], cwd=clone, env=env, capture_output=True, text=True, timeout=600)

    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    assert "loaded" in output and "leads=" in output
    assert "open_pipeline_amount" in output
    assert "using the standard briefing because ollama_unreachable" in output  # said plainly
    assert "DRY RUN: nothing was sent" in output
    assert "make api" in output
    assert (clone / "demo.duckdb").exists()
