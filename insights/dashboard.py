"""The morning dashboard: one HTML page with the briefing, the KPIs of the last complete day, the charts and the
unusual values, served by the API at `GET /dashboard`.

The page is whole on its own: styles are inline, fonts are the system's, the charts are SVG drawn on the
server from the Vega-Lite specs of `insights.charts`, and there is no script at all. It opens behind a
firewall, on a laptop with no internet, and its Content-Security-Policy forbids loading anything from
elsewhere, so a CRM name can neither pull in nor run anything (CRM names are free text: the template
escapes every value).

When the API has a token (API_TOKEN), the page asks for it once in a form and then keeps a session cookie:
HttpOnly, SameSite=Strict, scoped to the dashboard's paths, and holding an expiry signed with the token
(HMAC-SHA256), never the token itself. Changing API_TOKEN ends every session. The cookie opens only the
dashboard: the JSON routes still want `Authorization: Bearer`, so another site cannot use a signed-in
browser to read them.

The numbers are the JSON routes' own answers (`/api/metrics`, `/api/summaries/latest`), read through the
API's memoized source; the page only adds the comparisons and the layout.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import json
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import parse_qsl

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from insights import charts
from insights.anomalies import LOWER_IS_BETTER, read_anomalies, sentence
from insights.anomalies import TABLE as ANOMALIES_TABLE
from insights.facts import (
    FactsError,
    _data_quality_facts,
    fmt_amount,
    fmt_change_pct,
    fmt_count,
    fmt_date,
    fmt_day,
    fmt_number,
    fmt_ratio,
    half_up,
    org_timezone,
)
from warehouse import MARTS_SCHEMA, RAW_SCHEMA, Target, as_date

log = logging.getLogger(__name__)

PATH = "/dashboard"
LOGIN_PATH = f"{PATH}/login"
LOGOUT_PATH = f"{PATH}/logout"
SESSION_COOKIE = "crm_dashboard"
SESSION_SECONDS = 14 * 24 * 3600  # a manager opens it every morning: signing in once a fortnight is enough
_SESSION_LABEL = "crm-intelligence dashboard session"
_MAX_FORM_BYTES = 4096  # the login form has one field; anything larger is not a person typing a token

KPI_TABLE = f"{MARTS_SCHEMA}.kpi_daily"
QUALITY_TABLE = f"{MARTS_SCHEMA}.data_quality_issues"
UNUSUAL_DAYS = 7  # the anomalies of the report day and the 6 days before

# No script may run and nothing may come from another origin: the page needs neither.
# Styles are inline (the <style> block and the SVG's presentation attributes), hence 'unsafe-inline' for styles only.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; script-src 'none'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",  # sales figures behind a token: no shared or back-button cache keeps them
}


DELIVERY_WORDS = {
    "delivered": "Sent on WhatsApp",
    "partly_delivered": "Sent to some recipients",
    "not_delivered": "Not sent",
    "dry_run": "Dry run, not sent",
}


class Connection(Protocol):
    """What the page reads through: the API's `_Connection`, on either driver."""

    raw: Any
    p: str

    def table_exists(self, qualified: str) -> bool: ...

    def rows(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]: ...

    def row(self, sql: str, params: list[Any] | None = None) -> tuple[Any, ...]: ...


# --------------------------------------------------------------------------- what the page shows

Tone = Literal["good", "bad", "flat"]


@dataclass(frozen=True)
class Change:
    """A KPI against an earlier day: 'vs Fri ▲ +12 (+5.0%)', coloured by whether the move is good news."""

    against: str
    text: str
    tone: Tone
    arrow: str


@dataclass(frozen=True)
class Card:
    metric: str
    label: str
    value: str
    detail: str | None
    changes: tuple[Change, ...]


@dataclass(frozen=True)
class Unusual:
    """An anomaly of kpi_anomalies as the page lists it."""

    kpi_date: dt.date
    metric: str
    sentence: str
    direction: Literal["high", "low"]
    tone: Tone  # high new leads are good news, high losses are not


