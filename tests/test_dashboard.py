"""The morning dashboard, `GET /dashboard`, as a sales manager opens it: in a real browser.

The browser is headless Chromium (Debian's chromium-headless-shell; scripts/ensure-chromium.sh installs it, or
CHROMIUM names another binary) driven by Playwright, with every host but 127.0.0.1 unresolvable, so the page
must come whole from the API. The API runs as a user starts it (`tests.support.api.serve`) over a private copy
of the warehouse built from the sandbox CRM.

The run's output ends with where the screenshots were written, with the page's
weight and load time. DASHBOARD_SCREENSHOT=some/path.png writes the laptop screenshot there instead of under
pytest's temporary folder.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest

from insights import store
from insights.charts import CHART_NAMES
from insights.dashboard import SESSION_COOKIE, session_ok, session_value
from insights.facts import default_report_date, fmt_amount, fmt_count, fmt_date, fmt_ratio
from tests.support.api import TOKEN, serve
from tests.test_api import summary
from warehouse import Target, connect

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium-headless-shell")
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",  # any other host: unreachable
]
LAPTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
# A CRM name someone typed to make the page load and run something: it must show as text.
HOSTILE = '<img src="http://cdn.example.com/x.png" onerror="alert(1)">Acme & Sons'
HEADLINE = "5 deals won for 84.7K (month to date: 26 for 427K)."

# What the performance entries say the page cost: every byte transferred, and navigation start to load event.
PAGE_COST = """() => {
    const nav = performance.getEntriesByType('navigation')[0];
    const resources = performance.getEntriesByType('resource');
    return {
        bytes: nav.transferSize + resources.reduce((sum, r) => sum + r.transferSize, 0),
        requests: 1 + resources.length,
        load_ms: Math.round(nav.loadEventEnd - nav.startTime),
    };
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"no headless Chromium at {CHROMIUM}: run scripts/ensure-chromium.sh (or set CHROMIUM)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def report_day(env: dict[str, str]) -> dt.date:
    """The day the page reports on: the last complete one, as the briefing picks it."""
    today = dt.datetime.now(ZoneInfo(env["CRM_TIMEZONE"])).date()
    with connect("duckdb", read_only=True) as conn:
        return default_report_date(conn, "duckdb", today)


def kpis_on(day: dt.date) -> dict[str, float | None]:
    with connect("duckdb", read_only=True) as conn:
        rows = conn.execute("select metric, value from analytics.kpi_daily where kpi_date = ?", [day]).fetchall()
    return {metric: None if value is None else float(value) for metric, value in rows}


def store_briefing(day: dt.date, message: str) -> None:
    store.save("duckdb", summary(day, "duckdb", message, dt.datetime.now(dt.UTC)))


def flag_unusual_leads(day: dt.date) -> None:
    """A row of kpi_anomalies as the mart writes one: the day's new leads far above the usual weekday range."""
    with connect("duckdb") as conn:
        conn.execute("delete from analytics.kpi_anomalies where kpi_date = ? and metric = 'leads_created'", [day])
        conn.execute(
            "insert into analytics.kpi_anomalies (anomaly_id, kpi_date, metric, period, window_start, value, unit, "
            "expected_low, expected_high, baseline_median, baseline_days, is_anomaly, direction, rule) "
            "values (?, ?, 'leads_created', 'day', ?, 168, 'count', 12, 24, 18, 8, true, 'high', "
            "'same_weekday_last_8_weeks')",
            [f"{day}-leads_created", day, day],
        )


def page_text(page: Any, selector: str = "body") -> str:
    return " ".join(page.inner_text(selector).split())


def test_the_dashboard_draws_everything_from_the_api_alone(
    warehouse_env: dict[str, str], browser: Any, tmp_path: Path, record_property: Any
) -> None:
    """GIVEN the API (no token, as on a laptop) over a built warehouse holding the day's briefing, whose deal
         name is hostile markup, and an unusual number of new leads; Chromium reaches no host but 127.0.0.1
    WHEN a sales manager opens /dashboard on a laptop, then on a phone
    THEN every chart is drawn (an SVG of real size with marks), the KPI cards show the day's figures as the
         briefing writes them, with the open pipeline's move since the day before; the unusual value is
         phrased, the briefing's headline leads the page and the hostile name shows as text; no request left
         127.0.0.1, the page forbids external loads, and nothing is wider than the phone's screen."""
    day = report_day(warehouse_env)
    store_briefing(
        day,
        f"*Sales briefing · {fmt_date(day)}*\n\n*{HEADLINE}*\n\n*Highlights*\n"
        f"• Biggest win of the day: {HOSTILE} for 40.4K.\n\n_Figures computed from the CRM._",
    )
    flag_unusual_leads(day)
    figures, day_before = kpis_on(day), kpis_on(day - dt.timedelta(days=1))
    requests: list[str] = []

    with serve(warehouse_env, "duckdb", token=None) as api:
        laptop = browser.new_context(viewport=LAPTOP)
        page = laptop.new_page()
        page.on("request", lambda request: requests.append(request.url))
        first = page.goto(api.url + "/dashboard", wait_until="load")
        cold = page.evaluate(PAGE_COST)
        page.reload(wait_until="load")
        warm = page.evaluate(PAGE_COST)

        charts = {
            name: (
                page.locator(f'figure[data-chart="{name}"] svg').first.bounding_box(),
                page.locator(f'figure[data-chart="{name}"] svg .role-mark > *').count(),
            )
            for name in CHART_NAMES
        }
        cards = {
            metric: page_text(page, f'.kpi[data-metric="{metric}"]')
            for metric in ("open_pipeline_amount", "leads_created", "win_rate_30d")
        }
        unusual = page_text(page, ".alerts") if page.locator(".alerts").count() else ""
        headline = page_text(page, ".top .lead")
        briefing = page_text(page, ".briefing")
        images = page.locator("img").count()
        screenshot = Path(os.environ.get("DASHBOARD_SCREENSHOT") or tmp_path / "dashboard.png")
        page.screenshot(path=str(screenshot), full_page=True)

        phone = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
        small = phone.new_page()
        small.on("request", lambda request: requests.append(request.url))
        small.goto(api.url + "/dashboard", wait_until="load")
        overflow = small.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        phone_screenshot = screenshot.with_name(screenshot.stem + "-phone.png")
        small.screenshot(path=str(phone_screenshot), full_page=True)
        laptop.close()
        phone.close()

    record_property("kept", f"dashboard screenshot: {screenshot} (phone: {phone_screenshot})")
    record_property(
        "kept",
        f"dashboard page weight: {cold['bytes']:,} bytes in {cold['requests']} request(s); load "
        f"{cold['load_ms']} ms on the first visit (charts drawn), {warm['load_ms']} ms on a reload (memoized)",
    )
    assert first is not None and first.status == 200
    for name, (box, marks) in charts.items():
        assert box is not None and box["width"] > 100 and box["height"] > 100, f"{name} is not drawn: {box}"
        assert marks > 0, f"{name} has no marks"
    assert cards["open_pipeline_amount"].startswith(f"Open pipeline {fmt_amount(figures['open_pipeline_amount'])}")
    assert f"{fmt_count(int(figures['open_pipeline_count']))} open deals" in cards["open_pipeline_amount"]
    assert cards["leads_created"].startswith(f"New leads {fmt_count(int(figures['leads_created']))}")
    if figures["win_rate_30d"] is not None:
        assert cards["win_rate_30d"].startswith(f"Win rate, 30 days {fmt_ratio(figures['win_rate_30d'])}")
    moved = figures["open_pipeline_amount"] - day_before["open_pipeline_amount"]  # type: ignore[operator]
    arrow = "▲" if round(moved) > 0 else "▼" if round(moved) < 0 else "="
    assert re.search(rf"{arrow} \S+.* vs {day - dt.timedelta(days=1):%a}", cards["open_pipeline_amount"])
    assert f"New leads on {day:%a} {day.day} {day:%b}: 168, above the usual {day:%A} range of 12–24" in unusual
    assert headline == HEADLINE
    assert "Biggest win of the day: " + HOSTILE + " for 40.4K." in briefing
    assert images == 0
    assert requests and all(urlsplit(url).hostname == "127.0.0.1" or url.startswith("data:") for url in requests), (
        f"requests that left the machine: {[url for url in requests if '127.0.0.1' not in url]}"
    )
    policy = first.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'none'" in policy and "http" not in policy
    assert cold["bytes"] < 1_000_000, "the page weighs more than a megabyte"
    assert overflow <= 0, f"the page is {overflow}px wider than a phone's screen"


def test_with_a_token_the_dashboard_asks_for_it_once_and_keeps_a_session(
    warehouse_env: dict[str, str], browser: Any
) -> None:
    """GIVEN the API started with API_TOKEN
    WHEN a browser opens /dashboard, signs in with a wrong token, then types the right one, then signs out
    THEN it first gets only the sign-in form (no figure, chart or briefing); the wrong token gets the form again
         with an error and a 401; the right one gets the dashboard through a session cookie that is HttpOnly,
         SameSite=Strict, scoped to the dashboard and does not hold the token (nor opens the JSON routes);
         signing out asks for the token again."""
    day = report_day(warehouse_env)
    store_briefing(day, f"*Sales briefing · {fmt_date(day)}*\n\n*{HEADLINE}*")
    open_pipeline = fmt_amount(kpis_on(day)["open_pipeline_amount"])  # type: ignore[arg-type]

    with serve(warehouse_env, "duckdb") as api:
        context = browser.new_context(viewport=LAPTOP)
        page = context.new_page()
        before = page.goto(api.url + "/dashboard")
        form_only = (
            page.locator("input[name=token]").count(),
            page.locator(".kpi, svg, .briefing, .quality, .alerts").count(),
            page_text(page),
        )

        page.fill("input[name=token]", "guess")
        with page.expect_navigation() as wrong:
            page.click("button[type=submit]")
        refused = (wrong.value.status, page_text(page, ".error"), context.cookies())

        page.fill("input[name=token]", TOKEN)
        with page.expect_navigation() as right:
            page.click("button[type=submit]")
        signed_in = (right.value.status, page.url, page_text(page, ".top"), page.locator(".kpi").count())
        cookies = context.cookies()
        script_sees = page.evaluate("document.cookie")
        api_with_cookie = httpx.get(
            api.url + "/api/metrics", cookies={c["name"]: c["value"] for c in cookies}, timeout=30
        )

        with page.expect_navigation():
            page.click("text=Sign out")
        signed_out = (page.locator("input[name=token]").count(), page.locator(".kpi").count(), context.cookies())
        context.close()

    assert before is not None and before.status == 200
    assert form_only[:2] == (1, 0)
    for private in (open_pipeline, HEADLINE, "Open pipeline", "records to fix"):
        assert private not in form_only[2]
    assert refused[0] == 401 and "not right" in refused[1] and refused[2] == []
    assert signed_in[0] == 200 and signed_in[1] == api.url + "/dashboard"
    assert HEADLINE in signed_in[2] and signed_in[3] >= 4
    [cookie] = cookies
    assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (
        SESSION_COOKIE,
        True,
        "Strict",
        "/dashboard",
    )
    assert TOKEN not in cookie["value"]
    assert cookie["expires"] > time.time()
    assert script_sees == ""
    assert api_with_cookie.status_code == 401
    assert signed_out == (1, 0, [])


@pytest.mark.parametrize("target", ["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_script_with_the_bearer_token_gets_the_page_without_the_anomalies_mart(
    warehouse_env: dict[str, str], target: Target
) -> None:
    """GIVEN the API with a token, over a warehouse (of each kind) built before the anomalies mart existed and
         without any briefing yet
    WHEN a script asks for /dashboard with `Authorization: Bearer`, and another without it
    THEN the first gets the whole page, with no unusual-values section and a word on how to make a briefing;
         the second only the sign-in form."""
    with connect(target) as conn:
        cur = conn.cursor()
        cur.execute("drop table if exists analytics.kpi_anomalies")
        cur.close()
        conn.commit()

    with serve(warehouse_env, target) as api:
        page = api.get("/dashboard")
        anonymous = api.get("/dashboard", token=None)

    assert page.status_code == 200
    assert 'class="card kpi"' in page.text and page.text.count("<svg") >= len(CHART_NAMES)
    assert "Unusual" not in page.text and "Nothing unusual" not in page.text
    assert "No briefing has been generated yet" in page.text
    assert "Sign out" not in page.text  # a script's header is not a session to end
    assert (
        anonymous.status_code == 200 and 'name="token"' in anonymous.text and 'class="card kpi"' not in anonymous.text
    )


def test_a_session_ends_when_it_expires_is_altered_or_the_token_changes() -> None:
    """GIVEN a session cookie made for a token
    WHEN it is checked as made, after its expiry, altered, and against another token
    THEN only the first is a session, and the cookie never holds the token."""
    now = time.time()
    value = session_value(TOKEN, now)
    expires, signature = value.split(".")

    assert session_ok(value, TOKEN)
    assert TOKEN not in value
    assert not session_ok(session_value(TOKEN, now - 15 * 24 * 3600), TOKEN)
    assert not session_ok(f"{int(expires) + 3600}.{signature}", TOKEN)
    assert not session_ok(value[:-1] + ("0" if value[-1] != "0" else "1"), TOKEN)
    assert not session_ok(value, TOKEN + "-rotated")
    assert not session_ok(None, TOKEN) and not session_ok("", TOKEN) and not session_ok("²." + signature, TOKEN)
