"""The org's custom fields reach the warehouse, and the marts carry the ones a user names.

GIVEN a sandbox org with the custom fields of a real one (Region, Product_Line, Seats, ... on Deals; Region,
Lead_Score, ... on Leads), synced and built; an admin then adds a Sales Channel picklist to Deals (Zoho's Create
Custom Fields API), salespeople fill it in and move a deal to another region, the org lives a day and is synced
again; the user then names Region and Sales_Channel (and the leads' Region and Lead_Score) in the pass-through
vars and builds again, on DuckDB and on PostgreSQL, THEN zoho_raw holds both fields for every deal with no code
changed, and analytics.deals, analytics.leads and analytics.deal_daily_states carry them: the current values, and
each day the value the deal held that evening, as the syncs saw it.

On DuckDB alone: a module with more fields than one Zoho request may ask for is read whole; a field deleted or
retyped in the org keeps its column (dlt's variant column takes what the old type cannot hold); a pass-through
name a model already has is refused; and the sandbox serves custom fields the way Zoho does.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from sandbox import SandboxOrg, SandboxServer
from tests.support.crm import CrmUser
from tests.support.postgres import create_database, drop_database
from tests.support.workspace import Workspace, make_workspace
from tests.test_extract import assert_warehouse_equals_org, column_types, extract, serving, warehouse_rows
from tests.test_marts import query

TARGETS = ["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)]
TODAY = dt.date(2026, 11, 17)
PASS_THROUGH = {
    "zoho_deal_pass_through_columns": ["Region", "Sales_Channel"],
    "zoho_lead_pass_through_columns": ["Region", "Lead_Score"],
}
CHANNELS = ["Direct", "Partner", "Marketplace"]


def small_org(**overrides: Any) -> SandboxOrg:
    return SandboxOrg(
        **{"seed": 83, "leads": 300, "deals": 120, "timezone": "Europe/Berlin", "today": TODAY, **overrides}
    )


def by_id(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {record["id"]: record for record in records}


def local_day(zoho_datetime: str) -> dt.date:
    """The day of a Zoho datetime in the org's time zone (Zoho renders it with the org's offset)."""
    return dt.datetime.fromisoformat(zoho_datetime).date()


@dataclass
class Synced:
    workspace: Workspace
    first: dict[str, dict[str, Any]]  # the deals as the first sync read them
    second: dict[str, dict[str, Any]]  # ... and as the second read them
    leads: dict[str, dict[str, Any]]  # the leads at the second sync
    moved: str  # the deal moved to another region between the syncs
    channelled: list[str]  # the deals a salesperson gave a Sales Channel


@pytest.fixture(scope="module")
def synced(postgres_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synced]:
    org = small_org()
    workspace = make_workspace(tmp_path_factory.mktemp("custom") / "workspace")
    database = f"custom_{uuid.uuid4().hex[:8]}"
    workspace.use_postgres(create_database(postgres_server, database))
    try:
        with serving(org, workspace) as server:
            for target in ("duckdb", "postgres"):
                extract(workspace, target)
                # The warehouse as it was before the user named any field (its tests run in the build below).
                workspace.dbt_build(target, "--exclude-resource-type", "test", "unit_test")
            first = by_id(org.records("Deals"))

            crm = CrmUser(server)
            added = crm.session.post(
                f"{crm.url}/settings/fields",
                params={"module": "Deals"},
                timeout=30,
                json={
                    "fields": [
                        {
                            "field_label": "Sales Channel",
                            "data_type": "picklist",
                            "pick_list_values": [{"display_value": v, "actual_value": v} for v in CHANNELS],
                        }
                    ]
                },
            )
            assert added.status_code == 201, added.text
            open_deals = sorted(d["id"] for d in first.values() if not d["Stage"].startswith("Closed"))
            moved, channelled = open_deals[0], open_deals[1:4]
            regions = ["North America", "EMEA", "APAC", "LATAM"]
            crm.update_deal(moved, Region=regions[(regions.index(first[moved]["Region"]) + 1) % 4])
            for deal, channel in zip(channelled, CHANNELS):
                crm.update_deal(deal, Sales_Channel=channel)
            org.advance(1)
            for target in ("duckdb", "postgres"):
                extract(workspace, target)
            second, leads = by_id(org.records("Deals")), by_id(org.records("Leads"))
        for target in ("duckdb", "postgres"):
            # As the daily job builds: unit tests check the SQL on fixed rows, not this data.
            workspace.dbt_build(target, "--vars", json.dumps(PASS_THROUGH), "--exclude-resource-type", "unit_test")
        yield Synced(workspace, first, second, leads, moved, channelled)
    finally:
        drop_database(postgres_server, database)


@pytest.mark.parametrize("target", TARGETS)
def test_custom_fields_reach_the_raw_tables_as_typed_columns(synced: Synced, target: str) -> None:
    """THEN zoho_raw.deals has a column for the org's Region picklist and for the Sales Channel added after the
    first sync, each deal holding the org's value (the Sales Channel where people set it); the history kept the
    deal's Region before and after its move; numbers stay numbers."""
    rows = {row["id"]: row for row in warehouse_rows(synced.workspace, target, "deals")}

    assert rows.keys() == synced.second.keys()
    assert {deal: (row["region"], row["sales_channel"]) for deal, row in rows.items()} == {
        deal: (record["Region"], record["Sales_Channel"]) for deal, record in synced.second.items()
    }
    assert {rows[deal]["sales_channel"] for deal in synced.channelled} == set(CHANNELS)
    versions = {
        row["region"] for row in warehouse_rows(synced.workspace, target, "deal_versions") if row["id"] == synced.moved
    }
    assert versions == {synced.first[synced.moved]["Region"], synced.second[synced.moved]["Region"]}
    types = column_types(synced.workspace, target, "deals")
    assert types["sales_channel"] in ("varchar", "text", "character varying") and types["seats"] == "bigint"
    assert types["discount"] in ("double", "double precision")


