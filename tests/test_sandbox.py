"""The local Zoho CRM sandbox, exercised the way a Zoho client uses Zoho: over real HTTP.

GIVEN a seeded org served in-process by `SandboxServer`, each test tells what a client sends and
what it gets back: tokens, list paging, incremental reads, writes, the deletion log, the org's clock
and the command line.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from sandbox import SandboxOrg, SandboxServer
from sandbox.faults import FaultPlan
from tests.support.crm import refresh_grant

ROOT = Path(__file__).resolve().parents[1]
TODAY = dt.date(2026, 11, 20)
TZ = "Asia/Kolkata"
LEAD_FIELDS = "Last_Name,Company,Owner,Lead_Status,Modified_Time,Converted__s,Converted_Deal"


def small_org(**overrides: object) -> SandboxOrg:
    return SandboxOrg(**{"seed": 11, "leads": 400, "deals": 150, "timezone": TZ, "today": TODAY, **overrides})


@pytest.fixture(scope="module")
def org() -> SandboxOrg:
    """A read-only org shared by the tests that do not change it."""
    return small_org()


@pytest.fixture(scope="module")
def server(org: SandboxOrg) -> Iterator[SandboxServer]:
    with SandboxServer(org, port=0) as running:
        yield running


@pytest.fixture
def own_server() -> Iterator[SandboxServer]:
    """A private org and server, for tests that write, advance the clock or expire tokens."""
    with SandboxServer(small_org(leads=80, deals=40), port=0) as running:
        yield running


def token_params(server: SandboxServer) -> dict[str, str]:
    return refresh_grant(server.env())


def mint(server: SandboxServer) -> str:
    response = requests.post(f"{server.url}/oauth/v2/token", data=token_params(server), timeout=10)
    return response.json()["access_token"]


def client(server: SandboxServer) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Zoho-oauthtoken {mint(server)}"
    return session


def get(session: requests.Session, server: SandboxServer, path: str, **params: object) -> requests.Response:
    headers = params.pop("headers", None)
    return session.get(f"{server.url}/crm/v8/{path}", params=params, headers=headers, timeout=30)


def page_all(session: requests.Session, server: SandboxServer, module: str, **params: object) -> list[dict]:
    """Every record of a list, following next_page_token from page 1."""
    records, token = [], None
    while True:
        response = get(session, server, module, **params, **({"page_token": token} if token else {}))
        assert response.status_code == 200, response.text
        body = response.json()
        records += body["data"]
        if not body["info"]["more_records"]:
            return records
        token = body["info"]["next_page_token"]


def zoho_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


# -------------------------------------------------------------------------------- OAuth


@pytest.mark.parametrize("style", ["form body", "query string", "basic auth"])
def test_refresh_token_grant_answers_like_zoho_accounts(server: SandboxServer, style: str) -> None:
    """GIVEN the sandbox credentials from server.env()
    WHEN a client refreshes with them in a form body, the query string or HTTP Basic auth
    THEN it gets an access token, `api_domain` = the sandbox URL and `expires_in` in seconds."""
    params = token_params(server)
    url = f"{server.url}/oauth/v2/token"
    if style == "form body":
        response = requests.post(url, data=params, timeout=10)
    elif style == "query string":
        response = requests.post(url, params=params, timeout=10)
    else:
        basic = base64.b64encode(f"{params.pop('client_id')}:{params.pop('client_secret')}".encode()).decode()
        response = requests.post(url, data=params, headers={"Authorization": f"Basic {basic}"}, timeout=10)

    body = response.json()
    assert response.status_code == 200
    assert body["access_token"].startswith("1000.")
    assert body["api_domain"] == server.url
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600


def test_token_errors_come_back_as_http_200_with_an_error_key(server: SandboxServer) -> None:
    """GIVEN a revoked/unknown refresh token, or a wrong client secret
    WHEN the client asks for an access token
    THEN Zoho-style it gets HTTP 200 with {"error": "invalid_code"} / {"error": "invalid_client"}."""
    url = f"{server.url}/oauth/v2/token"
    bad_refresh = requests.post(url, data={**token_params(server), "refresh_token": "1000.nope"}, timeout=10)
    bad_client = requests.post(url, data={**token_params(server), "client_secret": "wrong"}, timeout=10)

    assert (bad_refresh.status_code, bad_refresh.json()) == (200, {"error": "invalid_code"})
    assert (bad_client.status_code, bad_client.json()) == (200, {"error": "invalid_client"})


def test_api_calls_need_a_live_access_token(server: SandboxServer) -> None:
    """GIVEN no Authorization header, or a token the sandbox never issued
    WHEN the client lists leads
    THEN it gets 401 AUTHENTICATION_FAILURE, resp. 401 INVALID_TOKEN, in Zoho's error envelope."""
    missing = requests.get(f"{server.url}/crm/v8/Leads", params={"fields": "Last_Name"}, timeout=10)
    forged = requests.get(
        f"{server.url}/crm/v8/Leads",
        params={"fields": "Last_Name"},
        headers={"Authorization": "Zoho-oauthtoken 1000.forged.token"},
        timeout=10,
    )

    assert missing.status_code == 401
    assert missing.json() == {
        "code": "AUTHENTICATION_FAILURE",
        "details": {},
        "message": "Authentication failed",
        "status": "error",
    }
    assert forged.status_code == 401
    assert forged.json()["code"] == "INVALID_TOKEN"


