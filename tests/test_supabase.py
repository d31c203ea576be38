"""Supabase least privilege: `python -m warehouse.supabase lockdown` on a real PostgreSQL server.

Supabase's roles are created the way Supabase's own initial schema creates
them (`anon`, `authenticated`, `service_role`, and `authenticator`, the login
role the Data API connects as before `SET ROLE`); the Data API's queries are
run the same way, as `anon` and `authenticated` after `SET ROLE`.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest

from insights import store
from insights.ledger import DeliveryLedger

pytestmark = pytest.mark.postgres

# supabase/postgres, migrations/db/init-scripts/00000000000000-initial-schema.sql (roles part).
SUPABASE_ROLES = """
do $$ begin
    if not exists (select 1 from pg_roles where rolname = 'anon') then
        create role anon nologin noinherit;
    end if;
    if not exists (select 1 from pg_roles where rolname = 'authenticated') then
        create role authenticated nologin noinherit;
    end if;
    if not exists (select 1 from pg_roles where rolname = 'service_role') then
        create role service_role nologin noinherit bypassrls;
    end if;
    if not exists (select 1 from pg_roles where rolname = 'authenticator') then
        create role authenticator noinherit login;
    end if;
end $$;
grant anon, authenticated, service_role to authenticator;
grant usage on schema public to anon, authenticated, service_role;
alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public grant all on functions to anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;
"""


# https://supabase.com/docs/guides/api/using-custom-schemas: what a user runs after adding a schema to
# "Exposed schemas".
def documented_exposure(schema: str) -> str:
    return f"""
GRANT USAGE ON SCHEMA {schema} TO anon, authenticated, service_role;
GRANT ALL ON ALL TABLES IN SCHEMA {schema} TO anon, authenticated, service_role;
GRANT ALL ON ALL ROUTINES IN SCHEMA {schema} TO anon, authenticated, service_role;
GRANT ALL ON ALL SEQUENCES IN SCHEMA {schema} TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA {schema} GRANT ALL ON TABLES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA {schema} GRANT ALL ON ROUTINES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA {schema} GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
"""


@pytest.fixture
def supabase(warehouse: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The built warehouse on PostgreSQL, with a briefing and a delivery stored, and Supabase's roles."""
    monkeypatch.delenv("DESTINATION__POSTGRES__CREDENTIALS", raising=False)
    monkeypatch.setenv("DATABASE_URL", warehouse.env["DATABASE_URL"])
    store.save(
        "postgres",
        store.Summary(
            report_date=dt.date(2026, 11, 19),
            target="postgres",
            model=None,
            prompt_hash=None,
            prompt_tokens=None,
            completion_tokens=None,
            llm_seconds=None,
            total_seconds=1.0,
            facts={"facts": []},
            model_json=None,
            message="*Briefing* for the team",
            used_fallback=True,
            fallback_reason="test",
        ),
    )
    ledger = DeliveryLedger("postgres")
    ledger.ensure_table()
    ledger.start_attempt(dt.date(2026, 11, 19), "whatsapp:+15550000001", "hash")
    execute(warehouse.env["DATABASE_URL"], SUPABASE_ROLES)
    yield warehouse


def execute(url: str, sql: str) -> None:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


def relations(url: str) -> list[tuple[str, str]]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            "select n.nspname || '.' || c.relname, c.relkind from pg_class c join pg_namespace n "
            "on n.oid = c.relnamespace where n.nspname in ('zoho_raw', 'analytics', 'analytics_staging', "
            "'analytics_intermediate') "
            "and c.relkind in ('r', 'v', 'p', 'm') order by 1"
        )
        found = cur.fetchall()
    conn.close()
    return found


def as_role(url: str, role: str, sql: str) -> tuple[str, Any]:
    """What `role` gets for `sql`, through the login role the Data API uses: ("rows", n) or ("refused", sqlstate)."""
    conn = psycopg2.connect(url)
    try:
        cur = conn.cursor()
        cur.execute(f"set role {role}")
        try:
            cur.execute(sql)
        except psycopg2.Error as exc:
            return "refused", exc.pgcode
        return "rows", cur.fetchone()[0] if cur.description else cur.rowcount
    finally:
        conn.rollback()
        conn.close()


