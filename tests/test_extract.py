"""`python -m pipelines.zoho` keeps `zoho_raw` equal to the Zoho org, run after run.

Every test runs the real command against the sandbox org served over HTTP on
loopback, into a real DuckDB file or a real PostgreSQL database, and compares the
warehouse with the org's own records as the API renders them: field by field,
datetimes as instants, lookups through their flattened columns.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from typing import Any

import pytest

from sandbox import SandboxOrg, SandboxServer
from tests.support.crm import CrmUser
from tests.support.workspace import Workspace
from tests.test_marts import query

TODAY = dt.date(2026, 11, 20)
PAGE = 200  # records per Zoho page
OVERLAP = dt.timedelta(minutes=10)  # each increment starts this long before the last cursor
SUMMARY = re.compile(
    r"^loaded leads=(?P<leads>\d+) deals=(?P<deals>\d+) users=(?P<users>\d+) deal_stages=(?P<deal_stages>\d+)"
    r" currencies=(?P<currencies>\d+) deleted_records=(?P<deleted_records>\d+)"
    r" deal_stage_history=(?P<deal_stage_history>\d+) \| api_calls=(?P<api_calls>\d+)( \| resumed (?P<resumed>\d+) [^|]+)? \| [\d.]+s$"
)
# Requests of one incremental run besides the record pages: the field lists of Leads and Deals (the org's custom
# fields come and go), users (304 when unchanged) and the two deletion logs. Stages and currencies are read only
# when a deal names one the last read did not list.
FIXED_REQUESTS = 5


# --------------------------------------------------------------------------- fixtures


def small_org(leads: int = 300, deals: int = 120) -> SandboxOrg:
    return SandboxOrg(seed=11, leads=leads, deals=deals, timezone="Asia/Kolkata", today=TODAY)


@contextmanager
def serving(org: SandboxOrg, workspace: Workspace, **options: Any) -> Iterator[SandboxServer]:
    with SandboxServer(org, port=0, **options) as server:
        workspace.env.update(server.env())
        # failures are retried quickly here; the defaults wait 1, 2, 4 and 8 seconds
        workspace.env["SOURCES__ZOHO__RETRY_BACKOFF_SECONDS"] = "0.05"
        yield server


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def destination(request: pytest.FixtureRequest, workspace: Workspace) -> str:
    """The warehouse under test: the workspace's DuckDB file, or a fresh PostgreSQL database."""
    if request.param == "postgres":
        workspace.use_postgres(request.getfixturevalue("postgres_url"))
    return request.param


@pytest.fixture
def org() -> SandboxOrg:
    return small_org()


@pytest.fixture
def server(org: SandboxOrg, workspace: Workspace) -> Iterator[SandboxServer]:
    with serving(org, workspace) as server:
        yield server


def extract(
    workspace: Workspace, destination: str = "duckdb", *args: str, check: bool = True
) -> subprocess.CompletedProcess:
    return workspace.run("python", "-m", "pipelines.zoho", "--destination", destination, *args, check=check)


def summary(result: subprocess.CompletedProcess) -> dict[str, int]:
    """The counts of the one summary line the command prints on stdout."""
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    match = SUMMARY.match(lines[0])
    assert match, lines[0]
    return {k: int(v) for k, v in match.groupdict().items() if v is not None}


def record_requests(server: SandboxServer, module: str) -> int:
    return server.stats().get(f"GET /crm/v8/{module}", 0)


# --------------------------------------------------------------------------- reading the warehouse


def warehouse_rows(workspace: Workspace, destination: str, table: str) -> list[dict[str, Any]]:
    query = f"select * from zoho_raw.{table}"
    if destination == "duckdb":
        import duckdb

        with closing(duckdb.connect(str(workspace.duckdb_path), read_only=True)) as conn:
            cursor = conn.execute(query)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]
    import psycopg2

    with closing(psycopg2.connect(workspace.env["DATABASE_URL"])) as conn, conn.cursor() as cursor:
        cursor.execute(query)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]


