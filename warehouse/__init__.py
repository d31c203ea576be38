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
"""

from __future__ import annotations

import datetime as dt
import os
import shlex
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Literal
from urllib.parse import parse_qs, quote, unquote, urlsplit

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RAW_SCHEMA = "zoho_raw"
MARTS_SCHEMA = "analytics"
# dbt builds staging and intermediate models next to the marts, in schemas of their own (dbt_project.yml).
STAGING_SCHEMA = f"{MARTS_SCHEMA}_staging"
INTERMEDIATE_SCHEMA = f"{MARTS_SCHEMA}_intermediate"
DEFAULT_DUCKDB_FILE = "warehouse.duckdb"

Target = Literal["duckdb", "postgres"]
TARGETS: tuple[Target, ...] = ("duckdb", "postgres")


class ConfigError(RuntimeError):
    """A required setting is missing or malformed; the message names the variable."""


def as_date(value: Any) -> "dt.date":
    """A date column's value as a date: DuckDB and psycopg2 hand some back as datetimes."""
    return value.date() if isinstance(value, dt.datetime) else value


def duckdb_path() -> Path:
    """The DuckDB file: `DUCKDB_PATH`, relative paths taken from the project root."""
    raw = os.environ.get("DUCKDB_PATH") or DEFAULT_DUCKDB_FILE
    path = Path(raw).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path


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
        if read_only and not path.exists():
            raise ConfigError(f"DUCKDB_PATH: no warehouse at {path}; run the pipeline and dbt build first")
        conn = duckdb.connect(str(path), read_only=read_only)
    elif target == "postgres":
        import psycopg2

        conn = psycopg2.connect(postgres_url())
    else:
        raise ConfigError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
    try:
        yield conn
    finally:
        conn.close()


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
    args = sys.argv[1:] if argv is None else argv
    if args != ["pg-env"]:
        print("usage: python -m warehouse pg-env   # prints PG* export lines from DATABASE_URL", file=sys.stderr)
        return 2
    try:
        env = libpq_env(postgres_url())
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, value in env.items():
        print(f"export {name}={shlex.quote(value)}")
    return 0
