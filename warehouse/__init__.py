"""Where the warehouse lives, read from the environment in one place.

Shared by every stage (extract, the briefing, the API, tests, benchmarks), so it is
a package of its own: `pipelines/` and `insights/` both import it, never each other.

The pipeline, dbt, the briefing runner, the API, the tests and the benchmarks all
point at the same warehouse: a DuckDB file (the embedded default) or a Postgres
database (production, e.g. Supabase). Keeping the rules here means a user sets
`DUCKDB_PATH` or `DATABASE_URL` once and every stage agrees on it.

dbt's Postgres target cannot read a URL, so it reads the standard libpq variables
(PGHOST, PGUSER, ...). `python -m warehouse pg-env` prints them, derived
from `DATABASE_URL`, as `export` lines for `eval`.

Right after `make demo` the only warehouse is the demo's (demo.duckdb): the
commands that only read (the API, `make check`, `make docs`, `make mf`) read it
until warehouse.duckdb exists, while the pipeline and dbt build always write the
configured file. `python -m warehouse exec -- COMMAND` runs a command (dbt, mf,
the doctor) with the file so resolved, so dbt's profile reads the same one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import re
import shlex
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, quote, unquote, urlsplit

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RAW_SCHEMA = "zoho_raw"
MARTS_SCHEMA = "analytics"
# dbt builds staging and intermediate models next to the marts, in schemas of their own (dbt_project.yml).
STAGING_SCHEMA = f"{MARTS_SCHEMA}_staging"
INTERMEDIATE_SCHEMA = f"{MARTS_SCHEMA}_intermediate"
DEFAULT_DUCKDB_FILE = "warehouse.duckdb"
# What `make demo` builds, from scratch on every run: the daily job never writes there.
DEMO_DUCKDB_FILE = "demo.duckdb"
# A PostgreSQL server being restarted refuses connections, or answers that it is starting up or shutting down,
# for a few seconds. Connecting waits this long before each new attempt: their sum bounds what a server that is
# really down adds before the error.
CONNECT_RETRY_DELAYS: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
_RESTARTING = re.compile(
    r"connection refused|the database system is (starting up|shutting down|not yet accepting connections)",
    re.IGNORECASE,
)

log = logging.getLogger(__name__)

Target = Literal["duckdb", "postgres"]
TARGETS: tuple[Target, ...] = ("duckdb", "postgres")


class ConfigError(RuntimeError):
    """A required setting is missing or malformed; the message names the variable."""


def as_date(value: Any) -> dt.date:
    """A date column's value as a date: DuckDB and psycopg2 hand some back as datetimes."""
    return value.date() if isinstance(value, dt.datetime) else value


def duckdb_path() -> Path:
    """The DuckDB file: `DUCKDB_PATH`, relative paths taken from the project root."""
    raw = os.environ.get("DUCKDB_PATH") or DEFAULT_DUCKDB_FILE
    path = Path(raw).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path


def use_the_demo_warehouse_if_it_is_the_only_one() -> Path | None:
    """For a command that only reads: right after `make demo`, read the demo's file rather than none.

    Only while DUCKDB_PATH is unset and warehouse.duckdb does not exist. Commands that write (the pipeline,
    dbt build, the delivery) never call this, so a user's own org never lands in the file `make demo` deletes.
    The choice is made in this process's environment, so every later `duckdb_path()` and every command it
    starts (dbt reads DUCKDB_PATH in its profile) agree on it. Returns the demo's file when it was chosen.
    """
    demo = PROJECT_ROOT / DEMO_DUCKDB_FILE
    if os.environ.get("DUCKDB_PATH") or (PROJECT_ROOT / DEFAULT_DUCKDB_FILE).exists() or not demo.exists():
        return None
    os.environ["DUCKDB_PATH"] = str(demo)
    return demo


def read_the_demo_warehouse_if_it_is_the_only_one() -> None:
    """`use_the_demo_warehouse_if_it_is_the_only_one`, for a command a person runs: it says so on stderr."""
    if use_the_demo_warehouse_if_it_is_the_only_one() is not None:
        print(
            f"{DEFAULT_DUCKDB_FILE} does not exist: reading the demo's warehouse {DEMO_DUCKDB_FILE} "
            "(set DUCKDB_PATH to choose)",
            file=sys.stderr,
        )


