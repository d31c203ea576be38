"""No fault costs a load: `python -m pipelines.zoho` against a Zoho org on a bad day.

The sandbox injects seeded faults over real HTTP (garbled bodies, dropped connections, 5xx, 429s,
expired page tokens, revoked tokens, records changing while a run pages), runs out of API credits,
and the extractor is killed part-way; each test then compares the warehouse with the org.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import signal
import time

from sandbox import SandboxOrg
from sandbox.faults import FaultPlan
from tests.support.workspace import Workspace
from tests.test_extract import (
    OVERLAP,
    PAGE,
    assert_warehouse_equals_org,
    extract,
    record_requests,
    serving,
    summary,
    warehouse_rows,
)

TODAY = dt.date(2026, 11, 20)
EXIT_TRY_LATER = 75


def org_of(leads: int, deals: int, seed: int = 21) -> SandboxOrg:
    return SandboxOrg(seed=seed, leads=leads, deals=deals, timezone="Asia/Kolkata", today=TODAY)


def pages_from(org: SandboxOrg, module: str, since: dt.datetime) -> int:
    """Record pages a read of `module` from `since` (inclusive) needs."""
    count = sum(dt.datetime.fromisoformat(r["Modified_Time"]) >= since for r in org.records(module))
    return max(1, math.ceil(count / PAGE))


def test_garbled_responses_are_retried_and_a_first_load_completes(workspace: Workspace) -> None:
    """GIVEN an org of 20,000 leads whose API garbles 2% of its answers (HTTP 200 with the JSON cut in half,
         or with an HTML page instead of JSON), seeded
    WHEN a first load runs (and runs again if it fails)
    THEN it completes in at most 2 runs, the warehouse equals the org, and the log names each garbled
         answer for what it is: an unreadable response body."""
    org = org_of(leads=20_000, deals=800)
    plan = FaultPlan(rate=0.02, kinds=("truncated", "html"), seed=8)
    with serving(org, workspace, faults=plan) as server:
        runs = [extract(workspace, "duckdb", "-v", check=False)]
        if runs[0].returncode != 0:
            runs.append(extract(workspace, "duckdb", "-v", check=False))

        injected = server.faults.report()["injected"]

    assert runs[-1].returncode == 0, runs[-1].stderr[-2000:]
    assert sum(injected.values()) >= 2 and set(injected) == {"truncated", "html"}
    stderr = "".join(run.stderr for run in runs)
    assert stderr.count("unreadable response body (HTTP 200, ") == sum(injected.values())
    assert "unreadable response body (HTTP 200, text/html, " in stderr
    assert "unreadable response body (HTTP 200, application/json, " in stderr
    assert_warehouse_equals_org(workspace, "duckdb", org)


def test_a_body_that_stays_unreadable_is_reported_as_such(workspace: Workspace) -> None:
    """GIVEN an org whose API answers every request with HTTP 200 and an HTML page
    WHEN the extract runs
    THEN it tries each request 5 times and fails with one line saying the body was unreadable."""
    org = org_of(leads=50, deals=10)
    with serving(org, workspace, faults=FaultPlan(rate=1.0, kinds=("html",))):
        failed = extract(workspace, check=False)

    assert failed.returncode == 1
    last = failed.stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        r"error: GET (Leads|Deals|users|settings/layouts|settings/fields|\w+/deleted) failed: unreadable response"
        r" body \(HTTP 200, text/html, \d+ bytes\) after 5 attempts",
        last,
    ), last


def test_a_run_killed_half_way_keeps_its_loads_and_the_next_run_reads_only_the_rest(workspace: Workspace) -> None:
    """GIVEN a first load of 8,000 leads and 2,000 deals, loaded 1,000 records at a time, killed (SIGKILL)
         once it has asked for half of the lead pages
    WHEN the extract runs again
    THEN the killed run kept what it loaded (its cursor stands past it), the next run reads at most the
         pages from that cursor minus the 10-minute overlap, far fewer than a full load, and the
         warehouse equals the org."""
    org = org_of(leads=8000, deals=2000)
    full_pages = math.ceil(8000 / PAGE)
    workspace.env["SOURCES__ZOHO__RECORDS_PER_LOAD"] = "1000"
    with serving(org, workspace) as server:
        run = workspace.start("python", "-m", "pipelines.zoho")
        deadline = time.monotonic() + 60
        while record_requests(server, "Leads") < full_pages // 2 and time.monotonic() < deadline:
            assert run.poll() is None, run.communicate()
            time.sleep(0.002)
        run.send_signal(signal.SIGKILL)
        assert run.wait(timeout=30) == -signal.SIGKILL

        kept = warehouse_rows(workspace, "duckdb", "leads")
        cursor = max(row["modified_time"] for row in kept)
        server.reset_stats()
        counts = summary(extract(workspace))

        assert 1000 <= len(kept) < 8000
        allowed = pages_from(org, "Leads", cursor - OVERLAP)
        assert record_requests(server, "Leads") <= allowed < full_pages * 3 // 4
        assert counts["leads"] <= allowed * PAGE
    assert_warehouse_equals_org(workspace, "duckdb", org)


def test_credits_below_the_floor_stop_the_run_cleanly_and_the_next_run_completes(workspace: Workspace) -> None:
    """GIVEN an org with 3,000 leads whose API credits for the day are running low (82 left, Zoho reports
         them once half are used) and ZOHO_CREDIT_FLOOR=70
    WHEN the extract runs
    THEN it stops once Zoho reports fewer than 70 credits left, with one line naming the floor and the
         "try later" exit status 75, keeping what it loaded;
    AND WHEN the credits are back and it runs again, it continues from there and the warehouse equals the org."""
    org = org_of(leads=3000, deals=300)
    # Without the first sync's stage-history backfill (one call per deal), which would spend the low
    # credits before the first page of leads: this test is about the record pages.
    workspace.env.update(
        ZOHO_CREDIT_FLOOR="70", SOURCES__ZOHO__RECORDS_PER_LOAD="600", SOURCES__ZOHO__STAGE_HISTORY_BACKFILL="false"
    )
    with serving(org, workspace, credits=1000) as server:
        server.credits.set(1000, remaining=82)  # the metadata reads, each module's field list, then the pages
        stopped = extract(workspace, check=False)

        assert stopped.returncode == EXIT_TRY_LATER, stopped.stderr[-2000:]
        lines = stopped.stderr.strip().splitlines()
        assert lines[-1].startswith("stopped: Zoho API credits left (69) are below ZOHO_CREDIT_FLOOR (70); "), lines[-1]
        assert "Traceback" not in stopped.stderr and stopped.stdout == ""
        kept = len(warehouse_rows(workspace, "duckdb", "leads"))
        assert 600 <= kept < 3000
        assert server.credits.report()["remaining"] == 69  # no call after the floor

        server.credits.set(1000)
        server.reset_stats()
        counts = summary(extract(workspace))

    assert counts["leads"] < 3000 - kept + 2 * PAGE
    assert_warehouse_equals_org(workspace, "duckdb", org)


def test_a_bad_credit_floor_is_named(workspace: Workspace) -> None:
    """GIVEN ZOHO_CREDIT_FLOOR=lots
    WHEN the extract runs
    THEN it exits 2 with one line naming the variable, before calling Zoho."""
    workspace.env.update(
        ZOHO_CLIENT_ID="1000.X", ZOHO_CLIENT_SECRET="s", ZOHO_REFRESH_TOKEN="1000.r.t", ZOHO_CREDIT_FLOOR="lots"
    )

    result = extract(workspace, check=False)

    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "error: ZOHO_CREDIT_FLOOR must be a whole number of API credits, 0 or more (got 'lots')"
    )