def column_types(workspace: Workspace, destination: str, table: str) -> dict[str, str]:
    query = (
        "select column_name, data_type from information_schema.columns"
        f" where table_schema = 'zoho_raw' and table_name = '{table}'"
    )
    if destination == "duckdb":
        import duckdb

        with closing(duckdb.connect(str(workspace.duckdb_path), read_only=True)) as conn:
            return {name: kind.lower() for name, kind in conn.execute(query).fetchall()}
    import psycopg2

    with closing(psycopg2.connect(workspace.env["DATABASE_URL"])) as conn, conn.cursor() as cursor:
        cursor.execute(query)
        return {name: kind.lower() for name, kind in cursor.fetchall()}


# --------------------------------------------------------------------------- comparing with the org


def same_value(api: Any, stored: Any) -> bool:
    """A value as Zoho renders it equals the stored one: datetimes as instants, dates, numbers."""
    if api is None or stored is None:
        return api is None and stored is None
    if isinstance(stored, dt.datetime):
        return stored.tzinfo is not None and dt.datetime.fromisoformat(api) == stored
    if isinstance(stored, dt.date):
        return dt.date.fromisoformat(api) == stored
    if isinstance(api, (int, float)) and not isinstance(api, bool):
        return math.isclose(float(api), float(stored))
    return api == stored


def differences(api_record: Mapping[str, Any], row: Mapping[str, Any]) -> list[str]:
    """Fields of an API record whose stored column (`owner__id` for Owner.id) differs."""
    found = []
    for field, value in api_record.items():
        column = field.lower()
        if isinstance(value, dict):
            pairs = [(f"{column}__{part}", part_value) for part, part_value in value.items()]
        elif value is None:  # a null lookup or value: every column it would fill is null
            pairs = [(name, None) for name in row if name == column or name.startswith(f"{column}__")]
        else:
            pairs = [(column, value)]
        for name, expected in pairs:
            if name not in row or not same_value(expected, row[name]):
                found.append(f"{name}: api {expected!r} != stored {row.get(name, '<no column>')!r}")
    return found


def assert_table_equals(
    api_records: list[dict[str, Any]], rows: list[dict[str, Any]], key: tuple[str, ...] = ("id",)
) -> None:
    stored = {tuple(row[k] for k in key): row for row in rows}
    assert len(stored) == len(rows), "duplicate keys in the warehouse"
    expected = {tuple(record[k] for k in key): record for record in api_records}
    assert stored.keys() == expected.keys(), (
        f"missing {len(expected.keys() - stored.keys())}, extra {len(stored.keys() - expected.keys())}"
    )
    mismatches = {k: d for k, record in expected.items() if (d := differences(record, stored[k]))}
    assert not mismatches, f"{len(mismatches)} records differ, e.g. {next(iter(mismatches.items()))}"


def deal_stage_rows(org: SandboxOrg) -> list[dict[str, Any]]:
    return [
        {
            "id": stage["id"],
            "pipeline_id": pipeline["id"],
            "pipeline": pipeline["display_value"],
            "stage": stage["actual_value"],
            "display_value": stage["display_value"],
            "sequence_number": stage["sequence_number"],
            "forecast_type": stage["forecast_type"],
            "forecast_category": stage["forecast_category"]["name"],
            "probability": stage["probability"],
        }
        for pipeline in org.pipelines()
        for stage in pipeline["maps"]
    ]


def deletion_log(org: SandboxOrg) -> list[dict[str, Any]]:
    return [{**entry, "module": module} for module in ("Leads", "Deals") for entry in org.deleted_records(module)]