def check_duckdb_file(path: Path, *, must_exist: bool) -> None:
    """Refuse, naming the file and the fix, what DuckDB would otherwise mishandle.

    A path that does not exist would be created as an empty warehouse that every later reader takes for the
    real one; an empty file (0 bytes: a copy or a download that failed) is refused by DuckDB with an error that
    reads like a failed run. Both are settings to fix (exit 2), not something to run again.
    """
    if not path.exists():
        if must_exist:
            raise ConfigError(f"DUCKDB_PATH: no warehouse at {path}; run the pipeline and dbt build first")
    elif path.is_file() and path.stat().st_size == 0:
        raise ConfigError(
            f"DUCKDB_PATH: {path} is an empty file (0 bytes), not a DuckDB warehouse; delete it and "
            "run the pipeline and dbt build (make daily), or set DUCKDB_PATH to your warehouse"
        )


def postgres_url() -> str:
    """The Postgres connection URL.

    Looked up in dlt's own variable first (so an existing dlt setup keeps
    working), then `DATABASE_URL` (what Supabase and most hosts hand out), then
    the libpq variables dbt uses.
    """
    for name in ("DESTINATION__POSTGRES__CREDENTIALS", "DATABASE_URL"):
        value = os.environ.get(name, "").strip()
        if value:
            _check_url(name, value)
            return value
    if os.environ.get("PGHOST"):
        user = quote(os.environ.get("PGUSER", "postgres"), safe="")
        password = quote(os.environ.get("PGPASSWORD", ""), safe="")
        host = os.environ["PGHOST"]
        port = os.environ.get("PGPORT", "5432")
        database = os.environ.get("PGDATABASE", "postgres")
        url = f"postgresql://{user}:{password}@{host}:{port}/{database}"
        if os.environ.get("PGSSLMODE"):
            url += f"?sslmode={os.environ['PGSSLMODE']}"
        return url
    raise ConfigError(
        "DATABASE_URL is not set (a postgresql:// URL; DESTINATION__POSTGRES__CREDENTIALS or PGHOST also work)"
    )


def _check_url(name: str, url: str) -> None:
    """Fail early, without echoing the URL (it holds a password), when it cannot be parsed.

    Hosts such as Supabase show the string with a password placeholder, so a
    pasted password with `#`, `/` or `@` in it is the usual culprit.
    """
    if not url.startswith(("postgres://", "postgresql://")):
        raise ConfigError(f"{name} must be a postgresql:// URL")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is the check
        if not parts.hostname and "host=" not in parts.query:
            raise ValueError("no host")
    except ValueError:
        raise ConfigError(
            f"{name} is not a valid URL; percent-encode special characters in the password "
            "(# -> %23, / -> %2F, @ -> %40, : -> %3A)"
        ) from None


def libpq_env(url: str) -> dict[str, str]:
    """The libpq variables (what dbt's postgres target reads) equivalent to `url`."""
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    env = {
        "PGHOST": query.get("host") or parts.hostname or "localhost",
        "PGPORT": str(parts.port or query.get("port") or 5432),
        "PGUSER": unquote(parts.username or "postgres"),
        "PGPASSWORD": unquote(parts.password or ""),
        "PGDATABASE": unquote(parts.path.lstrip("/")) or "postgres",
    }
    if "sslmode" in query:
        env["PGSSLMODE"] = query["sslmode"]
    return env


def dlt_postgres_credentials(url: str) -> str:
    """dlt refuses credentials without a password, even for trust auth; give it a placeholder."""
    parts = urlsplit(url)
    if parts.password:
        return url
    user = parts.username or "postgres"
    netloc = f"{user}:unused@{parts.hostname or 'localhost'}"
    if parts.port:
        netloc += f":{parts.port}"
    return parts._replace(netloc=netloc).geturl()


@contextmanager
def connect(target: Target, *, read_only: bool = False) -> Iterator[Any]:
    """A DB-API connection to the warehouse, closed on exit.

    DuckDB allows one writer per file, so readers (the briefing, the API) open
    it read-only and never hold it while the pipeline or dbt write.
    """
    if target == "duckdb":
        import duckdb

        path = duckdb_path()
        check_duckdb_file(path, must_exist=read_only)
        try:
            conn = duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            if "not a valid DuckDB database file" not in str(exc):
                raise
            raise ConfigError(
                f"DUCKDB_PATH: {path} is not a DuckDB warehouse; set DUCKDB_PATH to your warehouse, "
                "or delete the file and run the pipeline and dbt build"
            ) from None
    elif target == "postgres":
        conn = _connect_postgres(postgres_url())
    else:
        raise ConfigError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
    try:
        yield conn
    finally:
        conn.close()


