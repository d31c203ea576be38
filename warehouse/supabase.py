"""Least privilege for the project's schemas on PostgreSQL, written for Supabase's roles.

    python -m warehouse.supabase lockdown [--analyst]

Supabase serves every schema listed under "Exposed schemas" over its Data API
to the `anon` role (anyone holding the public API key) and `authenticated`
(any signed-in user). `zoho_raw` and `analytics` hold every lead and deal name
and amount, the briefings and the recipients' numbers: they must never be
readable there, even if someone later exposes `analytics` and runs the grants
Supabase documents for a custom schema (which grant ALL on every table).

So the command (idempotent; run it after every `dbt build`, as `make daily` and
the workflow do) makes access depend on more than grants:

- revokes everything on the schemas, their tables, sequences and routines from
  PUBLIC, `anon` and `authenticated` (the roles that exist), and the default
  privileges of the role that creates the tables;
- enables row level security on every table, with no policy for those roles:
  even with a grant they read no row and write none;
- adds a trigger refusing TRUNCATE to anyone but the table's owner (TRUNCATE
  ignores row level security);
- makes every view `security_invoker`, so a view cannot lend its owner's rights
  to whoever selects from it (dbt's staging views read `zoho_raw`);
- installs an event trigger that does all of the above to every table and view
  created later in those schemas (dbt recreates its models on every build).
  Creating an event trigger needs a superuser or Supabase's `postgres` role;
  where it is refused, the rest still applies and reruns fix new tables.

`--analyst` also creates `crm_analyst` (NOLOGIN; grant it to a login role, or
`alter role crm_analyst login password '...'`), allowed to SELECT the marts in
`analytics` and nothing else: not the raw data, not the briefings
(`ai_summaries`) and not the delivery ledger (`briefing_deliveries`).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from warehouse import (
    INTERMEDIATE_SCHEMA,
    MARTS_SCHEMA,
    RAW_SCHEMA,
    STAGING_SCHEMA,
    ConfigError,
    connect,
    database_errors,
    error_reason,
)

# Every schema the project creates: the staging and intermediate views read the raw data, so they are as
# private as it is.
PROJECT_SCHEMAS = (RAW_SCHEMA, STAGING_SCHEMA, INTERMEDIATE_SCHEMA, MARTS_SCHEMA)
API_ROLES = ("anon", "authenticated")  # Supabase's Data API roles: the public key, and any signed-in user
ANALYST_ROLE = "crm_analyst"
NOT_MARTS = ("ai_summaries", "briefing_deliveries")  # in analytics, but no analyst's business
GUARD_FUNCTION = f"{MARTS_SCHEMA}.crm_intelligence_refuse_truncate"
LOCKDOWN_FUNCTION = f"{MARTS_SCHEMA}.crm_intelligence_lock_new_relations"
EVENT_TRIGGER = "crm_intelligence_lock_new_relations"
TRUNCATE_TRIGGER = "crm_intelligence_refuse_truncate"
ANALYST_POLICY = "crm_analyst_reads_marts"
# An attempt that ends on one of these is rolled back and tried again: deadlock_detected, lock_not_available
# (LOCK_TIMEOUT passed), undefined_table (a relation dropped between listing and locking it).
RETRIED = ("40P01", "55P03", "42P01")
ATTEMPTS = 5
LOCK_TIMEOUT = "30s"
RETRY_PAUSE_SECONDS = 1.0

_SCHEMA_LIST = ", ".join(f"'{s}'" for s in PROJECT_SCHEMAS)
_NOT_MARTS_LIST = ", ".join(f"'{t}'" for t in NOT_MARTS)

# Locks one relation (by oid); used by the command for existing relations and by the event trigger for new ones.
LOCK_RELATION_SQL = f"""
create or replace function {MARTS_SCHEMA}.crm_intelligence_lock_relation(rel regclass) returns void
language plpgsql as $$
declare
    kind "char";
    nsp text;
    name text;
    api_role text;