def assert_warehouse_equals_org(
    workspace: Workspace, destination: str, org: SandboxOrg, *, log_fields: bool = True
) -> None:
    """Every table equals the org; deletions are gone from leads and deals.

    The deletion log is compared on (module, id, deleted_time), and field by field
    when `log_fields`: Zoho hides who deleted a record once it leaves the recycle bin
    (60 days), which an incremental read of the log cannot see for old entries.
    """
    rows = lambda table: warehouse_rows(workspace, destination, table)  # noqa: E731
    assert_table_equals(org.records("Leads"), rows("leads"))
    assert_table_equals(org.records("Deals"), rows("deals"))
    for module, versions in (("Leads", "lead_versions"), ("Deals", "deal_versions")):
        # the history holds every record as it is now (and, besides, what it was at earlier syncs)
        kept = {(row["id"], row["modified_time"]) for row in rows(versions)}
        missing = [
            r["id"] for r in org.records(module) if (r["id"], dt.datetime.fromisoformat(r["Modified_Time"])) not in kept
        ]
        assert not missing, f"{len(missing)} {module} have no version for their current state, e.g. {missing[:3]}"
    assert_table_equals(org.users(), rows("users"))
    assert_table_equals(deal_stage_rows(org), rows("deal_stages"))
    log, stored_log = deletion_log(org), rows("deleted_records")
    if log_fields:
        assert_table_equals(log, stored_log, key=("module", "id"))
    stored = {(r["module"], r["id"]): r["deleted_time"] for r in stored_log}
    assert all(same_value(e["deleted_time"], stored.get((e["module"], e["id"]))) for e in log)


# --------------------------------------------------------------------------- 1. the full load


def test_a_first_run_loads_the_whole_org(
    destination: str, org: SandboxOrg, server: SandboxServer, workspace: Workspace
) -> None:
    """GIVEN a Zoho org with leads (converted ones too), deals, users, a pipeline and deletions
    WHEN the user runs the extract for the first time
    THEN every zoho_raw table equals the org field by field, with the contract's column types,
         and the command ends with one summary line of records and API calls."""
    result = extract(workspace, destination)

    counts = summary(result)
    assert counts["leads"] == len(org.records("Leads")) and counts["deals"] == len(org.records("Deals"))
    assert counts["api_calls"] == sum(n for key, n in server.stats().items() if key.startswith("GET /crm/"))
    assert_warehouse_equals_org(workspace, destination, org)
    assert any(r["converted__s"] for r in warehouse_rows(workspace, destination, "leads"))
    leads, deals = column_types(workspace, destination, "leads"), column_types(workspace, destination, "deals")
    timestamptz = "timestamp with time zone"
    assert {leads[c] for c in ("created_time", "modified_time", "converted_date_time")} == {timestamptz}
    assert leads["converted__s"] == "boolean" and leads["converted_deal__id"] in (
        "varchar",
        "character varying",
        "text",
    )
    assert deals["closing_date"] == "date" and deals["probability"] == "bigint"
    assert deals["amount"] in ("double", "double precision") and deals["modified_time"] == timestamptz
    assert column_types(workspace, destination, "deleted_records")["deleted_time"] == timestamptz


# --------------------------------------------------------------------------- 2. increments and deletions


def test_a_later_run_reads_only_what_changed_and_removes_deleted_records(
    destination: str, workspace: Workspace
) -> None:
    """GIVEN a warehouse loaded three weeks ago
    WHEN the org lives on (records created, changed, converted, closed and deleted) and the extract runs again
    THEN it asks Zoho only for the records modified since the last run (from 10 minutes before it),
         200 a page, instead of the whole org; and the warehouse equals the org again, deletions included."""
    org = small_org(leads=1000, deals=400)
    with serving(org, workspace) as server:
        extract(workspace, destination)
        cursors = {module: last_modified(org, module) for module in ("Leads", "Deals")}
        changes = org.advance(days=21)
        assert changes["Leads"]["deleted"] and changes["Deals"]["deleted"]
        server.reset_stats()

        counts = summary(extract(workspace, destination))

        changed = {module: modified_since(org, module, cursors[module] - OVERLAP) for module in cursors}
        assert changed["Leads"] > PAGE  # more than one page, far less than the org
        for module, count in changed.items():
            assert record_requests(server, module) == max(1, math.ceil(count / PAGE))
        assert (counts["leads"], counts["deals"]) == (changed["Leads"], changed["Deals"])
        assert (
            counts["api_calls"] == record_requests(server, "Leads") + record_requests(server, "Deals") + FIXED_REQUESTS
        ), sorted(server.stats().items())
        assert server.stats().get("POST /oauth/v2/token") is None  # the first run's access token is reused
        assert_warehouse_equals_org(workspace, destination, org, log_fields=False)
        deleted = {(e["module"], e["id"]) for e in deletion_log(org)}
        stored = {("Leads", r["id"]) for r in warehouse_rows(workspace, destination, "leads")}
        stored |= {("Deals", r["id"]) for r in warehouse_rows(workspace, destination, "deals")}
        assert not deleted & stored


