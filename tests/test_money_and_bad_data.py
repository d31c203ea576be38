"""Numbers a sales leader can trust: one currency, bad CRM data in the open, as of the sync.

The stories run against private sandbox orgs (seeds no other test uses), changed through the Zoho API the
way a sales team would change them, loaded by the pipeline CLI and built by `dbt build` on DuckDB and
PostgreSQL. The expected figures come from the org's own records as its API renders them, worked out in
plain Python (tests/test_marts.py holds that recomputation), never from the models.

- Deals in yen and euros count in the org's home currency, Amount / Exchange_Rate (Zoho's rate is units of
  the deal's currency per one unit of the home currency), in the marts, in kpi_daily and in the briefing.
- A negative amount, Closing_Dates in 1900 and 2999 and a probability of 150% are listed with the rule they
  break, kept out of the sums and of the calendar, warned about by `dbt build`, and counted in the briefing.
- An org whose clock runs three days ahead of the machine still builds, up to its own today, marked as the
  day still running.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from sandbox import SandboxOrg, SandboxServer
from tests.ollama_emulator import OllamaEmulator
from tests.support.crm import CrmUser
from tests.support.postgres import create_database, drop_database
from tests.support.workspace import Workspace, make_workspace
from tests.test_marts import OrgHistory, assert_kpi_daily_equals_the_kpis_of, home_amount, query, sync_day

TARGETS = ["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)]
REPORT_DATE = dt.date(2026, 11, 20)  # the org's today: every API write below happens on it
TIMEZONE = "America/New_York"


@dataclass
class Built:
    org: SandboxOrg
    workspace: Workspace
    builds: dict[str, str]  # target -> dbt build's output
    deals: dict[str, str]  # story name -> deal id

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.org.timezone)

    def record(self, name: str) -> Mapping[str, Any]:
        return next(r for r in self.org.records("Deals") if r["id"] == self.deals[name])


def load_and_build(
    org: SandboxOrg, root: Path, postgres_server: str, database: str, targets: tuple[str, ...] = ("duckdb", "postgres")
) -> tuple[Workspace, dict[str, str]]:
    """The org loaded by the pipeline CLI and built by `dbt build` (which must pass) on these warehouses."""
    workspace = make_workspace(root)
    if "postgres" in targets:
        workspace.use_postgres(create_database(postgres_server, database))
    builds = {}
    with SandboxServer(org, port=0) as server:
        workspace.env.update(server.env())
        for target in targets:
            workspace.run("python", "-m", "pipelines.zoho", "--destination", target)
            builds[target] = workspace.dbt_build(target).stdout
    return workspace, builds


@pytest.fixture(scope="module")
def messy_org(postgres_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    """GIVEN an org that sells in yen and euros and whose users typed a few impossible values."""
    org = SandboxOrg(seed=41, leads=400, deals=160, timezone=TIMEZONE, today=REPORT_DATE)
    records = sorted(org.records("Deals"), key=lambda r: r["id"])
    open_deals = [r["id"] for r in records if not r["Stage"].startswith("Closed")]
    won_deals = [r["id"] for r in records if r["Stage"] == "Closed Won"]
    with SandboxServer(org, port=0) as server:
        crm = CrmUser(server)
        deals = {
            "yen win": crm.create_deal(
                Deal_Name="Tokyo expansion", Stage="Closed Won", Amount=50_000_000, Currency="JPY"
            ),
            "euro win": crm.create_deal(
                Deal_Name="Berlin pilot", Stage="Closed Won", Amount=1_000, Currency="EUR", Exchange_Rate=0.8
            ),
            "euro pipeline": crm.create_deal(
                Deal_Name="Paris rollout", Stage="Needs Analysis", Amount=20_000, Currency="EUR"
            ),
            "negative amount": open_deals[0],
            "probability 150": open_deals[1],
            "closing 1900": won_deals[0],
            "closing 2999": won_deals[1],
        }
        crm.update_deal(deals["negative amount"], Amount=-934)
        crm.update_deal(deals["probability 150"], Probability=150)
        crm.update_deal(deals["closing 1900"], Closing_Date="1900-01-01")
        crm.update_deal(deals["closing 2999"], Closing_Date="2999-12-31")
    database = f"messy_{uuid.uuid4().hex[:8]}"
    workspace, builds = load_and_build(org, tmp_path_factory.mktemp("messy") / "workspace", postgres_server, database)
    try:
        yield Built(org, workspace, builds, deals)
    finally:
        drop_database(postgres_server, database)


def briefing_facts(workspace: Workspace, target: str) -> tuple[dict[str, dict[str, Any]], str]:
    """The facts and the message of a dry-run briefing for REPORT_DATE (the model is unreachable, so the
    deterministic briefing is sent: the facts are the same either way)."""
    env = {k: v for k, v in workspace.env.items() if not k.startswith(("TWILIO_", "RECIPIENT_", "OLLAMA_"))}
    with OllamaEmulator() as ollama:
        ollama.down()
        env["OLLAMA_BASE_URL"] = ollama.url
        runner = Workspace(workspace.root, env)
        runner.run(
            "python",
            "-m",
            "insights.deliver",
            "--target",
            target,
            "--dry-run",
            "--date",
            REPORT_DATE.isoformat(),
            timeout=120,
        )
    [(facts_json, message)] = query(
        workspace, target, "select facts_json, message from analytics.ai_summaries order by created_at desc limit 1"
    )
    facts = json.loads(facts_json)["facts"]
    return {fact["id"]: fact for fact in facts}, message


# --------------------------------------------------------------------------- money in one currency


@pytest.mark.parametrize("target", TARGETS)
def test_deals_in_other_currencies_count_at_amount_divided_by_their_exchange_rate(messy_org: Built, target: str):
    # GIVEN a won deal of 50,000,000 JPY at the org's rate (150 yen to the dollar), a won deal of 1,000 EUR
    # saved with its own rate of 0.8, and an open deal of 20,000 EUR, in an org whose home currency is USD
    org = messy_org.org
    assert org.home_currency == "USD"

    # WHEN the marts are read
    rows = query(
        messy_org.workspace,
        target,
        """
        select deal_id, amount, amount_in_currency, currency_code, exchange_rate, home_currency_code
        from analytics.deals""",
    )
    by_id = {row[0]: row[1:] for row in rows}

    # THEN each deal is worth Amount / Exchange_Rate in USD, with the CRM's own figure, currency and rate beside it
    for name in ("yen win", "euro win", "euro pipeline"):
        record = messy_org.record(name)
        amount, original, currency, rate, home = by_id[record["id"]]
        assert (float(original), currency, float(rate), home) == (
            record["Amount"],
            record["Currency"],
            record["Exchange_Rate"],
            "USD",
        ), name
        assert float(amount) == pytest.approx(record["Amount"] / record["Exchange_Rate"], abs=1e-6), name
    assert float(by_id[messy_org.deals["yen win"]][0]) == pytest.approx(333_333.33, abs=0.01)
    assert float(by_id[messy_org.deals["euro win"]][0]) == pytest.approx(1_250)

    # AND every kpi_daily figure is the org's own, recomputed from its records in the home currency,
    # with USD as the unit of every amount
    deals = org.records("Deals")
    kpis = assert_kpi_daily_equals_the_kpis_of(messy_org.workspace, target, OrgHistory.first_sync(org), messy_org.tz)
    units = dict(
        query(
            messy_org.workspace,
            target,
            "select distinct metric, unit from analytics.kpi_daily where metric like '%amount'",
        )
    )
    assert set(units.values()) == {"USD"}

    # AND the pipeline by stage adds the euro deal in dollars
    [(stage_amount,)] = query(
        messy_org.workspace,
        target,
        "select open_amount from analytics.pipeline_by_stage where stage = 'Needs Analysis'",
    )
    open_in_stage = [d for d in deals if d["Stage"] == "Needs Analysis"]
    assert float(stage_amount) == pytest.approx(sum(home_amount(d) for d in open_in_stage), abs=0.01)

    # AND the briefing's totals use the converted amounts and say which currency they are in
    facts, message = briefing_facts(messy_org.workspace, target)
    won_today = kpis[(REPORT_DATE, "deals_won_amount")]
    assert facts["deals_won"]["values"]["amount"] == pytest.approx(won_today, abs=0.01)
    assert won_today >= 333_333.33 + 1_250
    assert facts["currency"]["values"] == {
        "currency": "USD",
        "foreign_currency_deals": 3,
        "foreign_currencies": ["EUR", "JPY"],
    }
    assert facts["top_deal_won"]["values"]["amount"] == pytest.approx(333_333.33, abs=0.01)
    assert "333K USD (50M JPY)" in facts["top_deal_won"]["prompt_text"]
    assert "USD" in message and "50.6M" not in message


# --------------------------------------------------------------------------- bad CRM data in the open


@pytest.mark.parametrize("target", TARGETS)
def test_impossible_values_are_listed_kept_out_of_the_sums_and_counted_in_the_briefing(messy_org: Built, target: str):
    # GIVEN an open deal with an amount of -934, another with a probability of 150%, and two won deals whose
    # Closing_Date was changed to 1 Jan 1900 and 31 Dec 2999
    deals = messy_org.deals

    # WHEN data_quality_issues is read
    issues = set(
        query(messy_org.workspace, target, "select module, record_id, rule from analytics.data_quality_issues")
    )

    # THEN it lists exactly those records, each with every rule it breaks
    assert issues == {
        ("Deals", deals["negative amount"], "negative_amount"),
        ("Deals", deals["probability 150"], "probability_outside_0_to_100"),
        ("Deals", deals["closing 1900"], "closing_date_before_creation"),
        ("Deals", deals["closing 1900"], "closing_date_implausible"),
        ("Deals", deals["closing 2999"], "closing_date_implausible"),
    }

    # AND dbt build passed with a warning about them
    assert (
        "WARN" in messy_org.builds[target] and "assert_no_crm_record_breaks_a_sanity_rule" in messy_org.builds[target]
    )

    # AND the deals mart keeps the CRM's value visible but out of the sums
    [(amount, original)] = query(
        messy_org.workspace,
        target,
        f"""
        select amount, amount_in_currency from analytics.deals where deal_id = '{deals["negative amount"]}'""",
    )
    assert amount is None and float(original) == -934
    [(probability, weighted)] = query(
        messy_org.workspace,
        target,
        f"""
        select probability, weighted_amount from analytics.deals where deal_id = '{deals["probability 150"]}'""",
    )
    assert probability is None and weighted is None

    # AND the two deals still closed on the day they were won (Zoho's Stage History says when), not in 1900
    # or 2999, so the calendar runs from the first record to the day of the sync, and every figure equals
    # the org's own, recomputed
    org = messy_org.org
    for name in ("closing 1900", "closing 2999"):
        won_on = min(
            dt.datetime.fromisoformat(h["Modified_Time"]).astimezone(messy_org.tz).date()
            for h in org.stage_history(deals[name])
            if h["Stage"] == "Closed Won"
        )
        assert query(
            messy_org.workspace, target, f"select closed_date from analytics.deals where deal_id = '{deals[name]}'"
        ) == [(won_on,)]
    history = OrgHistory.first_sync(org)
    kpis = assert_kpi_daily_equals_the_kpis_of(messy_org.workspace, target, history, messy_org.tz)
    days = sorted({day for day, _ in kpis})
    first_created = min(
        dt.datetime.fromisoformat(r["Created_Time"]).astimezone(messy_org.tz).date()
        for r in [*org.records("Leads"), *org.records("Deals")]
    )
    assert (days[0], days[-1]) == (first_created, sync_day(messy_org.workspace, target, messy_org.tz, history))

    # AND the briefing says how many records need fixing in the CRM
    facts, _ = briefing_facts(messy_org.workspace, target)
    fact = facts["data_quality"]
    assert fact["values"]["records"] == 4 and fact["severity"] == "warn"
    assert fact["prompt_text"].startswith("4 CRM records need fixing")


# --------------------------------------------------------------------------- as of the sync


@pytest.mark.parametrize("target", TARGETS)
def test_an_org_whose_clock_runs_three_days_ahead_still_builds(postgres_server: str, tmp_path: Path, target: str):
    # GIVEN an org whose clock is three days ahead of this machine: its records are dated after our today
    tz = ZoneInfo("Asia/Tokyo")
    org_today = dt.datetime.now(tz).date() + dt.timedelta(days=3)
    org = SandboxOrg(seed=43, leads=300, deals=120, timezone=str(tz), today=org_today)
    database = f"ahead_{uuid.uuid4().hex[:8]}"

    # WHEN it is loaded and built (load_and_build fails on a failing `dbt build`)
    try:
        workspace, _ = load_and_build(org, tmp_path / "workspace", postgres_server, database, (target,))

        # THEN kpi_daily runs to the org's own today, which is the one day still running, and every figure
        # equals the org's own
        rows = query(
            workspace, target, "select kpi_date, bool_and(is_complete) from analytics.kpi_daily group by kpi_date"
        )
        incomplete = [day for day, complete in rows if not complete]
        assert incomplete == [org_today] == [max(day for day, _ in rows)]
        assert_kpi_daily_equals_the_kpis_of(workspace, target, OrgHistory.first_sync(org), tz)
    finally:
        drop_database(postgres_server, database)
