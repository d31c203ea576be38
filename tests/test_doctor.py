"""`python -m insights.doctor` and `make daily`: a wrong setting is named in seconds, before any work.

The doctor talks to the real services' stand-ins over HTTP: the sandbox Zoho
org, the Twilio emulator, a real DuckDB file or PostgreSQL server. `make daily`
is run as `scripts/daily.sh`, the script the make target runs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from sandbox import SandboxOrg, SandboxServer
from tests.support.workspace import Workspace
from tests.twilio_emulator import TwilioEmulator

ANA = "+15550000001"


@pytest.fixture(scope="module")
def zoho() -> Iterator[SandboxServer]:
    org = SandboxOrg(seed=3, leads=50, deals=20, timezone="Asia/Kolkata", currencies=["USD"])  # multi-currency off
    with SandboxServer(org, port=0) as server:
        yield server


@pytest.fixture
def setup(workspace: Workspace, zoho: SandboxServer) -> Iterator[tuple[Workspace, TwilioEmulator]]:
    """A complete, correct configuration: the sandbox org, Twilio, a DuckDB file, no Ollama."""
    with TwilioEmulator() as twilio:
        workspace.env.update(zoho.env())
        workspace.env.update(twilio.env(ANA))
        workspace.env["OLLAMA_BASE_URL"] = "http://127.0.0.1:9"
        yield workspace, twilio


def doctor(ws: Workspace, *args: str) -> Any:
    return ws.run("python", "-m", "insights.doctor", *args, check=False, timeout=120)


def test_a_correct_setup_passes_in_seconds_with_one_line_per_check(setup: Any, zoho: SandboxServer) -> None:
    """GIVEN every setting right, an org with one currency, and no Ollama running
    WHEN the doctor runs
    THEN it exits 0 within seconds, with a line per check: Zoho, its scopes, the time zone, the warehouse,
    the recipients, the sender and Twilio's credentials ok; Ollama and the WhatsApp template (none yet) only
    warnings, each with its fix; nothing is created.
    The scopes were read as the extractor reads them: the deal stages of a layout, and the org itself
    once Zoho says currencies are not enabled."""
    ws, twilio = setup
    zoho.reset_stats()
    started = time.perf_counter()
    result = doctor(ws)
    seconds = time.perf_counter() - started

    assert result.returncode == 0, result.stdout + result.stderr
    lines = {
        line.split()[1]: line.split()[0]
        for line in result.stdout.splitlines()
        if line[:4].strip() in ("ok", "warn", "FAIL")
    }
    assert lines == {
        "CRM_TIMEZONE": "ok",
        "Zoho": "ok",
        "warehouse": "ok",
        "Ollama": "warn",
        "recipients": "ok",
        "TWILIO_FROM_NUMBER": "ok",
        "Twilio": "ok",
        "WhatsApp": "warn",
    }
    assert "TWILIO_TEMPLATE_SID is not set" in result.stdout and "create-template" in result.stdout
    assert "fix: start Ollama" in result.stdout
    assert twilio.messages == []
    assert not ws.duckdb_path.exists()  # checking leaves no empty warehouse behind
    assert seconds < 30  # generous on a busy machine; the benchmark figure is in docs/performance.md
    read = zoho.stats()
    for path in ("settings/layouts", "settings/pipeline", "org/currencies", "org"):
        assert read.get(f"GET /crm/v8/{path}") == 1, read


def test_a_refused_currencies_read_is_named_with_its_scope(setup: Any, zoho: SandboxServer) -> None:
    """GIVEN Zoho refusing the org's currencies (the sandbox grants every scope, so the refusal is an
    injected error on that one path)
    WHEN the doctor runs
    THEN the Zoho scopes line fails naming org/currencies and the scope it needs, and the doctor exits 2."""
    ws, _ = setup
    zoho.inject_faults(1, status=500, path_prefix="/crm/v8/org/currencies")

    result = doctor(ws)

    assert result.returncode == 2, result.stdout + result.stderr
    [scopes] = [line for line in result.stdout.splitlines() if "Zoho scopes" in line]
    assert scopes.startswith("FAIL") and "org/currencies (ZohoCRM.settings.currencies.READ)" in scopes, scopes
    assert "settings/pipeline" not in scopes and "Leads" not in scopes


MISTAKES = {
    "bad recipient": ({"RECIPIENT_PHONE_NUMBER": "+1555000000a"}, "recipients: RECIPIENT_PHONE_NUMBER", "E.164"),
    "wrong Twilio token": ({"TWILIO_AUTH_TOKEN": "0" * 32}, "Twilio credentials", "TWILIO_AUTH_TOKEN"),
    "wrong refresh token": ({"ZOHO_REFRESH_TOKEN": "1000.not-a-token"}, "Zoho token refresh", "ZOHO_REFRESH_TOKEN"),
    "time zone differing from the org's": (
        {"CRM_TIMEZONE": "Europe/Berlin"},
        "CRM_TIMEZONE",
        "CRM_TIMEZONE=Asia/Kolkata",
    ),
    "unreachable warehouse": (
        {"DATABASE_URL": "postgresql://postgres:unused@127.0.0.1:9/none"},
        "warehouse (postgres)",
        "DATABASE_URL",
    ),
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_make_daily_stops_before_extracting_with_one_line_naming_the_fix(
    setup: Any, zoho: SandboxServer, mistake: str
) -> None:
    """GIVEN one misconfiguration: a malformed recipient, a wrong Twilio token, a wrong Zoho refresh token,
    a CRM_TIMEZONE that is not the org's, or a warehouse that cannot be reached
    WHEN the daily job runs
    THEN it stops with exit 2 before the extraction, and its last line names the setting and the fix."""
    ws, twilio = setup
    change, check, fix = MISTAKES[mistake]
    ws.env.update(change)
    target = "postgres" if "DATABASE_URL" in change else "duckdb"
    records_before = _record_requests(zoho)

    started = time.perf_counter()
    result = ws.run("bash", "scripts/daily.sh", target, check=False, timeout=300)
    seconds = time.perf_counter() - started

    assert result.returncode == 2, result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {check}") and fix in last, last
    assert "Extracting" not in result.stderr
    assert _record_requests(zoho) - records_before <= 2  # at most the doctor's own one-record reads
    assert twilio.messages == []
    assert seconds < 60


def test_a_wrong_refresh_token_makes_the_extraction_exit_2(setup: Any) -> None:
    """GIVEN a refresh token Zoho does not know
    WHEN the extraction runs on its own
    THEN it exits 2, the status documented for configuration errors, naming ZOHO_REFRESH_TOKEN."""
    ws, _ = setup
    ws.env["ZOHO_REFRESH_TOKEN"] = "1000.not-a-token"

    result = ws.run("python", "-m", "pipelines.zoho", "--destination", "duckdb", check=False)

    assert result.returncode == 2
    assert "ZOHO_REFRESH_TOKEN" in result.stderr.strip().splitlines()[-1]


def _record_requests(server: SandboxServer) -> int:
    """How many Leads/Deals record pages the sandbox has served."""
    stats = server.stats()
    return stats.get("GET /crm/v8/Leads", 0) + stats.get("GET /crm/v8/Deals", 0)