def test_a_mass_deletion_is_loaded_entry_for_entry(workspace: Workspace) -> None:
    """GIVEN an org in which a clean-up deleted 1,500 leads (more rows than one INSERT into DuckDB carries)
    WHEN the extract runs
    THEN the deletion log is loaded entry for entry and the warehouse equals the org."""
    org = small_org(leads=1800, deals=60)
    with serving(org, workspace) as server:
        CrmUser(server).delete("Leads", [r["id"] for r in org.records("Leads")[:1500]])
        assert len(deletion_log(org)) > 1500

        extract(workspace)

        assert_warehouse_equals_org(workspace, "duckdb", org)


def last_modified(org: SandboxOrg, module: str) -> dt.datetime:
    return max(dt.datetime.fromisoformat(r["Modified_Time"]) for r in org.records(module))


def modified_since(org: SandboxOrg, module: str, since: dt.datetime) -> int:
    return sum(dt.datetime.fromisoformat(r["Modified_Time"]) >= since for r in org.records(module))


def test_a_run_with_nothing_new_changes_nothing(server: SandboxServer, org: SandboxOrg, workspace: Workspace) -> None:
    """GIVEN a warehouse that is up to date
    WHEN the extract runs again at once
    THEN it reads one page per module (the last 10 minutes again) and the warehouse holds the same data."""
    extract(workspace)
    tables = ("leads", "deals", "users", "deal_stages", "deleted_records")
    before = {table: data_of(warehouse_rows(workspace, "duckdb", table)) for table in tables}
    server.reset_stats()

    counts = summary(extract(workspace))

    # No token request: the first run's access token is still good and is reused.
    assert counts["api_calls"] == 2 + FIXED_REQUESTS == sum(server.stats().values())
    assert counts["leads"] < 10 and counts["deleted_records"] == 0
    assert {table: data_of(warehouse_rows(workspace, "duckdb", table)) for table in tables} == before


def test_stages_and_currencies_are_read_only_when_a_deal_shows_they_changed(workspace: Workspace) -> None:
    """GIVEN a warehouse loaded from an org whose currencies are USD (home) and EUR
    WHEN nothing changed, and the extract runs
    THEN it asks only for the field lists, the record pages, the deletion logs and the users: no layout, pipeline
         or currency
    WHEN the admin then adds pounds sterling (Zoho's Add Currencies) and a seller enters a deal in GBP
    THEN the next run reads the currencies once more, in the same run as the deal, and the warehouse has both."""
    org = SandboxOrg(seed=11, leads=300, deals=120, timezone="Asia/Kolkata", today=TODAY, currencies=["USD", "EUR"])
    with serving(org, workspace) as server:
        extract(workspace)
        server.reset_stats()

        quiet = summary(extract(workspace))

        metadata = {
            key: n
            for key, n in server.stats().items()
            if ("/settings/" in key or "/org" in key) and key != "GET /crm/v8/settings/fields"
        }
        assert metadata == {} and quiet["api_calls"] == 2 + FIXED_REQUESTS

        crm = CrmUser(server)
        added = crm.session.post(
            f"{crm.url}/org/currencies",
            timeout=30,
            json={
                "currencies": [
                    {"iso_code": "GBP", "name": "Pound Sterling - GBP", "symbol": "£", "exchange_rate": "0.8"}
                ]
            },
        )
        assert added.status_code == 201, added.text
        deal = crm.create_deal(
            Deal_Name="London pilot", Stage="Qualification", Amount=8_000, Currency="GBP", Exchange_Rate=0.8
        )
        server.reset_stats()

        counts = summary(extract(workspace))

        assert server.stats().get("GET /crm/v8/org/currencies") == 1
        assert not any("/settings/" in key for key in server.stats() if key != "GET /crm/v8/settings/fields")
        assert counts["currencies"] == 3 and counts["deals"] >= 1
        currencies = {
            row["iso_code"]: row["exchange_rate"] for row in warehouse_rows(workspace, "duckdb", "currencies")
        }
        assert currencies == {"USD": 1.0, "EUR": pytest.approx(0.92), "GBP": 0.8}
        [stored] = [row for row in warehouse_rows(workspace, "duckdb", "deals") if row["id"] == deal]
        assert stored["currency"] == "GBP"