@dataclass(frozen=True)
class Span:
    """A piece of a briefing line, with WhatsApp's *bold* and _italic_ kept as styles (never as HTML)."""

    text: str
    style: Literal["", "strong", "em"] = ""


@dataclass(frozen=True)
class Block:
    kind: Literal["heading", "bullet", "para", "note"]
    spans: tuple[Span, ...]


@dataclass(frozen=True)
class Briefing:
    report_date: dt.date
    status: str  # how it went out: sent, a dry run, ...
    used_fallback: bool
    headline: str | None
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class View:
    """Everything on the page but the charts; shared between requests (memoized), so never changed."""

    day: dt.date | None
    problem: str | None = None  # why there are no KPIs to show (an empty warehouse, no data for the day)
    complete_day: bool = True
    currency: str = ""
    last_sync: str | None = None
    cards: tuple[Card, ...] = ()
    anomalies: tuple[Unusual, ...] = ()
    anomalies_checked: bool = False  # kpi_anomalies exists: "nothing unusual" can be said
    briefing: Briefing | None = None
    quality_records: int | None = None  # None: the data-quality mart is not built
    quality_text: str | None = None


@dataclass(frozen=True)
class Chart:
    name: str
    title: str
    svg: str | None  # None: the chart could not be drawn (the rest of the page still shows)
    main: bool = False


@dataclass(frozen=True)
class _CardSpec:
    metric: str
    label: str
    detail: tuple[str, str] | None = None  # another metric shown under the value, with its wording


_CARDS = (
    _CardSpec("open_pipeline_amount", "Open pipeline", ("open_pipeline_count", "{} open deals")),
    _CardSpec("deals_won_amount", "Won", ("deals_won", "{} deals won")),
    _CardSpec("leads_created", "New leads"),
    _CardSpec("leads_converted", "Leads converted"),
    _CardSpec("deals_created", "New deals", ("deals_created_amount", "worth {}")),
    _CardSpec("deals_lost_amount", "Lost", ("deals_lost", "{} deals lost")),
    _CardSpec("win_rate_30d", "Win rate, 30 days"),
    _CardSpec("open_pipeline_weighted_amount", "Weighted pipeline"),
)


def read_view(conn: Connection, target: Target, metrics: Mapping[str, Any], summary: Mapping[str, Any] | None) -> View:
    """The page's content: `metrics` as /api/metrics answers (the last complete day), `summary` as
    /api/summaries/latest does; the comparisons, unusual values and data quality are read here."""
    briefing = _briefing(summary) if summary is not None else None
    quality_records, quality_text = _data_quality(conn)
    if "error" in metrics:
        return View(None, str(metrics["error"]), briefing=briefing, quality_records=quality_records)
    day = dt.date.fromisoformat(metrics["as_of"])
    values = {name: m["value"] for name, m in metrics["metrics"].items()}
    units = {name: m["unit"] for name, m in metrics["metrics"].items()}
    earlier = _values_on(conn, [day - dt.timedelta(days=1), day - dt.timedelta(days=7)])
    anomalies_checked = conn.table_exists(ANOMALIES_TABLE)
    return View(
        day,
        complete_day=bool(metrics["complete_day"]),
        currency=units.get("open_pipeline_amount", ""),
        last_sync=_last_sync(conn),
        cards=tuple(_cards(day, values, units, earlier)),
        anomalies=tuple(_unusual(conn, target, day)) if anomalies_checked else (),
        anomalies_checked=anomalies_checked,
        briefing=briefing,
        quality_records=quality_records,
        quality_text=quality_text,
    )


def _values_on(conn: Connection, days: Sequence[dt.date]) -> dict[tuple[dt.date, str], float | None]:
    marks = ", ".join([conn.p] * len(days))
    rows = conn.rows(f"select kpi_date, metric, value from {KPI_TABLE} where kpi_date in ({marks})", list(days))
    return {(as_date(r["kpi_date"]), r["metric"]): None if r["value"] is None else float(r["value"]) for r in rows}


