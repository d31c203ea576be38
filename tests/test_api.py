"""The metrics API: `python -m insights.api` serves the marts' numbers over HTTP, behind a token.

Each test starts the server as a user would (`tests.support.api.serve`), in its own process on a free
port, over a private copy of the warehouse built from the sandbox CRM, and
compares what it answers with SQL run directly on the warehouse.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import httpx
import pytest

from insights import store
from insights.api import RELOAD_INTERVAL_SECONDS
from insights.ledger import DeliveryLedger
from tests.support.api import TOKEN, serve
from warehouse import PROJECT_ROOT, Target, connect

BOTH_TARGETS = pytest.mark.parametrize("target", ["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])


def sql(target: Target, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with connect(target, read_only=True) as conn:
        cur = conn.cursor()
        cur.execute(query, list(params))
        return cur.fetchall()


def summary(
    report_date: dt.date, target: Target, message: str, created_at: dt.datetime, dry_run: bool = False
) -> store.Summary:
    return store.Summary(
        report_date=report_date,
        target=target,
        model="llama3.2:1b",
        prompt_hash="abc",
        prompt_tokens=900,
        completion_tokens=300,
        llm_seconds=12.5,
        total_seconds=13.0,
        facts={"facts": [{"id": "F1"}]},
        model_json='{"picks": ["F1"]}',
        message=message,
        used_fallback=False,
        fallback_reason=None,
        created_at=created_at,
        dry_run=dry_run,
    )


@BOTH_TARGETS
def test_metrics_default_to_the_last_complete_day_like_the_briefing(
    warehouse_env: dict[str, str], target: Target
) -> None:
    """GIVEN a warehouse built from the sandbox CRM, where dbt has also started on today (a partial day)
    WHEN a client asks for the metrics without a date
    THEN it gets every metric of the last complete day (the one the morning briefing reports),
    with its value and unit, not today's partial numbers."""
    today = dt.datetime.now(ZoneInfo(warehouse_env["CRM_TIMEZONE"])).date()
    [(latest,)] = sql(target, f"select max(kpi_date) from analytics.kpi_daily where kpi_date < '{today}'")
    expected = dict(
        (metric, (value, unit))
        for metric, value, unit in sql(
            target, f"select metric, value, unit from analytics.kpi_daily where kpi_date = '{latest}'"
        )
    )
    if not sql(target, f"select 1 from analytics.kpi_daily where kpi_date = '{today}'"):
        with connect(target) as conn:  # what a dbt run in the middle of the day leaves behind
            conn.cursor().execute(
                f"insert into analytics.kpi_daily (kpi_date, metric, value, unit) values ('{today}', 'deals_won', 1, 'count')"
            )
            conn.commit()

    with serve(warehouse_env, target) as api:
        answer = api.get("/api/metrics")
        partial = api.get(f"/api/metrics?date={today}")

    assert answer.status_code == 200
    body = answer.json()
    assert (body["as_of"], body["target"], body["complete_day"]) == (latest.isoformat(), target, True)
    assert set(body["metrics"]) == set(expected) >= {"open_pipeline_amount", "deals_won", "win_rate_30d"}
    for metric, (value, unit) in expected.items():
        served = body["metrics"][metric]
        assert served["unit"] == unit
        assert served["value"] == (None if value is None else pytest.approx(float(value), rel=1e-9))
    assert (partial.json()["as_of"], partial.json()["complete_day"]) == (today.isoformat(), False)


def test_metrics_of_a_chosen_day_and_of_a_day_without_data(warehouse_env: dict[str, str]) -> None:
    """GIVEN the API over the DuckDB warehouse
    WHEN a client asks for one day's metrics, a day before the CRM existed, and a malformed date
    THEN it gets that day's numbers, a 404 naming the days covered, and a 422."""
    [(first, last)] = sql("duckdb", "select min(kpi_date), max(kpi_date) from analytics.kpi_daily")
    day = first + (last - first) / 2
    expected = dict(sql("duckdb", f"select metric, value from analytics.kpi_daily where kpi_date = '{day}'"))

    with serve(warehouse_env, "duckdb") as api:
        chosen = api.get(f"/api/metrics?date={day}")
        before = api.get("/api/metrics?date=1999-01-01")
        malformed = api.get("/api/metrics?date=yesterday")

    assert chosen.json()["as_of"] == day.isoformat()
    assert {m: v["value"] for m, v in chosen.json()["metrics"].items()} == {
        m: None if v is None else pytest.approx(float(v)) for m, v in expected.items()
    }
    assert before.status_code == 404
    assert f"{first} to {last}" in before.json()["detail"]
    assert malformed.status_code == 422


