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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Deal:
    created: dt.date
    status: str  # open | won | lost
    closed: dt.date | None
    amount: float
    weighted_amount: float


def org_day(timestamp: str, tz: ZoneInfo) -> dt.date:
    """The calendar day in the org timezone of a datetime as Zoho renders it (with the user's offset)."""
    return dt.datetime.fromisoformat(timestamp).astimezone(tz).date()


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


def closed_day(record: Mapping, tz: ZoneInfo) -> dt.date:
    """The day a won or lost deal closed: its Closing_Date, unless that is outside the deal's life.

    Zoho's Closing_Date is the *expected* close day; nobody has to update it when marking a deal won or
    lost, so it may still lie in the future (or be a typo long past). The deal cannot have closed after it
    was last modified, nor before it was created: it closed on the day of its last change then.
    """
    created, last_changed = org_day(record["Created_Time"], tz), org_day(record["Modified_Time"], tz)
    closing = dt.date.fromisoformat(record["Closing_Date"]) if record.get("Closing_Date") else None
    return closing if closing and created <= closing <= last_changed else last_changed


def home_amount(record: Mapping) -> float:
    """The deal's value in the home currency: Zoho's rate is units of its currency per one home unit.
    A missing or negative amount (a data-quality issue) counts as 0."""
    amount, rate = record.get("Amount"), record.get("Exchange_Rate") or 1
    return amount / rate if amount is not None and amount >= 0 else 0.0


def deal_of(record: Mapping, layout: Layout, tz: ZoneInfo) -> Deal:
    status = STATUS_BY_FORECAST_TYPE.get(layout.forecast_type(record.get("Pipeline"), record.get("Stage")), "open")
    probability = record.get("Probability") or 0
    amount = home_amount(record)
    return Deal(
        created=org_day(record["Created_Time"], tz),
        status=status,
        closed=closed_day(record, tz) if status != "open" else None,
        amount=amount,
        weighted_amount=amount * probability / 100 if 0 <= probability <= 100 else 0.0,
    )


def expected_kpis(
    leads: Iterable[Mapping], deals: Iterable[Mapping], pipelines: Iterable[Mapping], tz: ZoneInfo, today: dt.date
) -> Kpis:
    """Every metric of every day, from the first record created to `today`, the day of the last sync."""
    layout = Layout.of(pipelines)
    deals = [deal_of(record, layout, tz) for record in deals]
    lead_created = Counter(org_day(lead["Created_Time"], tz) for lead in leads)
    lead_converted = Counter(
        org_day(lead["Converted_Date_Time"], tz) for lead in leads if lead.get("Converted_Date_Time")
    )

    def per_day(outcome: str | None, value) -> Counter:
        totals: Counter = Counter()
        for deal in deals:
            day = deal.created if outcome is None else deal.closed if deal.status == outcome else None
            if day is not None:
                totals[day] += value(deal)
        return totals

    created, created_amount = per_day(None, lambda d: 1), per_day(None, lambda d: d.amount)
    won, won_amount = per_day("won", lambda d: 1), per_day("won", lambda d: d.amount)
    lost, lost_amount = per_day("lost", lambda d: 1), per_day("lost", lambda d: d.amount)

    event_days = [*lead_created, *lead_converted, *created, *won, *lost]
    assert max(event_days) <= today, "an event after the last sync"
    first, last = min([*lead_created, *created]), today
    days = [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]

    def ratio(won_count: float, lost_count: float) -> float | None:
        return won_count / (won_count + lost_count) if won_count + lost_count else None

    kpis: Kpis = {}
    for day in days:
        still_open = [d for d in deals if d.created <= day and (d.status == "open" or (d.closed and d.closed > day))]
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
            "open_pipeline_amount": sum(d.amount for d in still_open),
            "open_pipeline_weighted_amount": sum(d.weighted_amount for d in still_open),
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


def sync_day(workspace, target: str, tz: ZoneInfo, records: Iterable[Mapping]) -> dt.date:
    """The day (org timezone) the marts are as of: that of the last committed load, or of the newest change
    the CRM reported if its clock runs ahead of the extractor's machine."""
    [(loaded_at,)] = query(workspace, target, "select max(inserted_at) from zoho_raw._dlt_loads where status = 0")
    changes = [dt.datetime.fromisoformat(r["Modified_Time"]) for r in records]
    return max([loaded_at, *changes]).astimezone(tz).date()


