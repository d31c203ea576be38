"""A small read-only HTTP API over the marts and the briefings, for dashboards and scripts.

    python -m insights.api [--host 127.0.0.1] [--port 8000] [--target duckdb|postgres]

    GET /api/metrics[?date=YYYY-MM-DD]   the day's KPIs from analytics.kpi_daily
                                         (default: the last complete day in CRM_TIMEZONE, like the briefing)
    GET /api/summaries/latest            the latest briefing that was delivered, with its delivery status
                                         (else the latest one built, marked as not delivered or dry run)
    GET /api/health                      status, last sync, last delivery, missed days (no token needed)
    GET /dashboard                       the morning dashboard, one HTML page (`insights.dashboard`); with
                                         API_TOKEN set it asks for the token once, then keeps a session cookie
    GET /docs, /openapi.json             the documentation (a plain page: no script, no CDN)
    POST /twilio/status                  Twilio's status callbacks: each message's status in the ledger
    POST /twilio/inbound                 someone wrote to the sender: a recipient gets their full briefing
    GET /media/charts/<chart>/<day>.png  a chart as PNG for WhatsApp, behind a signed link that expires
                                         (`insights.chart_links`; no token: the signature is the key)

HEAD is answered wherever GET is. When API_TOKEN is set, every route but
health, the documentation and Twilio's requires `Authorization: Bearer <API_TOKEN>`, and
health gives the reason a warehouse cannot be opened only with it. Twilio's
routes accept only requests signed with TWILIO_AUTH_TOKEN for the URL under
PUBLIC_BASE_URL (`insights.replies`): anything else is refused with 403 and
changes nothing.

The API never gets in the way of the daily job. DuckDB lets one process write
a file, and a writer cannot open it while a reader has it open, so the API never
opens the warehouse file at all: it reads a private copy, taken when the file
has changed (the copy is checked to be unchanged by a writer while it was
made), and answers from memory between changes. On PostgreSQL, where readers
and writers do not block each other, requests share a small connection pool.
Either way an answer is at most RELOAD_INTERVAL_SECONDS older than the data.
"""

from __future__ import annotations

import argparse
import datetime as dt
import errno
import hmac
import html
import json
import logging
import shutil
import socket
import sys
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from insights.facts import default_report_date, org_timezone
from insights.ledger import MISSED_LOOKBACK_DAYS
from insights.ledger import TABLE as DELIVERIES_TABLE
from insights.settings import ApiSettings, TwilioSettings
from insights.whatsapp import INBOUND_PATH, STATUS_CALLBACK_PATH
from warehouse import (
    DEFAULT_DUCKDB_FILE,
    DEMO_DUCKDB_FILE,
    MARTS_SCHEMA,
    RAW_SCHEMA,
    TARGETS,
    ConfigError,
    Target,
    duckdb_path,
    postgres_url,
    use_the_demo_warehouse_if_it_is_the_only_one,
)

log = logging.getLogger(__name__)

KPI_TABLE = f"{MARTS_SCHEMA}.kpi_daily"
SUMMARIES_TABLE = f"{MARTS_SCHEMA}.ai_summaries"
SERVED_TABLES = (KPI_TABLE, SUMMARIES_TABLE, DELIVERIES_TABLE, f"{RAW_SCHEMA}._dlt_loads")
# A changed DuckDB file is copied again at most this often; between copies the previous one is served.
RELOAD_INTERVAL_SECONDS = 0.25
COPY_ATTEMPTS = 3  # a copy a writer changed meanwhile is thrown away and taken again
POOL_SIZE = 8  # PostgreSQL connections kept open
MEMO_ENTRIES = 2048  # answers remembered per copy of the DuckDB file

T = TypeVar("T")


class WarehouseUnavailable(RuntimeError):
    """The warehouse cannot be read. `public` is safe for anyone (no path, PID or host); `detail` is the cause."""

    def __init__(self, public: str, detail: str | None = None) -> None:
        super().__init__(public)
        self.public = public
        self.detail = detail or public