@pytest.mark.parametrize("target", TARGETS)
def test_the_pass_through_vars_carry_the_fields_into_the_marts(synced: Synced, target: str) -> None:
    """THEN analytics.deals has region and sales_channel as the org has them now, analytics.leads region and
    lead_score; and analytics.deal_daily_states, built before the vars named them, now holds them on every day
    of every open deal: the value of the deal's state that evening as the syncs saw it (before the second sync's
    version took effect, the first's), so the moved deal changes region, and a Sales Channel appears, on the
    day a salesperson set it."""
    workspace = synced.workspace
    deals = {
        deal: (region, channel)
        for deal, region, channel in query(
            workspace, target, "select deal_id, region, sales_channel from analytics.deals"
        )
    }
    assert deals == {deal: (r["Region"], r["Sales_Channel"]) for deal, r in synced.second.items()}
    leads = {
        lead: (region, score)
        for lead, region, score in query(workspace, target, "select lead_id, region, lead_score from analytics.leads")
    }
    assert leads == {lead: (r["Region"], r["Lead_Score"]) for lead, r in synced.leads.items()}

    states = query(
        workspace, target, "select calendar_date, deal_id, region, sales_channel from analytics.deal_daily_states"
    )
    wrong = []
    for day, deal, region, channel in states:
        before, after = synced.first.get(deal), synced.second.get(deal)
        seen_later = after is not None and (before is None or after["Modified_Time"] != before["Modified_Time"])
        state = after if seen_later and day >= local_day(after["Modified_Time"]) else before
        if (region, channel) != (state["Region"], state.get("Sales_Channel")):
            wrong.append((day, deal, region, channel))
    assert states and not wrong, f"{len(wrong)} of {len(states)} days differ, e.g. {wrong[:3]}"
    moved = sorted((day, region) for day, deal, region, _ in states if deal == synced.moved)
    assert [region for _, region in moved[:1] + moved[-1:]] == [
        synced.first[synced.moved]["Region"],
        synced.second[synced.moved]["Region"],
    ]
    assert {channel for day, deal, _, channel in states if deal in synced.channelled and day >= TODAY} == set(CHANNELS)
    assert {channel for day, deal, _, channel in states if deal in synced.channelled and day < TODAY} == {None}


# --------------------------------------------------------------------------- on DuckDB alone