def assert_kpi_daily_equals_the_kpis_of(
    workspace, target: str, leads: Iterable[Mapping], deals: Iterable[Mapping], pipelines: Iterable[Mapping], tz: ZoneInfo
) -> Kpis:
    """Every day and metric of kpi_daily equals the figure computed from these records; kpi_daily returned."""
    actual, _ = read_kpi_daily(workspace, target)
    leads, deals = list(leads), list(deals)
    expected = expected_kpis(leads, deals, pipelines, tz, sync_day(workspace, target, tz, [*leads, *deals]))
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

    # AND every day and metric equals the figure computed from the org's records
    assert_kpi_daily_equals_the_kpis_of(
        warehouse, target, org.records("Leads"), org.records("Deals"), org.pipelines(), tz
    )


@pytest.mark.parametrize("target", TARGETS)
def test_an_org_without_deals_yet_still_gets_its_lead_kpis(built_warehouse, warehouse, target):
    # GIVEN an org whose first deal is still to come: dlt creates a module's table with its first record,
    # so the raw schema has leads but no deals table
    query(warehouse, target, "drop table zoho_raw.deals" + (" cascade" if target == "postgres" else ""))
    leads = query(warehouse, target, "select count(*) from zoho_raw.leads")[0][0]

    # WHEN dbt builds the marts
    warehouse.dbt_build(target)

    # THEN the build passes, there are no deals, and the daily KPIs count the leads and zero deals
    assert query(warehouse, target, "select count(*) from analytics.deals") == [(0,)]
    totals = totals_by_metric(read_kpi_daily(warehouse, target)[0])
    assert totals["leads_created"] == leads
    assert totals["deals_created"] == totals["deals_won"] == totals["open_pipeline_count"] == 0


def test_a_deleted_deal_left_behind_by_a_load_stays_out_of_the_marts(built_warehouse, warehouse):
    # GIVEN two deals the deletion log mentions while the raw table still has them: one deleted after its
    # last change (gone), one changed after its deletion entry (restored from the recycle bin)
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

    # WHEN dbt builds the marts
    warehouse.dbt_build("duckdb")

    # THEN the deleted deal is in no mart, the restored one still is
    ids = {row[0] for row in query(warehouse, "duckdb", "select deal_id from analytics.deals")}
    assert gone not in ids and restored in ids
    totals = totals_by_metric(read_kpi_daily(warehouse, "duckdb")[0])
    assert totals["deals_created"] == len(ids)


@pytest.mark.parametrize("target", TARGETS)
def test_a_deal_won_with_a_closing_date_still_in_the_future_counts_on_the_day_it_was_won(
    built_warehouse, warehouse, target
):
    # GIVEN a deal marked Closed Won whose Closing_Date - in Zoho the *expected* close day, which nobody has
    # to touch when marking the deal won - still says mid next year
    org = built_warehouse.org
    tz = ZoneInfo(built_warehouse.workspace.env["CRM_TIMEZONE"])
    [(deal_id,)] = query(warehouse, target, "select id from zoho_raw.deals where stage = 'Closed Won' order by id limit 1")
    query(warehouse, target, f"update zoho_raw.deals set closing_date = date '2027-06-30' where id = '{deal_id}'")
    deals = [{**record, "Closing_Date": "2027-06-30"} if record["id"] == deal_id else record for record in org.records("Deals")]
    won_on = org_day(next(record for record in deals if record["id"] == deal_id)["Modified_Time"], tz)

    # WHEN dbt builds the marts
    warehouse.dbt_build(target)

    # THEN kpi_daily still ends on the day of the sync, and the win counts on the day the deal was last
    # changed (it cannot have been won later), so it has left the open pipeline since
    kpis = assert_kpi_daily_equals_the_kpis_of(warehouse, target, org.records("Leads"), deals, org.pipelines(), tz)
    assert max(day for day, _ in kpis) == sync_day(warehouse, target, tz, deals)
    assert query(warehouse, target, f"select closed_date from analytics.deals where deal_id = '{deal_id}'") == [(won_on,)]


def test_an_org_without_pipelines_still_sees_its_wins_and_losses(built_warehouse, warehouse):
    # GIVEN an org without pipelines enabled: Zoho leaves every deal's Pipeline empty, while the pipeline
    # settings still list the one layout with its stages
    org = built_warehouse.org
    tz = ZoneInfo(built_warehouse.workspace.env["CRM_TIMEZONE"])
    query(warehouse, "duckdb", "update zoho_raw.deals set pipeline = null")
    deals = [{**record, "Pipeline": None} for record in org.records("Deals")]

    # WHEN dbt builds the marts
    warehouse.dbt_build("duckdb")

    # THEN the deals take their status from the stage of that name: kpi_daily has the same wins, losses and
    # open pipeline as the org, and pipeline_by_stage files the open deals under the layout's pipeline
    kpis = assert_kpi_daily_equals_the_kpis_of(warehouse, "duckdb", org.records("Leads"), deals, org.pipelines(), tz)
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