def test_tokens_expire_by_age_by_command_and_after_n_requests(own_server: SandboxServer) -> None:
    """GIVEN tokens minted with a zero lifetime, tokens expired by the test, and expire_tokens_after(2)
    WHEN the client uses them
    THEN expired tokens get 401 INVALID_TOKEN, while a freshly minted token works again."""
    own_server.token_ttl = 0
    stale = client(own_server)
    assert get(stale, own_server, "users").json()["code"] == "INVALID_TOKEN"

    own_server.token_ttl = 3600
    session = client(own_server)
    own_server.expire_tokens()
    assert get(session, own_server, "users").status_code == 401

    session = client(own_server)
    own_server.expire_tokens_after(2)
    assert [get(session, own_server, "users").status_code for _ in range(3)] == [200, 200, 401]
    assert get(client(own_server), own_server, "users").status_code == 200


def test_the_sixteenth_token_invalidates_the_oldest(own_server: SandboxServer) -> None:
    """GIVEN 15 live access tokens of one refresh token
    WHEN a 16th is minted
    THEN the oldest stops working and the second oldest still works (Zoho keeps 15 live tokens)."""
    tokens = [mint(own_server) for _ in range(16)]

    def status(token: str) -> int:
        return requests.get(
            f"{own_server.url}/crm/v8/users", timeout=10, headers={"Authorization": f"Zoho-oauthtoken {token}"}
        ).status_code

    assert (status(tokens[0]), status(tokens[1]), status(tokens[15])) == (401, 200, 200)


# -------------------------------------------------------------------------------- listing records


def test_fields_is_mandatory_and_capped_at_fifty(server: SandboxServer) -> None:
    """GIVEN a client listing leads
    WHEN it omits `fields`, or asks for 51 of them
    THEN Zoho answers 400 REQUIRED_PARAM_MISSING, resp. 400 LIMIT_EXCEEDED."""
    session = client(server)
    missing = get(session, server, "Leads")
    too_many = get(session, server, "Leads", fields=",".join(f"Field_{i}" for i in range(51)))

    assert (missing.status_code, missing.json()["code"]) == (400, "REQUIRED_PARAM_MISSING")
    assert missing.json()["details"] == {"param_name": "fields"}
    assert (too_many.status_code, too_many.json()["code"]) == (400, "LIMIT_EXCEEDED")


def test_a_list_page_has_only_the_requested_fields_in_zoho_shapes(server: SandboxServer) -> None:
    """GIVEN an org in Asia/Kolkata
    WHEN the client lists leads with a few fields
    THEN each record has exactly those fields plus a 19-digit string id, Owner is {name, id, email},
    datetimes carry +05:30 at second precision, and `info` has Zoho's keys; JSON is UTF-8."""
    response = get(client(server), server, "Leads", fields=LEAD_FIELDS, per_page=5)
    body = response.json()

    assert response.headers["Content-Type"] == "application/json;charset=UTF-8"
    assert len(body["data"]) == 5
    for record in body["data"]:
        assert set(record) == {"id", *LEAD_FIELDS.split(",")}
        assert record["id"].isdigit() and len(record["id"]) == 19
        assert set(record["Owner"]) == {"name", "id", "email"}
        assert record["Modified_Time"].endswith("+05:30") and len(record["Modified_Time"]) == 25
    assert set(body["info"]) == {
        "call",
        "per_page",
        "next_page_token",
        "count",
        "sort_by",
        "page",
        "previous_page_token",
        "page_token_expiry",
        "sort_order",
        "email",
        "more_records",
    }
    assert body["info"]["count"] == 5 and body["info"]["more_records"] is True
    assert body["info"]["next_page_token"]  # offered from page 1 on
    ids = [r["id"] for r in body["data"]]
    assert ids == sorted(ids, reverse=True)  # default: sort_by=id, sort_order=desc


def test_sorting_by_modified_time_is_stable(server: SandboxServer, org: SandboxOrg) -> None:
    """GIVEN an org's leads
    WHEN the client pages all of them by Modified_Time ascending, 37 per page
    THEN they come in (Modified_Time, id) order, each exactly once."""
    records = page_all(
        client(server),
        server,
        "Leads",
        fields="Modified_Time",
        converted="both",
        sort_by="Modified_Time",
        sort_order="asc",
        per_page=37,
    )

    keys = [(zoho_time(r["Modified_Time"]), r["id"]) for r in records]
    assert keys == sorted(keys)
    assert sorted(r["id"] for r in records) == sorted(r["id"] for r in org.records("Leads"))


def test_page_numbers_reach_only_the_first_2000_records(server: SandboxServer) -> None:
    """GIVEN a client paging by page number
    WHEN it asks for page 2 of 100, then for page 11 of 200
    THEN the first works and the second is Zoho's DISCRETE_PAGINATION_LIMIT_EXCEEDED error, verbatim."""
    session = client(server)
    second = get(session, server, "Leads", fields="Last_Name", per_page=100, page=2, converted="both")
    beyond = get(session, server, "Leads", fields="Last_Name", per_page=200, page=11)

    assert second.status_code == 200 and second.json()["info"]["page"] == 2
    assert beyond.status_code == 400
    assert beyond.json() == {
        "code": "DISCRETE_PAGINATION_LIMIT_EXCEEDED",
        "details": {"limit": 2000},
        "message": "You can only get the first 2000 records without using page_token param",
        "status": "error",
    }