def test_a_field_taken_out_of_the_var_leaves_the_marts(synced: Synced, tmp_path) -> None:
    """GIVEN the warehouse built with Region and Sales_Channel passed through (a copy of it)
    WHEN the user takes Region out of the var and builds again
    THEN analytics.deals and analytics.deal_daily_states no longer have a region column, every day is written
         again with sales_channel as before, and int_deal_history drops the column it carried too."""
    workspace = make_workspace(tmp_path / "workspace")
    workspace.env["CRM_TIMEZONE"] = synced.workspace.env["CRM_TIMEZONE"]
    shutil.copy(synced.workspace.duckdb_path, workspace.duckdb_path)
    states = "select calendar_date, deal_id, sales_channel, built_at from analytics.deal_daily_states"
    before = {row[:3] for row in query(workspace, "duckdb", states)}

    workspace.dbt_build("duckdb", "--vars", json.dumps({"zoho_deal_pass_through_columns": ["Sales_Channel"]}))

    def columns(schema: str, table: str) -> set[str]:
        return {
            name
            for (name,) in query(
                workspace,
                "duckdb",
                "select column_name from information_schema.columns"
                f" where table_schema = '{schema}' and table_name = '{table}'",
            )
        }

    assert "region" not in columns("analytics", "deals") | columns("analytics", "deal_daily_states")
    assert "sales_channel" in columns("analytics", "deals")
    assert "pass_through__region" not in columns("analytics_intermediate", "int_deal_history")
    after = query(workspace, "duckdb", states)
    assert {row[:3] for row in after} == before and len({row[3] for row in after}) == 1


def test_a_module_with_more_fields_than_one_request_takes_is_read_whole(workspace: Workspace) -> None:
    """GIVEN an org whose admin added 30 more custom fields to Leads (61 fields: Zoho serves at most 50 a
         request), and salespeople who filled them in on some leads
    WHEN the extract runs
    THEN it pages the leads with the first 50 fields and completes each page by id with the rest (no request
         asks for more than 50), and zoho_raw.leads equals the org field by field, the 30 fields included."""
    org = small_org()
    names = [org.add_field("Leads", f"Score {n}", "integer").api_name for n in range(30)]
    leads = [r["id"] for r in org.records("Leads")[:40]]
    org.update(
        "Leads",
        [{"id": lead, **{name: i * n for n, name in enumerate(names)}} for i, lead in enumerate(leads)],
        org.current_user_id,
    )
    with serving(org, workspace) as server:
        extract(workspace)

        count = len(org.records("Leads"))
        # the pages of 200 leads, then each page's other fields by id, 100 ids a request
        assert server.stats()["GET /crm/v8/Leads"] == math.ceil(count / 200) + math.ceil(count / 100)
    assert_warehouse_equals_org(workspace, "duckdb", org)
    stored = {row["id"]: row for row in warehouse_rows(workspace, "duckdb", "leads")}
    assert all(stored[lead]["score_29"] == i * 29 for i, lead in enumerate(leads))


def test_a_deleted_or_retyped_field_keeps_its_column(workspace: Workspace) -> None:
    """GIVEN a warehouse loaded from an org with a Competitor text field and a Seats number field on Deals
    WHEN the admin deletes Competitor and turns Seats into a text field (Zoho's Delete and Update Custom Field
         APIs), a salesperson edits two deals (seats "12" and "fifty"), and the extract runs again
    THEN the run succeeds and zoho_raw.deals keeps both columns: competitor is empty on the deals read again
         (the edited ones, and those of the overlap window) and unchanged on the others; seats stays a whole
         number, holding 12, and "fifty", which no number holds, lands in dlt's variant column seats__v_text."""
    org = small_org()
    with serving(org, workspace) as server:
        extract(workspace)
        crm = CrmUser(server)
        fields = {f.api_name: f.id for f in org.custom_fields("Deals")}
        gone = crm.session.delete(
            f"{crm.url}/settings/fields/{fields['Competitor']}", params={"module": "Deals"}, timeout=30
        )
        retyped = crm.session.patch(
            f"{crm.url}/settings/fields/{fields['Seats']}",
            params={"module": "Deals"},
            json={"fields": [{"data_type": "text"}]},
            timeout=30,
        )
        assert (gone.status_code, retyped.status_code) == (200, 200), gone.text + retyped.text
        twelve, fifty = (record["id"] for record in org.records("Deals")[:2])
        crm.update_deal(twelve, Seats="12")
        crm.update_deal(fifty, Seats="fifty")
        before = {row["id"]: row for row in warehouse_rows(workspace, "duckdb", "deals")}

        extract(workspace)

    after = {row["id"]: row for row in warehouse_rows(workspace, "duckdb", "deals")}
    assert column_types(workspace, "duckdb", "deals")["seats"] == "bigint"
    assert (after[twelve]["seats"], after[twelve]["seats__v_text"]) == (12, None)
    assert (after[fifty]["seats"], after[fifty]["seats__v_text"]) == (None, "fifty")
    assert after[twelve]["competitor"] is None and after[fifty]["competitor"] is None
    cursor = max(row["modified_time"] for row in before.values())
    untouched = [deal for deal in after if after[deal]["modified_time"] < cursor - dt.timedelta(minutes=10)]
    assert untouched and all(after[d]["competitor"] == before[d]["competitor"] for d in untouched)
    assert any(before[d]["competitor"] for d in untouched)