def _cards(
    day: dt.date,
    values: Mapping[str, Any],
    units: Mapping[str, str],
    earlier: Mapping[tuple[dt.date, str], float | None],
) -> Iterator[Card]:
    day_before, week_before = day - dt.timedelta(days=1), day - dt.timedelta(days=7)
    for spec in _CARDS:
        if spec.metric not in values:
            continue
        unit, now = units[spec.metric], values[spec.metric]
        detail = None
        other = spec.detail[0] if spec.detail else ""
        if spec.detail and other in values and (values[other] or units[other] == "count"):  # not "worth 0"
            detail = spec.detail[1].format(format_value(values[other], units[other]))
        changes = (
            _change(spec.metric, unit, now, earlier.get((day_before, spec.metric)), f"vs {day_before:%a}"),
            _change(spec.metric, unit, now, earlier.get((week_before, spec.metric)), f"vs last {week_before:%a}"),
        )
        yield Card(spec.metric, spec.label, format_value(now, unit), detail, tuple(c for c in changes if c is not None))


def _change(metric: str, unit: str, now: float | None, before: float | None, against: str) -> Change | None:
    """`now` against `before` as people read it: ratios in percentage points, the rest by amount and percent."""
    if now is None or before is None:
        return None
    delta = float(now) - float(before)
    if unit == "ratio":
        points = half_up(delta * 100)
        sign = 0 if points == 0 else 1 if points > 0 else -1
        text = "no change" if sign == 0 else f"{'+' if sign > 0 else '−'}{abs(points)} pts"
    else:
        shown = format_value(abs(delta), unit)
        sign = 0 if half_up(delta) == 0 else 1 if delta > 0 else -1
        pct = f" ({fmt_change_pct(delta / before * 100)})" if before else ""
        text = "no change" if sign == 0 else f"{'+' if sign > 0 else '−'}{shown}{pct}"
    good = sign > 0 if metric not in LOWER_IS_BETTER else sign < 0
    tone: Tone = "flat" if sign == 0 else "good" if good else "bad"
    return Change(against, text, tone, "▲" if sign > 0 else "▼" if sign < 0 else "=")


def format_value(value: Any, unit: str) -> str:
    """A KPI as the briefing writes it: counts with separators, amounts at three digits, ratios in percent."""
    if value is None:
        return "—"
    number = float(value)
    if unit == "count":
        return fmt_count(int(number)) if number.is_integer() else fmt_number(number)
    if unit == "ratio":
        return fmt_ratio(number)
    return fmt_amount(number)


def _last_sync(conn: Connection) -> str | None:
    """When the last load of the CRM finished, in the org's time: how fresh the figures are."""
    if not conn.table_exists(f"{RAW_SCHEMA}._dlt_loads"):
        return None
    [when] = conn.row(f"select max(inserted_at) from {RAW_SCHEMA}._dlt_loads where status = 0")
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    local = when.astimezone(org_timezone())
    return f"{fmt_day(local.date())}, {local:%H:%M}"


def _data_quality(conn: Connection) -> tuple[int | None, str | None]:
    """The CRM records breaking a sanity rule, counted and worded as the briefing's fact does."""
    if not conn.table_exists(QUALITY_TABLE):
        return None, None
    fact = next(_data_quality_facts(conn.raw), None)
    if fact is None:
        return 0, None
    return int(fact.values["records"]), fact.text


# --------------------------------------------------------------------------- unusual values


def _unusual(conn: Connection, target: Target, day: dt.date) -> Iterator[Unusual]:
    """The anomalies of the report day and the 6 days before, in the briefing's own words (`insights.anomalies`)."""
    for found in read_anomalies(conn.raw, target, day - dt.timedelta(days=UNUSUAL_DAYS - 1), day):
        yield Unusual(
            found.kpi_date,
            found.metric,
            sentence(found, fmt_amount),  # the page's header names the currency once
            "high" if found.direction == "high" else "low",
            "good" if found.is_good_news else "bad",
        )