def test_page_tokens_return_every_record_exactly_once_even_while_others_change() -> None:
    """GIVEN an org with more than 2,000 leads
    WHEN a client pages them all with page_token (sorted by Modified_Time) while, midway, some leads
    are edited, one is deleted and new ones arrive
    THEN every lead that did not change is returned exactly once; edited ones may move (and show up
    again at the end, as on Zoho), none is lost."""
    org = small_org(leads=2300, deals=20)
    with SandboxServer(org, port=0) as server:
        session = client(server)
        params = {
            "fields": "Last_Name,Modified_Time",
            "converted": "both",
            "sort_by": "Modified_Time",
            "sort_order": "asc",
            "per_page": 200,
        }
        before = {r["id"] for r in org.records("Leads")}
        seen: list[str] = []
        token = None
        touched: set[str] = set()
        while True:
            body = get(session, server, "Leads", **params, **({"page_token": token} if token else {})).json()
            seen += [r["id"] for r in body["data"]]
            if len(seen) == 1000:  # midway: edit two seen and two unseen leads, delete one, add two
                unseen = sorted(before - set(seen))
                touched = {seen[3], seen[500], unseen[10], unseen[700]}
                session.put(
                    f"{server.url}/crm/v8/Leads",
                    json={"data": [{"id": i, "Lead_Status": "Contacted"} for i in touched]},
                    timeout=10,
                )
                session.delete(f"{server.url}/crm/v8/Leads", params={"ids": unseen[20]}, timeout=10)
                touched.add(unseen[20])
                session.post(f"{server.url}/crm/v8/Leads", json={"data": [{"Last_Name": "New"}] * 2}, timeout=10)
            if not body["info"]["more_records"]:
                break
            token = body["info"]["next_page_token"]

    unchanged = before - touched
    assert len(before) == 2300
    assert all(seen.count(i) == 1 for i in unchanged)
    assert unchanged <= set(seen)
    assert (touched - {unseen[20]}) <= set(seen)  # edited leads are not lost either


def test_page_token_misuse_is_rejected_like_zoho(server: SandboxServer) -> None:
    """GIVEN a valid next_page_token
    WHEN the client sends it with `page`, with different fields, or sends a garbage token
    THEN it gets AMBIGUITY_DURING_PROCESSING, TOKEN_BOUND_DATA_MISMATCH and INVALID_DATA (all 400)."""
    session = client(server)
    token = get(session, server, "Leads", fields="Last_Name", per_page=10).json()["info"]["next_page_token"]

    ambiguous = get(session, server, "Leads", fields="Last_Name", per_page=10, page=2, page_token=token)
    rebound = get(session, server, "Leads", fields="Email", per_page=10, page_token=token)
    garbage = get(session, server, "Leads", fields="Last_Name", per_page=10, page_token="c8582xx9e7c7")
    follows = get(session, server, "Leads", fields="Last_Name", per_page=10, page_token=token)

    assert [r.json()["code"] for r in (ambiguous, rebound, garbage)] == [
        "AMBIGUITY_DURING_PROCESSING",
        "TOKEN_BOUND_DATA_MISMATCH",
        "INVALID_DATA",
    ]
    assert {r.status_code for r in (ambiguous, rebound, garbage)} == {400}
    assert follows.status_code == 200 and follows.json()["info"]["page"] == 2


def test_a_page_token_chain_ends_at_its_limit_with_zohos_error(org: SandboxOrg) -> None:
    """GIVEN a sandbox whose page_token chains reach 250 records (Zoho's 100,000 is the default)
    WHEN a client follows next_page_token through 400 leads, 100 a page
    THEN it gets 100, 100 and 50 leads, then Zoho's PAGINATION_LIMIT_EXCEEDED error, verbatim;
    AND a new query from the last Modified_Time read (If-Modified-Since, inclusive) reaches the rest."""
    assert SandboxServer(org).page_token_limit == 100_000
    params = {
        "fields": "Last_Name,Modified_Time",
        "converted": "both",
        "sort_by": "Modified_Time",
        "sort_order": "asc",
        "per_page": 100,
    }
    with SandboxServer(org, port=0, page_token_limit=250) as server:
        session = client(server)
        pages, token = [], None
        while True:
            response = get(session, server, "Leads", **params, **({"page_token": token} if token else {}))
            if response.status_code != 200:
                break
            pages.append(response.json()["data"])
            token = response.json()["info"]["next_page_token"]
        read = [record for page in pages for record in page]
        rest = page_all(session, server, "Leads", **params, headers={"If-Modified-Since": read[-1]["Modified_Time"]})

    assert [len(page) for page in pages] == [100, 100, 50]
    assert response.status_code == 400
    assert response.json() == {
        "code": "PAGINATION_LIMIT_EXCEEDED",
        "details": {"limit": 250},
        "message": "You can only get the first 250 records using page_token param",
        "status": "error",
    }
    assert read[-1]["id"] in {r["id"] for r in rest}  # inclusive: the last one read comes again
    assert {r["id"] for r in read} | {r["id"] for r in rest} == {r["id"] for r in org.records("Leads")}