def _connect_postgres(url: str) -> Any:
    """psycopg2's connection, tried again a few times, a little longer each time, while the server restarts.

    A restart (an upgrade, a host's maintenance) makes a run that starts meanwhile fail at once otherwise. Any
    other error (a wrong password, an unknown host or database) is a setting: it is raised at the first attempt.
    Each new attempt is logged in one line that names the server but never the URL, which holds the password.
    """
    import psycopg2

    attempts = len(CONNECT_RETRY_DELAYS) + 1
    for attempt, delay in enumerate(CONNECT_RETRY_DELAYS, start=1):
        try:
            return psycopg2.connect(url)
        except psycopg2.OperationalError as exc:
            restarting = _RESTARTING.search(str(exc))
            if restarting is None:
                raise
            where = libpq_env(url)
            log.warning(
                "PostgreSQL at %s:%s is not available (%s); trying again in %gs (attempt %d of %d)",
                where["PGHOST"],
                where["PGPORT"],
                restarting.group(0).lower(),
                delay,
                attempt + 1,
                attempts,
            )
            time.sleep(delay)
    return psycopg2.connect(url)


def database_errors() -> tuple[type[Exception], ...]:
    """Both drivers' exception bases, so a CLI can turn any of them into one clear line."""
    import duckdb
    import psycopg2

    return (duckdb.Error, psycopg2.Error)


def error_reason(exc: BaseException) -> str:
    """The first line of a driver's error (they run to many: hints, context, the query), or its type."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def placeholder(target: Target) -> str:
    """The DB-API parameter marker of each driver (`?` for DuckDB, `%s` for psycopg2)."""
    return "?" if target == "duckdb" else "%s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m warehouse", description="Where the warehouse is.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{pg-env,exec}")
    commands.add_parser("pg-env", help="print the PG* export lines dbt's postgres target reads, from DATABASE_URL")
    run = commands.add_parser(
        "exec",
        help="run a command that only reads the warehouse (dbt docs, mf, the doctor) on the resolved one",
        description="Run COMMAND with DUCKDB_PATH resolved as for a reader (the demo's file while it is the only "
        "one), or the PG* variables derived from DATABASE_URL, and DBT_TARGET set to the target. "
        "A DuckDB file that does not exist, or is empty, is refused (exit 2) before the command runs.",
    )
    run.add_argument("--target", choices=TARGETS, default="duckdb", help="the warehouse (default: %(default)s)")
    run.add_argument(
        "--no-check",
        action="store_true",
        help="leave a missing warehouse or a wrong setting to the command, which reports it (the doctor)",
    )
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND ...")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == "pg-env":
            for name, value in libpq_env(postgres_url()).items():
                print(f"export {name}={shlex.quote(value)}")
            return 0
        command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not command:
            parser.error("exec needs a command to run, after --")
        os.environ.update(_reader_env(args.target, check=not args.no_check))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        print(f"error: cannot run {command[0]}: {exc.strerror}", file=sys.stderr)
        return 127


def _reader_env(target: Target, *, check: bool) -> dict[str, str]:
    """The settings a command that only reads `target` needs, so that dbt and mf read what Python reads.

    With `check`, a DuckDB file that is not there or empty, or a URL that cannot be read, is refused here in one
    line (exit 2): dbt and mf would bury it in a traceback.
    """
    env = {"DBT_TARGET": target}  # mf has no --target: it connects with the profile's default, DBT_TARGET's
    if target == "duckdb":
        read_the_demo_warehouse_if_it_is_the_only_one()
        path = duckdb_path()
        if check:
            check_duckdb_file(path, must_exist=True)
        env["DUCKDB_PATH"] = str(path)  # absolute: dbt would take a relative one from the working directory
    elif os.environ.get("DATABASE_URL", "").strip() or os.environ.get("DESTINATION__POSTGRES__CREDENTIALS", "").strip():
        try:
            env.update(libpq_env(postgres_url()))  # dbt's postgres target reads the libpq variables, not the URL
        except ConfigError:
            if check:
                raise
    return env