class MartsNotBuilt(WarehouseUnavailable):
    """The warehouse answers, but `dbt build` has not made the marts the API serves."""

    def __init__(self) -> None:
        super().__init__(f"{KPI_TABLE} does not exist yet: run the pipeline and `dbt build`")


# --------------------------------------------------------------------------- the app


def create_app(target: Target, settings: ApiSettings | None = None) -> FastAPI:
    """The API over `target`'s warehouse; `settings` default to the environment (API_TOKEN)."""
    settings = settings or ApiSettings.from_env()
    source: _Source = _DuckDBCopy(duckdb_path()) if target == "duckdb" else _PostgresPool()
    app = FastAPI(
        title="CRM Intelligence API",
        version="1.0",
        description="Sales KPIs from the Zoho CRM marts and the daily AI briefings. "
        "Send `Authorization: Bearer <API_TOKEN>` when the server has a token.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.source = source
    app.router.add_event_handler("shutdown", source.close)
    bearer = HTTPBearer(auto_error=False, description="the server's API_TOKEN")

    def token_ok(credentials: HTTPAuthorizationCredentials | None) -> bool:
        if settings.token is None:
            return False  # nobody is "authenticated" on a server without a token
        offered = credentials.credentials if credentials is not None else ""
        return hmac.compare_digest(offered.encode(), settings.token.encode())

    def require_token(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if settings.token is not None and not token_ok(credentials):
            raise HTTPException(
                status_code=401,
                detail="missing or wrong bearer token: send 'Authorization: Bearer <API_TOKEN>'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @app.exception_handler(WarehouseUnavailable)
    def unavailable(request: Request, exc: WarehouseUnavailable) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": exc.public})

    @app.get("/api/metrics", dependencies=[Depends(require_token)], summary="KPIs of one day")
    async def metrics(
        date: dt.date | None = Query(
            default=None, description="the day (org time zone); default: the last complete day, as in the briefing"
        ),
    ) -> dict[str, Any]:
        today = dt.datetime.now(org_timezone()).date()
        found = await source.read(("metrics", date, today), lambda conn: _metrics(conn, target, date, today))
        if "error" in found:
            raise HTTPException(status_code=404, detail=found["error"])
        return found

    @app.get("/api/summaries/latest", dependencies=[Depends(require_token)], summary="The latest delivered briefing")
    async def latest_summary() -> dict[str, Any]:
        found = await source.read(("latest",), _latest_summary)
        if found is None:
            raise HTTPException(
                status_code=404, detail="no briefing has been generated yet: run `python -m insights.deliver`"
            )
        return found

    @app.get("/api/health", summary="Is the warehouse readable; when did data and briefings last move")
    async def health(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> JSONResponse:
        try:
            found = await source.read(("health",), _health)
        except WarehouseUnavailable as exc:
            content = {"status": "unavailable", "target": target, "warehouse": "unreachable", "detail": exc.public}
            if token_ok(credentials):
                content["cause"] = exc.detail
            return JSONResponse(status_code=503, content=content)
        # The answer is shared with other requests (memoized): read it, never change it.
        facts = {key: value for key, value in found.items() if key != "marts_built"}
        if not found["marts_built"]:
            detail = MartsNotBuilt().public
            content = {"status": "unavailable", "target": target, "warehouse": "reachable", "detail": detail, **facts}
            return JSONResponse(status_code=503, content=content)
        return JSONResponse(content={"status": "ok", "target": target, "warehouse": "reachable", **facts})

    from insights import dashboard as board

    @app.get(board.PATH, summary="The morning dashboard, an HTML page: briefing, KPIs, charts, unusual values")
    async def dashboard(
        request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
    ) -> HTMLResponse:
        session = request.cookies.get(board.SESSION_COOKIE)
        by_header = token_ok(credentials)
        if settings.token is not None and not by_header and not board.session_ok(session, settings.token):
            return board.login_response()
        today = dt.datetime.now(org_timezone()).date()
        try:  # the JSON routes' own answers (the same memo keys), then what only the page shows
            found = await source.read(("metrics", None, today), lambda conn: _metrics(conn, target, None, today))
            summary = await source.read(("latest",), _latest_summary)
            view = await source.read(("dashboard", today), lambda conn: board.read_view(conn, target, found, summary))
            day = view.day
            charts = await source.read(("charts", day), lambda conn: board.chart_svgs(conn.raw, target, day))
        except WarehouseUnavailable as exc:
            return board.unavailable_response(exc.public)
        return board.dashboard_response(view, charts, can_sign_out=settings.token is not None and not by_header)

    @app.post(board.LOGIN_PATH, include_in_schema=False)
    async def dashboard_login(request: Request) -> Response:
        return board.login(request, settings.token, await request.body())

    @app.post(board.LOGOUT_PATH, include_in_schema=False)
    def dashboard_logout(request: Request) -> Response:
        return board.logout(request)

    def twilio_settings() -> TwilioSettings:
        """Read when Twilio first calls (the API serves metrics without any Twilio setting)."""
        try:
            found = TwilioSettings.from_env()
        except ConfigError as exc:
            log.error("a Twilio callback arrived but the Twilio settings are incomplete: %s", exc)
            raise HTTPException(status_code=503, detail="the Twilio settings of this server are incomplete") from None
        if not found.public_base_url:
            log.error("a Twilio callback arrived but PUBLIC_BASE_URL is not set: it cannot be validated")
            raise HTTPException(status_code=503, detail="PUBLIC_BASE_URL is not set on this server")
        return found

    async def signed_form(request: Request) -> tuple[TwilioSettings, dict[str, str]]:
        from insights.replies import signature_ok

        config = twilio_settings()
        # Twilio posts application/x-www-form-urlencoded: read with the standard library (no multipart here).
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
        assert config.public_base_url is not None
        if not signature_ok(
            config.auth_token,
            config.public_base_url,
            request.url.path,
            request.url.query,
            form,
            request.headers.get("X-Twilio-Signature", ""),
        ):
            log.warning("refused a request to %s without a valid Twilio signature", request.url.path)
            raise HTTPException(status_code=403, detail="not signed by Twilio for this server's PUBLIC_BASE_URL")
        return config, form

    @app.post(STATUS_CALLBACK_PATH, include_in_schema=True, summary="Twilio's status callback (signed)")
    async def twilio_status(request: Request) -> Response:
        from insights.replies import record_status

        _, form = await signed_form(request)
        await run_in_threadpool(record_status, target, form)
        return Response(status_code=204)

    @app.post(INBOUND_PATH, include_in_schema=True, summary="A message to the WhatsApp sender (signed)")
    async def twilio_inbound(request: Request, background: BackgroundTasks) -> Response:
        from insights.replies import answer_reply

        config, form = await signed_form(request)

        def reply() -> None:
            def copy_query(sql: str, params: Any) -> list[tuple[Any, ...]]:
                return source.query_now(lambda conn: [tuple(r.values()) for r in conn.rows(sql, list(params))])

            try:  # on DuckDB from the API's copy: it never opens the warehouse file
                answer_reply(target, config, form.get("From", ""), copy_query if target == "duckdb" else None)
            except Exception:
                log.exception("could not answer the message from a recipient")

        background.add_task(run_in_threadpool, reply)  # Twilio waits 15 s at most for the answer
        return Response('<?xml version="1.0" encoding="UTF-8"?><Response></Response>', media_type="text/xml")

    from insights import chart_links

    @app.get(chart_links.ROUTE, summary="A chart of a day as PNG, for WhatsApp: a signed link that expires")
    async def chart_image(name: str, day: str, expires: str = "", signature: str = "") -> Response:
        from insights.charts import chart_png
        from insights.facts import FactsError

        refused = chart_links.refusal(name, day, expires, signature)
        if refused is not None:
            raise HTTPException(status_code=refused.status, detail=refused.detail)
        wanted = dt.date.fromisoformat(day)
        try:  # rendered once per copy of the data, like every answer
            png = await source.read(("chart", name, wanted), lambda conn: chart_png(conn.raw, target, wanted, name))
        except FactsError:
            raise MartsNotBuilt() from None
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(_docs_page(app.openapi()))

    app.add_middleware(_HeadAsGet)
    return app


# --------------------------------------------------------------------------- queries (both drivers)


def _metrics(conn: _Connection, target: Target, date: dt.date | None, today: dt.date) -> dict[str, Any]:
    if not conn.table_exists(KPI_TABLE):
        raise MartsNotBuilt()
    first, last = conn.row(f"select min(kpi_date), max(kpi_date) from {KPI_TABLE}")
    if last is None:
        return {"error": f"{KPI_TABLE} is empty: the CRM has no data yet"}
    day = date or default_report_date(conn.raw, target, today)
    rows = conn.rows(
        f"select metric, value, unit, is_complete from {KPI_TABLE} where kpi_date = {conn.p} order by metric", [day]
    )
    if not rows:
        return {"error": f"no metrics for {day}; the marts cover {first} to {last}"}
    return {
        "as_of": _json_value(day),
        # The marts' own word: the day of the last sync is still running in the org, whatever this machine's clock.
        "complete_day": all(r["is_complete"] for r in rows),
        "target": target,
        "metrics": {r["metric"]: {"value": _number(r["value"], r["unit"]), "unit": r["unit"]} for r in rows},
    }


def _latest_summary(conn: _Connection) -> dict[str, Any] | None:
    """The newest team briefing Twilio accepted for someone; else the newest one built for sending; else a dry run."""
    if not conn.table_exists(SUMMARIES_TABLE):
        return None
    ledger = conn.table_exists(DELIVERIES_TABLE)
    delivered = (
        f"exists (select 1 from {DELIVERIES_TABLE} d where d.summary_id = s.summary_id and d.status = 'accepted')"
        if ledger
        else "false"
    )
    # The team's briefing, not an owner's digest (rows from before digests have no `digest`: all were the team's).
    team = "coalesce(s.digest, 'team') = 'team'" if conn.has_column(SUMMARIES_TABLE, "digest") else "true"
    rows = conn.rows(
        f"select s.* from {SUMMARIES_TABLE} s where {team} "
        f"order by case when {delivered} then 0 when s.dry_run then 2 else 1 end, s.created_at desc, s.report_date desc "
        "limit 1"
    )
    if not rows:
        return None
    summary = {key: _json_value(value, parse_json=key.endswith("_json")) for key, value in rows[0].items()}
    recipients = []
    if ledger:
        recipients = conn.rows(
            f"select recipient, status, twilio_status, error_code, updated_at from {DELIVERIES_TABLE} "
            f"where summary_id = {conn.p} order by recipient",
            [summary["summary_id"]],
        )
    accepted = sum(r["status"] == "accepted" for r in recipients)
    status = (
        "dry_run"
        if summary.get("dry_run")
        else "delivered"
        if recipients and accepted == len(recipients)
        else "partly_delivered"
        if accepted
        else "not_delivered"
    )
    summary["delivery"] = {
        "status": status,
        "recipients": [
            {**{k: _json_value(v) for k, v in r.items()}, "recipient": _masked(r["recipient"])} for r in recipients
        ],
    }
    return summary


def _health(conn: _Connection) -> dict[str, Any]:
    last_sync = last_delivery = None
    if conn.table_exists(f"{RAW_SCHEMA}._dlt_loads"):
        last_sync = conn.row(f"select max(inserted_at) from {RAW_SCHEMA}._dlt_loads where status = 0")[0]
    if conn.table_exists(DELIVERIES_TABLE):
        # No recipients or message SIDs here: health answers without a token.
        delivered = conn.rows(
            f"select report_date, status, updated_at from {DELIVERIES_TABLE} order by updated_at desc limit 1"
        )
        last_delivery = {k: _json_value(v) for k, v in delivered[0].items()} if delivered else None
    return {
        # A warehouse that answers but holds no marts (nothing built yet) cannot serve the metrics: not healthy.
        "marts_built": conn.table_exists(KPI_TABLE),
        "last_sync": _json_value(last_sync),
        "last_delivery": last_delivery,
        "missed_days": _missed_days(conn),
    }


def _missed_days(conn: _Connection) -> list[str]:
    """The report dates (up to yesterday in the org's time zone) whose briefing never reached someone who gets it.

    The ledger's own rule (`DeliveryLedger.missed_days`), on rows read here; dates only: health needs no token.
    """
    from insights.ledger import missed_in

    if not conn.table_exists(DELIVERIES_TABLE):
        return []
    until = dt.datetime.now(org_timezone()).date() - dt.timedelta(days=1)
    since = until - dt.timedelta(days=MISSED_LOOKBACK_DAYS - 1)
    rows = conn.rows(
        f"select report_date, recipient, digest, status from {DELIVERIES_TABLE} where report_date >= {conn.p}", [since]
    )
    entries = [(r["report_date"], r["recipient"], r["digest"], r["status"]) for r in rows]
    return sorted({m.report_date.isoformat() for m in missed_in(entries, until)})


class _Connection:
    """The few queries the API runs, on either driver."""

    def __init__(self, conn: Any, p: str) -> None:
        self.raw, self.p = conn, p

    def has_column(self, qualified: str, column: str) -> bool:
        schema, table = qualified.split(".")
        return bool(
            self.rows(
                "select 1 from information_schema.columns where table_schema = "
                f"{self.p} and table_name = {self.p} and column_name = {self.p}",
                [schema, table, column],
            )
        )

    def table_exists(self, qualified: str) -> bool:
        schema, table = qualified.split(".")
        sql = f"select count(*) from information_schema.tables where table_schema = {self.p} and table_name = {self.p}"
        return bool(self.row(sql, [schema, table])[0])

    def rows(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        cur = self.raw.cursor()
        try:
            cur.execute(sql, params or [])
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]
        finally:
            cur.close()

    def row(self, sql: str, params: list[Any] | None = None) -> tuple[Any, ...]:
        cur = self.raw.cursor()
        try:
            cur.execute(sql, params or [])
            return tuple(cur.fetchone())
        finally:
            cur.close()


# --------------------------------------------------------------------------- where the answers come from


class _Source(ABC):
    @abstractmethod
    async def read(self, key: Hashable, query: Callable[[_Connection], T]) -> T:
        """`query`'s answer on the current data; `key` names the answer for reuse while the data is unchanged."""

    @abstractmethod
    def query_now(self, query: Callable[[_Connection], T]) -> T:
        """`query`'s answer on the data as it is now (no reuse), from a worker thread."""

    def close(self) -> None:  # noqa: B027 - optional: a source that holds nothing keeps this one
        """Release what the source holds (files, connections)."""


class _Copy:
    """One private copy of the DuckDB file, open read-only, with the answers already computed from it."""

    def __init__(self, stamp: tuple[Any, ...], path: Path) -> None:
        import duckdb

        self.stamp, self.path = stamp, path
        self.conn = duckdb.connect(str(path), read_only=True)
        self.memo: dict[Hashable, Any] = {}
        self.lock = threading.Lock()
        self.tables = frozenset(t for t in SERVED_TABLES if self.query(lambda conn, t=t: conn.table_exists(t)))

    def query(self, query: Callable[[_Connection], T]) -> T:
        cursor = self.conn.cursor()  # a connection of its own per thread, on the same database
        try:
            return query(_Connection(cursor, "?"))
        finally:
            cursor.close()

    def close(self) -> None:
        self.conn.close()
        for leftover in (self.path, self.path.with_name(self.path.name + ".wal")):
            leftover.unlink(missing_ok=True)


class _DuckDBCopy(_Source):
    """Answers from a private copy of the DuckDB file, copied again when the file changes.

    A copy is kept only if the file and its WAL were not modified while being
    copied: what is on disk between two writes is what DuckDB itself would
    recover after a crash, so the copy opens like the original would. Until a
    good copy is made the previous one is served. Opening the copy locks
    nothing but the copy: dlt and dbt can always open the warehouse.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._folder = Path(tempfile.mkdtemp(prefix="crm-api-"))
        self._current: _Copy | None = None
        self._previous: _Copy | None = None  # closed one copy later: requests still reading it finish first
        self._problem: WarehouseUnavailable | None = None
        self._last_try = 0.0
        self._generation = 0
        self._reload = threading.Lock()

    async def read(self, key: Hashable, query: Callable[[_Connection], T]) -> T:
        stamp = self._stamp()
        current = self._current
        # Without a copy, wait for the one being made (the lock queues the requests); with one, serve it while
        # a newer one is at most RELOAD_INTERVAL_SECONDS away.
        if current is None or (stamp != current.stamp and time.monotonic() - self._last_try >= RELOAD_INTERVAL_SECONDS):
            await run_in_threadpool(self._refresh)
            current = self._current
        if current is None:
            raise self._problem or WarehouseUnavailable("the duckdb warehouse cannot be opened")
        if key in current.memo:
            answer = current.memo[key]
        else:
            answer = await run_in_threadpool(_memo_or_error, current, key, query)
        if isinstance(answer, WarehouseUnavailable):
            raise answer
        return answer  # type: ignore[no-any-return]

    def query_now(self, query: Callable[[_Connection], T]) -> T:
        if self._current is None or self._stamp() != self._current.stamp:
            self._refresh()
        current = self._current
        if current is None:
            raise self._problem or WarehouseUnavailable("the duckdb warehouse cannot be opened")
        return current.query(query)

    def _stamp(self) -> tuple[Any, ...] | None:
        """Size and modification time of the file and of its WAL: any write changes one of them."""
        try:
            main = self.path.stat()
        except OSError:
            return None
        try:
            wal = self.path.with_name(self.path.name + ".wal").stat()
            wal_stamp: tuple[int, int] | None = (wal.st_size, wal.st_mtime_ns)
        except OSError:
            wal_stamp = None
        return (main.st_size, main.st_mtime_ns, main.st_ino, wal_stamp)

    def _refresh(self) -> None:
        with self._reload:
            stamp = self._stamp()
            if self._current is not None and stamp == self._current.stamp:
                return  # another request refreshed it meanwhile
            if self._problem is not None and time.monotonic() - self._last_try < RELOAD_INTERVAL_SECONDS:
                return  # failed a moment ago: answer with that failure rather than copy again
            self._last_try = time.monotonic()
            try:
                fresh = self._copy()
            except WarehouseUnavailable as exc:
                self._problem = exc
                if self._current is not None:
                    log.info("keeping the previous copy of the warehouse: %s", exc.detail)
                return
            if self._current is not None and not self._current.tables <= fresh.tables:
                # A table the API serves is missing: dbt is between dropping a model and renaming its new
                # build into place. Serve the previous copy until the rebuild is whole again.
                log.info(
                    "keeping the previous copy of the warehouse: %s is being rebuilt",
                    ", ".join(sorted(self._current.tables - fresh.tables)),
                )
                fresh.close()
                return
            if self._previous is not None:
                self._previous.close()
            self._previous, self._current, self._problem = self._current, fresh, None

    def _copy(self) -> _Copy:
        wal = self.path.with_name(self.path.name + ".wal")
        for _ in range(COPY_ATTEMPTS):
            before = self._stamp()
            if before is None:
                raise WarehouseUnavailable(
                    "the duckdb warehouse file does not exist yet: run the pipeline and `dbt build` (see DUCKDB_PATH)",
                    f"no file at {self.path}",
                )
            self._generation += 1
            target = self._folder / f"copy-{self._generation}.duckdb"
            try:
                shutil.copyfile(self.path, target)
                if before[3] is not None:
                    shutil.copyfile(wal, target.with_name(target.name + ".wal"))
            except FileNotFoundError:
                continue  # the WAL was checkpointed away while copying: take it again
            except OSError as exc:
                raise WarehouseUnavailable("the duckdb warehouse file cannot be read", str(exc)) from None
            if self._stamp() == before:
                try:
                    return _Copy(before, target)
                except Exception as exc:  # a file DuckDB cannot open: not a warehouse, or a newer format
                    target.unlink(missing_ok=True)
                    raise WarehouseUnavailable("the duckdb warehouse file cannot be opened", _first_line(exc)) from None
            target.unlink(missing_ok=True)
            target.with_name(target.name + ".wal").unlink(missing_ok=True)
            time.sleep(0.05)
        raise WarehouseUnavailable(
            "the duckdb warehouse is being written; try again shortly",
            f"{self.path} changed during {COPY_ATTEMPTS} copies",
        )

    def close(self) -> None:
        for copy in (self._previous, self._current):
            if copy is not None:
                copy.close()
        shutil.rmtree(self._folder, ignore_errors=True)


def _memo_or_error(copy: _Copy, key: Hashable, query: Callable[[_Connection], Any]) -> Any:
    """Run `query` on the copy and remember its answer, errors included: the copy never changes."""
    try:
        answer: Any = copy.query(query)
    except WarehouseUnavailable as exc:
        answer = exc
    with copy.lock:
        if len(copy.memo) < MEMO_ENTRIES:
            copy.memo[key] = answer
    return answer


class _PostgresPool(_Source):
    """Read-only, autocommit connections from a small pool: each query is its own short transaction,
    so the API never holds a lock dbt would wait for.

    An answer is reused for RELOAD_INTERVAL_SECONDS, the same staleness as on DuckDB: a dashboard
    polled by many clients costs the database a few queries a second, not one per request.
    """

    def __init__(self) -> None:
        self._pool: Any = None
        self._guard = threading.Lock()
        self._slots = threading.BoundedSemaphore(POOL_SIZE)  # the pool raises rather than waits when empty
        self._memo: dict[Hashable, tuple[float, Any]] = {}

    async def read(self, key: Hashable, query: Callable[[_Connection], T]) -> T:
        now = time.monotonic()
        if key in self._memo and self._memo[key][0] > now:
            return self._memo[key][1]  # type: ignore[no-any-return]
        answer = await run_in_threadpool(self._read, query)
        if len(self._memo) >= MEMO_ENTRIES:
            self._memo.clear()
        self._memo[key] = (now + RELOAD_INTERVAL_SECONDS, answer)
        return answer

    def query_now(self, query: Callable[[_Connection], T]) -> T:
        return self._read(query)

    def _read(self, query: Callable[[_Connection], T]) -> T:
        with self._slots, self._connection() as conn:
            return query(_Connection(conn, "%s"))

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        import psycopg2
        from psycopg2.pool import ThreadedConnectionPool

        try:
            with self._guard:
                if self._pool is None:
                    self._pool = ThreadedConnectionPool(0, POOL_SIZE, postgres_url())
            conn = self._pool.getconn()
            conn.set_session(readonly=True, autocommit=True)
        except ConfigError as exc:
            raise WarehouseUnavailable(f"the postgres warehouse is not configured: {exc}") from None
        except Exception as exc:
            raise WarehouseUnavailable(
                "cannot connect to the postgres warehouse (check DATABASE_URL)", _first_line(exc)
            ) from None
        broken = False
        try:
            yield conn
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            broken = True
            raise WarehouseUnavailable("the postgres warehouse connection failed", _first_line(exc)) from None
        finally:
            self._pool.putconn(conn, close=broken or conn.closed != 0)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.closeall()


# --------------------------------------------------------------------------- HTTP details


class _HeadAsGet:
    """Answer HEAD wherever GET is answered: the GET's status and headers, without the body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if not message.get("more_body", False):
                    await send({"type": "http.response.body", "body": b""})
                return
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


def _docs_page(spec: dict[str, Any]) -> str:
    """The OpenAPI description as one self-contained HTML page: readable offline, behind any firewall."""
    esc = html.escape
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{esc(spec['info']['title'])}</title><style>",
        "body{font:15px/1.5 system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#222}"
        "code,pre{background:#f4f4f4;padding:.1rem .3rem;border-radius:3px}pre{padding:.6rem;overflow-x:auto}"
        "h2{border-top:1px solid #ddd;padding-top:1rem}table{border-collapse:collapse}td,th{padding:.2rem .6rem;"
        "border-bottom:1px solid #eee;text-align:left;vertical-align:top}",
        "</style></head><body>",
        f"<h1>{esc(spec['info']['title'])} <small>{esc(spec['info']['version'])}</small></h1>",
        f"<p>{esc(spec['info'].get('description', ''))}</p>",
        "<p>The machine-readable description is <a href='/openapi.json'>/openapi.json</a>. "
        "Every GET route also answers HEAD.</p>",
    ]
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            parts.append(f"<h2><code>{esc(method.upper())} {esc(path)}</code></h2><p>{esc(op.get('summary', ''))}</p>")
            params = op.get("parameters", [])
            if params:
                parts.append("<table><tr><th>parameter</th><th>in</th><th>required</th><th>description</th></tr>")
                for param in params:
                    parts.append(
                        f"<tr><td><code>{esc(param['name'])}</code></td><td>{esc(param['in'])}</td>"
                        f"<td>{'yes' if param.get('required') else 'no'}</td>"
                        f"<td>{esc(param.get('description', ''))}</td></tr>"
                    )
                parts.append("</table>")
            codes = ", ".join(
                f"{esc(code)} {esc(r.get('description', ''))}" for code, r in op.get("responses", {}).items()
            )
            secured = " -H 'Authorization: Bearer $API_TOKEN'" if op.get("security") else ""
            parts.append(f"<p>Answers: {codes}</p><pre>curl -s{secured} http://HOST:PORT{esc(path)}</pre>")
    parts.append("</body></html>")
    return "".join(parts)


# --------------------------------------------------------------------------- values


def _number(value: Any, unit: str) -> int | float | None:
    """Counts as integers, amounts and ratios as floats; null stays null (an undefined ratio)."""
    if value is None:
        return None
    if unit == "count" and float(value).is_integer():
        return int(value)
    return float(value)


def _json_value(value: Any, *, parse_json: bool = False) -> Any:
    if isinstance(value, dt.datetime):
        return (value.astimezone(dt.UTC) if value.tzinfo else value).isoformat()
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


def _masked(recipient: str) -> str:
    """`whatsapp:+15550000001` -> `+1555•••0001`: enough to tell recipients apart, not to message them."""
    number = recipient.removeprefix("whatsapp:")
    return number[:5] + "•••" + number[-4:] if len(number) > 9 else "•••"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


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
        elif use_the_demo_warehouse_if_it_is_the_only_one() is not None:
            log.info(
                "%s does not exist; serving the demo warehouse %s (set DUCKDB_PATH to choose)",
                DEFAULT_DUCKDB_FILE,
                DEMO_DUCKDB_FILE,
            )
        org_timezone()
        settings = ApiSettings.from_env()
        _check_port_is_free(args.host, args.port)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    if settings.token is None:
        log.warning("API_TOKEN is not set: anyone who can reach %s:%s can read the metrics", args.host, args.port)
    if args.target == "duckdb":
        log.info("serving %s (a private copy, refreshed when it changes)", duckdb_path().name)

    import uvicorn

    uvicorn.run(create_app(args.target, settings), host=args.host, port=args.port, log_level="info")
    return 0


def _check_port_is_free(host: str, port: int) -> None:
    """Bind the address once, as uvicorn is about to, so a port in use is one line saying how to choose another.

    Uvicorn's own report is its raw socket error, and the server it printed as starting a moment earlier.
    """
    if port == 0:
        return  # the system picks a free one
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a port in TIME_WAIT is free
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"port {port} on {host} is in use (another `make api`?): choose another with "
                    f"`make api PORT={port + 1}` or `python -m insights.api --port {port + 1}`"
                ) from None
            raise ConfigError(
                f"cannot listen on {host}:{port} ({exc.strerror}): choose another --host or --port (make api PORT=...)"
            ) from None


if __name__ == "__main__":
    sys.exit(main())