begin
    select c.relkind, n.nspname, c.relname into kind, nsp, name
    from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = rel;
    execute format('revoke all on %s from public', rel);
    for api_role in select rolname from pg_roles where rolname in ({", ".join(f"'{r}'" for r in API_ROLES)}) loop
        execute format('revoke all on %s from %I', rel, api_role);
    end loop;
    if kind in ('r', 'p') then
        execute format('alter table %s enable row level security', rel);
        if not exists (select 1 from pg_trigger where tgrelid = rel and tgname = '{TRUNCATE_TRIGGER}') then
            execute format('create trigger {TRUNCATE_TRIGGER} before truncate on %s '
                           'for each statement execute function {GUARD_FUNCTION}()', rel);
        end if;
        if nsp = '{MARTS_SCHEMA}' and name not in ({_NOT_MARTS_LIST})
           and exists (select 1 from pg_roles where rolname = '{ANALYST_ROLE}') then
            execute format('grant select on %s to {ANALYST_ROLE}', rel);
            if not exists (select 1 from pg_policy where polrelid = rel and polname = '{ANALYST_POLICY}') then
                execute format('create policy {ANALYST_POLICY} on %s for select to {ANALYST_ROLE} using (true)', rel);
            end if;
        end if;
    elsif kind in ('v', 'm') then
        if kind = 'v' then
            execute format('alter view %s set (security_invoker = true)', rel);
        end if;
    end if;
end
$$
"""

GUARD_SQL = f"""
create or replace function {GUARD_FUNCTION}() returns trigger
language plpgsql as $$
begin
    if not pg_has_role(current_user, (select relowner from pg_class where oid = tg_relid), 'member') then
        raise exception 'only the owner of %.% may truncate it', tg_table_schema, tg_table_name
            using errcode = 'insufficient_privilege';
    end if;
    return null;
end
$$
"""

EVENT_SQL = f"""
create or replace function {LOCKDOWN_FUNCTION}() returns event_trigger
language plpgsql as $$
declare
    created record;
begin
    for created in
        select objid from pg_event_trigger_ddl_commands()
        where object_type in ('table', 'view', 'materialized view') and schema_name in ({_SCHEMA_LIST})
    loop
        perform {MARTS_SCHEMA}.crm_intelligence_lock_relation(created.objid::regclass);
    end loop;