def data_of(rows: list[dict[str, Any]]) -> list[str]:
    """Rows without dlt's load bookkeeping, in a stable order."""
    return sorted(repr({k: v for k, v in row.items() if not k.startswith("_dlt_")}) for row in rows)


# --------------------------------------------------------------------------- 3. past 2,000 records


def test_more_than_2000_records_are_paged_with_page_tokens(workspace: Workspace) -> None:
    """GIVEN an org with 2,500 leads (Zoho serves only 2,000 by page number)
    WHEN the extract runs
    THEN all 2,500 arrive, 200 per request."""
    org = small_org(leads=2500, deals=50)
    with serving(org, workspace) as server:
        counts = summary(extract(workspace))

        assert counts["leads"] == 2500 == len(org.records("Leads"))
        assert record_requests(server, "Leads") == math.ceil(2500 / PAGE)
        assert_warehouse_equals_org(workspace, "duckdb", org)


@pytest.mark.parametrize("told", [True, False], ids=["limit configured", "limit learned from zoho"])
def test_more_records_than_one_page_token_chain_reaches_are_read_in_several_queries(
    told: bool, workspace: Workspace
) -> None:
    """GIVEN an org with 2,500 leads and page_token chains that reach only 1,000 records (Zoho's reach
         100,000), the extract told that limit (SOURCES__ZOHO__PAGE_TOKEN_LIMIT) or not
    WHEN the extract runs
    THEN it starts the query again from the last Modified_Time read each time a chain runs out, and says so
         with -v: 1,000 + 1,000 + 502 leads are read (the lead of each restart second comes twice), in
         5 + 5 + 3 requests, plus the one page Zoho refuses when the extract was not told (then it knows);
         the warehouse equals the org field by field, each lead once."""
    org = small_org(leads=2500, deals=50)
    times = sorted(dt.datetime.fromisoformat(r["Modified_Time"]) for r in org.records("Leads"))
    assert times.count(times[999]) == times.count(times[1998]) == 1  # one lead per restart second
    if told:
        workspace.env["SOURCES__ZOHO__PAGE_TOKEN_LIMIT"] = "1000"
    with serving(org, workspace, page_token_limit=1000) as server:
        result = extract(workspace, "duckdb", "-v")

        assert record_requests(server, "Leads") == 5 + 5 + 3 + (0 if told else 1)
    assert summary(result)["leads"] == 2500
    assert result.stderr.count("restarting the query from If-Modified-Since") == 2
    assert_warehouse_equals_org(workspace, "duckdb", org)