def test_requests_without_the_token_are_refused_except_health_and_docs(warehouse_env: dict[str, str]) -> None:
    """GIVEN the API started with API_TOKEN set
    WHEN clients call it without a token, with a wrong one and with the right one
    THEN data routes answer 401 (with a Bearer challenge) unless the token is right;
    health and the documentation answer without one, and the documentation needs nothing from the internet."""
    with serve(warehouse_env, "duckdb") as api:
        anonymous = api.get("/api/metrics", token=None)
        wrong = api.get("/api/metrics", token="guess")
        summaries = api.get("/api/summaries/latest", token=None)
        right = api.get("/api/metrics")
        health = api.get("/api/health", token=None)
        docs = api.get("/docs", token=None)
        openapi = api.get("/openapi.json", token=None)

    assert (anonymous.status_code, wrong.status_code, summaries.status_code) == (401, 401, 401)
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert "API_TOKEN" in anonymous.json()["detail"]
    assert right.status_code == 200
    assert health.status_code == 200
    assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
    for route in ("/api/metrics", "/api/summaries/latest", "/api/health"):
        assert route in docs.text
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", docs.text), "the docs page loads something from elsewhere"
    assert {"/api/metrics", "/api/summaries/latest", "/api/health"} <= set(openapi.json()["paths"])


