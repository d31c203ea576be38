"""Where the warehouse is: one setting, read the same way by the pipeline, dbt and the briefing."""

from __future__ import annotations

from tests.support.workspace import Workspace

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

    for command in (("python", "-m", "warehouse", "pg-env"),
                    ("python", "-m", "pipelines.zoho", "--destination", "postgres")):
        workspace.env.update(ZOHO_CLIENT_ID="id", ZOHO_CLIENT_SECRET="secret", ZOHO_REFRESH_TOKEN="token")
        result = workspace.run(*command, check=False)

        assert result.returncode == 2, result.stderr
        assert "DATABASE_URL is not a valid URL" in result.stderr.strip().splitlines()[-1]
        assert "hunter" not in result.stderr and "s3cr3t" not in result.stderr
        assert "Traceback" not in result.stderr