def test_more_records_in_one_second_than_a_chain_reaches_are_all_loaded(workspace: Workspace) -> None:
    """GIVEN an org where 150 leads were written in the same second (a bulk import), and page_token chains
         that reach only 100 records (Zoho's reach 100,000: the same story at 150,000 leads)
    WHEN the extract runs
    THEN once a chain ends inside that second (70 of its 100 records are of it) it reads the rest of the
         second by COQL, keyset-paged on id (1 query), fetches the 80 leads it has not read yet by id
         (1 request) and goes on from the next second; every lead is loaded, field by field."""
    org = small_org(leads=30, deals=10)
    org.insert("Leads", [{"Last_Name": f"Imported {n}"} for n in range(150)], org.current_user_id)
    workspace.env.update(SOURCES__ZOHO__PAGE_TOKEN_LIMIT="100", SOURCES__ZOHO__PAGE_SIZE="50")
    with serving(org, workspace, page_token_limit=100) as server:
        counts = summary(extract(workspace))

        stats = server.stats()
    assert stats["POST /crm/v8/coql"] == 1
    # 2 pages (the 30 older leads and 20 imported, then 50 imported), 1 by id, 1 after the import second
    assert record_requests_of(stats, "Leads") == 2 + 1 + 1
    assert counts["leads"] == 180 == len(org.records("Leads"))
    assert_warehouse_equals_org(workspace, "duckdb", org)


def record_requests_of(stats: Mapping[str, int], module: str) -> int:
    return stats.get(f"GET /crm/v8/{module}", 0)


# --------------------------------------------------------------------------- 4. tokens


def test_a_token_that_expires_mid_run_is_refreshed(
    org: SandboxOrg, server: SandboxServer, workspace: Workspace
) -> None:
    """GIVEN an access token that Zoho revokes after the third API request
    WHEN the extract runs
    THEN it gets a new token once, repeats the refused request and completes."""
    server.expire_tokens_after(3)

    extract(workspace)

    assert server.stats()["POST /oauth/v2/token"] == 2
    assert_warehouse_equals_org(workspace, "duckdb", org)


def test_secrets_never_reach_the_output(org: SandboxOrg, server: SandboxServer, workspace: Workspace) -> None:
    """GIVEN the sandbox credentials
    WHEN the extract runs verbosely, and again with a wrong refresh token
    THEN neither the secrets nor the access token appear in what it prints, and the failure names the cause."""
    secrets = [workspace.env["ZOHO_CLIENT_SECRET"], workspace.env["ZOHO_REFRESH_TOKEN"], "Zoho-oauthtoken"]
    verbose = extract(workspace, "duckdb", "-v")
    workspace.env["ZOHO_REFRESH_TOKEN"] = "1000.revoked.token"
    refused = extract(workspace, check=False)

    assert refused.returncode == 2  # a refused refresh token is a configuration error
    assert refused.stderr.strip().splitlines()[-1].startswith("error: token request failed: invalid_code")
    for output in (verbose.stdout, verbose.stderr, refused.stdout, refused.stderr):
        assert not any(secret in output for secret in secrets)


# --------------------------------------------------------------------------- 5. interrupted runs


def test_a_run_stopped_before_its_load_is_completed_by_the_next_run(
    org: SandboxOrg, server: SandboxServer, workspace: Workspace
) -> None:
    """GIVEN a run that extracted and normalized a day of changes but died before loading them
    WHEN another day passes and the extract runs again
    THEN it first loads what the dead run left, then extracts the new day:
         nothing is lost, nothing is duplicated."""
    extract(workspace)
    org.advance(days=1)
    workspace.run(
        "python",
        "-c",
        (
            "from pipelines.zoho import zoho_crm; from pipelines.zoho.run import make_pipeline\n"
            "pipeline = make_pipeline('duckdb'); pipeline.sync_destination()\n"
            "pipeline.extract(zoho_crm(records_file_format='jsonl')); pipeline.normalize()"
        ),
    )
    org.advance(days=1)

    counts = summary(extract(workspace))

    assert counts["resumed"] == 1
    assert_warehouse_equals_org(workspace, "duckdb", org, log_fields=False)