def test_head_is_answered_wherever_get_is(warehouse_env: dict[str, str]) -> None:
    """GIVEN the API running
    WHEN a monitor sends HEAD to each route
    THEN it gets the status GET would give (401 without the token, 200 with it), and no body."""
    with serve(warehouse_env, "duckdb") as api:
        answers = {
            path: httpx.head(api.url + path, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
            for path in ("/api/metrics", "/api/summaries/latest", "/api/health", "/docs", "/openapi.json")
        }
        anonymous = httpx.head(api.url + "/api/metrics", timeout=30)

    assert {path: a.status_code for path, a in answers.items()} == {
        "/api/metrics": 200,
        "/api/summaries/latest": 404,
        "/api/health": 200,
        "/docs": 200,
        "/openapi.json": 200,
    }
    assert all(a.content == b"" for a in answers.values())
    assert anonymous.status_code == 401


def test_without_a_token_configured_the_api_is_open(warehouse_env: dict[str, str]) -> None:
    """GIVEN the API started without API_TOKEN (a laptop, loopback only)
    WHEN a client calls it without credentials
    THEN it answers."""
    with serve(warehouse_env, "duckdb", token=None) as api:
        assert api.get("/api/metrics", token=None).status_code == 200


@BOTH_TARGETS
def test_the_latest_briefing_is_served_once_there_is_one(warehouse_env: dict[str, str], target: Target) -> None:
    """GIVEN a warehouse where no briefing has been generated yet
    WHEN a client asks for the latest summary, two briefings are stored, and it asks again
    THEN it first gets a 404 saying how to generate one, then the most recent briefing with its facts."""
    with serve(warehouse_env, target) as api:
        before = api.get("/api/summaries/latest")
        morning = dt.datetime(2026, 11, 20, 3, 0, tzinfo=dt.UTC)
        store.save(target, summary(dt.date(2026, 11, 19), target, "*Thursday* briefing", morning))
        store.save(target, summary(dt.date(2026, 11, 20), target, "*Friday* briefing", morning + dt.timedelta(days=1)))
        time.sleep(RELOAD_INTERVAL_SECONDS)
        after = api.get("/api/summaries/latest")

    assert before.status_code == 404
    assert "python -m insights.deliver" in before.json()["detail"]
    assert after.status_code == 200
    latest = after.json()
    assert (latest["report_date"], latest["message"], latest["target"]) == ("2026-11-20", "*Friday* briefing", target)
    assert latest["facts_json"] == {"facts": [{"id": "F1"}]}
    assert latest["used_fallback"] is False


def test_a_later_dry_run_does_not_hide_the_briefing_that_was_sent(warehouse_env: dict[str, str]) -> None:
    """GIVEN a briefing that was sent, and a later dry run (printed, never sent)
    WHEN a client asks for the latest summary
    THEN it gets the one that was sent; with only dry runs stored it gets the newest dry run, marked as such."""
    morning = dt.datetime(2026, 11, 20, 3, 0, tzinfo=dt.UTC)
    with serve(warehouse_env, "duckdb") as api:
        store.save(
            "duckdb",
            summary(dt.date(2026, 11, 18), "duckdb", "rehearsal", morning - dt.timedelta(days=2), dry_run=True),
        )
        time.sleep(RELOAD_INTERVAL_SECONDS)
        only_dry = api.get("/api/summaries/latest").json()
        store.save("duckdb", summary(dt.date(2026, 11, 19), "duckdb", "sent", morning))
        store.save(
            "duckdb",
            summary(dt.date(2026, 11, 20), "duckdb", "rehearsal", morning + dt.timedelta(hours=1), dry_run=True),
        )
        time.sleep(RELOAD_INTERVAL_SECONDS)
        latest = api.get("/api/summaries/latest").json()

    assert (only_dry["message"], only_dry["dry_run"], only_dry["delivery"]["status"]) == ("rehearsal", True, "dry_run")
    assert (latest["message"], latest["report_date"], latest["dry_run"]) == ("sent", "2026-11-19", False)


@BOTH_TARGETS
def test_health_reports_the_last_sync_and_the_last_delivery(warehouse_env: dict[str, str], target: Target) -> None:
    """GIVEN a warehouse loaded by the pipeline
    WHEN a briefing delivery is recorded and health is asked without a token
    THEN it reports the warehouse reachable, the last completed load of zoho_raw and the delivery,
    without any recipient's number."""
    [(last_load,)] = sql(target, "select max(inserted_at) from zoho_raw._dlt_loads where status = 0")
    ledger = DeliveryLedger(target)
    ledger.ensure_table()
    ledger.start_attempt(dt.date(2026, 11, 20), "whatsapp:+15550000001", "hash")
    ledger.finish(dt.date(2026, 11, 20), "whatsapp:+15550000001", "accepted", message_sid="SM" + "0" * 32)

    with serve(warehouse_env, target) as api:
        health = api.get("/api/health", token=None)

    assert health.status_code == 200
    body = health.json()
    assert (body["status"], body["warehouse"], body["target"]) == ("ok", "reachable", target)
    assert dt.datetime.fromisoformat(body["last_sync"]) == last_load
    assert body["last_delivery"]["report_date"] == "2026-11-20"
    assert body["last_delivery"]["status"] == "accepted"
    assert "+15550000001" not in health.text


def test_data_written_between_requests_is_served_by_the_next_request(warehouse_env: dict[str, str]) -> None:
    """GIVEN the API running over the DuckDB file
    WHEN dbt writes a newer day into kpi_daily while it runs
    THEN the write is not blocked by the API, and a request a moment later shows the new day."""
    with serve(warehouse_env, "duckdb") as api:
        [(last,)] = sql("duckdb", "select max(kpi_date) from analytics.kpi_daily")
        newer = last + dt.timedelta(days=1)
        assert api.get(f"/api/metrics?date={newer}").status_code == 404
        with connect("duckdb") as conn:  # a writer, as dbt is: fails if the API held the file
            conn.execute(
                "insert into analytics.kpi_daily (kpi_date, metric, value, unit) values (?, 'deals_won', 4, 'count')",
                [newer],
            )
        time.sleep(RELOAD_INTERVAL_SECONDS)
        after = api.get(f"/api/metrics?date={newer}").json()

    assert after["as_of"] == newer.isoformat()
    assert after["metrics"] == {"deals_won": {"value": 4, "unit": "count"}}


@pytest.mark.parametrize(
    "target, broken",
    [
        ("duckdb", {"DUCKDB_PATH": "no-such-dir/warehouse.duckdb"}),
        pytest.param(
            "postgres", {"DATABASE_URL": "postgresql://postgres:unused@127.0.0.1:9/none"}, marks=pytest.mark.postgres
        ),
    ],
)
def test_health_is_503_when_the_warehouse_is_unreachable(
    workspace: Any, target: Target, broken: dict[str, str]
) -> None:
    """GIVEN the API pointed at a warehouse that is not there (no DuckDB file, no Postgres server)
    WHEN health and metrics are asked
    THEN both answer 503 with what to check, and the server keeps running; without the token health names
    no file path, host or process, with it the cause is given."""
    with serve({**workspace.env, **broken}, target) as api:
        health = api.get("/api/health", token=None)
        metrics = api.get("/api/metrics")
        again = api.get("/api/health", token=None)
        authenticated = api.get("/api/health")

    assert health.status_code == metrics.status_code == again.status_code == 503
    assert health.json()["status"] == "unavailable"
    assert "DUCKDB_PATH" in health.json()["detail"] or "DATABASE_URL" in health.json()["detail"]
    for private in ("no-such-dir", "127.0.0.1", str(PROJECT_ROOT), "PID", "cause"):
        assert private not in health.text
    assert "cause" in authenticated.json()


def test_after_make_demo_the_api_serves_the_demo_warehouse(warehouse_env: dict[str, str], tmp_path: Path) -> None:
    """GIVEN a project folder where `make demo` left demo.duckdb, no warehouse.duckdb, and DUCKDB_PATH unset
    WHEN the user starts the API as `make api` does
    THEN it says it serves the demo warehouse, and the metrics come from that file."""
    project = tmp_path / "project"  # the project's code, so its folder is the one the API looks in
    for package in ("insights", "warehouse"):
        shutil.copytree(PROJECT_ROOT / package, project / package, ignore=shutil.ignore_patterns("__pycache__"))
    demo = project / "demo.duckdb"
    shutil.copy(warehouse_env["DUCKDB_PATH"], demo)
    import duckdb

    with duckdb.connect(str(demo)) as conn:  # a day only this file has, to tell it from any other warehouse
        conn.execute(
            "insert into analytics.kpi_daily (kpi_date, metric, value, unit) values ('2099-01-01', 'deals_won', 7, 'count')"
        )
    env = {k: v for k, v in warehouse_env.items() if k != "DUCKDB_PATH"}

    with serve(env, "duckdb", cwd=project) as api:
        metrics = api.get("/api/metrics?date=2099-01-01")

    assert any("serving the demo warehouse demo.duckdb" in line for line in api.log), api.log
    assert metrics.status_code == 200, metrics.text
    assert metrics.json()["metrics"] == {"deals_won": {"value": 7, "unit": "count"}}
    assert not (project / "warehouse.duckdb").exists()


def test_health_is_503_while_the_marts_are_not_built(empty_warehouse: Target) -> None:
    """GIVEN a warehouse that answers but holds no marts yet (a DuckDB file, a PostgreSQL database, before any
         `dbt build`)
    WHEN health and metrics are asked
    THEN both answer 503: health says the warehouse is reachable and what to run, instead of `ok` beside
         metrics that cannot be served."""
    if empty_warehouse == "duckdb":
        duckdb.connect(os.environ["DUCKDB_PATH"]).close()
    with serve(dict(os.environ), empty_warehouse) as api:
        health = api.get("/api/health", token=None)
        metrics = api.get("/api/metrics")

    assert health.status_code == metrics.status_code == 503
    assert health.json()["status"] == "unavailable" and health.json()["warehouse"] == "reachable"
    assert "dbt build" in health.json()["detail"]