# --------------------------------------------------------------------------- the briefing

# WhatsApp's markup: *bold* and _italic_, opened and closed next to a non-space, not inside a word.
_MARKUP = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])|(?<![\w_])_(?=\S)([^_\n]+?)(?<=\S)_(?![\w_])")


def _briefing(summary: Mapping[str, Any]) -> Briefing:
    """The stored message as blocks to lay out. It opens with a bold title line and a bold headline
    (`insights.compose`): the card says the title itself, and the headline leads the card."""
    title = headline = None
    blocks: list[Block] = []
    for line in str(summary.get("message") or "").splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith(("• ", "- ")):
            blocks.append(Block("bullet", _spans(line[2:])))
            continue
        spans = _spans(line)
        bold = len(spans) == 1 and spans[0].style == "strong"
        if bold and not blocks and (title is None or headline is None):
            if title is None:
                title = spans[0].text
            else:
                headline = spans[0].text
            continue
        italic = len(spans) == 1 and spans[0].style == "em"
        blocks.append(Block("heading" if bold and len(line) < 80 else "note" if italic else "para", spans))
    return Briefing(
        report_date=dt.date.fromisoformat(str(summary["report_date"])),
        status=DELIVERY_WORDS.get(str((summary.get("delivery") or {}).get("status")), "Not sent"),
        used_fallback=bool(summary.get("used_fallback")),
        headline=headline,
        blocks=tuple(blocks),
    )


def _spans(line: str) -> tuple[Span, ...]:
    spans, at = [], 0
    for match in _MARKUP.finditer(line):
        if match.start() > at:
            spans.append(Span(line[at : match.start()]))
        spans.append(Span(match.group(1), "strong") if match.group(1) else Span(match.group(2), "em"))
        at = match.end()
    if at < len(line):
        spans.append(Span(line[at:]))
    return tuple(spans)


# --------------------------------------------------------------------------- the charts


def chart_svgs(conn: Any, target: Target, day: dt.date | None) -> tuple[Chart, ...]:
    """The day's charts as inline SVG, main chart first; none without a day to show.

    Called through the API's memoized read, so a page load after the first one on unchanged data draws nothing.
    """
    if day is None:
        return ()
    try:
        specs = charts.day_specs(conn, target, day)
    except FactsError as exc:  # a mart a chart reads is missing: the rest of the page still helps
        log.warning("no charts on the dashboard: %s", exc)
        return ()
    drawn = []
    for name in charts.CHART_NAMES:
        if name not in specs:
            continue
        try:
            svg = _svg(json.dumps(specs[name], sort_keys=True, default=str))
        except Exception:
            log.exception("could not draw the chart %s", name)
            svg = None
        drawn.append(Chart(name, charts.CHART_TITLES.get(name, name), svg, name == charts.MAIN_CHART))
    drawn.sort(key=lambda chart: not chart.main)
    return tuple(drawn)


@functools.lru_cache(maxsize=64)
def _svg(spec_json: str) -> str:
    """One spec drawn, remembered by its JSON: on PostgreSQL the API's memo lasts a moment, data changes daily."""
    svg = charts.render_svg(json.loads(spec_json))
    # Vega escapes the text it draws and the policy forbids scripts; a drawing that is anything but shapes and
    # text is refused all the same.
    if not svg.lstrip().startswith("<svg") or re.search(r"<(script|foreignObject|iframe)\b", svg, re.IGNORECASE):
        raise ValueError("the chart is not a plain SVG drawing")
    return svg


# --------------------------------------------------------------------------- sign-in


def session_value(token: str, now: float | None = None) -> str:
    """A session cookie's value: its expiry and an HMAC of it keyed with the token (the token is not in it)."""
    expires = int(time.time() if now is None else now) + SESSION_SECONDS
    return f"{expires}.{_signature(token, expires)}"


