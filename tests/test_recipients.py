"""Who gets what: the recipients file, RECIPIENT_PHONE_NUMBER, and the owners' Zoho users.

A user lists people in `recipients.yml` (managers get the team briefing, owners their own deals) and may
keep the numbers they had in RECIPIENT_PHONE_NUMBER. Every mistake is named with its line before anything
runs; an owner's `zoho_user` is looked up among the users the extraction loaded into a real DuckDB file or
PostgreSQL database; and the doctor, run as a user runs it, says the same.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import insights.recipients as recipients_mod
from insights.recipients import (
    Recipient,
    RecipientsError,
    UsersNotLoaded,
    load_recipients,
    resolve_owners,
    users_in_warehouse,
)
from insights.settings import TwilioSettings
from sandbox import SandboxOrg, SandboxServer
from tests.support.workspace import Workspace
from tests.twilio_emulator import TwilioEmulator
from warehouse import ConfigError, Target, connect

TEAM_AND_BEN = """\
# who gets the briefing
people:
  - name: Ana Silva
    whatsapp: "+1 415 555-0101"
    role: manager

  - name: Ben Okafor
    whatsapp: "+14155550102"
    role: owner
    zoho_user: ben@example.com
"""

# The org's users as the extraction loads them (zoho_raw.users keeps Zoho's status words).
USERS = [
    ("4876876000000225013", "Ben@Example.com", "Ben Okafor", "active"),
    ("4876876000000225014", "cy@example.com", "Cy Young", "active"),
    ("4876876000000225015", "dee@example.com", "Dee Left", "disabled"),
]


@pytest.fixture(autouse=True)
def no_default_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The project folder's own recipients.yml (a developer's) must not reach these tests."""
    monkeypatch.setattr(recipients_mod, "DEFAULT_FILE", tmp_path / "absent" / "recipients.yml")