def test_a_pass_through_name_a_model_has_already_is_refused(workspace: Workspace) -> None:
    """GIVEN the Deals field Deal_Type passed through, whose column deal_type stg_zoho__deals has already (from
         Zoho's Type)
    WHEN dbt compiles the model
    THEN it stops with one message naming the var, the column and the model."""
    import duckdb

    duckdb.connect(str(workspace.duckdb_path)).close()  # a warehouse not loaded yet
    result = workspace.run(
        "dbt",
        "compile",
        "--target",
        "duckdb",
        "--select",
        "stg_zoho__deals",
        "--target-path",
        str(workspace.root / "dbt" / "target"),
        "--vars",
        json.dumps({"zoho_deal_pass_through_columns": ["Deal_Type"]}),
        check=False,
    )

    assert result.returncode != 0
    assert "zoho_deal_pass_through_columns: deal_type is a column of stg_zoho__deals already" in result.stdout


def test_the_sandbox_serves_custom_fields_as_zoho_does() -> None:
    """GIVEN the sandbox org
    WHEN a client reads the Deals field metadata, creates a field (Zoho's Create Custom Fields API), writes a
         deal with it and reads it back by list, by id and by COQL
    THEN the org's own custom fields are listed with custom_field true beside the standard ones, the new one
         too (its API name made from its label), records carry values for all of them everywhere, and a field
         the module has already or of an unknown type is refused per field."""
    org = small_org(leads=40, deals=20)
    with SandboxServer(org, port=0) as server:
        crm = CrmUser(server)
        listed = crm.session.get(f"{crm.url}/settings/fields", params={"module": "Deals"}, timeout=30).json()["fields"]
        created = crm.session.post(
            f"{crm.url}/settings/fields",
            params={"module": "deals"},
            timeout=30,
            json={
                "fields": [
                    {
                        "field_label": "Sales Channel",
                        "data_type": "picklist",
                        "pick_list_values": [{"display_value": "Direct", "actual_value": "Direct"}],
                    },
                    {"field_label": "Region", "data_type": "text"},
                    {"field_label": "Mood", "data_type": "hologram"},
                ]
            },
        )
        deal = crm.create_deal(Deal_Name="Custom", Stage="Qualification", Sales_Channel="Direct", Seats=12)
        page = crm.session.get(
            f"{crm.url}/Deals", params={"fields": "Sales_Channel,Seats,Region", "per_page": 200}, timeout=30
        ).json()["data"]
        one = crm.session.get(
            f"{crm.url}/Deals", params={"ids": deal, "fields": "Sales_Channel,Seats"}, timeout=30
        ).json()["data"]
        coql = crm.session.post(
            f"{crm.url}/coql",
            timeout=30,
            json={"select_query": "select Sales_Channel, Seats from Deals where Sales_Channel = 'Direct'"},
        ).json()["data"]
        after = crm.session.get(f"{crm.url}/settings/fields", params={"module": "Deals"}, timeout=30).json()["fields"]

    custom = {f["api_name"]: f for f in listed if f["custom_field"]}
    assert set(custom) == {"Region", "Product_Line", "Competitor", "Seats", "Discount"}
    assert custom["Region"]["data_type"] == "picklist" and custom["Region"]["pick_list_values"]
    assert custom["Seats"]["json_type"] == "integer" and not any(f["custom_field"] for f in listed[:5])
    assert created.status_code == 207
    assert [r["status"] for r in created.json()["fields"]] == ["success", "error", "error"]
    assert [f["api_name"] for f in after if f["custom_field"]][-1] == "Sales_Channel"
    assert all(set(record) == {"id", "Sales_Channel", "Seats", "Region"} for record in page)
    assert any(record["Region"] for record in page)
    assert one == coql == [{"id": deal, "Sales_Channel": "Direct", "Seats": 12}]
    assert all("Sales_Channel" in record for record in org.records("Deals"))
