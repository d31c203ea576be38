"""A closing date is a typo or a deadline by one rule: data_quality_issues' closing_date_implausible.

GIVEN a sandbox org (a seed no other test uses) whose reps typed, through the Zoho API, closing dates on open
deals of 1 Jan 1900, the day before the org's first record, the first record's day itself, the report day's
eve and 31 Dec 2999, and pushed one to a day just over five years after the report day (within five years of
the sync, which comes later); loaded by the pipeline CLI and built by `dbt build` on DuckDB and PostgreSQL
(without the unit tests, as the daily workflow builds).
WHEN the briefing is built for the day of those writes (`python -m insights.deliver --dry-run --date ...`)
THEN its overdue fact counts exactly the open deals whose closing date is on or before the day and that
data_quality_issues does not list as closing_date_implausible: the first record's day and the eve are overdue,
1900 and the day before the first record are not (they are listed as typos), and 2999 is neither overdue nor
due soon
AND the deal pushed just over five years ahead, which data_quality_issues does not list, is flagged as pushed:
the rules judge a date by the same bounds (from the first record to `implausible_years_ahead` years after the
sync), not by five years after the report day.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from insights.deal_flags import flag_deals
from sandbox import SandboxOrg, SandboxServer
from tests.ollama_emulator import OllamaEmulator
from tests.support.crm import CrmUser
from tests.support.postgres import create_database, drop_database
from tests.support.workspace import Workspace, make_workspace
from tests.test_marts import query

TARGETS = ["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)]
TIMEZONE = "America/New_York"
TODAY = dt.date(2026, 11, 20)  # the org's today: every API write below happens on it; the report day


@dataclass
class Typed:
    workspace: Workspace
    deals: dict[str, str]  # closing date typed -> deal id


@pytest.fixture(scope="module")
def typed_org(postgres_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Typed]:
    org = SandboxOrg(seed=71, leads=300, deals=120, timezone=TIMEZONE, today=TODAY)
    tz = ZoneInfo(TIMEZONE)
    first_record = min(
        dt.datetime.fromisoformat(r["Created_Time"]).astimezone(tz).date()
        for r in [*org.records("Leads"), *org.records("Deals")]
    )
    dates = {
        "1900": dt.date(1900, 1, 1),
        "day before the first record": first_record - dt.timedelta(days=1),
        "first record day": first_record,
        "eve": TODAY - dt.timedelta(days=1),
        "2999": dt.date(2999, 12, 31),
        "pushed past five years": TODAY.replace(year=TODAY.year + 5) + dt.timedelta(days=1),
    }
    workspace = make_workspace(tmp_path_factory.mktemp("typed") / "workspace")
    database = f"typed_{uuid.uuid4().hex[:8]}"
    workspace.use_postgres(create_database(postgres_server, database))
    records = sorted(org.records("Deals"), key=lambda r: r["id"])
    deals = dict(zip(dates, (r["id"] for r in records if not r["Stage"].startswith("Closed"))))
    with SandboxServer(org, port=0) as server:
        workspace.env.update(server.env())
        crm = CrmUser(server)
        for name, day in dates.items():
            crm.update_deal(deals[name], Closing_Date=day.isoformat())
        for target in ("duckdb", "postgres"):
            workspace.run("python", "-m", "pipelines.zoho", "--destination", target)
            workspace.dbt_build(target, "--exclude-resource-type", "unit_test")
    try:
        yield Typed(workspace, deals)
    finally:
        drop_database(postgres_server, database)


def briefing_facts(workspace: Workspace, target: str, day: dt.date) -> dict[str, dict[str, Any]]:
    """The facts of a dry-run briefing for `day` (the model is unreachable: the facts are the same either way)."""
    env = {k: v for k, v in workspace.env.items() if not k.startswith(("TWILIO_", "RECIPIENT_", "OLLAMA_"))}
    with OllamaEmulator() as ollama:
        ollama.down()
        Workspace(workspace.root, {**env, "OLLAMA_BASE_URL": ollama.url}).run(
            "python", "-m", "insights.deliver", "--target", target, "--dry-run", "--date", day.isoformat(), timeout=180
        )
    [(facts_json,)] = query(
        workspace, target, "select facts_json from analytics.ai_summaries order by created_at desc limit 1"
    )
    return {fact["id"]: fact for fact in json.loads(facts_json)["facts"]}


def connected(workspace: Workspace, target: str, read: Any, *args: Any) -> Any:
    """`read(conn, target, *args)` on a connection to the workspace's warehouse."""
    if target == "duckdb":
        import duckdb

        conn = duckdb.connect(str(workspace.duckdb_path), read_only=True)
    else:
        import psycopg2

        conn = psycopg2.connect(workspace.env["DATABASE_URL"])
    try:
        return read(conn, target, *args)
    finally:
        conn.close()


@pytest.mark.parametrize("target", TARGETS)
def test_a_closing_date_is_a_typo_or_a_deadline_by_the_rule_of_data_quality_issues(
    typed_org: Typed, target: str
) -> None:
    # GIVEN open deals with closing dates in 1900, just before and on the first record's day, on the eve and in 2999
    deals = typed_org.deals
    typos = {
        record
        for (record,) in query(
            typed_org.workspace,
            target,
            "select record_id from analytics.data_quality_issues where rule = 'closing_date_implausible'",
        )
    }
    assert typos == {deals["1900"], deals["day before the first record"], deals["2999"]}

    # WHEN the briefing of the day is built
    facts = briefing_facts(typed_org.workspace, target, TODAY)

    # THEN the overdue deals are the open deals due on or before the day that the marts do not call a typo
    open_deals = query(
        typed_org.workspace,
        target,
        f"""
        select s.deal_id, s.closing_date, coalesce(s.amount, 0) from analytics.deal_daily_states s
        join analytics.deals d on d.deal_id = s.deal_id where s.calendar_date = date '{TODAY.isoformat()}'""",
    )
    overdue = {
        deal: float(amount)
        for deal, closing, amount in open_deals
        if closing is not None and closing <= TODAY and deal not in typos
    }
    assert {deals["first record day"], deals["eve"]} <= overdue.keys()
    fact = facts["overdue_deals"]["values"]
    assert (fact["count"], fact["amount"]) == (len(overdue), pytest.approx(sum(overdue.values()), abs=0.01))

    # AND 2999 is not due soon either: the closing-soon window holds only dates within a week of the day
    week = TODAY + dt.timedelta(days=7)
    soon = {deal for deal, closing, _ in open_deals if closing is not None and TODAY < closing <= week}
    assert deals["2999"] not in soon
    assert facts.get("closing_soon", {}).get("values", {}).get("count", 0) == len(soon)

    # AND the deal pushed just over five years ahead - a real date to data_quality_issues - is a push
    [(sync_day,)] = query(typed_org.workspace, target, "select max(kpi_date) from analytics.kpi_daily")
    assert sync_day > TODAY, "the sync's day comes after the report day, so the two five-year bounds differ"
    pushed = next(
        deal
        for deal in connected(typed_org.workspace, target, flag_deals, TODAY).deals
        if deal.deal_id == deals["pushed past five years"]
    )
    assert pushed.flag("pushed") is not None, pushed
    assert pushed.flag("pushed").values["to_date"] == TODAY.replace(year=TODAY.year + 5) + dt.timedelta(days=1)