def lockdown(ws: Any, *args: str) -> str:
    return ws.run("python", "-m", "warehouse.supabase", "lockdown", *args).stdout


def test_anon_and_authenticated_reach_nothing_even_with_supabases_documented_grants(supabase: Any) -> None:
    """GIVEN the warehouse locked down (with the analyst role)
    WHEN both project schemas are then exposed with the grants Supabase documents, and dbt rebuilds the models
    THEN anon and authenticated read no row of any table or view, insert, update, delete and truncate nothing;
    the analyst reads the marts, but neither the raw data, the briefings nor the delivery ledger."""
    url = supabase.env["DATABASE_URL"]
    lockdown(supabase, "--analyst")
    lockdown(supabase, "--analyst")  # idempotent
    for schema in ("analytics", "zoho_raw", "analytics_staging", "analytics_intermediate"):
        execute(url, documented_exposure(schema))
    supabase.run("dbt", "run", "--target", "postgres", "--target-path", str(supabase.root / "dbt" / "target-pg"))

    found = relations(url)
    assert {
        "analytics.deals",
        "analytics.kpi_daily",
        "analytics.ai_summaries",
        "analytics.briefing_deliveries",
        "zoho_raw.deals",
    } <= {name for name, _ in found}
    assert any(kind == "v" for _, kind in found)
    for role in ("anon", "authenticated"):
        for name, kind in found:
            read = as_role(url, role, f"select count(*) from {name}")
            assert read in (("rows", 0), ("refused", "42501")), (role, name, read)
            if kind != "r":
                continue
            assert as_role(url, role, f"delete from {name}") in (("rows", 0), ("refused", "42501")), (role, name)
            column = _nullable_column(url, name)
            if column:
                assert as_role(url, role, f"update {name} set {column} = null") in (
                    ("rows", 0),
                    ("refused", "42501"),
                ), (role, name)
            assert as_role(url, role, f"insert into {name} default values")[0] == "refused", (role, name)
            assert as_role(url, role, f"truncate {name}")[0] == "refused", (role, name)

    assert as_role(url, "crm_analyst", "select count(*) from analytics.deals")[1] > 0
    assert as_role(url, "crm_analyst", "select count(*) from analytics.kpi_daily")[1] > 0
    for private in ("analytics.ai_summaries", "analytics.briefing_deliveries", "zoho_raw.deals"):
        assert as_role(url, "crm_analyst", f"select count(*) from {private}") == ("refused", "42501"), private
    with (
        psycopg2.connect(url) as conn,
        conn.cursor() as cur,
    ):  # the owner (the pipeline, dbt, the briefing) is unaffected
        cur.execute("select count(*) from analytics.ai_summaries")
        assert cur.fetchone()[0] == 1
    conn.close()


def test_without_the_lockdown_the_documented_grants_expose_everything(supabase: Any) -> None:
    """GIVEN the warehouse as the pipeline and dbt leave it, with no lockdown
    WHEN analytics is exposed with the grants Supabase documents
    THEN anon reads every deal and the briefings, and can empty a table: what the lockdown is for."""
    url = supabase.env["DATABASE_URL"]
    execute(url, documented_exposure("analytics"))

    assert as_role(url, "anon", "select count(*) from analytics.deals")[1] > 0
    assert as_role(url, "anon", "select count(*) from analytics.ai_summaries") == ("rows", 1)
    assert as_role(url, "anon", "truncate analytics.ai_summaries") == ("rows", -1)


def test_without_the_exposure_grants_the_api_roles_cannot_even_see_the_schemas(supabase: Any) -> None:
    """GIVEN the warehouse locked down, and the schemas not exposed
    WHEN anon asks for a mart
    THEN it is refused outright (no usage on the schema)."""
    url = supabase.env["DATABASE_URL"]
    lockdown(supabase)

    assert as_role(url, "anon", "select count(*) from analytics.deals") == ("refused", "42501")
    assert as_role(url, "authenticated", "select count(*) from zoho_raw.leads") == ("refused", "42501")


LOCKDOWNS = 10


