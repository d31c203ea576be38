"""Shared fixtures: a real PostgreSQL server, isolated warehouses, and a way to run the CLIs.

Nothing here fakes the code under test. Postgres is the stock server binary
(started once per session on a free loopback port, or taken from
`TEST_DATABASE_URL`), DuckDB is a real file, and commands run as a user would
run them: `python -m ...` and `dbt build` in a subprocess.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.postgres import PostgresUnavailable, create_database, drop_database, local_postgres
from tests.support.workspace import Workspace, make_workspace
from tests.twilio_emulator import TwilioEmulator


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Start the slow end-to-end tests first (otherwise in file order). `make test` runs two workers that take
    tests not yet started from each other (`--dist worksteal`): a three-minute test collected late could start
    when the other worker was nearly done, and the suite ended with one worker running it alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


# What a test keeps for a person to look at (a screenshot, a figure): `record_property("kept", "...")` in the test,
# listed at the end of the run's output. The reports reach the main process from the xdist workers too.
_KEPT: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call":
        _KEPT.extend(str(value) for name, value in report.user_properties if name == "kept")


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    if _KEPT:
        terminalreporter.write_sep("-", "kept by this run")
        for line in _KEPT:
            terminalreporter.write_line(line)


# --------------------------------------------------------------------------- Postgres


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A running PostgreSQL server's admin URL, for the whole session."""
    try:
        with local_postgres() as url:
            yield url
    except PostgresUnavailable as exc:
        pytest.exit(str(exc), 2)


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database on the session's server, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    url = create_database(postgres_server, name)
    try:
        yield url
    finally:
        drop_database(postgres_server, name)


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_warehouse(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An empty warehouse of each kind, named by its target: a DuckDB file, a fresh PostgreSQL database.
    What the briefing writes there (the ledger, the stored briefings) creates its own tables."""
    monkeypatch.delenv("DESTINATION__POSTGRES__CREDENTIALS", raising=False)
    if request.param == "duckdb":
        monkeypatch.setenv("DUCKDB_PATH", str(tmp_path / "warehouse.duckdb"))
    else:
        monkeypatch.setenv("DATABASE_URL", request.getfixturevalue("postgres_url"))
    return request.param


@pytest.fixture
def twilio() -> Iterator[TwilioEmulator]:
    """The Twilio emulator (WhatsApp's rules kept), on a free port, for one test."""
    with TwilioEmulator() as emulator:
        yield emulator


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """A clean user setup (DuckDB file, dlt folder, dbt profile) in a temporary folder."""
    return make_workspace(tmp_path / "workspace")


# --------------------------------------------------------------------------- a built warehouse

# The org every end-to-end test reads: small enough to build in seconds, big
# enough to have every stage, won and lost deals, conversions and deletions.
SANDBOX_ORG = dict(seed=7, leads=1500, deals=600, timezone="Asia/Kolkata")
SANDBOX_TODAY = "2026-11-20"


@dataclass
class BuiltWarehouse:
    """The sandbox org loaded by the pipeline CLI and built by `dbt build`, on both targets."""

    org: object
    workspace: Workspace
    postgres_template: str  # a database to clone; never connect to it directly


@pytest.fixture(scope="session")
def built_warehouse(postgres_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuiltWarehouse]:
    import datetime

    from sandbox import SandboxOrg, SandboxServer

    org = SandboxOrg(today=datetime.date.fromisoformat(SANDBOX_TODAY), **SANDBOX_ORG)
    ws = make_workspace(tmp_path_factory.mktemp("built") / "workspace")
    template = f"built_{uuid.uuid4().hex[:8]}"
    ws.use_postgres(create_database(postgres_server, template))
    with SandboxServer(org, port=0) as server:
        ws.env.update(server.env())
        for target in ("duckdb", "postgres"):
            ws.run("python", "-m", "pipelines.zoho", "--destination", target)
            ws.dbt_build(target)
    try:
        yield BuiltWarehouse(org=org, workspace=ws, postgres_template=template)
    finally:
        drop_database(postgres_server, template)


@pytest.fixture
def warehouse(built_warehouse: BuiltWarehouse, postgres_server: str, tmp_path: Path) -> Iterator[Workspace]:
    """A private copy of the built warehouse on both targets, for a test that writes to it.

    The DuckDB file is copied and the Postgres database cloned from the built
    one, so tests that store briefings or deliveries never see each other's rows.
    """
    ws = make_workspace(tmp_path / "workspace")
    ws.env.update(
        {k: v for k, v in built_warehouse.workspace.env.items() if k.startswith("ZOHO_") or k == "CRM_TIMEZONE"}
    )
    shutil.copy(built_warehouse.workspace.duckdb_path, ws.duckdb_path)
    name = f"w_{uuid.uuid4().hex[:12]}"
    ws.use_postgres(create_database(postgres_server, name, template=built_warehouse.postgres_template))
    try:
        yield ws
    finally:
        drop_database(postgres_server, name)


@pytest.fixture
def warehouse_env(warehouse: Workspace, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The private warehouse copy, visible to this process too: for the SQL a test compares with, or writes first."""
    monkeypatch.delenv("DESTINATION__POSTGRES__CREDENTIALS", raising=False)
    monkeypatch.setenv("DUCKDB_PATH", warehouse.env["DUCKDB_PATH"])
    monkeypatch.setenv("DATABASE_URL", warehouse.env["DATABASE_URL"])
    return dict(warehouse.env)