def write(tmp_path: Path, text: str, name: str = "recipients.yml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def more_people(text: str) -> str:
    """Entries to add under TEAM_AND_BEN's `people:`."""
    return textwrap.indent(textwrap.dedent(text), "  ")


def problems_of(env: dict[str, str]) -> str:
    with pytest.raises(RecipientsError) as raised:
        load_recipients(env)
    return str(raised.value)


# --------------------------------------------------------------------------- the file and the variable


def test_a_manager_an_owner_and_the_numbers_of_the_variable_are_all_recipients(tmp_path: Path) -> None:
    """GIVEN a recipients file with a manager (number written with spaces and a dash) and an owner, and
    RECIPIENT_PHONE_NUMBER with two more numbers
    WHEN the recipients are loaded
    THEN there are four: the file's people first, each number as whatsapp:+E164, each with where it was
    listed; the variable's numbers are managers without a name."""
    env = {"RECIPIENTS_FILE": write(tmp_path, TEAM_AND_BEN), "RECIPIENT_PHONE_NUMBER": "+15550000001, 0015550000002"}

    loaded = load_recipients(env)

    assert [(r.name, r.whatsapp, r.role, r.zoho_user) for r in loaded] == [
        ("Ana Silva", "whatsapp:+14155550101", "manager", None),
        ("Ben Okafor", "whatsapp:+14155550102", "owner", "ben@example.com"),
        (None, "whatsapp:+15550000001", "manager", None),
        (None, "whatsapp:+15550000002", "manager", None),
    ]
    assert [r.source.rsplit("/", 1)[-1] for r in loaded] == [
        "recipients.yml:3",
        "recipients.yml:7",
        "RECIPIENT_PHONE_NUMBER",
        "RECIPIENT_PHONE_NUMBER",
    ]
    assert [(r.digest, r.owner_key) for r in loaded[:2]] == [("team", None), ("owner", "ben@example.com")]
    assert "+1415" not in repr(loaded[0])  # reprs reach logs; numbers stay out of them


MISTAKES = {
    "a number that is not E.164": (
        """\
        people:
          - name: Ana
            whatsapp: "+1415555010a"
            role: manager
        """,
        {},
        "recipients.yml:3: whatsapp is not a phone number in E.164",
    ),
    "a number starting with 0": (
        """\
        people:
          - whatsapp: "+04155550101"
            role: manager
        """,
        {},
        "recipients.yml:2: whatsapp is not a phone number in E.164",
    ),
    "the same number twice in the file": (
        """\
        people:
          - name: Ana
            whatsapp: "+14155550101"
            role: manager
          - name: Ana again
            whatsapp: "+1 (415) 555-0101"
            role: manager
        """,
        {},
        "recipients.yml:5: the same number as {file}:2",
    ),
    "a number in the file and in RECIPIENT_PHONE_NUMBER": (
        """\
        people:
          - name: Ana
            whatsapp: "+14155550101"
            role: manager
        """,
        {"RECIPIENT_PHONE_NUMBER": "+15550000009,+14155550101"},
        "RECIPIENT_PHONE_NUMBER (number 2 of 2): the same number as {file}:2",
    ),
    "an owner without zoho_user": (
        """\
        people:
          - name: Ben
            whatsapp: "+14155550102"
            role: owner
        """,
        {},
        "recipients.yml:2: an owner needs zoho_user",
    ),
    "an unknown role": (
        """\
        people:
          - name: Ben
            whatsapp: "+14155550102"
            role: boss
        """,
        {},
        "recipients.yml:4: role 'boss' is not manager",
    ),
    "a manager with zoho_user": (
        """\
        people:
          - name: Ana
            whatsapp: "+14155550101"
            role: manager
            zoho_user: ana@example.com
        """,
        {},
        "recipients.yml:5: zoho_user is only for owners",
    ),
    "an unknown key": (
        """\
        people:
          - name: Ana
            phone: "+14155550101"
            role: manager
        """,
        {},
        "recipients.yml:3: unknown key 'phone'",
    ),
    "no people list": (
        """\
        recipients:
          - name: Ana
        """,
        {},
        "recipients.yml:1: unknown key 'recipients' (expected people)",
    ),
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_each_mistake_in_the_file_is_named_with_its_line(tmp_path: Path, mistake: str) -> None:
    """GIVEN a recipients file with one mistake: a malformed number, a number listed twice (in the file, or
    in the file and RECIPIENT_PHONE_NUMBER), an owner without zoho_user, an unknown role, a manager with a
    zoho_user, an unknown key, or no `people:` list
    WHEN the recipients are loaded
    THEN a configuration error names the file and line (both lines for a number listed twice) and the fix."""
    text, extra, expected = MISTAKES[mistake]
    file = write(tmp_path, text)

    message = problems_of({"RECIPIENTS_FILE": file, **extra})

    assert expected.format(file=file) in message, message
    assert not any(n in message for n in ("5550101", "5550102", "555010a"))  # lines, not numbers: it reaches logs


def test_every_mistake_is_told_at_once_in_the_order_of_the_lines(tmp_path: Path) -> None:
    """GIVEN a file with four mistakes on different people
    WHEN the recipients are loaded
    THEN one error lists all four, line by line, so one edit fixes them all."""
    file = write(
        tmp_path,
        """\
        people:
          - name: Ana
            whatsapp: "+1415555010a"
            role: manager
          - name: Ben
            whatsapp: "+14155550102"
            role: owner
          - name: Cy
            role: boss
            whatsapp: "+14155550102"
        """,
    )

    with pytest.raises(RecipientsError) as raised:
        load_recipients({"RECIPIENTS_FILE": file})

    assert isinstance(raised.value, ConfigError)
    assert [p.removeprefix(file) for p in raised.value.problems] == [
        ":3: whatsapp is not a phone number in E.164 (+ country code and number, e.g. +14155550123)",
        ":5: an owner needs zoho_user (the Zoho user id or email whose deals are theirs)",
        f":8: the same number as {file}:5; list each number once",
        ":9: role 'boss' is not manager (the team briefing) or owner (their own deals)",
    ]


def test_a_missing_file_is_an_error_only_when_recipients_file_names_it(tmp_path: Path) -> None:
    """GIVEN no recipients.yml in the project folder, and then RECIPIENTS_FILE naming a file that is not there
    WHEN the recipients are loaded
    THEN the first is fine (RECIPIENT_PHONE_NUMBER's numbers are the recipients); the second is an error
    naming RECIPIENTS_FILE and the path."""
    assert [r.whatsapp for r in load_recipients({"RECIPIENT_PHONE_NUMBER": "+15550000001"})] == [
        "whatsapp:+15550000001"
    ]

    message = problems_of({"RECIPIENTS_FILE": str(tmp_path / "people.yml"), "RECIPIENT_PHONE_NUMBER": "+15550000001"})

    assert message.startswith("RECIPIENTS_FILE: no file at ") and "people.yml" in message


def test_the_twilio_settings_carry_the_recipients_and_say_when_there_are_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN the Twilio variables and a recipients file, then neither a file nor RECIPIENT_PHONE_NUMBER
    WHEN the sending settings are read
    THEN they carry the file's recipients; without any, the error says how to name some."""
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC" + "0" * 32)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "secret-token")
    monkeypatch.setenv("TWILIO_FROM_NUMBER", "+14155238886")
    monkeypatch.delenv("RECIPIENT_PHONE_NUMBER", raising=False)
    monkeypatch.delenv("PUBLIC_BASE_URL", raising=False)
    monkeypatch.setenv("RECIPIENTS_FILE", write(tmp_path, TEAM_AND_BEN))

    settings = TwilioSettings.from_env()

    assert [r.role for r in settings.recipients] == ["manager", "owner"]
    assert all(isinstance(r, Recipient) for r in settings.recipients)
    assert settings.public_base_url is None and "secret-token" not in repr(settings)

    monkeypatch.delenv("RECIPIENTS_FILE")
    with pytest.raises(
        ConfigError,
        match="^no recipients: set RECIPIENTS_FILE \\(or write recipients.yml\\) or RECIPIENT_PHONE_NUMBER$",
    ):
        TwilioSettings.from_env()


@pytest.mark.parametrize(
    "url, expected",
    [
        ("https://crm.example.com/", "https://crm.example.com"),
        ("http://10.0.0.5:8000/briefings/", "http://10.0.0.5:8000/briefings"),
        ("ftp://crm.example.com", None),
        ("https:///no-host", None),
        ("https://crm.example.com/?token=1", None),
        ("crm.example.com", None),
    ],
)
def test_public_base_url_is_checked_and_kept_without_its_trailing_slash(
    url: str, expected: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN PUBLIC_BASE_URL set to a URL, right or wrong
    WHEN the sending settings are read
    THEN an http(s) URL with a host and no query is kept without its trailing slash; anything else is an
    error naming PUBLIC_BASE_URL."""
    for name, value in {
        "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
        "TWILIO_AUTH_TOKEN": "t",
        "TWILIO_FROM_NUMBER": "+14155238886",
        "RECIPIENT_PHONE_NUMBER": "+15550000001",
        "PUBLIC_BASE_URL": url,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("RECIPIENTS_FILE", raising=False)

    if expected is None:
        with pytest.raises(ConfigError, match="^PUBLIC_BASE_URL must be an http\\(s\\) URL"):
            TwilioSettings.from_env()
    else:
        assert TwilioSettings.from_env().public_base_url == expected


# --------------------------------------------------------------------------- owners and the org's users


@pytest.fixture
def target(empty_warehouse: Target) -> Target:
    """An empty warehouse of each kind (tests/conftest.py)."""
    return empty_warehouse


def load_users(target: Target, users: list[tuple[str, str, str, str]]) -> None:
    """zoho_raw.users as the extraction leaves it (dlt's text columns, among others the briefing ignores)."""
    with connect(target) as conn:
        cur = conn.cursor()
        cur.execute("create schema if not exists zoho_raw")
        cur.execute(
            "create table zoho_raw.users (id text, email text, full_name text, status text, "
            "time_zone text, _dlt_id text)"
        )
        marker = "?" if target == "duckdb" else "%s"
        for row in users:
            cur.execute(
                f"insert into zoho_raw.users (id, email, full_name, status) values ({', '.join([marker] * 4)})", row
            )
        conn.commit()


def test_owners_are_found_by_user_id_or_by_email_whatever_its_case(tmp_path: Path, target: Target) -> None:
    """GIVEN the org's users loaded into the warehouse, and a file with a manager and four owners: one by
    email written in another case, one by user id, one unknown to the org, one whose user is disabled
    WHEN the owners are resolved against the warehouse's users
    THEN the first two map to their user ids; the unknown one is a problem naming its line and zoho_user;
    the disabled one still maps (their deals are theirs) with a warning naming its line."""
    load_users(target, USERS)
    file = write(
        tmp_path,
        TEAM_AND_BEN
        + more_people("""\
          - name: Cy Young
            whatsapp: "+14155550103"
            role: owner
            zoho_user: "4876876000000225014"
          - name: Nobody
            whatsapp: "+14155550104"
            role: owner
            zoho_user: nobody@example.com
          - name: Dee Left
            whatsapp: "+14155550105"
            role: owner
            zoho_user: DEE@example.com
        """),
    )
    recipients = load_recipients({"RECIPIENTS_FILE": file})

    with connect(target) as conn:
        users = users_in_warehouse(conn)
    owners, problems = resolve_owners(recipients, users)

    assert sorted(u.user_id for u in users) == sorted(u[0] for u in USERS)
    assert owners == {
        "whatsapp:+14155550102": "4876876000000225013",
        "whatsapp:+14155550103": "4876876000000225014",
        "whatsapp:+14155550105": "4876876000000225015",
    }
    assert [p.removeprefix(file) for p in problems] == [
        ":15: zoho_user nobody@example.com is not a user of the Zoho org",
        ":19: zoho_user DEE@example.com (Dee Left) is not active in Zoho; their briefing covers the deals they "
        "still own",
    ]
    assert [p.warning for p in problems] == [False, True]


def test_a_warehouse_without_users_says_so(target: Target) -> None:
    """GIVEN a warehouse the CRM was never loaded into
    WHEN its users are read
    THEN that is told apart from an org without users: the users are not loaded yet."""
    with connect(target) as conn:
        with pytest.raises(UsersNotLoaded):
            users_in_warehouse(conn)


# --------------------------------------------------------------------------- the doctor, as a user runs it


@pytest.fixture(scope="module")
def zoho() -> Iterator[SandboxServer]:
    with SandboxServer(SandboxOrg(seed=3, leads=20, deals=10, timezone="Asia/Kolkata"), port=0) as server:
        yield server


@pytest.fixture
def setup(workspace: Workspace, zoho: SandboxServer) -> Iterator[Workspace]:
    """A correct setup (the sandbox org, Twilio, a DuckDB file, no Ollama) but for the recipients."""
    with TwilioEmulator() as twilio:
        workspace.env.update(zoho.env())
        workspace.env.update({k: v for k, v in twilio.env().items() if k != "RECIPIENT_PHONE_NUMBER"})
        workspace.env["OLLAMA_BASE_URL"] = "http://127.0.0.1:9"
        yield workspace


def doctor(ws: Workspace) -> Any:
    return ws.run("python", "-m", "insights.doctor", "--target", "duckdb", check=False, timeout=120)


def lines_of(stdout: str) -> dict[str, str]:
    """The doctor's table by check name (a name is the words before the result)."""
    return {
        line[6:].split("  ")[0].strip(): line
        for line in stdout.splitlines()
        if line[:4].strip() in ("ok", "warn", "FAIL")
    }


def test_the_doctor_names_the_line_of_a_bad_number_and_stops_the_day(setup: Workspace) -> None:
    """GIVEN a recipients file whose second person's number has a letter in it
    WHEN the doctor runs, as `make daily` runs it first
    THEN the recipients line fails naming recipients.yml and the line, the rest of Twilio is still checked,
    and the doctor exits 2 with that line as its last word."""
    ws = setup
    ws.env["RECIPIENTS_FILE"] = write(
        ws.root,
        """\
        people:
          - name: Ana Silva
            whatsapp: "+14155550101"
            role: manager
          - name: Ben Okafor
            whatsapp: "+1415555O102"
            role: owner
            zoho_user: ben@example.com
        """,
    )

    result = doctor(ws)

    assert result.returncode == 2, result.stdout + result.stderr
    line = lines_of(result.stdout)["recipients"]
    assert line.startswith("FAIL") and "recipients.yml:6: whatsapp is not a phone number in E.164" in line, line
    assert lines_of(result.stdout)["Twilio credentials"].startswith("ok")
    assert result.stderr.strip().splitlines()[-1].startswith("error: recipients: ")
    assert "recipients.yml:6" in result.stderr


def test_the_doctor_checks_owners_against_the_loaded_users_once_there_are_some(setup: Workspace) -> None:
    """GIVEN a correct recipients file with a manager and two owners, one of them not a user of the org
    WHEN the doctor runs before the first extraction, and again once the users are in the warehouse
    THEN the recipients line counts them; the first run only warns that the owners are not checked until the
    CRM is loaded (exit 0); the second fails naming the unknown owner's line (exit 2)."""
    ws = setup
    ws.env["RECIPIENTS_FILE"] = write(
        ws.root,
        TEAM_AND_BEN
        + more_people("""\
          - name: Nobody
            whatsapp: "+14155550104"
            role: owner
            zoho_user: nobody@example.com
        """),
    )

    before = doctor(ws)

    assert before.returncode == 0, before.stdout + before.stderr
    lines = lines_of(before.stdout)
    assert (
        lines["recipients"].split(None, 2)[2].strip()
        == "3 recipients: 1 manager, 2 owners (" + ws.env["RECIPIENTS_FILE"] + ")"
    )
    assert (
        lines["owners' Zoho users"].startswith("warn")
        and "not checked: load the CRM first" in lines["owners' Zoho users"]
    )
    assert not ws.duckdb_path.exists()  # checking leaves no empty warehouse behind

    import duckdb

    with duckdb.connect(str(ws.duckdb_path)) as conn:
        conn.execute("create schema zoho_raw")
        conn.execute("create table zoho_raw.users (id text, email text, full_name text, status text)")
        conn.executemany("insert into zoho_raw.users values (?, ?, ?, ?)", USERS)

    after = doctor(ws)

    assert after.returncode == 2, after.stdout + after.stderr
    owners = lines_of(after.stdout)["owners' Zoho users"]
    assert (
        owners.startswith("FAIL")
        and "recipients.yml:11: zoho_user nobody@example.com is not a user of the Zoho org" in owners
    )
    assert "ben@example.com" not in owners  # Ben is a user (by email, whatever its case)
