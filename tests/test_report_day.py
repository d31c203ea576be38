"""Without --date the briefing reports on yesterday in the org's time, not on the machine's yesterday.

GIVEN an org in Pacific/Kiritimati (UTC+14, the zone furthest ahead of this machine's UTC) whose own clock runs
a day ahead of the machine's: near midnight UTC, when the machine's date is the 6th, it is already the 7th in
Kiritimati and the org dates its records the 8th. It is loaded by the pipeline CLI and built by
`dbt build --exclude-resource-type unit_test` (as the daily workflow builds: the unit tests run with the test
suite) on DuckDB and PostgreSQL, with CRM_TIMEZONE=Pacific/Kiritimati.
WHEN the briefing runs without --date (`python -m insights.deliver --dry-run --json`)
THEN it reports on the org's yesterday - the day before the org's today, the last day of kpi_daily, and the
last day kpi_daily marks complete - not on the machine's yesterday, read in Kiritimati or in UTC
AND a briefing process that was not given the org's zone (the machine's clock read in UTC) reports the same day:
the marts were cut in the org's zone, and their last day is the org's today.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from zoneinfo import ZoneInfo

import pytest

from sandbox import SandboxOrg, SandboxServer
from tests.ollama_emulator import OllamaEmulator
from tests.support.postgres import create_database, drop_database
from tests.support.workspace import Workspace, make_workspace
from tests.test_marts import query

TARGETS = ["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)]
TIMEZONE = "Pacific/Kiritimati"


@pytest.fixture(scope="module")
def ahead(postgres_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, dt.date]]:
    """The org built on both warehouses, and the org's today: a day after the machine's today in the org's zone."""
    org_today = dt.datetime.now(ZoneInfo(TIMEZONE)).date() + dt.timedelta(days=1)
    org = SandboxOrg(seed=67, leads=200, deals=80, timezone=TIMEZONE, today=org_today)
    workspace = make_workspace(tmp_path_factory.mktemp("ahead") / "workspace")
    database = f"ahead_{uuid.uuid4().hex[:8]}"
    workspace.use_postgres(create_database(postgres_server, database))
    try:
        with SandboxServer(org, port=0) as server:
            workspace.env.update(server.env())
            for target in ("duckdb", "postgres"):
                workspace.run("python", "-m", "pipelines.zoho", "--destination", target)
                workspace.dbt_build(target, "--exclude-resource-type", "unit_test")
        yield workspace, org_today
    finally:
        drop_database(postgres_server, database)


def report_date(workspace: Workspace, target: str, **env: str) -> dt.date:
    """The day a dry-run briefing without --date reports on (the model is unreachable: the standard briefing)."""
    settings = {k: v for k, v in workspace.env.items() if not k.startswith(("TWILIO_", "RECIPIENT_", "OLLAMA_"))}
    with OllamaEmulator() as ollama:
        ollama.down()
        runner = Workspace(workspace.root, {**settings, "OLLAMA_BASE_URL": ollama.url, **env})
        if not runner.env.get("CRM_TIMEZONE"):
            runner.env.pop("CRM_TIMEZONE", None)
        result = runner.run("python", "-m", "insights.deliver", "--target", target, "--dry-run", "--json", timeout=180)
    return dt.date.fromisoformat(json.loads(result.stdout)["report_date"])


@pytest.mark.parametrize("target", TARGETS)
def test_without_a_date_the_briefing_reports_on_the_orgs_yesterday(
    ahead: tuple[Workspace, dt.date], target: str
) -> None:
    workspace, org_today = ahead
    org_yesterday = org_today - dt.timedelta(days=1)
    # The machine's yesterday read in Kiritimati when the org was built, and read in UTC now.
    machine_yesterdays = {org_yesterday - dt.timedelta(days=1), dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)}
    days = dict(
        query(workspace, target, "select kpi_date, bool_and(is_complete) from analytics.kpi_daily group by kpi_date")
    )
    assert max(days) == org_today and not days[org_today] and days[org_yesterday], "the marts run to the org's today"

    # WHEN the briefing runs without --date, with the org's zone
    reported = report_date(workspace, target)

    # THEN it reports on the org's yesterday, which is not the machine's yesterday in either zone
    assert reported == org_yesterday
    assert reported not in machine_yesterdays

    # AND so does a briefing process that reads the machine's clock in UTC
    assert report_date(workspace, target, CRM_TIMEZONE="") == org_yesterday
