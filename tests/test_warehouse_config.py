"""Where the warehouse is: one setting, read the same way by the pipeline, dbt and the briefing."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.support.postgres import LocalServer, PostgresUnavailable, throwaway_postgres
from tests.support.workspace import Workspace
from warehouse import PROJECT_ROOT

SUPABASE = "postgresql://postgres.abcxyz:p%40ss%3Aw%2Frd%23@aws-0-eu-central-1.pooler.supabase.com:5432/postgres?sslmode=require"


def test_a_supabase_connection_string_gives_dbt_the_same_database(workspace: Workspace) -> None:
    """GIVEN a Supabase pooler connection string (percent-encoded password) in DATABASE_URL
    WHEN the user asks for dbt's libpq variables
    THEN they name the same host, port, user, decoded password, database and SSL mode."""
    workspace.env["DATABASE_URL"] = SUPABASE

    result = workspace.run("python", "-m", "warehouse", "pg-env")

    assert result.stdout.splitlines() == [
        "export PGHOST=aws-0-eu-central-1.pooler.supabase.com",
        "export PGPORT=5432",
        "export PGUSER=postgres.abcxyz",
        "export PGPASSWORD='p@ss:w/rd#'",
        "export PGDATABASE=postgres",
        "export PGSSLMODE=require",
    ]


def test_a_pasted_password_that_breaks_the_url_is_named_without_leaking_it(workspace: Workspace) -> None:
    """GIVEN DATABASE_URL with a raw `#` in the password (as pasted over a placeholder)
    WHEN the pipeline or pg-env reads it
    THEN one line says the URL is invalid and how to fix it, the password is not printed, and the exit is 2."""
    workspace.env["DATABASE_URL"] = "postgresql://postgres.x:hunter#s3cr3t@db.example.com:5432/postgres"

    for command in (
        ("python", "-m", "warehouse", "pg-env"),
        ("python", "-m", "pipelines.zoho", "--destination", "postgres"),
    ):
        workspace.env.update(ZOHO_CLIENT_ID="id", ZOHO_CLIENT_SECRET="secret", ZOHO_REFRESH_TOKEN="token")
        result = workspace.run(*command, check=False)

        assert result.returncode == 2, result.stderr
        assert "DATABASE_URL is not a valid URL" in result.stderr.strip().splitlines()[-1]
        assert "hunter" not in result.stderr and "s3cr3t" not in result.stderr
        assert "Traceback" not in result.stderr


def test_an_empty_duckdb_file_is_a_setting_to_fix_named_with_the_file(workspace: Workspace) -> None:
    """GIVEN DUCKDB_PATH naming an empty file (0 bytes: a copy or a download that failed)
    WHEN the delivery's dry run and the check run on it
    THEN both exit 2, a setting to fix, with a line naming the file and what to do (not "run it again"),
    and the file is left as it was."""
    workspace.duckdb_path.write_bytes(b"")
    workspace.env["OLLAMA_BASE_URL"] = "http://127.0.0.1:9"

    deliver = workspace.run("python", "-m", "insights.deliver", "--target", "duckdb", "--dry-run", check=False)
    doctor = workspace.run("python", "-m", "insights.doctor", "--target", "duckdb", "--no-send", check=False)

    said = f"DUCKDB_PATH: {workspace.duckdb_path} is an empty file (0 bytes), not a DuckDB warehouse; delete it"
    assert deliver.returncode == 2, deliver.stderr
    assert deliver.stderr.strip().splitlines()[-1].startswith(f"error: {said}"), deliver.stderr
    assert "run it again" not in deliver.stderr and "Traceback" not in deliver.stderr
    assert doctor.returncode == 2, doctor.stdout + doctor.stderr
    assert any(line.startswith("FAIL  warehouse (duckdb)") and said in line for line in doctor.stdout.splitlines())
    assert workspace.duckdb_path.stat().st_size == 0


def test_a_command_that_only_reads_refuses_a_warehouse_that_is_not_there_and_creates_none(workspace: Workspace) -> None:
    """GIVEN DUCKDB_PATH naming a file that does not exist
    WHEN dbt's documentation is generated as `make docs` does (through the warehouse's resolver), and dbt
    opens the warehouse by itself, bare (dbt debug: as docs generate, compile, show and mf do, without building)
    THEN the first stops before dbt with one line naming the file (exit 2), the second fails naming it too,
    and neither leaves an empty warehouse behind for the next command to take for the real one."""
    resolved = workspace.run(
        "python",
        "-m",
        "warehouse",
        "exec",
        "--",
        "dbt",
        "docs",
        "generate",
        "--target-path",
        str(workspace.root / "dbt" / "target"),
        check=False,
    )
    bare = workspace.run("dbt", "debug", check=False)

    assert resolved.returncode == 2
    assert resolved.stderr.strip() == (
        f"error: DUCKDB_PATH: no warehouse at {workspace.duckdb_path}; run the pipeline and dbt build first"
    )
    assert bare.returncode != 0
    assert f'Cannot open database "{workspace.duckdb_path}" in read-only mode' in bare.stdout + bare.stderr
    assert not workspace.duckdb_path.exists()


@pytest.fixture
def own_postgres() -> Iterator[LocalServer]:
    """A PostgreSQL server of the test's own, since it is stopped and started again (the session's is shared)."""
    try:
        with throwaway_postgres() as server:
            yield server
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))


@pytest.mark.postgres
def test_a_postgres_restart_during_the_connect_is_waited_for_without_logging_the_password(
    workspace: Workspace, own_postgres: LocalServer
) -> None:
    """GIVEN DATABASE_URL with a password, naming a PostgreSQL server that is being restarted: stopped now
    WHEN the check runs, and the server is started again once the check said it waits for it
    THEN the check says, one line per new attempt, that the server is not available and when it tries again,
    never printing the password, then finds the warehouse reachable and writable."""
    workspace.use_postgres(own_postgres.url.replace(":unused@", ":s3cr3t-pw@"))  # trust auth: any password works
    workspace.env["OLLAMA_BASE_URL"] = "http://127.0.0.1:9"
    own_postgres.stop()

    check = subprocess.Popen(
        [sys.executable, "-m", "insights.doctor", "--target", "postgres", "--no-send"],
        cwd=PROJECT_ROOT,
        env=workspace.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = ""
    for line in check.stdout:  # type: ignore[union-attr]
        output += line
        if line.startswith("PostgreSQL at "):
            break
    own_postgres.start()
    output += check.stdout.read()  # type: ignore[union-attr]
    check.wait(timeout=60)

    retries = [line for line in output.splitlines() if line.startswith("PostgreSQL at ")]
    assert retries and retries[0] == (
        f"PostgreSQL at 127.0.0.1:{own_postgres.port} is not available (connection "
        "refused); trying again in 0.5s (attempt 2 of 5)"
    ), output
    for line in retries:
        assert re.fullmatch(
            rf"PostgreSQL at 127\.0\.0\.1:{own_postgres.port} is not available \((connection refused"
            r"|the database system is starting up)\); trying again in [0-9.]+s \(attempt [2-5] of 5\)",
            line,
        ), line
    assert "ok    warehouse (postgres)  PostgreSQL reachable and writable" in output, output
    assert "s3cr3t" not in output
