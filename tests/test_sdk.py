"""Zoho's own Python SDK (`zohocrmsdk8-0`) reads the sandbox, and reads what the extractor loaded.

The sandbox is what every other test trusts, so it must satisfy a client nobody here wrote: the
SDK mints a token, looks up the current user and the org (`zgid`), fetches the field metadata of
each module and of every module its lookups point at, and only then parses records with the types
that metadata gives. The SDK runs in its own process (it keeps global state) and prints what it
read as JSON lines; the test compares them with the warehouse the extractor filled.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import textwrap
from typing import Any

from pipelines.zoho.settings import MODULE_FIELDS
from sandbox import SandboxOrg, SandboxServer
from tests.support.workspace import Workspace
from tests.test_extract import extract, serving, warehouse_rows

# Runs inside the subprocess: reads Leads and Deals with page tokens, users, the pipeline and the
# deletion log through the SDK, and prints one JSON object per record with plain values.
SDK_READER = textwrap.dedent("""
    import datetime, json, os, sys, tempfile
    from zohocrmsdk.src.com.zoho.api.authenticator import OAuthToken
    from zohocrmsdk.src.com.zoho.api.authenticator.store import FileStore
    from zohocrmsdk.src.com.zoho.api.logger import Logger
    from zohocrmsdk.src.com.zoho.crm.api import HeaderMap, Initializer, ParameterMap, SDKConfig
    from zohocrmsdk.src.com.zoho.crm.api.dc.data_center import DataCenter
    from zohocrmsdk.src.com.zoho.crm.api.layouts import LayoutsOperations, GetLayoutsParam
    from zohocrmsdk.src.com.zoho.crm.api.pipeline import PipelineOperations
    from zohocrmsdk.src.com.zoho.crm.api.record import GetDeletedRecordsParam, GetRecordsParam, RecordOperations
    from zohocrmsdk.src.com.zoho.crm.api.record import DeletedRecordsWrapper, ResponseWrapper
    from zohocrmsdk.src.com.zoho.crm.api.users import GetUsersParam, MinifiedUser, UsersOperations
    from zohocrmsdk.src.com.zoho.crm.api.util import Choice

    base, work, fields = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    environment = DataCenter.Environment(base, base + "/oauth/v2/token", base)
    token = OAuthToken(client_id=os.environ["ZOHO_CLIENT_ID"], client_secret=os.environ["ZOHO_CLIENT_SECRET"],
                       refresh_token=os.environ["ZOHO_REFRESH_TOKEN"])
    Initializer.initialize(environment=environment, token=token, store=FileStore(os.path.join(work, "tokens.csv")),
                           sdk_config=SDKConfig(auto_refresh_fields=False, pick_list_validation=True),
                           resource_path=work, logger=Logger.get_instance(Logger.Levels.INFO, os.path.join(work, "sdk.log")))

    def plain(value):
        if isinstance(value, Choice):
            return value.get_value()
        if isinstance(value, (datetime.datetime, datetime.date)):
            return value.isoformat()
        if isinstance(value, MinifiedUser):
            return {"id": value.get_id(), "name": value.get_name(), "email": value.get_email()}
        if hasattr(value, "get_key_values"):
            return {k: plain(v) for k, v in value.get_key_values().items()}
        return value

    def emit(kind, **values):
        print(json.dumps({"kind": kind, **values}, default=str), flush=True)

    def wrapped(response, wrapper):
        body = response.get_object()
        if not isinstance(body, wrapper):
            raise SystemExit(f"{response.get_status_code()}: {body.get_code().get_value()} {body.get_message()}")
        return body

    for module, names in fields.items():
        page_token = None
        while True:
            params = ParameterMap()
            for name in names:
                params.add(GetRecordsParam.fields, name)
            params.add(GetRecordsParam.per_page, 200)
            if module == "Leads":
                params.add(GetRecordsParam.converted, "both")
            if page_token:
                params.add(GetRecordsParam.page_token, page_token)
            body = wrapped(RecordOperations(module).get_records(params, HeaderMap()), ResponseWrapper)
            for record in body.get_data():
                emit(module, record={k: plain(v) for k, v in record.get_key_values().items()})
            page_token = body.get_info().get_next_page_token()
            if not body.get_info().get_more_records():
                break
        params = ParameterMap()
        params.add(GetDeletedRecordsParam.type, "all")
        response = RecordOperations(module).get_deleted_records(params, HeaderMap())
        if response.get_status_code() != 204:
            for entry in wrapped(response, DeletedRecordsWrapper).get_data():
                emit("deleted", module=module, id=str(entry.get_id()), deleted_time=entry.get_deleted_time().isoformat())

    params = ParameterMap()
    params.add(GetUsersParam.type, "AllUsers")
    for user in UsersOperations().get_users(params).get_object().get_users():
        emit("user", id=str(user.get_id()), email=user.get_email(), full_name=user.get_full_name(),
             status=user.get_status())
    params = ParameterMap()
    params.add(GetLayoutsParam.module, "Deals")
    for layout in LayoutsOperations().get_layouts(params).get_object().get_layouts():
        for pipeline in PipelineOperations(layout.get_id()).get_pipelines().get_object().get_pipeline():
            for stage in pipeline.get_maps():
                emit("stage", id=str(stage.get_id()), stage=stage.get_actual_value(),
                     sequence_number=stage.get_sequence_number(), forecast_type=stage.get_forecast_type())
