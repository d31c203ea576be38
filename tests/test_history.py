"""The past holds still: a day's figures, once the syncs have seen it end, never change.

GIVEN a sandbox org (a seed no other test uses) loaded by the pipeline CLI and built by `dbt build`, then ten
simulated days - new records, edits, deletions, a deal reopened and won again, a won deal whose Closing_Date
and amount are corrected afterwards - each followed by a sync and a build, on DuckDB and on PostgreSQL:

- every kpi_daily row and every deal_daily_states row of a day that was complete at one sync is the same
  after every later sync;
- the won deal stays won on the day it was won;
- at the end, every kpi_daily figure equals the one worked out in plain Python from what the syncs saw (the
  versions read at each sync and Zoho's Stage History read at the first; tests/test_marts.py);
- the models kept record by record, which each build rewrote only for the deals and leads that changed, hold
  exactly what a full rebuild writes.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from sandbox import SandboxOrg, SandboxServer
from tests.support.crm import CrmUser
from tests.support.postgres import create_database, drop_database
from tests.support.workspace import make_workspace
from tests.test_marts import OrgHistory, assert_kpi_daily_equals_the_kpis_of, query

TARGETS = ["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)]
TIMEZONE = "Europe/Berlin"
DAYS = 7  # the day-2, day-4 and day-6 edits below, then a day with none
# What the days between the first and the last build run: the marts this test reads and what they are built from.
DAILY_MODELS = ("+kpi_daily", "+deal_daily_states", "+deals", "leads", "int_leads_seen")
# The models a build rewrites only for the deals or leads whose inputs changed (macros/kept_by_record.sql).
KEPT_BY_RECORD = {
    "int_deal_history": "analytics_intermediate",
    "int_deal_closings": "analytics_intermediate",
    "deal_stage_durations": "analytics",
    "int_deals_joined_to_stages": "analytics_intermediate",
    "int_deals_in_home_currency": "analytics_intermediate",
    "deals": "analytics",
    "int_leads_seen": "analytics_intermediate",
    "leads": "analytics",
}
# What says which build wrote a row, and so differs from a full rebuild by design.
BOOKKEEPING = {"built_at", "synced_through"}


def rows_of(workspace, target: str, schema: str, table: str) -> list[tuple]:
    """Every row of a table, bookkeeping columns left out, in a stable order."""
    columns = [
        name
        for (name,) in query(
            workspace,
            target,
            f"""
        select column_name from information_schema.columns
        where table_schema = '{schema}' and table_name = '{table}' order by column_name""",
        )
        if name not in BOOKKEEPING
    ]
    rows = query(workspace, target, f"select {', '.join(columns)} from {schema}.{table}")
    return sorted(rows, key=repr)


def assert_kept_records_equal_a_full_rebuild(workspace, target: str) -> None:
    """The models kept record by record hold, row for row, what `dbt run --full-refresh` writes for them."""
    kept = {table: rows_of(workspace, target, schema, table) for table, schema in KEPT_BY_RECORD.items()}
    assert all(kept.values())
    workspace.run(
        "dbt",
        "run",
        "--target",
        target,
        "--full-refresh",
        "--select",
        *KEPT_BY_RECORD,
        "--target-path",
        str(workspace.root / "dbt" / f"target-{target}"),
    )
    for table, schema in KEPT_BY_RECORD.items():
        assert rows_of(workspace, target, schema, table) == kept[table], table


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_days_already_observed_never_change(postgres_server: str, tmp_path: Path, target: str) -> None:
    # GIVEN an org living on the machine's calendar, loaded and built once
    tz = ZoneInfo(TIMEZONE)
    org = SandboxOrg(seed=47, leads=600, deals=240, timezone=TIMEZONE, today=dt.datetime.now(tz).date())
    workspace = make_workspace(tmp_path / "workspace")
    database = f"history_{uuid.uuid4().hex[:8]}"
    if target == "postgres":
        workspace.use_postgres(create_database(postgres_server, database))
    complete_kpis: dict[tuple, float | None] = {}  # (day, metric) of the days complete at the last sync
    complete_states: dict[tuple, tuple] = {}  # (day, deal) -> (stage, amount, probability) of those days
    history = None
    won_day = won_deal = None
    try:
        with SandboxServer(org, port=0) as server:
            workspace.env.update(server.env())
            crm = CrmUser(server)
            records = sorted(org.records("Deals"), key=lambda r: r["id"])
            reopened = next(r["id"] for r in records if r["Stage"] == "Closed Won")
            to_win = next(r["id"] for r in records if not r["Stage"].startswith("Closed"))

            for day in range(DAYS + 1):
                if day:
                    # WHEN the org lives one more day (and its people make these changes) ...
                    org.advance(1)
                    if day == 2:
                        crm.update_deal(reopened, Stage="Negotiation/Review")
                        crm.update_deal(to_win, Stage="Closed Won")
                        won_day, won_deal = org.today, to_win
                    if day == 4:
                        crm.update_deal(
                            to_win, Closing_Date=(org.today + dt.timedelta(days=20)).isoformat(), Amount=123_450
                        )
                    if day == 6:
                        crm.update_deal(reopened, Stage="Closed Won")
                # ... and is synced and built
                workspace.run("python", "-m", "pipelines.zoho", "--destination", target)
                if day in (0, DAYS):
                    workspace.dbt_build(target)
                else:  # the models read below alone: their tests ran on the first day and run again on the last
                    workspace.run(
                        "dbt",
                        "run",
                        "--target",
                        target,
                        "--select",
                        *DAILY_MODELS,
                        "--target-path",
                        str(workspace.root / "dbt" / f"target-{target}"),
                    )
                if history is None:
                    history = OrgHistory.first_sync(org)
                else:
                    history.sync()

                # THEN nothing of a day complete at an earlier sync has changed
                rows = query(workspace, target, "select kpi_date, metric, value, is_complete from analytics.kpi_daily")
                kpis = {(d, metric): None if v is None else float(v) for d, metric, v, _ in rows}
                changed = {
                    key: (value, kpis.get(key, "gone"))
                    for key, value in complete_kpis.items()
                    if kpis.get(key, "gone") != value
                }
                assert not changed, f"after day {day}: {sorted(changed.items())[:10]}"
                states = {
                    (d, deal): (stage, amount, probability)
                    for d, deal, stage, amount, probability in query(
                        workspace,
                        target,
                        "select calendar_date, deal_id, stage, amount, probability from analytics.deal_daily_states",
                    )
                }
                complete_days = {d for d, _ in complete_kpis}
                assert {k: v for k, v in states.items() if k[0] in complete_days} == complete_states, f"after day {day}"
                complete_kpis = {(d, metric): kpis[(d, metric)] for d, metric, _, complete in rows if complete}
                complete_days = {d for d, _ in complete_kpis}
                complete_states = {k: v for k, v in states.items() if k[0] in complete_days}

                if won_deal and day >= 2:
                    # AND the deal won on day 2 stays won on that day, whatever was edited since
                    [(closed_date,)] = query(
                        workspace, target, f"select closed_date from analytics.deals where deal_id = '{won_deal}'"
                    )
                    assert closed_date == won_day

        # AND every figure equals the one worked out from what the syncs saw
        assert_kpi_daily_equals_the_kpis_of(workspace, target, history, tz)
        [(reopened_days,)] = query(
            workspace,
            target,
            f"""
            select count(*) from analytics.deal_daily_states
            where deal_id = '{reopened}' and stage = 'Negotiation/Review'""",
        )
        assert reopened_days == 4  # open again from day 2 until it was won again on day 6

        # AND what the daily builds kept record by record is what a full rebuild writes
        assert_kept_records_equal_a_full_rebuild(workspace, target)
    finally:
        drop_database(postgres_server, database)


def test_a_new_time_zone_rewrites_every_record(tmp_path: Path) -> None:
    # GIVEN an org synced and built with its dates cut in UTC
    org = SandboxOrg(seed=53, leads=300, deals=120, timezone="UTC")
    workspace = make_workspace(tmp_path / "workspace")
    with SandboxServer(org, port=0) as server:
        workspace.env.update(server.env())
        workspace.run("python", "-m", "pipelines.zoho", "--destination", "duckdb")
    workspace.dbt_build("duckdb")

    # WHEN the org's time zone is set to Kolkata and the next build runs with no new sync
    workspace.env["CRM_TIMEZONE"] = "Asia/Kolkata"
    workspace.run(
        "dbt",
        "run",
        "--target",
        "duckdb",
        "--select",
        *KEPT_BY_RECORD,
        "--target-path",
        str(workspace.root / "dbt" / "target-duckdb"),
    )

    # THEN every record was rewritten with Kolkata's days: the rows are those of a full rebuild in Kolkata
    assert_kept_records_equal_a_full_rebuild(workspace, "duckdb")