def session_ok(value: str | None, token: str) -> bool:
    """The cookie was made by `session_value` with this token and has not expired."""
    expires, _, signature = (value or "").partition(".")
    if not (expires.isascii() and expires.isdigit() and len(expires) <= 12) or int(expires) < time.time():
        return False
    return hmac.compare_digest(signature.encode(), _signature(token, int(expires)).encode())


def _signature(token: str, expires: int) -> str:
    return hmac.new(token.encode(), f"{_SESSION_LABEL}:{expires}".encode(), hashlib.sha256).hexdigest()


def login(request: Request, token: str | None, body: bytes) -> Response:
    """The login form's answer: a session cookie and the dashboard for the right token, the form again
    (401) for any other."""
    if token is None:
        return RedirectResponse(PATH, status_code=303)  # nothing to sign in to
    form = dict(parse_qsl(body[:_MAX_FORM_BYTES].decode("utf-8", "replace"), keep_blank_values=True))
    offered = form.get("token", "").strip()
    if len(body) > _MAX_FORM_BYTES or not hmac.compare_digest(offered.encode(), token.encode()):
        log.warning("refused a dashboard sign-in with a wrong token")
        return login_response("That token is not right. Ask whoever runs this server for API_TOKEN.", 401)
    response = RedirectResponse(PATH, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        session_value(token),
        max_age=SESSION_SECONDS,
        path=PATH,
        secure=_secure(request),
        httponly=True,
        samesite="strict",
    )
    return response


def logout(request: Request) -> Response:
    response = RedirectResponse(PATH, status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=PATH, secure=_secure(request), httponly=True, samesite="strict")
    return response


def _secure(request: Request) -> bool:
    """Mark the cookie Secure when the browser reached us over https (directly or through PUBLIC_BASE_URL)."""
    public = os.environ.get("PUBLIC_BASE_URL", "").strip().lower()
    return request.url.scheme == "https" or public.startswith("https://")


# --------------------------------------------------------------------------- pages

_templates = Environment(
    loader=PackageLoader("insights", "templates"),
    undefined=StrictUndefined,
    autoescape=True,  # CRM names and the briefing are untrusted text
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True)
class _Page:
    title: str
    login: bool = False
    error: str | None = None
    view: View | None = None
    charts: tuple[Chart, ...] = ()
    can_sign_out: bool = False


_SVG_WIDTH = re.compile(r'<svg\b[^>]*?\swidth="([0-9.]+)"')


def _render(page: _Page) -> str:
    # The SVG is the one value not escaped: vl-convert drew it from our spec, and `_svg` checked it.
    drawn = [(chart, Markup(chart.svg) if chart.svg else None) for chart in page.charts]
    widths = [int(float(m.group(1))) for chart in page.charts if chart.svg and (m := _SVG_WIDTH.search(chart.svg))]
    return _templates.get_template("dashboard.html.j2").render(
        page=page,
        charts=drawn,
        chart_width=max(widths, default=600),  # the charts' column: as wide as they are drawn
        fmt_date=fmt_date,
        fmt_day=fmt_day,
        login_path=LOGIN_PATH,
        logout_path=LOGOUT_PATH,
    )


def _html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers=SECURITY_HEADERS)


def login_response(error: str | None = None, status: int = 200) -> HTMLResponse:
    """The form alone: nothing read from the warehouse, not even a count."""
    return _html(_render(_Page("Sign in · Sales dashboard", login=True, error=error)), status)


def unavailable_response(reason: str) -> HTMLResponse:
    return _html(_render(_Page("Sales dashboard", error=f"The warehouse cannot be read: {reason}")), 503)


def dashboard_response(view: View, drawn: Sequence[Chart], *, can_sign_out: bool) -> HTMLResponse:
    title = f"Sales · {fmt_day(view.day)}" if view.day else "Sales dashboard"
    return _html(_render(_Page(title, view=view, charts=tuple(drawn), can_sign_out=can_sign_out)))