@pytest.mark.postgres
def test_a_run_killed_in_the_middle_of_its_load_is_completed_by_the_next_run(
    org: SandboxOrg, server: SandboxServer, workspace: Workspace, postgres_url: str
) -> None:
    """GIVEN a warehouse loaded yesterday and a run killed (SIGKILL) while it was merging today's changes
    WHEN the extract runs again
    THEN it finishes the interrupted load and the warehouse equals the org: nothing lost, nothing duplicated."""
    import psycopg2

    workspace.use_postgres(postgres_url)
    extract(workspace, "postgres")
    org.advance(days=1)
    # A reader holding a lock on `leads` stalls the merge into it, so the kill lands mid-load.
    blocker = psycopg2.connect(postgres_url)
    try:
        with blocker.cursor() as cursor:
            cursor.execute("lock table zoho_raw.leads in access exclusive mode")
        run = workspace.start("python", "-m", "pipelines.zoho", "--destination", "postgres")
        wait_for_lock_waiter(postgres_url, run)
        run.send_signal(signal.SIGKILL)
        assert run.wait(timeout=30) == -signal.SIGKILL
    finally:
        blocker.rollback()
        blocker.close()

    counts = summary(extract(workspace, "postgres"))

    assert counts["resumed"] == 1
    assert_warehouse_equals_org(workspace, "postgres", org, log_fields=False)


def test_a_run_killed_while_paging_loses_nothing(workspace: Workspace) -> None:
    """GIVEN a warehouse loaded three weeks ago, and a run killed (SIGKILL) while paging through the changes since
    WHEN the extract runs again
    THEN the warehouse equals the org: the dead run's half-read pages neither count nor move the cursor."""
    org = small_org(leads=1000, deals=400)
    with serving(org, workspace) as server:
        extract(workspace)
        org.advance(days=21)
        server.reset_stats()
        run = workspace.start("python", "-m", "pipelines.zoho")
        deadline = time.monotonic() + 60
        while record_requests(server, "Leads") < 1 and time.monotonic() < deadline:
            assert run.poll() is None, run.communicate()
            time.sleep(0.002)
        run.send_signal(signal.SIGKILL)
        assert run.wait(timeout=30) == -signal.SIGKILL  # it was still running

        summary(extract(workspace))

        assert_warehouse_equals_org(workspace, "duckdb", org, log_fields=False)


def test_a_run_that_zoho_fails_is_repeated_cleanly(
    org: SandboxOrg, server: SandboxServer, workspace: Workspace
) -> None:
    """GIVEN a warehouse loaded yesterday, and Zoho failing every Deals request for a while today
    WHEN the extract runs, fails, and runs again once Zoho is back
    THEN the failed run says why in one line and changes nothing; the next run brings the warehouse level with the org.
    AND a single failed request is simply retried."""
    extract(workspace)
    org.advance(days=1)
    server.inject_faults(5, status=500, path_prefix="/crm/v8/Deals")

    failed = extract(workspace, check=False)

    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines()[-1] == "error: GET Deals failed: HTTP 500 INTERNAL_ERROR after 5 attempts"
    assert "Traceback" not in failed.stderr and failed.stdout == ""
    server.inject_faults(1, status=429, path_prefix="/crm/v8/Leads")
    summary(extract(workspace))
    assert_warehouse_equals_org(workspace, "duckdb", org, log_fields=False)


# --------------------------------------------------------------------------- 6. where the state lives


def test_a_new_machine_continues_from_the_state_in_the_warehouse(
    org: SandboxOrg, server: SandboxServer, workspace: Workspace, tmp_path
) -> None:
    """GIVEN a warehouse loaded from one machine
    WHEN the extract runs on another machine (no local dlt folder) after a day passed
    THEN it continues incrementally from the cursors stored in the warehouse."""
    extract(workspace)
    org.advance(days=1)
    workspace.env["DLT_DATA_DIR"] = str(tmp_path / "another-machine")
    server.reset_stats()

    counts = summary(extract(workspace))

    assert record_requests(server, "Leads") == record_requests(server, "Deals") == 1
    assert counts["leads"] < len(org.records("Leads")) / 2
    assert_warehouse_equals_org(workspace, "duckdb", org, log_fields=False)