end
$$
"""


def lockdown(*, analyst: bool = False, attempts: int = ATTEMPTS) -> list[str]:
    """Apply the lockdown to the PostgreSQL warehouse; returns one line per thing done, for the user.

    One transaction changes the grants, row level security and triggers of every relation. PostgreSQL's own
    ANALYZE (autovacuum after each load, or a maintenance job) holds a table's lock while it writes the
    table's statistics into its `pg_class` row, and waits there for any transaction that changed the row:
    the lockdown, once it had revoked the table's grants, then waited for the table's lock to enable row
    level security, and most lockdowns beside an ANALYZE ended "deadlock detected". So the transaction
    first locks every relation, in one order, before it changes any. An attempt that still meets a deadlock
    (a reader holding one table while it asks for another) or a lock held past LOCK_TIMEOUT is rolled back
    and tried again.
    """
    with connect("postgres") as conn:
        for attempt in range(1, attempts + 1):
            try:
                done = _lock_down(conn, analyst=analyst)
                break
            except database_errors() as exc:
                conn.rollback()
                if getattr(exc, "pgcode", None) not in RETRIED or attempt == attempts:
                    raise
                print(
                    f"note: lockdown attempt {attempt} of {attempts} ended: {error_reason(exc)}; trying again",
                    file=sys.stderr,
                )
                time.sleep(RETRY_PAUSE_SECONDS * attempt)
        done += _install_event_trigger(conn)
    return done


def _lock_down(conn: Any, *, analyst: bool) -> list[str]:
    """One attempt, committed on success."""
    done: list[str] = []
    cur = conn.cursor()
    cur.execute(
        "select c.oid::regclass::text from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        f"where n.nspname in ({_SCHEMA_LIST}) and c.relkind in ('r', 'p', 'v', 'm') "
        "order by c.relkind in ('v', 'm'), 1"  # tables first: locking a view locks the tables it reads too
    )
    relations = [row[0] for row in cur.fetchall()]
    cur.execute(f"set local lock_timeout = '{LOCK_TIMEOUT}'")
    if relations:  # every lock before the first change (see lockdown)
        cur.execute(f"lock table {', '.join(relations)} in access exclusive mode")
    api_roles = _existing_roles(cur, API_ROLES)
    revokees = ", ".join(["public", *api_roles])
    for schema in PROJECT_SCHEMAS:
        cur.execute(f"create schema if not exists {schema}")
    cur.execute(GUARD_SQL)
    cur.execute(LOCK_RELATION_SQL)
    cur.execute(EVENT_SQL)
    if analyst and not _existing_roles(cur, (ANALYST_ROLE,)):
        cur.execute(f"create role {ANALYST_ROLE} nologin")
        done.append(f"created the role {ANALYST_ROLE} (NOLOGIN: grant it to a login role to use it)")
    for schema in PROJECT_SCHEMAS:
        cur.execute(f"revoke all on schema {schema} from {revokees}")
        for kind in ("tables", "sequences", "routines"):
            cur.execute(f"revoke all on all {kind} in schema {schema} from {revokees}")
            plural = "functions" if kind == "routines" else kind
            cur.execute(f"alter default privileges in schema {schema} revoke all on {plural} from {revokees}")
    # The functions stay callable by the trigger machinery only.
    for function in (
        GUARD_FUNCTION + "()",
        LOCKDOWN_FUNCTION + "()",
        f"{MARTS_SCHEMA}.crm_intelligence_lock_relation(regclass)",
    ):
        cur.execute(f"revoke all on function {function} from {revokees}")
    for relation in relations:
        cur.execute(f"select {MARTS_SCHEMA}.crm_intelligence_lock_relation(%s::regclass)", [relation])
    done.append(
        f"revoked {', '.join(PROJECT_SCHEMAS)} from {revokees}; row level security and the TRUNCATE guard "
        f"on every table, security_invoker on every view ({len(relations)} relations)"
    )
    if _existing_roles(cur, (ANALYST_ROLE,)):
        cur.execute(f"grant usage on schema {MARTS_SCHEMA} to {ANALYST_ROLE}")
        done.append(
            f"{ANALYST_ROLE} may read the marts in {MARTS_SCHEMA} (not {', '.join(NOT_MARTS)}, not {RAW_SCHEMA})"
        )
    conn.commit()
    return done


def _install_event_trigger(conn: Any) -> list[str]:
    """Separately: refused without superuser-like rights, and the rest must stand anyway."""
    cur = conn.cursor()
    try:
        cur.execute(f"drop event trigger if exists {EVENT_TRIGGER}")
        cur.execute(
            f"create event trigger {EVENT_TRIGGER} on ddl_command_end "
            "when tag in ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'CREATE VIEW', 'CREATE MATERIALIZED VIEW') "
            f"execute function {LOCKDOWN_FUNCTION}()"
        )
        conn.commit()
        return ["tables and views created later in these schemas are locked down as they are created"]
    except database_errors() as exc:
        conn.rollback()
        return [
            f"warning: no event trigger ({error_reason(exc)}); rerun this command after every dbt build "
            "(make daily does)"
        ]


def _existing_roles(cur: Any, names: tuple[str, ...]) -> list[str]:
    cur.execute("select rolname from pg_roles where rolname = any(%s) order by rolname", [list(names)])
    return [row[0] for row in cur.fetchall()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m warehouse.supabase", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["lockdown"])
    parser.add_argument(
        "--analyst", action="store_true", help=f"also create {ANALYST_ROLE}, a read-only role for the marts"
    )
    args = parser.parse_args(argv)
    try:
        for line in lockdown(analyst=args.analyst):
            print(line)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except database_errors() as exc:
        print(f"error: the lockdown could not be applied: {error_reason(exc)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
