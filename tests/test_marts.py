"""The marts tell the same story as the CRM itself.

The main story: GIVEN the sandbox org, loaded by the pipeline and built by `dbt build` on DuckDB and on
PostgreSQL, WHEN an analyst reads `analytics.kpi_daily`, THEN every metric of every day equals the figure
worked out here, in plain Python, from the org's own records (as its API renders them, days cut in the org
timezone) - on both warehouses.

The expected figures deliberately share no code with the dbt models: they follow the definitions in the
kpi_daily docs (a deal is open at the end of day d if it was created by d and is still open or closed
after d; won/lost come from the stage's forecast type; a closed deal closed on its Closing_Date when that
lies between its creation and its last change, otherwise on the day of its last change; amounts are in the
home currency, Amount / Exchange_Rate; missing or negative amounts count as 0 and probabilities outside
0..100 weigh 0; ratios are null when nothing closed; the days run to the day of the last sync).

Edge stories rebuild a private copy of the warehouse: a young org without deals yet, a deleted deal that a
load left behind, a deal won with a Closing_Date still in the future, and an org without pipelines. One
more shows that a timezone the two warehouses would read differently is refused before anything is built.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import pytest

Kpis = dict[tuple[dt.date, str], float | None]

HOME_CURRENCY = "USD"  # the sandbox org's home currency: kpi_daily names it as the unit of money
UNITS = {
    "leads_created": "count",
    "leads_converted": "count",
    "deals_created": "count",
    "deals_created_amount": HOME_CURRENCY,
    "deals_won": "count",
    "deals_won_amount": HOME_CURRENCY,
    "deals_lost": "count",
    "deals_lost_amount": HOME_CURRENCY,
    "open_pipeline_count": "count",
    "open_pipeline_amount": HOME_CURRENCY,
    "open_pipeline_weighted_amount": HOME_CURRENCY,
    "win_rate": "ratio",
    "win_rate_30d": "ratio",
}
TARGETS = ["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)]
# The warehouse keeps 6 decimals per value; sums of a few thousand rounded products stay well inside a cent.
TOLERANCE = {"count": 0, HOME_CURRENCY: 0.01, "ratio": 1e-6}
STATUS_BY_FORECAST_TYPE = {"Closed Won": "won", "Closed Lost": "lost"}


# --------------------------------------------------------------------------- the org's own figures


def org_day(timestamp: str, tz: ZoneInfo) -> dt.date:
    """The calendar day in the org timezone of a datetime as Zoho renders it (with the user's offset)."""
    return dt.datetime.fromisoformat(timestamp).astimezone(tz).date()


def instant(timestamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(timestamp)


@dataclass(frozen=True)
class Layout:
    """The forecast type of each stage, from the pipeline settings as the API renders them.

    A deal whose (pipeline, stage) the layout does not list - an org without pipelines leaves Pipeline
    empty - takes the forecast type of a stage of that name, from the oldest pipeline that has one.
    """

    by_pipeline_and_stage: dict[tuple[str, str], str]
    by_stage: dict[str, str]

    @classmethod
    def of(cls, pipelines: Iterable[Mapping]) -> Layout:
        oldest_first = sorted(pipelines, key=lambda pipeline: int(pipeline["id"]))
        stages = [(pipeline["display_value"], stage) for pipeline in oldest_first for stage in pipeline["maps"]]
        by_stage: dict[str, str] = {}
        for _, stage in stages:
            by_stage.setdefault(stage["actual_value"], stage["forecast_type"])
        return cls({(name, stage["actual_value"]): stage["forecast_type"] for name, stage in stages}, by_stage)

    def forecast_type(self, pipeline: str | None, stage: str | None) -> str | None:
        return self.by_pipeline_and_stage.get((pipeline, stage)) or self.by_stage.get(stage)

    def status(self, pipeline: str | None, stage: str | None) -> str:
        return STATUS_BY_FORECAST_TYPE.get(self.forecast_type(pipeline, stage), "open")


def home_amount(record: Mapping) -> float:
    """The deal's value in the home currency: Zoho's rate is units of its currency per one home unit.
    A missing or negative amount (a data-quality issue) counts as 0."""
    amount, rate = record.get("Amount"), record.get("Exchange_Rate") or 1
    return amount / rate if amount is not None and amount >= 0 else 0.0


@dataclass
class OrgHistory:
    """What the syncs saw of the org, kept the way the warehouse keeps it: every version of every lead and
    deal read at a sync, Zoho's Stage History of the deals read at the first sync, and the deletion log."""

    org: object
    leads: dict[str, list[Mapping]] = field(default_factory=dict)
    deals: dict[str, list[Mapping]] = field(default_factory=dict)
    stage_history: dict[str, list[Mapping]] = field(default_factory=dict)
    deletions: dict[str, dt.datetime] = field(default_factory=dict)

    @classmethod
    def first_sync(cls, org) -> OrgHistory:
        history = cls(org)
        history.sync()
        history.stage_history = {deal_id: org.stage_history(deal_id) for deal_id in history.deals}
        return history

    def sync(self) -> None:
        """What one more sync adds: the versions it reads and the deletions logged."""
        for module, kept in (("Leads", self.leads), ("Deals", self.deals)):
            for record in self.org.records(module):
                versions = kept.setdefault(record["id"], [])
                if record["Modified_Time"] not in {v["Modified_Time"] for v in versions}:
                    versions.append(record)
        for entry in self.org.deleted_records("Deals"):
            self.deletions[entry["id"]] = instant(entry["deleted_time"])

    def deal_timelines(self, tz: ZoneInfo) -> list[Deal]:
        layout = Layout.of(self.org.pipelines())
        return [
            deal_of(versions, self.stage_history.get(deal_id, []), self.deletions.get(deal_id), layout, tz)
            for deal_id, versions in self.deals.items()
        ]

    def last_change(self) -> dt.datetime:
        times = [instant(v["Modified_Time"]) for kept in (self.leads, self.deals) for vs in kept.values() for v in vs]
        return max([*times, *self.deletions.values()])


@dataclass(frozen=True)
class State:
    """A deal from a moment on (the values after a change)."""

    at: dt.datetime
    status: str
    amount: float  # home currency, 0 when missing or negative
    weighted_amount: float
    source: str  # sync | stage_history | reconstructed
    closing: dt.date | None
    owner: str | None


def deal_states(versions: list[Mapping], stage_history: list[Mapping], layout: Layout) -> list[State]:
    """The deal's states oldest first: Stage History before the first version a sync saw, then the versions;
    a deal first seen closed without Stage History was open (stage and probability unknown) since created."""
    versions = sorted(versions, key=lambda v: instant(v["Modified_Time"]))
    first = versions[0]
    rate = first.get("Exchange_Rate") or 1

    def state(row: Mapping, pipeline, rate, source: str) -> State:
        amount = home_amount({"Amount": row.get("Amount"), "Exchange_Rate": rate})
        probability = row.get("Probability")
        weight = probability / 100 if probability is not None and 0 <= probability <= 100 else 0.0
        closing = dt.date.fromisoformat(row["Closing_Date"]) if row.get("Closing_Date") else None
        owner = (row.get("Owner") or first.get("Owner") or {}).get("id")  # Stage History has no owner
        return State(
            instant(row["Modified_Time"]),
            layout.status(pipeline, row.get("Stage")),
            amount,
            amount * weight,
            source,
            closing,
            owner,
        )

    before = sorted(
        (h for h in stage_history if instant(h["Modified_Time"]) < instant(first["Modified_Time"])),
        key=lambda h: instant(h["Modified_Time"]),
    )
    states = [state(h, first.get("Pipeline"), rate, "stage_history") for h in before]
    states += [state(v, v.get("Pipeline"), v.get("Exchange_Rate") or 1, "sync") for v in versions]
    if not before and states[0].status != "open" and instant(first["Created_Time"]) < states[0].at:
        amount = home_amount(first)
        states.insert(
            0,
            State(
                instant(first["Created_Time"]),
                "open",
                amount,
                0.0,
                "reconstructed",
                None,
                (first.get("Owner") or {}).get("id"),
            ),
        )
    return states


@dataclass(frozen=True)
class Deal:
    id: str
    created: dt.date
    first: State
    closings: tuple[tuple[dt.date, State], ...]  # the day the deal entered a won or lost stage, and that state
    spans: tuple[tuple[dt.date, dt.date | None, State], ...]  # open from day (incl.) to day (excl.; None = on)


def deal_of(
    versions: list[Mapping], stage_history: list[Mapping], deleted: dt.datetime | None, layout: Layout, tz: ZoneInfo
) -> Deal:
    states = deal_states(versions, stage_history, layout)
    created = org_day(versions[0]["Created_Time"], tz)
    days = []  # the day each state took effect
    for i, s in enumerate(states):
        day = s.at.astimezone(tz).date()
        if i and states[i - 1].source == "reconstructed" and s.closing and created <= s.closing <= day:
            day = s.closing  # a close without history is dated by Closing_Date when it lies in the deal's life
        days.append(day)
    starts = [created, *days[1:]]  # the oldest state also stands for the deal's life before it
    closings = tuple(
        (days[i], s)
        for i, s in enumerate(states)
        if s.status != "open" and (i == 0 or states[i - 1].status != s.status)
    )
    end = deleted.astimezone(tz).date() if deleted and deleted >= states[-1].at else None
    spans = tuple(
        (starts[i], starts[i + 1] if i + 1 < len(states) else end, s)
        for i, s in enumerate(states)
        if s.status == "open"
    )
    return Deal(versions[0]["id"], created, states[0], closings, spans)


def expected_kpis(history: OrgHistory, tz: ZoneInfo, today: dt.date) -> Kpis:
    """Every metric of every day, from the first record created to `today`, the day of the last sync."""
    deals = history.deal_timelines(tz)
    lead_created = Counter(org_day(versions[0]["Created_Time"], tz) for versions in history.leads.values())
    lead_converted = Counter(
        min(org_day(v["Converted_Date_Time"], tz) for v in versions if v.get("Converted_Date_Time"))
        for versions in history.leads.values()
        if any(v.get("Converted_Date_Time") for v in versions)
    )
    created, created_amount = Counter(d.created for d in deals), Counter()
    won, won_amount, lost, lost_amount = Counter(), Counter(), Counter(), Counter()
    for deal in deals:
        created_amount[deal.created] += deal.first.amount
        for day, state in deal.closings:
            (won if state.status == "won" else lost)[day] += 1
            (won_amount if state.status == "won" else lost_amount)[day] += state.amount

    event_days = [*lead_created, *lead_converted, *created, *won, *lost]
    assert max(event_days) <= today, "an event after the last sync"
    first = min([*lead_created, *created])
    days = [first + dt.timedelta(days=n) for n in range((today - first).days + 1)]

    def ratio(won_count: float, lost_count: float) -> float | None:
        return won_count / (won_count + lost_count) if won_count + lost_count else None

    kpis: Kpis = {}
    for day in days:
        still_open = [
            state
            for deal in deals
            for start, stop, state in deal.spans
            if start <= day and (stop is None or day < stop)
        ]
        window = [day - dt.timedelta(days=n) for n in range(30)]
        figures = {
            "leads_created": lead_created[day],
            "leads_converted": lead_converted[day],
            "deals_created": created[day],
            "deals_created_amount": created_amount[day],
            "deals_won": won[day],
            "deals_won_amount": won_amount[day],
            "deals_lost": lost[day],
            "deals_lost_amount": lost_amount[day],
            "open_pipeline_count": len(still_open),
            "open_pipeline_amount": sum(s.amount for s in still_open),
            "open_pipeline_weighted_amount": sum(s.weighted_amount for s in still_open),
            "win_rate": ratio(won[day], lost[day]),
            "win_rate_30d": ratio(sum(won[d] for d in window), sum(lost[d] for d in window)),
        }
        kpis.update(((day, metric), value) for metric, value in figures.items())
    return kpis


# --------------------------------------------------------------------------- what the warehouse says


def query(workspace, target: str, statement: str) -> list[tuple]:
    """Run one statement against the workspace's warehouse; the rows it returns (none for DDL/DML)."""
    if target == "duckdb":
        import duckdb

        with duckdb.connect(str(workspace.duckdb_path)) as connection:
            cursor = connection.execute(statement)
            return cursor.fetchall() if cursor.description else []
    import psycopg2

    connection = psycopg2.connect(workspace.env["DATABASE_URL"])
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(statement)
            return cursor.fetchall() if cursor.description else []
    finally:
        connection.close()


def read_kpi_daily(workspace, target: str) -> tuple[Kpis, dict[str, set[str]]]:
    """kpi_daily as {(day, metric): value}, plus the units each metric appears with."""
    rows = query(workspace, target, "select kpi_date, metric, value, unit from analytics.kpi_daily")
    units: dict[str, set[str]] = {}
    for _, metric, _, unit in rows:
        units.setdefault(metric, set()).add(unit)
    return {(day, metric): None if value is None else float(value) for day, metric, value, _ in rows}, units


def totals_by_metric(kpis: Kpis) -> dict[str, float]:
    totals: dict[str, float] = {}
    for (_, metric), value in kpis.items():
        totals[metric] = totals.get(metric, 0.0) + (value or 0.0)
    return totals


def mismatches(expected: Kpis, actual: Kpis) -> list[str]:
    found = []
    for (day, metric), want in sorted(expected.items()):
        got = actual.get((day, metric), "missing")
        agrees = (
            got == want
            if want is None or got is None or got == "missing"
            else abs(got - want) <= TOLERANCE[UNITS[metric]]
        )
        if not agrees:
            found.append(f"{day} {metric}: expected {want}, kpi_daily has {got}")
    found.extend(f"{day} {metric}: unexpected row" for day, metric in sorted(actual.keys() - expected.keys()))
    return found


def sync_day(workspace, target: str, tz: ZoneInfo, history: OrgHistory) -> dt.date:
    """The day (org timezone) the marts are as of: that of the last committed load, or of the newest change
    the CRM reported if its clock runs ahead of the extractor's machine."""
    [(loaded_at,)] = query(workspace, target, "select max(inserted_at) from zoho_raw._dlt_loads where status = 0")
    return max(loaded_at, history.last_change()).astimezone(tz).date()


def assert_kpi_daily_equals_the_kpis_of(workspace, target: str, history: OrgHistory, tz: ZoneInfo) -> Kpis:
    """Every day and metric of kpi_daily equals the figure computed from what the syncs saw; kpi_daily returned."""
    actual, _ = read_kpi_daily(workspace, target)
    expected = expected_kpis(history, tz, sync_day(workspace, target, tz, history))
    wrong = mismatches(expected, actual)
    assert not wrong, f"{len(wrong)} of {len(expected)} kpi_daily values differ:\n" + "\n".join(wrong[:20])
    return actual


# --------------------------------------------------------------------------- the stories


@pytest.mark.parametrize("target", TARGETS)
def test_kpi_daily_equals_the_kpis_of_the_orgs_own_records(built_warehouse, warehouse, target):
    # GIVEN the sandbox org, loaded and built on both warehouses, and its timezone
    org = built_warehouse.org
    tz = ZoneInfo(built_warehouse.workspace.env["CRM_TIMEZONE"])

    # WHEN kpi_daily is read
    actual, units = read_kpi_daily(warehouse, target)

    # THEN each metric appears with its unit
    assert units == {metric: {unit} for metric, unit in UNITS.items()}

    # AND every day and metric equals the figure computed from the org's records and Stage History
    assert_kpi_daily_equals_the_kpis_of(warehouse, target, OrgHistory.first_sync(org), tz)


@pytest.mark.parametrize("target", TARGETS)
def test_an_org_without_deals_yet_still_gets_its_lead_kpis(built_warehouse, warehouse, target):
    # GIVEN an org whose first deal is still to come: dlt creates a module's tables with its first record,
    # so the raw schema has leads but no deals, deal versions or deal stage history
    for table in ("deals", "deal_versions", "deal_stage_history"):
        query(warehouse, target, f"drop table zoho_raw.{table}" + (" cascade" if target == "postgres" else ""))
    leads = query(warehouse, target, "select count(*) from zoho_raw.leads")[0][0]

    # WHEN dbt builds the marts (from scratch, as for such an org: the copied warehouse's incremental marts
    # still hold the deals' past days)
    warehouse.dbt_build(target, "--full-refresh")

    # THEN the build passes, there are no deals, and the daily KPIs count the leads and zero deals
    assert query(warehouse, target, "select count(*) from analytics.deals") == [(0,)]
    totals = totals_by_metric(read_kpi_daily(warehouse, target)[0])
    assert totals["leads_created"] == leads
    assert totals["deals_created"] == totals["deals_won"] == totals["open_pipeline_count"] == 0


def test_a_deleted_deal_left_behind_by_a_load_stays_out_of_the_marts(built_warehouse, warehouse):
    # GIVEN two deals the deletion log of a new sync mentions while the raw table still has them: one deleted
    # after its last change (gone), one changed after its deletion entry (restored from the recycle bin)
    live = "select id from zoho_raw.deals where id not in (select id from zoho_raw.deleted_records) order by id limit 2"
    gone, restored = (row[0] for row in query(warehouse, "duckdb", live))
    query(
        warehouse,
        "duckdb",
        f"""
        insert into zoho_raw.deleted_records (module, id, type, deleted_time, _dlt_load_id, _dlt_id)
        select 'Deals', id, 'recycle', modified_time + interval '1 hour', 'test', 'test-' || id
        from zoho_raw.deals where id = '{gone}'
        union all
        select 'Deals', id, 'recycle', modified_time - interval '1 hour', 'test', 'test-' || id
        from zoho_raw.deals where id = '{restored}'
        """,
    )
    query(
        warehouse,
        "duckdb",
        """
        insert into zoho_raw._dlt_loads (load_id, schema_name, status, inserted_at, schema_version_hash)
        select 'test', schema_name, 0, inserted_at + interval '1 second', schema_version_hash
        from zoho_raw._dlt_loads
        where inserted_at = (select max(inserted_at) from zoho_raw._dlt_loads)
        """,
    )

    # WHEN dbt builds the marts
    warehouse.dbt_build("duckdb")

    # THEN the deleted deal is in no mart of the current state, the restored one still is, and kpi_daily
    # still counts the deleted one on the day it arrived (a day's figures do not change afterwards)
    ids = {row[0] for row in query(warehouse, "duckdb", "select deal_id from analytics.deals")}
    assert gone not in ids and restored in ids
    totals = totals_by_metric(read_kpi_daily(warehouse, "duckdb")[0])
    assert totals["deals_created"] == len(ids) + 1


@pytest.mark.parametrize("target", TARGETS)
def test_a_deal_won_with_a_closing_date_still_in_the_future_counts_on_the_day_it_was_won(
    built_warehouse, warehouse, target
):
    # GIVEN a deal marked Closed Won whose Closing_Date - in Zoho the *expected* close day, which nobody has
    # to touch when marking the deal won - still says mid next year
    org = built_warehouse.org
    tz = ZoneInfo(built_warehouse.workspace.env["CRM_TIMEZONE"])
    [(deal_id,)] = query(
        warehouse, target, "select id from zoho_raw.deals where stage = 'Closed Won' order by id limit 1"
    )
    for table in ("deals", "deal_versions"):
        query(warehouse, target, f"update zoho_raw.{table} set closing_date = date '2027-06-30' where id = '{deal_id}'")
    history = OrgHistory.first_sync(org)
    history.deals[deal_id] = [{**v, "Closing_Date": "2027-06-30"} for v in history.deals[deal_id]]
    won_on = min(org_day(h["Modified_Time"], tz) for h in org.stage_history(deal_id) if h["Stage"] == "Closed Won")

    # WHEN dbt builds the marts
    warehouse.dbt_build(target)

    # THEN kpi_daily still ends on the day of the sync, and the win counts on the day the deal entered its
    # won stage (Zoho's Stage History says when), so it has left the open pipeline since
    kpis = assert_kpi_daily_equals_the_kpis_of(warehouse, target, history, tz)
    assert max(day for day, _ in kpis) == sync_day(warehouse, target, tz, history)
    assert query(warehouse, target, f"select closed_date from analytics.deals where deal_id = '{deal_id}'") == [
        (won_on,)
    ]


def test_an_org_without_pipelines_still_sees_its_wins_and_losses(built_warehouse, warehouse):
    # GIVEN an org without pipelines enabled: Zoho leaves every deal's Pipeline empty, while the pipeline
    # settings still list the one layout with its stages
    org = built_warehouse.org
    tz = ZoneInfo(built_warehouse.workspace.env["CRM_TIMEZONE"])
    for table in ("deals", "deal_versions"):
        query(warehouse, "duckdb", f"update zoho_raw.{table} set pipeline = null")
    history = OrgHistory.first_sync(org)
    history.deals = {i: [{**v, "Pipeline": None} for v in versions] for i, versions in history.deals.items()}

    # WHEN dbt builds the marts
    warehouse.dbt_build("duckdb")

    # THEN the deals take their status from the stage of that name: kpi_daily has the same wins, losses and
    # open pipeline as the org, and pipeline_by_stage files the open deals under the layout's pipeline
    kpis = assert_kpi_daily_equals_the_kpis_of(warehouse, "duckdb", history, tz)
    totals = totals_by_metric(kpis)
    assert totals["deals_won"] > 0 and totals["deals_lost"] > 0
    assert query(warehouse, "duckdb", "select count(*) from analytics.deals where forecast_type is null") == [(0,)]
    [(pipeline,)] = query(warehouse, "duckdb", "select distinct pipeline from analytics.pipeline_by_stage")
    assert pipeline == org.pipelines()[0]["display_value"]


@pytest.mark.parametrize("timezone", ["IST", "UTC+5", "+05:30", "Asia Kolkata"])
def test_a_timezone_that_is_not_an_iana_name_is_refused(workspace, timezone):
    # GIVEN CRM_TIMEZONE set to an abbreviation or offset, which DuckDB and PostgreSQL read differently
    # ("IST" is India on one and Israel on the other, "UTC+5" flips sign, "+05:30" only works on one)
    workspace.env["CRM_TIMEZONE"] = timezone

    # WHEN dbt compiles the project
    result = workspace.run(
        "dbt", "compile", "--target", "duckdb", "--target-path", str(workspace.root / "dbt" / "target"), check=False
    )

    # THEN it stops with one clear error naming the variable, the value and what to use instead
    assert result.returncode != 0
    assert (
        f"CRM_TIMEZONE must be an IANA time zone name such as Asia/Kolkata or UTC (got {timezone!r})"
        in result.stdout + result.stderr
    )