def test_a_deleted_warehouse_is_loaded_again_in_full(
    org: SandboxOrg, server: SandboxServer, workspace: Workspace
) -> None:
    """GIVEN a loaded warehouse whose DuckDB file the user deletes (the dlt folder stays)
    WHEN the extract runs again
    THEN it loads the whole org again instead of an empty increment."""
    extract(workspace)
    workspace.duckdb_path.unlink()

    counts = summary(extract(workspace))

    assert counts["leads"] == len(org.records("Leads"))
    assert_warehouse_equals_org(workspace, "duckdb", org)


def test_a_full_refresh_rebuilds_the_raw_tables_and_keeps_the_history(destination: str, workspace: Workspace) -> None:
    """GIVEN a warehouse synced on two days, holding a row Zoho does not have (say, restored from an old backup)
    WHEN the user runs the extract with --full-refresh
    THEN the raw tables are emptied and read again in full: they equal the org exactly; and the history the
         syncs kept (every version they saw, which Zoho cannot give again) is still all there."""
    org = small_org()
    with serving(org, workspace):
        extract(workspace, destination)
        org.advance(days=1)
        extract(workspace, destination)
        history = {
            table: data_of(warehouse_rows(workspace, destination, table))
            for table in ("lead_versions", "deal_versions")
        }
        ghost = "insert into zoho_raw.deals (id, deal_name, _dlt_load_id, _dlt_id) values ('1', 'ghost', '0', 'x')"
        query(workspace, destination, ghost)

        counts = summary(extract(workspace, destination, "--full-refresh"))

        assert counts["deals"] == len(org.records("Deals"))
        assert_warehouse_equals_org(workspace, destination, org)
        for table, rows in history.items():
            kept = set(data_of(warehouse_rows(workspace, destination, table)))
            assert len(rows) > len(org.records("Deals")) and set(rows) <= kept, table


# --------------------------------------------------------------------------- 7. configuration


@pytest.mark.parametrize(
    "destination, settings, named",
    [
        ("duckdb", {"ZOHO_REFRESH_TOKEN": None}, "ZOHO_REFRESH_TOKEN is not set (or SOURCES__ZOHO__REFRESH_TOKEN / "),
        (
            "duckdb",
            {"ZOHO_CLIENT_ID": None, "ZOHO_CLIENT_SECRET": None, "ZOHO_REFRESH_TOKEN": None},
            "ZOHO_CLIENT_ID, ZOHO_CLIENT_SECRET, ZOHO_REFRESH_TOKEN are not set",
        ),
        ("duckdb", {"ZOHO_DC": "uk"}, "ZOHO_DC must be one of com, eu, in, com.au, jp, ca, com.cn, sa (got 'uk')"),
        ("postgres", {}, "DATABASE_URL is not set"),
    ],
)
def test_missing_settings_are_named_in_one_line(
    destination: str, settings: dict[str, str | None], named: str, workspace: Workspace
) -> None:
    """GIVEN Zoho credentials or a warehouse address that are not set (or not valid)
    WHEN the user runs the extract
    THEN it exits with status 2 and one line naming the variable, without a traceback."""
    workspace.env.update(ZOHO_CLIENT_ID="1000.X", ZOHO_CLIENT_SECRET="s", ZOHO_REFRESH_TOKEN="1000.r.t")
    for name, value in settings.items():
        if value is None:
            del workspace.env[name]
        else:
            workspace.env[name] = value

    result = extract(workspace, destination, check=False)

    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {named}"), result.stderr


# --------------------------------------------------------------------------- helpers for the kill tests


def wait_for_lock_waiter(url: str, run: subprocess.Popen, timeout: float = 60) -> None:
    """Wait until a session of the running extract waits for the lock on `leads`."""
    import psycopg2

    deadline = time.monotonic() + timeout
    with closing(psycopg2.connect(url)) as conn:
        conn.autocommit = True
        while time.monotonic() < deadline:
            assert run.poll() is None, run.communicate()
            with conn.cursor() as cursor:
                cursor.execute("select count(*) from pg_locks where not granted")
                if cursor.fetchone()[0]:
                    return
            time.sleep(0.05)
    raise AssertionError("the extract never reached the load of leads")