""")


def sdk_read(server: SandboxServer, workspace: Workspace) -> dict[str, list[dict[str, Any]]]:
    work = workspace.root / "sdk"
    work.mkdir()
    fields = {module: list(names) for module, names in MODULE_FIELDS.items()}
    result = workspace.run("python", "-c", SDK_READER, server.url, str(work), json.dumps(fields))
    read: dict[str, list[dict[str, Any]]] = {}
    for line in result.stdout.splitlines():
        item = json.loads(line)
        read.setdefault(item.pop("kind"), []).append(item)
    return read


def columns_of(record: dict[str, Any]) -> dict[str, Any]:
    """An SDK record as warehouse columns: lookups flattened to `<field>__<part>`, ids as text."""
    columns: dict[str, Any] = {}
    for field, value in record.items():
        if isinstance(value, dict):
            for part, part_value in value.items():
                columns[f"{field.lower()}__{part}"] = str(part_value) if part == "id" else part_value
        else:
            columns[field.lower()] = str(value) if field == "id" else value
    return columns


def differences(columns: dict[str, Any], row: dict[str, Any]) -> list[str]:
    """Columns whose SDK value differs from the stored one (a null lookup: all its columns are null)."""
    found = []
    for column, value in columns.items():
        parts = (
            [name for name in row if name.startswith(f"{column}__")]
            if column not in row and value is None
            else [column]
        )
        for name in parts or [column]:
            if name not in row or not same(value, row[name]):
                found.append(f"{name}: sdk {value!r} != stored {row.get(name, '<no column>')!r}")
    return found


def same(sdk: Any, stored: Any) -> bool:
    if sdk is None or stored is None:
        return sdk is None and stored is None
    if isinstance(stored, dt.datetime):
        return dt.datetime.fromisoformat(sdk) == stored
    if isinstance(stored, dt.date):
        return dt.date.fromisoformat(sdk) == stored
    if isinstance(sdk, (int, float)) and not isinstance(sdk, bool):
        return math.isclose(float(sdk), float(stored))
    return sdk == stored


def test_the_official_sdk_reads_exactly_what_the_extractor_loaded(workspace: Workspace) -> None:
    """GIVEN a sandbox org with more leads than Zoho serves by page number, converted leads, closed deals,
         deletions, and the warehouse the extractor loaded from it
    WHEN Zoho's official Python SDK reads every Lead and Deal (the extractor's fields, page tokens),
         the deletion logs, the users and the Deals pipeline
    THEN it reads every record without an error, and each one equals its warehouse row field by field:
         the same ids, values, instants and lookups; the same deletions, users and stages."""
    org = SandboxOrg(seed=5, leads=2300, deals=400, timezone="Asia/Kolkata", today=dt.date(2026, 11, 20))
    with serving(org, workspace) as server:
        extract(workspace)
        read = sdk_read(server, workspace)

    assert len(read["Leads"]) == 2300 < len(org.records("Leads")) + 1  # converted ones included
    for module, table in (("Leads", "leads"), ("Deals", "deals")):
        stored = {row["id"]: row for row in warehouse_rows(workspace, "duckdb", table)}
        sdk = {str(item["record"]["id"]): columns_of(item["record"]) for item in read[module]}
        assert sdk.keys() == stored.keys()
        differing = {
            record_id: found for record_id, columns in sdk.items() if (found := differences(columns, stored[record_id]))
        }
        assert not differing, f"{module}: {len(differing)} records differ, e.g. {next(iter(differing.items()))}"
        assert all(len(columns) > len(MODULE_FIELDS[module]) for columns in sdk.values())  # lookups expanded

    log = {(r["module"], r["id"]): r["deleted_time"] for r in warehouse_rows(workspace, "duckdb", "deleted_records")}
    assert {(e["module"], e["id"]) for e in read["deleted"]} == log.keys() != set()
    assert all(same(e["deleted_time"], log[(e["module"], e["id"])]) for e in read["deleted"])
    users = {r["id"]: r for r in warehouse_rows(workspace, "duckdb", "users")}
    assert {u["id"]: (u["email"], u["full_name"], u["status"]) for u in read["user"]} == {
        i: (r["email"], r["full_name"], r["status"]) for i, r in users.items()
    }
    stages = {r["id"]: r for r in warehouse_rows(workspace, "duckdb", "deal_stages")}
    assert {s["id"]: (s["stage"], s["sequence_number"], s["forecast_type"]) for s in read["stage"]} == {
        i: (r["stage"], r["sequence_number"], r["forecast_type"]) for i, r in stages.items()
    }
