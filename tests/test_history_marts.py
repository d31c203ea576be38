"""Every row of the history marts equals a recomputation in plain Python from what the syncs saw.

GIVEN a sandbox org (a seed no other test uses) synced on four consecutive days - so the warehouse holds
several versions of many deals, deletions and Zoho's Stage History from the first sync, and one deal goes back
to a stage it had left - and built by `dbt build` on DuckDB and PostgreSQL, THEN deal_daily_states,
sales_summary_by_period, owner_performance_monthly and lead_source_cohorts equal, row for row, the figures worked
out here from the versions each sync read and the Stage History (the definitions of tests/test_marts.py: a deal
is in the state of its latest change that took effect by the evening, closes on the day it entered a won or lost
stage, money in the home currency), and stage_funnel equals the stage visits counted deal by deal.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import pytest

from sandbox import SandboxOrg, SandboxServer
from tests.support.crm import CrmUser
from tests.support.postgres import create_database, drop_database
from tests.support.workspace import Workspace, make_workspace
from tests.test_marts import OrgHistory, query, sync_day

TARGETS = ["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)]
TIMEZONE = "Australia/Sydney"
CENT = 0.01


@dataclass
class Synced:
    workspace: Workspace
    history: OrgHistory
    tz: ZoneInfo


@pytest.fixture(scope="module")
def synced_org(postgres_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synced]:
    tz = ZoneInfo(TIMEZONE)
    org = SandboxOrg(seed=53, leads=500, deals=200, timezone=TIMEZONE, today=dt.date(2026, 11, 10))
    workspace = make_workspace(tmp_path_factory.mktemp("synced") / "workspace")
    database = f"synced_{uuid.uuid4().hex[:8]}"
    workspace.use_postgres(create_database(postgres_server, database))
    history = None
    with SandboxServer(org, port=0) as server:
        workspace.env.update(server.env())
        crm = CrmUser(server)
        # One deal goes back to a stage it had left, as salespeople do: it visits Qualification twice.
        comes_back = next(
            r["id"] for r in sorted(org.records("Deals"), key=lambda r: r["id"]) if r["Stage"] == "Qualification"
        )
        for day in range(4):
            if day:
                org.advance(1)
                if day in (1, 2):
                    crm.update_deal(comes_back, Stage="Needs Analysis" if day == 1 else "Qualification")
            for target in ("duckdb", "postgres"):
                workspace.run("python", "-m", "pipelines.zoho", "--destination", target)
            if history is None:
                history = OrgHistory.first_sync(org)
            else:
                history.sync()
    for target in ("duckdb", "postgres"):
        workspace.dbt_build(target)
    try:
        yield Synced(workspace, history, tz)
    finally:
        drop_database(postgres_server, database)


def month(day: dt.date) -> dt.date:
    return day.replace(day=1)


def number(value) -> float:
    return 0.0 if value is None else float(value)


def assert_rows_equal(expected: dict, actual: dict, what: str) -> None:
    missing, extra = expected.keys() - actual.keys(), actual.keys() - expected.keys()
    wrong = {
        k: (expected[k], actual[k])
        for k in expected.keys() & actual.keys()
        if any(abs(a - b) > CENT for a, b in zip(expected[k], actual[k]))
    }
    assert not (missing or extra or wrong), (
        f"{what}: {len(missing)} missing e.g. {sorted(missing)[:3]}, {len(extra)} unexpected e.g. {sorted(extra)[:3]}, "
        f"{len(wrong)} differ e.g. {sorted(wrong.items())[:3]}"
    )


@pytest.mark.parametrize("target", TARGETS)
def test_deal_daily_states_are_the_states_the_syncs_saw(synced_org: Synced, target: str) -> None:
    last_day = sync_day(synced_org.workspace, target, synced_org.tz, synced_org.history)
    expected = {}
    for deal in synced_org.history.deal_timelines(synced_org.tz):
        for start, stop, state in deal.spans:
            day = start
            while day <= last_day and (stop is None or day < stop):
                expected[(day, deal.id)] = (state.amount, state.weighted_amount)
                day += dt.timedelta(days=1)
    actual = {
        (d, deal): (number(a), number(w))
        for d, deal, a, w in query(
            synced_org.workspace,
            target,
            "select calendar_date, deal_id, amount, weighted_amount from analytics.deal_daily_states",
        )
    }
    assert_rows_equal(expected, actual, "deal_daily_states")


@pytest.mark.parametrize("target", TARGETS)
def test_monthly_sales_summary_and_owner_standings_are_the_closes_of_the_history(
    synced_org: Synced, target: str
) -> None:
    deals = synced_org.history.deal_timelines(synced_org.tz)
    won, lost, bookings, largest, days_to_close = Counter(), Counter(), Counter(), {}, defaultdict(list)
    owner_won, owner_won_amount, owner_lost, owner_created = Counter(), Counter(), Counter(), Counter()
    for deal in deals:
        owner_created[(month(deal.created), deal.first.owner)] += 1
        for day, state in deal.closings:
            key = month(day)
            if state.status == "won":
                won[key] += 1
                bookings[key] += state.amount
                largest[key] = max(largest.get(key, 0.0), state.amount)
                days_to_close[key].append((day - deal.created).days)
                owner_won[(key, state.owner)] += 1
                owner_won_amount[(key, state.owner)] += state.amount
            else:
                lost[key] += 1
                owner_lost[(key, state.owner)] += 1

    rows = query(
        synced_org.workspace,
        target,
        """
        select period_start, deals_won, deals_lost, bookings_amount, largest_deal_amount, average_days_to_close
        from analytics.sales_summary_by_period where period_type = 'month'""",
    )
    actual = {r[0]: tuple(number(v) for v in r[1:]) for r in rows if r[1] or r[2]}
    expected = {
        m: (
            won[m],
            lost[m],
            bookings[m],
            largest.get(m, 0.0),
            sum(days_to_close[m]) / len(days_to_close[m]) if days_to_close[m] else 0.0,
        )
        for m in won.keys() | lost.keys()
    }
    assert_rows_equal(expected, actual, "sales_summary_by_period")

    rows = query(
        synced_org.workspace,
        target,
        """
        select month_start, owner_id, deals_created, deals_won, deals_won_amount, deals_lost
        from analytics.owner_performance_monthly""",
    )
    actual = {(r[0], r[1]): tuple(number(v) for v in r[2:]) for r in rows if r[2] or r[3] or r[5]}
    keys = owner_created.keys() | owner_won.keys() | owner_lost.keys()
    expected = {k: (owner_created[k], owner_won[k], owner_won_amount[k], owner_lost[k]) for k in keys}
    assert_rows_equal(expected, actual, "owner_performance_monthly")


@pytest.mark.parametrize("target", TARGETS)
def test_lead_source_cohorts_count_each_lead_in_the_month_it_arrived(synced_org: Synced, target: str) -> None:
    created, converted = Counter(), Counter()
    for versions in synced_org.history.leads.values():
        latest = max(versions, key=lambda v: dt.datetime.fromisoformat(v["Modified_Time"]))
        arrived = dt.datetime.fromisoformat(versions[0]["Created_Time"]).astimezone(synced_org.tz).date()
        key = (latest.get("Lead_Source") or "(none)", month(arrived))
        created[key] += 1
        converted[key] += any(v.get("Converted_Date_Time") for v in versions)
    rows = query(
        synced_org.workspace,
        target,
        """
        select lead_source, cohort_month, leads_created, leads_converted_so_far from analytics.lead_source_cohorts""",
    )
    actual = {(r[0], r[1]): (number(r[2]), number(r[3])) for r in rows}
    assert_rows_equal({k: (created[k], converted[k]) for k in created}, actual, "lead_source_cohorts")


@pytest.mark.parametrize("target", TARGETS)
def test_the_stage_funnel_counts_each_deal_once_per_stage_it_visited(synced_org: Synced, target: str) -> None:
    """GIVEN the live deals' stage visits (deal_stage_durations joined to deals), THEN each open stage of the
    funnel counts the deals that entered it once, however often they came back, and gives each one outcome:
    moved on (after entering, it reached a stage further down or was won), else lost (lost now), else still in;
    so the three add up to entered. The days are averaged over the visits that ended."""
    visits = query(
        synced_org.workspace,
        target,
        """
        select v.pipeline, v.stage, v.deal_id, v.visit_number, v.status, v.stage_order, v.days_in_stage
        from analytics.deal_stage_durations as v
        inner join analytics.deals as d on v.deal_id = d.deal_id""",
    )
    by_deal: dict[str, list[tuple]] = defaultdict(list)
    for visit in visits:
        by_deal[visit[2]].append(visit)
    entered, moved_on, lost, still_in = defaultdict(set), defaultdict(set), defaultdict(set), defaultdict(set)
    days = defaultdict(list)
    came_back = False
    for deal, deal_visits in by_deal.items():
        deal_visits.sort(key=lambda v: v[3])
        now = deal_visits[-1][4]
        first_entry: dict[tuple, int] = {}
        for index, (pipeline, stage, _, _, status, order, spent) in enumerate(deal_visits):
            if status != "open" or order is None:
                continue
            key = (pipeline or "", stage)
            came_back |= key in first_entry
            first_entry.setdefault(key, index)
            if spent is not None:
                days[key].append(spent)
        for key, index in first_entry.items():
            order = deal_visits[index][5]
            later = deal_visits[index + 1 :]
            entered[key].add(deal)
            if any(v[4] == "won" or (v[4] == "open" and v[5] is not None and v[5] > order) for v in later):
                moved_on[key].add(deal)
            elif now == "lost":
                lost[key].add(deal)
            else:
                still_in[key].add(deal)
    assert came_back, "no deal came back to a stage it had left (the fixture moves one back to Qualification)"

    rows = query(
        synced_org.workspace,
        target,
        """
        select coalesce(pipeline, ''), stage, deals_entered, deals_moved_on, deals_lost_from_stage,
            deals_still_in_stage, average_days_in_stage
        from analytics.stage_funnel""",
    )
    actual = {(r[0], r[1]): tuple(number(v) for v in r[2:]) for r in rows}
    for key, (total, *outcomes, _) in actual.items():
        assert total == sum(outcomes), f"{key}: moved on + lost + still in = {sum(outcomes)}, entered {total}"
    expected = {
        k: (
            len(entered[k]),
            len(moved_on[k]),
            len(lost[k]),
            len(still_in[k]),
            sum(days[k]) / len(days[k]) if days[k] else 0.0,
        )
        for k in entered
    }
    assert_rows_equal(expected, actual, "stage_funnel")
