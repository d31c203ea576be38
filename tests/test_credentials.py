"""Zoho configured any of the ways the README offers works for `make check` and for the extraction alike,
and a daily run asks Zoho for one access token, not one per step.

Every test runs the real commands (`python -m insights.doctor`, which `make check` runs, and
`python -m pipelines.zoho`) against the sandbox org over HTTP. Each workspace points dlt at a project
folder of its own (DLT_PROJECT_DIR), so the repository's own `.dlt/` is neither read nor touched.
"""

from __future__ import annotations

import json
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from sandbox import SandboxOrg, SandboxServer
from tests.support.crm import refresh_grant
from tests.support.workspace import Workspace

TOKEN_REQUESTS = "POST /oauth/v2/token"
ZOHO_CHECKS = ("Zoho token refresh", "Zoho scopes")


def small_org() -> SandboxOrg:
    return SandboxOrg(seed=3, leads=50, deals=20, timezone="Asia/Kolkata", currencies=["USD"])


@pytest.fixture(scope="module")
def zoho() -> Iterator[SandboxServer]:
    with SandboxServer(small_org(), port=0) as server:
        yield server


@pytest.fixture
def project(workspace: Workspace) -> Path:
    """The user's project folder as dlt sees it: `.dlt/` with no settings yet, and no Zoho variable set."""
    folder = workspace.root / "project"
    (folder / ".dlt").mkdir(parents=True)
    workspace.env.update(DLT_PROJECT_DIR=str(folder), CRM_TIMEZONE="Asia/Kolkata", OLLAMA_BASE_URL="http://127.0.0.1:9")
    return folder


def dlt_names(server: SandboxServer) -> dict[str, str]:
    """The sandbox's credentials and accounts server under dlt's names (SOURCES__ZOHO__CLIENT_ID, ...)."""
    return {
        f"SOURCES__ZOHO__{name.removeprefix('ZOHO_')}": value
        for name, value in server.env().items()
        if name.startswith("ZOHO_")
    }


def plain_names(server: SandboxServer) -> dict[str, str]:
    return {name: value for name, value in server.env().items() if name.startswith("ZOHO_")}


def check(ws: Workspace) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    """`make check` without Twilio: its output, and the level (ok, warn, FAIL) of each Zoho line."""
    result = ws.run("python", "-m", "insights.doctor", "--no-send", check=False, timeout=120)
    levels = {
        name: line.split()[0]
        for line in result.stdout.splitlines()
        for name in ZOHO_CHECKS
        if line[6:].startswith(name)
    }
    return result, levels


def extract(ws: Workspace, *args: str) -> subprocess.CompletedProcess:
    return ws.run("python", "-m", "pipelines.zoho", "--destination", "duckdb", *args, check=False)


def loaded_whole_org(result: subprocess.CompletedProcess, org: SandboxOrg) -> bool:
    counts = f"loaded leads={len(org.records('Leads'))} deals={len(org.records('Deals'))} "
    return result.returncode == 0 and result.stdout.startswith(counts)


def cached_tokens(ws: Workspace) -> list[Path]:
    return sorted((ws.root / "dlt" / "zoho_access_tokens").glob("*.json"))


# --------------------------------------------------------------------------- where the settings come from


def test_dlts_environment_names_alone_pass_the_check_and_extract(
    workspace: Workspace, project: Path, zoho: SandboxServer
) -> None:
    """GIVEN Zoho configured only with dlt's names (SOURCES__ZOHO__CLIENT_ID, SOURCES__ZOHO__CLIENT_SECRET,
    SOURCES__ZOHO__REFRESH_TOKEN, SOURCES__ZOHO__ACCOUNTS_URL), as the README's step 2 offers, and no ZOHO_*
    WHEN `make check` runs, then the extraction
    THEN the Zoho token refresh and scopes pass against the org, and the extraction loads the whole org."""
    workspace.env.update(dlt_names(zoho))

    result, levels = check(workspace)

    assert levels == {"Zoho token refresh": "ok", "Zoho scopes": "ok"}, result.stdout
    assert result.returncode == 0, result.stdout + result.stderr
    assert loaded_whole_org(extract(workspace), zoho.org)


def test_a_dlt_secrets_file_alone_passes_the_check_and_extracts(
    workspace: Workspace, project: Path, zoho: SandboxServer
) -> None:
    """GIVEN Zoho configured only in the project's .dlt/secrets.toml under [sources.zoho] (no variable at all)
    WHEN `make check` runs, then the extraction
    THEN the Zoho token refresh and scopes pass against the org, and the extraction loads the whole org."""
    values = {name.removeprefix("ZOHO_").lower(): value for name, value in plain_names(zoho).items()}
    (project / ".dlt" / "secrets.toml").write_text(
        "[sources.zoho]\n" + "".join(f'{name} = "{value}"\n' for name, value in values.items())
    )

    result, levels = check(workspace)

    assert levels == {"Zoho token refresh": "ok", "Zoho scopes": "ok"}, result.stdout
    assert result.returncode == 0, result.stdout + result.stderr
    assert loaded_whole_org(extract(workspace), zoho.org)


