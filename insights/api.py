"""A small read-only HTTP API over the marts and the briefings, for dashboards and scripts.

    python -m insights.api [--host 127.0.0.1] [--port 8000] [--target duckdb|postgres]

    GET /api/metrics[?date=YYYY-MM-DD]   the day's KPIs from analytics.kpi_daily (default: the latest day)
    GET /api/summaries/latest            the latest sent briefing from analytics.ai_summaries (else the latest dry run)
    GET /api/health                      warehouse reachable, last sync, last delivery (no token needed)
    GET /docs, /openapi.json             interactive documentation

When API_TOKEN is set, every route but health requires `Authorization: Bearer <API_TOKEN>`.
Each request opens its own connection (DuckDB read-only), so the pipeline and
dbt can write the warehouse between two requests.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hmac
import json
import logging
import sys
from contextlib import ExitStack, contextmanager
from decimal import Decimal
from typing import Any, Iterator

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from insights.ledger import TABLE as DELIVERIES_TABLE
from insights.settings import ApiSettings
from warehouse import MARTS_SCHEMA, RAW_SCHEMA, TARGETS, ConfigError, Target, connect, placeholder, postgres_url

log = logging.getLogger(__name__)

KPI_TABLE = f"{MARTS_SCHEMA}.kpi_daily"
SUMMARIES_TABLE = f"{MARTS_SCHEMA}.ai_summaries"


class WarehouseUnavailable(RuntimeError):
    """The warehouse cannot be opened (missing file, locked by a writer, Postgres down, no config)."""


def create_app(target: Target, settings: ApiSettings | None = None) -> FastAPI:
    """The API over `target`'s warehouse; `settings` default to the environment (API_TOKEN)."""
    settings = settings or ApiSettings.from_env()
    app = FastAPI(
        title="CRM Intelligence API",
        version="1.0",
        description="Sales KPIs from the Zoho CRM marts and the daily AI briefings. "
        "Send `Authorization: Bearer <API_TOKEN>` when the server has a token.",
    )
    bearer = HTTPBearer(auto_error=False, description="the server's API_TOKEN")

    def require_token(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if settings.token is None:
            return
        offered = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(offered.encode(), settings.token.encode()):
            raise HTTPException(
                status_code=401,
                detail="missing or wrong bearer token: send 'Authorization: Bearer <API_TOKEN>'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @app.exception_handler(WarehouseUnavailable)
    def unavailable(request: Request, exc: WarehouseUnavailable) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": str(exc)})

    @app.get("/api/metrics", dependencies=[Depends(require_token)], summary="KPIs of one day")
    def metrics(
        date: dt.date | None = Query(default=None, description="the day (org timezone); default: the latest day"),
    ) -> dict[str, Any]:
        with _warehouse(target) as conn:
            if not conn.table_exists(KPI_TABLE):
                raise WarehouseUnavailable(f"{KPI_TABLE} does not exist yet: run the pipeline and `dbt build`")
            p = conn.p
            if date is None:
                date = conn.scalar(f"select max(kpi_date) from {KPI_TABLE}")
                if date is None:
                    raise HTTPException(status_code=404, detail=f"{KPI_TABLE} is empty: the CRM has no data yet")
            rows = conn.rows(f"select metric, value, unit from {KPI_TABLE} where kpi_date = {p} order by metric", [date])
            if not rows:
                first, last = conn.row(f"select min(kpi_date), max(kpi_date) from {KPI_TABLE}")
                raise HTTPException(status_code=404, detail=f"no metrics for {date}; the marts cover {first} to {last}")
        return {
            "as_of": _json_value(date),
            "target": target,
            "metrics": {r["metric"]: {"value": _number(r["value"], r["unit"]), "unit": r["unit"]} for r in rows},
        }

    @app.get("/api/summaries/latest", dependencies=[Depends(require_token)], summary="The latest briefing")
    def latest_summary() -> dict[str, Any]:
        with _warehouse(target) as conn:
            row = None
            if conn.table_exists(SUMMARIES_TABLE):
                # A dry run was never sent: prefer the newest briefing that went out, and show a dry
                # run only while there is nothing else (e.g. right after `make demo`).
                rows = conn.rows(
                    f"select * from {SUMMARIES_TABLE} "
                    "order by case when dry_run then 1 else 0 end, created_at desc, report_date desc limit 1"
                )
                row = rows[0] if rows else None
        if row is None:
            raise HTTPException(
                status_code=404, detail="no briefing has been generated yet: run `python -m insights.deliver`"
            )
        return {key: _json_value(value, parse_json=key.endswith("_json")) for key, value in row.items()}

    @app.get("/api/health", summary="Is the warehouse reachable; when did data and briefings last move")
    def health() -> JSONResponse:
        try:
            with _warehouse(target) as conn:
                last_sync = last_delivery = None
                if conn.table_exists(f"{RAW_SCHEMA}._dlt_loads"):
                    last_sync = conn.scalar(f"select max(inserted_at) from {RAW_SCHEMA}._dlt_loads where status = 0")
                if conn.table_exists(DELIVERIES_TABLE):
                    # No recipients or message SIDs here: health answers without a token.
                    delivered = conn.rows(
                        f"select report_date, status, updated_at from {DELIVERIES_TABLE} order by updated_at desc limit 1",
                    )
                    last_delivery = {k: _json_value(v) for k, v in delivered[0].items()} if delivered else None
        except WarehouseUnavailable as exc:
            return JSONResponse(
                status_code=503,
                content={"status": "unavailable", "target": target, "warehouse": "unreachable", "detail": str(exc)},
            )
        return JSONResponse(
            content={
                "status": "ok",
                "target": target,
                "warehouse": "reachable",
                "last_sync": _json_value(last_sync),
                "last_delivery": last_delivery,
            }
        )

    return app


# --------------------------------------------------------------------------- warehouse access


@contextmanager
def _warehouse(target: Target) -> Iterator[Any]:
    """A read-only connection for one request; failing to open it is `WarehouseUnavailable` (503)."""
    with ExitStack() as stack:
        try:
            conn = stack.enter_context(connect(target, read_only=True))
            if target == "postgres":
                conn.set_session(readonly=True, autocommit=True)
        except ConfigError as exc:
            raise WarehouseUnavailable(str(exc)) from exc
        except Exception as exc:
            # The driver's first line says what failed (a locked file, a refused connection), never a password.
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise WarehouseUnavailable(f"cannot open the {target} warehouse: {first_line}") from exc
        yield _Connection(conn, placeholder(target))


class _Connection:
    """The few queries the API runs, on either driver."""

    def __init__(self, conn: Any, p: str) -> None:
        self._conn, self.p = conn, p

    def table_exists(self, qualified: str) -> bool:
        schema, table = qualified.split(".")
        sql = f"select count(*) from information_schema.tables where table_schema = {self.p} and table_name = {self.p}"
        return bool(self.scalar(sql, [schema, table]))

    def rows(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        cur = self._conn.cursor()
        cur.execute(sql, params or [])
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]

    def row(self, sql: str, params: list[Any] | None = None) -> tuple[Any, ...]:
        cur = self._conn.cursor()
        cur.execute(sql, params or [])
        return tuple(cur.fetchone())

    def scalar(self, sql: str, params: list[Any] | None = None) -> Any:
        return self.row(sql, params)[0]


def _number(value: Any, unit: str) -> int | float | None:
    """Counts as integers, amounts and ratios as floats; null stays null (an undefined ratio)."""
    if value is None:
        return None
    if unit == "count" and float(value).is_integer():
        return int(value)
    return float(value)


def _json_value(value: Any, *, parse_json: bool = False) -> Any:
    if isinstance(value, dt.datetime):
        return (value.astimezone(dt.timezone.utc) if value.tzinfo else value).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if parse_json and isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m insights.api", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: %(default)s; 0 picks a free one)")
    parser.add_argument("--target", choices=TARGETS, default="duckdb", help="warehouse to read (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    try:
        if args.target == "postgres":
            postgres_url()  # fail now, naming the variable, rather than on every request
        settings = ApiSettings.from_env()
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    if settings.token is None:
        log.warning("API_TOKEN is not set: anyone who can reach %s:%s can read the metrics", args.host, args.port)

    import uvicorn

    uvicorn.run(create_app(args.target, settings), host=args.host, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