def test_every_lockdown_passes_while_postgres_analyses_the_tables(supabase: Any) -> None:
    """GIVEN a maintenance job running a database-wide ANALYZE over and over (autovacuum analyses the tables
    the same way after each load)
    WHEN the lockdown runs 10 times meanwhile
    THEN every lockdown succeeds at its first attempt and so does every ANALYZE (before the lockdown took its
    locks first, 8 of 10 lockdowns ended "deadlock detected": ANALYZE waited on the lockdown's change to a
    table's pg_class row while holding the table's lock, and the lockdown waited on that lock)."""
    url = supabase.env["DATABASE_URL"]
    stop, analyses, analyse_errors = threading.Event(), [], []

    def analyse_over_and_over() -> None:
        conn = psycopg2.connect(url)
        conn.autocommit = True
        with conn.cursor() as cur:
            while not stop.is_set():
                try:
                    cur.execute("analyze")
                    analyses.append(time.monotonic())
                except psycopg2.Error as exc:
                    analyse_errors.append(str(exc).splitlines()[0])
        conn.close()

    maintenance = threading.Thread(target=analyse_over_and_over)
    maintenance.start()
    try:
        results = [
            supabase.run("python", "-m", "warehouse.supabase", "lockdown", check=False, timeout=120)
            for _ in range(LOCKDOWNS)
        ]
    finally:
        stop.set()
        maintenance.join()

    failed = [r.stderr.strip().splitlines()[-1] for r in results if r.returncode != 0]
    assert failed == [], f"{len(failed)} of {LOCKDOWNS} lockdowns failed: {failed[:3]}"
    assert not any("note: lockdown attempt" in r.stderr for r in results)
    assert analyse_errors == []
    assert len(analyses) >= 2  # the ANALYZE ran beside the lockdowns, not once before them


def test_a_lockdown_that_meets_a_deadlock_with_a_reader_tries_again_and_passes(supabase: Any) -> None:
    """GIVEN a reader's transaction holding a raw table while the lockdown waits for it
    WHEN the reader then asks for a mart the lockdown has locked (a deadlock, which PostgreSQL ends by
    cancelling the lockdown's attempt)
    THEN the reader gets its rows, and the lockdown says its attempt ended in a deadlock, tries again once the
    reader is done, and passes (exit 0)."""
    url = supabase.env["DATABASE_URL"]
    reader = psycopg2.connect(url)
    cur = reader.cursor()
    cur.execute("set deadlock_timeout = '60s'")  # the deadlock is found on the lockdown's side, every time
    cur.execute("select count(*) from zoho_raw.deals")
    lockdown_run = supabase.start("python", "-m", "warehouse.supabase", "lockdown")
    try:
        _wait_until_waiting_for_a_lock(url, lockdown_run, reader.get_backend_pid())
        cur.execute("select count(*) from analytics.deals")
        assert cur.fetchone()[0] > 0
        reader.commit()
        out, err = lockdown_run.communicate(timeout=120)
    finally:
        lockdown_run.kill()
        reader.close()

    assert lockdown_run.returncode == 0, err
    assert "note: lockdown attempt 1 of 5 ended: deadlock detected; trying again" in err, err
    assert "relations)" in out
    assert as_role(url, "anon", "select count(*) from analytics.deals") == ("refused", "42501")


def _wait_until_waiting_for_a_lock(url: str, process: subprocess.Popen[str], reader: int) -> None:
    """Until the lockdown's session waits for a lock (the reader's table)."""
    conn = psycopg2.connect(url)
    conn.autocommit = True  # each look a fresh snapshot of pg_stat_activity
    deadline = time.monotonic() + 60
    try:
        with conn.cursor() as cur:
            while process.poll() is None and time.monotonic() < deadline:
                cur.execute(
                    "select count(*) from pg_stat_activity where datname = current_database() "
                    "and wait_event_type = 'Lock' and pid <> %s",
                    [reader],
                )
                if cur.fetchone()[0]:
                    return
                time.sleep(0.05)
    finally:
        conn.close()
    raise AssertionError("the lockdown did not wait for the reader's table")


def _nullable_column(url: str, name: str) -> str | None:
    schema, table = name.split(".")
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            "select column_name from information_schema.columns where table_schema = %s and table_name = %s "
            "and is_nullable = 'YES' order by ordinal_position limit 1",
            [schema, table],
        )
        row = cur.fetchone()
    conn.close()
    return f'"{row[0]}"' if row else None