def test_dlts_variable_wins_over_the_plain_one_which_wins_over_the_file(
    workspace: Workspace, project: Path, zoho: SandboxServer
) -> None:
    """GIVEN a refresh token Zoho does not know in .dlt/secrets.toml and the right one in ZOHO_REFRESH_TOKEN;
    then a wrong ZOHO_REFRESH_TOKEN and the right one in SOURCES__ZOHO__REFRESH_TOKEN
    WHEN `make check` runs in each case
    THEN it passes both times: the variables win over the file, and dlt's name over the plain one."""
    (project / ".dlt" / "secrets.toml").write_text('[sources.zoho]\nrefresh_token = "1000.not-a-token"\n')
    workspace.env.update(plain_names(zoho))

    env_over_file, levels = check(workspace)
    assert levels["Zoho token refresh"] == "ok", env_over_file.stdout

    workspace.env.update(
        ZOHO_REFRESH_TOKEN="1000.not-a-token", SOURCES__ZOHO__REFRESH_TOKEN=plain_names(zoho)["ZOHO_REFRESH_TOKEN"]
    )
    dlt_over_plain, levels = check(workspace)
    assert levels["Zoho token refresh"] == "ok", dlt_over_plain.stdout


# --------------------------------------------------------------------------- one access token per day


def test_the_check_and_the_extraction_share_one_access_token(
    workspace: Workspace, project: Path, zoho: SandboxServer
) -> None:
    """GIVEN a correct setup and no access token yet
    WHEN `make check` runs and then the extraction, as `make daily` runs them
    THEN Zoho was asked for one access token in all; it is kept in a file only the user can read and appears
    in nothing either command prints. Once Zoho revokes it, the next extraction asks for one new token,
    completes, and keeps the new one."""
    workspace.env.update(plain_names(zoho))
    zoho.reset_stats()

    checked, levels = check(workspace)
    extracted = extract(workspace, "-v")

    assert levels == {"Zoho token refresh": "ok", "Zoho scopes": "ok"}, checked.stdout
    assert loaded_whole_org(extracted, zoho.org), extracted.stderr
    assert zoho.stats().get(TOKEN_REQUESTS) == 1
    [cache] = cached_tokens(workspace)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600 and stat.S_IMODE(cache.parent.stat().st_mode) == 0o700
    token = json.loads(cache.read_text())["access_token"]
    printed = checked.stdout + checked.stderr + extracted.stdout + extracted.stderr
    assert token not in printed and plain_names(zoho)["ZOHO_REFRESH_TOKEN"] not in printed

    zoho.expire_tokens()
    zoho.reset_stats()
    again = extract(workspace)

    assert again.returncode == 0, again.stderr
    assert zoho.stats().get(TOKEN_REQUESTS) == 1
    assert json.loads(cache.read_text())["access_token"] != token


def test_a_token_kept_for_one_refresh_token_is_not_used_with_another(
    workspace: Workspace, project: Path, zoho: SandboxServer
) -> None:
    """GIVEN a check that passed and left its access token behind
    WHEN ZOHO_REFRESH_TOKEN is changed to one Zoho does not know, and `make check` runs again
    THEN the check fails on the token refresh and names ZOHO_REFRESH_TOKEN: the token kept for the other
    refresh token does not hide the mistake."""
    workspace.env.update(plain_names(zoho))
    first, levels = check(workspace)
    assert levels["Zoho token refresh"] == "ok", first.stdout

    workspace.env["ZOHO_REFRESH_TOKEN"] = "1000.not-a-token"
    result, levels = check(workspace)

    assert result.returncode == 2
    assert levels["Zoho token refresh"] == "FAIL" and "ZOHO_REFRESH_TOKEN" in result.stderr, result.stdout


# --------------------------------------------------------------------------- Zoho's limit on new tokens


@pytest.fixture
def limited_zoho() -> Iterator[SandboxServer]:
    """A sandbox org enforcing Zoho's limit of 10 new access tokens per refresh token per 10 minutes."""
    with SandboxServer(small_org(), port=0, mint_limit=10) as server:
        yield server


def test_zohos_limit_on_new_tokens_says_to_wait_not_to_make_a_new_refresh_token(
    workspace: Workspace, project: Path, limited_zoho: SandboxServer
) -> None:
    """GIVEN a refresh token that got 10 access tokens in the last minutes (another tool, earlier attempts),
    so Zoho answers the next request with "Access Denied"
    WHEN `make check` runs, and the extraction on its own
    THEN the check fails on the token refresh with the fix to wait 10 minutes and run again, not to generate
    a new refresh token; the extraction stops with the "try later" status (75) and the same advice."""
    credentials = plain_names(limited_zoho)
    workspace.env.update(credentials)
    grant = refresh_grant(credentials)
    for _ in range(10):
        assert "access_token" in requests.post(f"{limited_zoho.url}/oauth/v2/token", data=grant, timeout=10).json()

    result, levels = check(workspace)
    extracted = extract(workspace)

    assert result.returncode == 2 and levels["Zoho token refresh"] == "FAIL", result.stdout
    [advice] = [line for line in result.stderr.splitlines() if line.startswith("error: Zoho token refresh")]
    assert "Access Denied" in advice and "wait 10 minutes" in advice, advice
    assert "do not generate a new ZOHO_REFRESH_TOKEN" in advice, advice
    assert extracted.returncode == 75, extracted.stderr
    last = extracted.stderr.strip().splitlines()[-1]
    assert "wait 10 minutes" in last and "do not generate a new one" in last, last