def test_if_modified_since_returns_changes_or_304_and_an_empty_module_is_204(
    server: SandboxServer, org: SandboxOrg
) -> None:
    """GIVEN leads with various Modified_Time values
    WHEN the client sends If-Modified-Since (ISO-8601 with offset) from the middle, after the last
    change, and lists an org without any deal
    THEN it gets the leads modified at or after that instant, then 304 with an empty body, and 204."""
    session = client(server)
    times = sorted(zoho_time(r["Modified_Time"]) for r in org.records("Leads"))
    middle = times[len(times) // 2]
    since = page_all(
        session,
        server,
        "Leads",
        fields="Modified_Time",
        converted="both",
        headers={"If-Modified-Since": middle.isoformat()},
    )
    after = get(
        session,
        server,
        "Leads",
        fields="Modified_Time",
        converted="both",
        headers={"If-Modified-Since": (times[-1] + dt.timedelta(seconds=1)).isoformat()},
    )

    assert sorted(zoho_time(r["Modified_Time"]) for r in since) == [t for t in times if t >= middle]
    assert (after.status_code, after.content) == (304, b"")
    with SandboxServer(small_org(leads=0, deals=0), port=0) as empty:
        response = get(client(empty), empty, "Deals", fields="Deal_Name")
        assert (response.status_code, response.content) == (204, b"")


def test_converted_leads_are_hidden_unless_asked_for(server: SandboxServer, org: SandboxOrg) -> None:
    """GIVEN an org where about a fifth of the leads were converted
    WHEN the client lists leads without `converted`, with converted=true and with converted=both
    THEN it gets the unconverted ones, the converted ones (each linked to a deal or not), and all."""
    session = client(server)
    lists = {
        value: page_all(
            session, server, "Leads", fields="Converted__s,Converted_Deal", **({"converted": value} if value else {})
        )
        for value in ("", "true", "both")
    }

    everyone = org.records("Leads")
    converted = [r for r in everyone if r["Converted__s"]]
    assert 0.12 < len(converted) / len(everyone) < 0.3
    assert not any(r["Converted__s"] for r in lists[""])
    assert all(r["Converted__s"] for r in lists["true"]) and len(lists["true"]) == len(converted)
    assert len(lists["both"]) == len(everyone) == len(lists[""]) + len(lists["true"])
    deal_ids = {d["id"] for d in org.records("Deals")}
    assert any(r["Converted_Deal"] and r["Converted_Deal"]["id"] in deal_ids for r in lists["true"])


# -------------------------------------------------------------------------------- writes


def test_record_writes_show_up_in_reads_and_in_the_deletion_log(own_server: SandboxServer) -> None:
    """GIVEN a client with a token
    WHEN it creates a lead, closes a deal as won and deletes the lead
    THEN the answers are Zoho's per-record results, the new lead is readable with a fresh
    Modified_Time, the won deal has Probability 100, Expected_Revenue = Amount and Closing_Date =
    the org's day, and the deleted lead is gone from reads and listed in /Leads/deleted as recycle."""
    org, session, url = own_server.org, client(own_server), own_server.url
    latest = max(zoho_time(r["Modified_Time"]) for r in org.records("Leads"))

    created = session.post(f"{url}/crm/v8/Leads", json={"data": [{"Last_Name": "Okafor", "Company": "Acme"}]})
    result = created.json()["data"][0]
    lead_id = result["details"]["id"]
    assert created.status_code == 201
    assert (result["code"], result["message"], result["status"]) == ("SUCCESS", "record added", "success")
    fresh = get(
        session,
        own_server,
        "Leads",
        fields="Full_Name,Company",
        headers={"If-Modified-Since": (latest + dt.timedelta(seconds=1)).isoformat()},
    ).json()["data"]
    assert [(r["id"], r["Full_Name"], r["Company"]) for r in fresh] == [(lead_id, "Okafor", "Acme")]

    deal = next(d for d in org.records("Deals") if d["Stage"] == "Qualification" and d["Amount"])
    updated = session.put(f"{url}/crm/v8/Deals", json={"data": [{"id": deal["id"], "Stage": "Closed Won"}]})
    assert updated.json()["data"][0]["message"] == "record updated"
    won = next(d for d in org.records("Deals") if d["id"] == deal["id"])
    assert (won["Probability"], won["Expected_Revenue"], won["Closing_Date"]) == (100, deal["Amount"], str(org.today))
    assert zoho_time(won["Modified_Time"]) > zoho_time(deal["Modified_Time"])

    deleted = session.delete(f"{url}/crm/v8/Leads", params={"ids": lead_id})
    assert deleted.json()["data"][0] == {
        "code": "SUCCESS",
        "details": {"id": lead_id},
        "message": "record deleted",
        "status": "success",
    }
    assert lead_id not in {r["id"] for r in org.records("Leads")}
    log = get(session, own_server, "Leads/deleted", type="recycle").json()["data"]
    entry = next(e for e in log if e["id"] == lead_id)
    assert entry["display_name"] == "Okafor" and entry["type"] == "recycle" and entry["deleted_by"]["id"]


def test_invalid_writes_are_reported_per_record(own_server: SandboxServer) -> None:
    """GIVEN a batch with a valid lead, a lead without Last_Name and a deal with a bad amount
    WHEN the client posts them
    THEN the valid one is saved (207 for the mixed lead batch), the others get MANDATORY_NOT_FOUND
    and INVALID_DATA naming the field, and an all-invalid batch is a 400."""
    session, url = client(own_server), own_server.url
    mixed = session.post(f"{url}/crm/v8/Leads", json={"data": [{"Last_Name": "Ok"}, {"Company": "No name"}]})
    bad_deal = session.post(
        f"{url}/crm/v8/Deals", json={"data": [{"Deal_Name": "X", "Stage": "Qualification", "Amount": "lots"}]}
    )
    no_stage = session.post(f"{url}/crm/v8/Deals", json={"data": [{"Deal_Name": "X"}]})

    assert mixed.status_code == 207
    assert [r["code"] for r in mixed.json()["data"]] == ["SUCCESS", "MANDATORY_NOT_FOUND"]
    assert mixed.json()["data"][1]["details"] == {"api_name": "Last_Name", "json_path": "$.data[1].Last_Name"}
    assert bad_deal.status_code == 400
    assert bad_deal.json()["data"][0]["code"] == "INVALID_DATA"
    assert bad_deal.json()["data"][0]["details"]["api_name"] == "Amount"
    assert no_stage.json()["data"][0]["details"]["api_name"] == "Stage"


# -------------------------------------------------------------------------------- other endpoints


def test_deletion_log_types_and_errors(server: SandboxServer, org: SandboxOrg) -> None:
    """GIVEN an org generated with some deleted records (some older than 60 days)
    WHEN the client reads /Deals/deleted and /Leads/deleted with each type, a bad type, and a
    future If-Modified-Since
    THEN recycle entries name who deleted what, permanent ones do not, a bad type is 400
    PATTERN_NOT_MATCHED and nothing newer than the header is 204."""
    session = client(server)
    entries = get(session, server, "Leads/deleted", type="all").json()["data"]
    permanent = get(session, server, "Leads/deleted", type="permanent")
    bad = get(session, server, "Leads/deleted", type="everything")
    future = get(session, server, "Leads/deleted", headers={"If-Modified-Since": "2030-01-01T00:00:00+05:30"})

    assert entries == org.deleted_records("Leads")
    assert {"recycle", "permanent"} == {e["type"] for e in entries}
    assert all(e["deleted_by"] is None and e["display_name"] is None for e in permanent.json()["data"])
    assert all(e["deleted_by"]["name"] and e["display_name"] for e in entries if e["type"] == "recycle")
    assert (bad.status_code, bad.json()["code"]) == (400, "PATTERN_NOT_MATCHED")
    assert (future.status_code, future.content) == (204, b"")


def test_users_layouts_and_pipeline(server: SandboxServer, org: SandboxOrg) -> None:
    """GIVEN the org's eight users and the Deals layout
    WHEN the client reads /users (all, active, current), /settings/layouts and /settings/pipeline
    THEN it gets seven active users and one inactive, the admin as current user, and the standard
    pipeline whose stages carry forecast_type, forecast_category, sequence and probability."""
    session = client(server)
    users = get(session, server, "users", type="AllUsers").json()
    active = get(session, server, "users", type="ActiveUsers").json()["users"]
    current = get(session, server, "users", type="CurrentUser").json()["users"]
    layouts = get(session, server, "settings/layouts", module="Deals").json()["layouts"]
    pipeline = get(session, server, "settings/pipeline", layout_id=layouts[0]["id"]).json()["pipeline"]
    no_layout = get(session, server, "settings/pipeline")

    assert users["users"] == org.users() and users["info"]["more_records"] is False
    assert [u["status"] for u in users["users"]].count("inactive") == 1 and len(users["users"]) == 8
    assert len(active) == 7 and current[0]["role"]["name"] == "CEO"
    assert layouts[0]["name"] == "Standard"
    assert pipeline == org.pipelines() and pipeline[0]["display_value"] == "Standard (Standard)"
    stages = {m["actual_value"]: m for m in pipeline[0]["maps"]}
    assert (stages["Closed Won"]["forecast_type"], stages["Closed Won"]["probability"]) == ("Closed Won", 100)
    assert stages["Closed Lost to Competition"]["forecast_type"] == "Closed Lost"
    assert stages["Qualification"]["forecast_category"]["name"] == "Pipeline"
    assert (no_layout.status_code, no_layout.json()["code"]) == (400, "REQUIRED_PARAM_MISSING")


def test_field_metadata_and_the_org_speak_zohos_shape(server: SandboxServer, org: SandboxOrg) -> None:
    """GIVEN the sandbox
    WHEN a client asks for the field metadata of Leads, Deals and the modules their lookups point at, and the org
    THEN every record field is described with Zoho's data type (picklists with their values, lookups with their
         module); a module Zoho lacks is INVALID_MODULE; the org carries its zgid, time zone and home currency."""
    session = client(server)
    leads = {f["api_name"]: f for f in get(session, server, "settings/fields", module="Leads").json()["fields"]}
    deals = {f["api_name"]: f for f in get(session, server, "settings/fields", module="deals").json()["fields"]}

    assert set(leads) == set(org.records("Leads")[0]) and set(deals) == set(org.records("Deals")[0])
    assert leads["Owner"]["data_type"] == "ownerlookup" and leads["Modified_Time"]["data_type"] == "datetime"
    assert leads["Last_Name"]["system_mandatory"] and not leads["Company"]["system_mandatory"]
    statuses = {v["actual_value"] for v in leads["Lead_Status"]["pick_list_values"]}
    assert (
        leads["Lead_Status"]["data_type"] == "picklist" and {r["Lead_Status"] for r in org.records("Leads")} <= statuses
    )
    assert deals["Amount"]["data_type"] == "currency" and deals["Closing_Date"]["data_type"] == "date"
    assert deals["Account_Name"]["lookup"]["module"]["api_name"] == "Accounts"
    for target in ("Accounts", "Contacts"):
        assert get(session, server, "settings/fields", module=target).json()["fields"]
    assert get(session, server, "settings/fields", module="Potatoes").json()["code"] == "INVALID_MODULE"
    assert get(session, server, "settings/fields").json()["code"] == "REQUIRED_PARAM_MISSING"
    (zoho_org,) = get(session, server, "org").json()["org"]
    assert zoho_org["zgid"].isdigit() and zoho_org["time_zone"] == TZ and zoho_org["iso_code"] == "USD"
    assert zoho_org["currency"] == "US Dollar - USD" and zoho_org["currency_symbol"] == "$"


def test_coql_pages_by_keyset_past_any_offset_and_records_come_by_id(own_server: SandboxServer) -> None:
    """GIVEN 250 leads written in one second (an import)
    WHEN a client selects that second's ids by COQL, 100 at a time, keyset-paged on id, and fetches them by id
    THEN it gets each lead once, lookups as bare ids in COQL and whole in the Records API; Zoho's limits and
         errors apply: a WHERE clause is required, at most 2,000 a call and none past 100,000 by offset,
         unknown columns are INVALID_QUERY."""
    org = own_server.org
    org.insert("Leads", [{"Last_Name": f"Imported {n}"} for n in range(100)], org.current_user_id)
    org.insert("Leads", [{"Last_Name": f"Imported {n}"} for n in range(100, 250)], org.current_user_id)
    second = max(r["Modified_Time"] for r in org.records("Leads"))
    session = client(own_server)
    coql = lambda query: session.post(f"{own_server.url}/crm/v8/coql", json={"select_query": query}, timeout=10)  # noqa: E731

    seen, last = [], 0
    while True:
        answer = coql(
            f"select id, Owner from Leads where Modified_Time = '{second}' and id > {last} order by id limit 100"
        )
        rows = answer.json()["data"]
        seen += [row["id"] for row in rows]
        assert all(set(row["Owner"]) == {"id"} for row in rows)
        if not answer.json()["info"]["more_records"]:
            break
        last = rows[-1]["id"]
    imported = [r["id"] for r in org.records("Leads") if r["Modified_Time"] == second]
    assert seen == sorted(imported, key=int) and len(seen) == 150
    by_id = get(session, own_server, "Leads", fields="Last_Name,Owner", ids=",".join(seen[:100])).json()["data"]
    assert [r["id"] for r in by_id] == seen[:100] and all("email" in r["Owner"] for r in by_id)

    assert coql("select id from Leads").json()["code"] == "SYNTAX_ERROR"
    assert coql("select id from Leads where id > 0 limit 2001").json()["code"] == "LIMIT_EXCEEDED"
    assert coql("select id from Leads where id > 0 limit 99000, 2000").json()["code"] == "LIMIT_EXCEEDED"
    assert coql("select Shoe_Size from Leads where id > 0").json()["code"] == "INVALID_QUERY"
    assert coql("select id from Leads where Last_Name = 'nobody at all'").status_code == 204


def test_wrong_paths_methods_and_modules_get_zoho_errors(server: SandboxServer) -> None:
    """GIVEN an authenticated client
    WHEN it calls an unknown path, a known path with a wrong method and an unknown module
    THEN it gets 404 INVALID_URL_PATTERN, 400 INVALID_REQUEST_METHOD and 400 INVALID_MODULE."""
    session = client(server)
    unknown_path = session.get(f"{server.url}/crm/v8/Leads/search/now")
    wrong_method = session.post(f"{server.url}/crm/v8/users")
    unknown_module = get(session, server, "Potatoes", fields="Name")

    assert (unknown_path.status_code, unknown_path.json()["code"]) == (404, "INVALID_URL_PATTERN")
    assert (wrong_method.status_code, wrong_method.json()["code"]) == (400, "INVALID_REQUEST_METHOD")
    assert (unknown_module.status_code, unknown_module.json()["code"]) == (400, "INVALID_MODULE")


def test_stats_count_requests_and_injected_faults_fail_then_recover(own_server: SandboxServer) -> None:
    """GIVEN a server with reset stats and two injected faults on /crm/v8/Deals
    WHEN the client lists deals three times and reads its stats over HTTP
    THEN the first two answers are 500 INTERNAL_ERROR, the third succeeds, and the stats count
    every request per endpoint template."""
    session = client(own_server)
    own_server.reset_stats()
    own_server.inject_faults(2, status=500, path_prefix="/crm/v8/Deals")

    statuses = [get(session, own_server, "Deals", fields="Deal_Name").status_code for _ in range(3)]
    deletion_log = get(session, own_server, "Leads/deleted")
    stats = requests.get(f"{own_server.url}/_sandbox/stats", timeout=10).json()

    assert statuses == [500, 500, 200]
    assert get(session, own_server, "Deals", fields="Deal_Name").json()["data"]  # recovered
    assert deletion_log.status_code == 200
    assert stats == {"GET /crm/v8/Deals": 3, "GET /crm/v8/Leads/deleted": 1}


# -------------------------------------------------------------------------------- generator and clock


def fault_outcomes(server: SandboxServer, requests_count: int) -> list[str]:
    """What each of `requests_count` list requests got: a status and content type, or `dropped`."""
    session, outcomes = requests.Session(), []
    for _ in range(requests_count):
        token = mint(server)
        try:
            response = session.get(
                f"{server.url}/crm/v8/Leads",
                params={"fields": "Last_Name", "per_page": 5},
                headers={"Authorization": f"Zoho-oauthtoken {token}"},
                timeout=10,
            )
        except requests.ConnectionError:
            outcomes.append("dropped")
            session = requests.Session()
            continue
        try:
            response.json()
            readable = "json"
        except ValueError:
            readable = "unreadable"
        outcomes.append(f"{response.status_code} {response.headers['Content-Type'].split(';')[0]} {readable}")
    return outcomes


def test_seeded_faults_fail_requests_the_way_zoho_and_its_network_do() -> None:
    """GIVEN two sandboxes with the same seeded fault plan (half the API calls fail), set by the control route
    WHEN a client makes the same 60 requests to each
    THEN both fail the same requests the same ways: 429 with Retry-After, Zoho's 500 envelope, a load balancer's
         HTML 502/503, dropped connections, and HTTP 200 answers whose body is cut JSON or an HTML page;
         the control route reports what it injected; the token endpoint is never faulted."""
    plan = {"rate": 0.5, "kinds": ["429", "500", "502", "503", "drop", "truncated", "html"], "seed": 4}
    runs = []
    for _ in range(2):
        with SandboxServer(small_org(leads=30, deals=5), port=0) as server:
            assert requests.post(f"{server.url}/_sandbox/faults", json=plan, timeout=10).json()["injected"] == {}
            runs.append((fault_outcomes(server, 60), requests.get(f"{server.url}/_sandbox/faults", timeout=10).json()))

    (outcomes, report), (twin_outcomes, twin_report) = runs
    assert outcomes == twin_outcomes and report == twin_report
    assert set(outcomes) == {
        "200 application/json json",
        "429 application/json json",
        "500 application/json json",
        "502 text/html unreadable",
        "503 text/html unreadable",
        "dropped",
        "200 application/json unreadable",
        "200 text/html unreadable",
    }
    assert sum(report["injected"].values()) == sum(o != "200 application/json json" for o in outcomes)
    with SandboxServer(small_org(leads=30, deals=5), port=0) as server:
        bad = requests.post(f"{server.url}/_sandbox/faults", json={"rate": 0.1, "kinds": ["meteor"]}, timeout=10)
        server.faults = FaultPlan(rate=1.0, kinds=("429",))
        throttled = get(client(server), server, "Leads", fields="Last_Name")
    assert bad.status_code == 400 and "meteor" in bad.json()["message"]
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "1"


def test_api_credits_are_counted_reported_from_half_and_refused_at_zero(own_server: SandboxServer) -> None:
    """GIVEN an org with 10 API credits left for the day
    WHEN a client makes 12 calls
    THEN answers carry X-API-CREDITS-REMAINING once half the credits are used, and calls after the last credit
         get 429 TOO_MANY_REQUESTS."""
    requests.post(f"{own_server.url}/_sandbox/credits", json={"allowance": 10}, timeout=10)
    session = client(own_server)
    answers = [get(session, own_server, "users", type="CurrentUser") for _ in range(12)]

    assert [a.headers.get("X-API-CREDITS-REMAINING") for a in answers] == [
        None,
        None,
        None,
        None,
        "5",
        "4",
        "3",
        "2",
        "1",
        "0",
        "0",
        "0",
    ]
    assert [a.status_code for a in answers[-3:]] == [200, 429, 429]
    assert answers[-1].json()["code"] == "TOO_MANY_REQUESTS"


def test_the_generated_org_is_deterministic_and_realistic() -> None:
    """GIVEN two orgs generated with the same seed and day, and one with another seed
    WHEN their records are compared
    THEN the twins are identical and the other differs; closed deals close on their last change's
    day, records have 19-digit ids, and some leads carry text that reads like instructions."""
    first, twin, other = small_org(), small_org(), small_org(seed=12)
    leads, deals = first.records("Leads"), first.records("Deals")

    assert leads == twin.records("Leads") and deals == twin.records("Deals")
    assert first.deleted_records("Deals") == twin.deleted_records("Deals")
    assert leads != other.records("Leads")
    assert {len(r["id"]) for r in leads + deals} == {19}
    closed = [d for d in deals if d["Stage"].startswith("Closed")]
    assert closed and all(d["Closing_Date"] == d["Modified_Time"][:10] for d in closed)
    assert {d["Probability"] for d in closed if d["Stage"] == "Closed Won"} == {100}
    assert any("Ignore previous instructions" in (r["Company"] or "") for r in leads)
    assert {r["Lead_Source"] for r in leads} >= {"Web", "Referral", "Trade Show", "Cold Call", "Partner"}


def test_advancing_the_clock_is_deterministic_and_reported() -> None:
    """GIVEN a served org on a Sunday and a twin generated with the same seed and day
    WHEN the served org is advanced one day over HTTP and the twin in-process
    THEN both report the same created/updated/deleted counts, end up identical, and a client reading
    with If-Modified-Since = start of the new day sees exactly the created and updated leads."""
    sunday = dt.date(2026, 11, 22)
    org, twin = small_org(leads=600, deals=200, today=sunday), small_org(leads=600, deals=200, today=sunday)
    monday_start = dt.datetime.fromisoformat("2026-11-23T00:00:00+05:30")
    with SandboxServer(org, port=0) as server:
        report = requests.post(f"{server.url}/_sandbox/advance", json={"days": 1}, timeout=30).json()
        changed = page_all(
            client(server),
            server,
            "Leads",
            fields="Created_Time",
            converted="both",
            headers={"If-Modified-Since": monday_start.isoformat()},
        )
    twin_report = twin.advance(days=1)

    assert report == twin_report
    assert set(report) == {"Leads", "Deals"} and set(report["Leads"]) == {"created", "updated", "deleted"}
    assert report["Leads"]["created"] > 0 and report["Deals"]["updated"] > 0
    assert org.records("Leads") == twin.records("Leads") and org.records("Deals") == twin.records("Deals")
    assert org.today == twin.today == dt.date(2026, 11, 23)
    created = [r for r in changed if zoho_time(r["Created_Time"]) >= monday_start]
    assert (len(created), len(changed) - len(created)) == (report["Leads"]["created"], report["Leads"]["updated"])


def test_advance_scales_with_the_org() -> None:
    """GIVEN an org of 5,000 leads and 2,000 deals on a weekday
    WHEN one day passes
    THEN there are tens of new leads, some new deals, dozens of updates and a few deletions."""
    report = SandboxOrg(seed=7, leads=5000, deals=2000, timezone=TZ, today=dt.date(2026, 11, 23)).advance(1)

    assert 25 <= report["Leads"]["created"] <= 65 and 5 <= report["Deals"]["created"] <= 30
    assert 15 <= report["Leads"]["updated"] <= 80 and 15 <= report["Deals"]["updated"] <= 80
    assert 0 < report["Leads"]["deleted"] + report["Deals"]["deleted"] <= 15


# -------------------------------------------------------------------------------- command line


def _serve(*options: str) -> subprocess.Popen[str]:
    """`python -m sandbox serve` of a small org (seed 3) on a free port, with `options`, as a user starts it."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox",
            "serve",
            "--seed",
            "3",
            "--leads",
            "60",
            "--deals",
            "20",
            "--port",
            "0",
            *options,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_the_cli_prints_the_client_environment_and_stops_on_sigterm() -> None:
    """GIVEN `python -m sandbox serve` on port 0
    WHEN it has started
    THEN its stdout is `export NAME=value` lines for a client, with the real port, the credentials
    work against it, and SIGTERM stops it cleanly."""
    process = _serve("--timezone", TZ, "--today", "2026-11-20")
    try:
        lines = [process.stdout.readline().strip() for _ in range(5)]  # type: ignore[union-attr]
        env = dict(line.removeprefix("export ").split("=", 1) for line in lines)
        assert all(line.startswith("export ") for line in lines)
        assert set(env) == {
            "ZOHO_ACCOUNTS_URL",
            "ZOHO_CLIENT_ID",
            "ZOHO_CLIENT_SECRET",
            "ZOHO_REFRESH_TOKEN",
            "CRM_TIMEZONE",
        }
        assert env["CRM_TIMEZONE"] == TZ and not env["ZOHO_ACCOUNTS_URL"].endswith(":0")
        token = requests.post(f"{env['ZOHO_ACCOUNTS_URL']}/oauth/v2/token", timeout=10, data=refresh_grant(env)).json()
        assert token["api_domain"] == env["ZOHO_ACCOUNTS_URL"]
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
    assert process.returncode == 0
    assert "/oauth/v2/token" in stderr and token["access_token"] not in stderr  # logged, secrets never


def test_the_cli_serves_a_bad_day_with_zohos_token_limit() -> None:
    """GIVEN `python -m sandbox serve --faults rate=1,kinds=500 --credits 3` (and, as on Zoho, at most 10 new
         access tokens per refresh token per 10 minutes)
    WHEN a client mints tokens and calls the API
    THEN every call fails with Zoho's 500, the 11th token request is refused with Zoho's "Access Denied",
         and a fault plan the CLI cannot read stops it with status 2 and the reason."""
    refused = subprocess.run(
        [sys.executable, "-m", "sandbox", "serve", "--faults", "rate=2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert refused.returncode == 2 and "the fault rate is a fraction between 0 and 1" in refused.stderr
    process = _serve("--quiet", "--faults", "rate=1,kinds=500,seed=2", "--credits", "3")
    try:
        lines = [process.stdout.readline().strip() for _ in range(5)]  # type: ignore[union-attr]
        env = dict(line.removeprefix("export ").split("=", 1) for line in lines)
        grant = refresh_grant(env)
        tokens = [
            requests.post(f"{env['ZOHO_ACCOUNTS_URL']}/oauth/v2/token", data=grant, timeout=10).json()
            for _ in range(11)
        ]
        call = requests.get(
            f"{env['ZOHO_ACCOUNTS_URL']}/crm/v8/users",
            timeout=10,
            headers={"Authorization": f"Zoho-oauthtoken {tokens[0]['access_token']}"},
        )
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=15)
    assert all("access_token" in t for t in tokens[:10])
    assert tokens[10] == {
        "error_description": "You have made too many requests continuously. Please try again after some time.",
        "error": "Access Denied",
        "status": "failure",
    }
    assert (call.status_code, call.json()["code"]) == (500, "INTERNAL_ERROR")
