"""The briefing reaches each person on WhatsApp: the template outside the 24-hour window, the full text inside it,
replies answered once, and Twilio's statuses in the ledger.

The emulator keeps WhatsApp's window by default (free-form text to someone who
has not written in 24 hours fails with 63016), serves the Content API, and
signs its callbacks as Twilio does; the real `twilio` client talks to it, and
the API runs as a user starts it (`python -m insights.api`).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from twilio.request_validator import RequestValidator

from insights import store
from insights.ledger import TEAM, DeliveryLedger
from insights.recipients import Recipient
from insights.replies import JOURNAL_SUFFIX, apply_journal
from insights.settings import TwilioSettings
from insights.whatsapp import (
    TEMPLATE_BODY,
    Outgoing,
    create_template,
    fill_template,
    send_briefing,
    send_digests,
    twilio_client,
)
from tests.support.api import free_port, serve
from tests.twilio_emulator import TwilioEmulator
from warehouse import Target, connect, duckdb_path

REPORT_DATE = dt.date(2026, 11, 20)
ANA, BEN = "+15550000001", "+15550000002"
BRIEFING = (
    "*Sales briefing \u00b7 Fri 20 Nov 2026*\n\n*Open pipeline is 1.24M across 42 deals.*\n\n"
    "*Needs attention*\n\u2022 3 open deals worth 85K are past the closing date."
)
VARIABLES = {
    "1": "the sales briefing for Fri 20 Nov 2026",
    "2": "Open pipeline is 1.24M across 42 deals.",
    "3": "3 open deals worth 85K are past the closing date.",
}


@pytest.fixture
def target(empty_warehouse: Target) -> Target:
    """An empty warehouse of each kind (tests/conftest.py)."""
    return empty_warehouse


def manager(number: str) -> Recipient:
    return Recipient(None, f"whatsapp:{number}", "manager", None, "test")


def settings(
    twilio: TwilioEmulator, *recipients: str, template_sid: str | None = None, public_base_url: str | None = None
) -> TwilioSettings:
    return TwilioSettings(
        account_sid=twilio.account_sid,
        auth_token=twilio.auth_token,
        from_number="+14155238886",
        recipients=tuple(manager(n) for n in recipients),
        api_base=twilio.url,
        template_sid=template_sid,
        public_base_url=public_base_url,
    )


def approved_template(twilio: TwilioEmulator) -> str:
    """The briefing's template, created and submitted as `python -m insights.whatsapp create-template` does,
    then approved by WhatsApp's review."""
    sid, status = create_template(twilio_client(settings(twilio)))
    assert status in ("received", "pending")
    twilio.approve(sid)
    return sid


def ledger_rows(target: Target) -> dict[str, dict[str, Any]]:
    with connect(target) as conn:
        cur = conn.cursor()
        cur.execute(
            "select recipient, status, kind, twilio_status, error_code, part_sids from analytics.briefing_deliveries"
        )
        names = ("recipient", "status", "kind", "twilio_status", "error_code", "part_sids")
        return {row[0]: dict(zip(names, row)) for row in cur.fetchall()}


def test_the_template_goes_outside_the_window_and_the_full_briefing_inside(
    target: Target, twilio: TwilioEmulator
) -> None:
    """GIVEN a manager who never wrote to the sender and one who wrote an hour ago, and an approved template
    WHEN the day is delivered
    THEN the first gets the template with the day's headline and what needs attention, the second the full
    briefing, and no message fails at WhatsApp."""
    sid = approved_template(twilio)
    twilio.inbound(BEN, "thanks for yesterday's", at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    config = settings(twilio, ANA, BEN, template_sid=sid)
    outgoing = [Outgoing(f"whatsapp:{n}", BRIEFING, TEAM, VARIABLES) for n in (ANA, BEN)]

    ana, ben = send_digests(outgoing, REPORT_DATE, target, config)

    assert (ana.status, ana.kind, ben.status, ben.kind) == ("sent", "template", "sent", "session")
    messages = twilio.settled()
    assert [m["status"] for m in messages] == ["delivered", "delivered"], messages
    [to_ana] = twilio.messages_to(ANA)
    assert to_ana["body"] == fill_template(TEMPLATE_BODY, VARIABLES)
    assert to_ana["body"].endswith("Reply to get the full briefing.")
    [to_ben] = twilio.messages_to(BEN)
    assert to_ben["body"] == BRIEFING
    rows = ledger_rows(target)
    assert (rows[f"whatsapp:{ANA}"]["kind"], rows[f"whatsapp:{BEN}"]["kind"]) == ("template", "session")


def test_without_a_template_nobody_outside_the_window_is_sent_text_that_would_fail(
    target: Target, twilio: TwilioEmulator
) -> None:
    """GIVEN no template configured and a manager who wrote 25 hours ago (the window has closed)
    WHEN the day is delivered
    THEN nothing is sent to them (WhatsApp would fail it with 63016), the run says why and how to fix it,
    and the next run tries again."""
    twilio.inbound(ANA, "hello", at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=25))

    [ana] = send_digests(
        [Outgoing(f"whatsapp:{ANA}", BRIEFING, TEAM, VARIABLES)], REPORT_DATE, target, settings(twilio, ANA)
    )

    assert ana.status == "failed" and "create-template" in (ana.explanation or "")
    assert twilio.messages_to(ANA) == []
    assert ledger_rows(target)[f"whatsapp:{ANA}"]["status"] == "failed"


def test_a_long_briefing_goes_as_numbered_parts_split_at_line_breaks(target: Target, twilio: TwilioEmulator) -> None:
    """GIVEN a briefing of about 2,500 characters and a manager inside the window
    WHEN it is delivered
    THEN it goes as two messages numbered (1/2) and (2/2), each at most 1,600 characters, split at line breaks,
    nothing cut; a second run sends nothing more."""
    lines = [f"\u2022 Deal number {i} of the day is worth {i * 1000:,} and closes on Friday." for i in range(40)]
    long_briefing = "*Sales briefing \u00b7 Fri 20 Nov 2026*\n\n" + "\n".join(lines)
    assert 2300 < len(long_briefing) < 2800
    twilio.inbound(ANA, "morning")
    config = settings(twilio, ANA)

    [ana] = send_briefing(long_briefing, REPORT_DATE, target, config)
    [again] = send_briefing(long_briefing, REPORT_DATE, target, config)

    assert ana.status == "sent" and len(ana.parts) == 2 and again.status == "already_sent"
    first, second = twilio.messages_to(ANA)
    assert first["body"].startswith("(1/2) ") and second["body"].startswith("(2/2) ")
    assert all(len(m["body"]) <= 1600 for m in (first, second))
    sent_lines = [line for m in (first, second) for line in m["body"].split(" ", 1)[1].split("\n")]
    assert [line for line in sent_lines if line] == [line for line in long_briefing.split("\n") if line]
    assert ledger_rows(target)[f"whatsapp:{ANA}"]["part_sids"] == f"{first['sid']} {second['sid']}"


# --------------------------------------------------------------------------- Twilio calls the API


@pytest.fixture
def api(target: Target, twilio: TwilioEmulator, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """`python -m insights.api` on a known port, PUBLIC_BASE_URL its address, Twilio's webhook pointing at it."""
    import os

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "RECIPIENT", "PUBLIC_BASE"))}
    env.update(
        twilio.env(ANA, BEN), PUBLIC_BASE_URL=f"http://127.0.0.1:{port}", RECIPIENTS_FILE=str(tmp_path / "none.yml")
    )
    (tmp_path / "none.yml").write_text("people: []\n")
    with serve(env, target, port=port) as running:
        twilio.set_inbound_webhook(f"{running.url}/twilio/inbound")
        yield running


def test_a_reply_gets_the_full_briefing_once(target: Target, twilio: TwilioEmulator, api: Any) -> None:
    """GIVEN a manager who got the morning's template (they had not written in 24 hours)
    WHEN they reply, and reply again
    THEN the API sends them the full briefing in the session, once: the second reply sends nothing new,
    and the ledger says the briefing went as full text."""
    sid = approved_template(twilio)
    config = settings(twilio, ANA, template_sid=sid, public_base_url=api.url)
    summary = store.Summary(REPORT_DATE, target, None, None, None, None, None, 0.1, {}, None, BRIEFING, True, "test")
    store.save(target, summary)
    [ana] = send_digests(
        [Outgoing(f"whatsapp:{ANA}", BRIEFING, TEAM, VARIABLES, summary.summary_id)], REPORT_DATE, target, config
    )
    assert ana.kind == "template"

    answered = twilio.inbound(ANA, "send it please")
    deadline = time.monotonic() + 15
    while len(twilio.messages_to(ANA)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    twilio.inbound(ANA, "thanks")
    time.sleep(1.5)

    assert answered["direction"] == "inbound"
    template, full = twilio.messages_to(ANA)
    assert template["body"].endswith("Reply to get the full briefing.") and full["body"] == BRIEFING
    assert [m["status"] for m in twilio.settled()] == ["delivered", "delivered"]
    apply_journal(target)  # DuckDB: what the API journaled reaches the ledger with the next delivery
    row = ledger_rows(target)[f"whatsapp:{ANA}"]
    assert (row["status"], row["kind"], row["part_sids"]) == ("accepted", "session", full["sid"])


def test_status_callbacks_reach_the_ledger_and_a_forged_one_changes_nothing(
    target: Target, twilio: TwilioEmulator, api: Any
) -> None:
    """GIVEN a briefing sent with PUBLIC_BASE_URL set, so Twilio calls back with each status
    WHEN Twilio reports it sent, delivered and then read, and someone posts a forged `failed`
    THEN the ledger shows read, and the forged request gets 403 and changes nothing."""
    twilio.inbound(ANA, "hi")
    [ana] = send_briefing(BRIEFING, REPORT_DATE, target, settings(twilio, ANA, public_base_url=api.url))
    twilio.wait_callbacks(3)  # the inbound webhook, sent, delivered
    twilio.set_status(ana.message_sid, "read")
    callbacks = twilio.wait_callbacks(4)
    forged = httpx.post(
        f"{api.url}/twilio/status",
        data={"MessageSid": ana.message_sid, "MessageStatus": "failed", "ErrorCode": "30008"},
        headers={"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"},
    )

    status_calls = [c for c in callbacks if c["url"].endswith("/twilio/status")]
    assert [c["params"]["MessageStatus"] for c in status_calls] == ["sent", "delivered", "read"]
    assert all(c["status"] == 204 for c in status_calls), status_calls
    assert forged.status_code == 403
    apply_journal(target)
    row = ledger_rows(target)[f"whatsapp:{ANA}"]
    assert (row["status"], row["twilio_status"], row["error_code"]) == ("accepted", "read", None)


def test_behind_a_proxy_the_signature_is_checked_against_public_base_url(
    target: Target, twilio: TwilioEmulator, tmp_path: Any
) -> None:
    """GIVEN the API behind a proxy: Twilio calls https://crm.example.com, the server sees 127.0.0.1
    WHEN a status callback signed for the public URL arrives
    THEN it is accepted and recorded; one signed for the address the server sees is refused."""
    import os

    twilio.inbound(ANA, "hi")
    [ana] = send_briefing(BRIEFING, REPORT_DATE, target, settings(twilio, ANA))
    public = "https://crm.example.com"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "RECIPIENT", "PUBLIC_BASE"))}
    env.update(twilio.env(ANA), PUBLIC_BASE_URL=public, RECIPIENTS_FILE=str(tmp_path / "none.yml"))
    (tmp_path / "none.yml").write_text("people: []\n")
    params = {"MessageSid": ana.message_sid, "MessageStatus": "delivered", "AccountSid": twilio.account_sid}
    validator = RequestValidator(twilio.auth_token)

    with serve(env, target) as running:
        local = httpx.post(
            f"{running.url}/twilio/status",
            data=params,
            headers={"X-Twilio-Signature": validator.compute_signature(f"{running.url}/twilio/status", params)},
        )
        proxied = httpx.post(
            f"{running.url}/twilio/status",
            data=params,
            headers={
                "X-Twilio-Signature": validator.compute_signature(f"{public}/twilio/status", params),
                "X-Forwarded-Host": "crm.example.com",
                "X-Forwarded-Proto": "https",
            },
        )

    assert (local.status_code, proxied.status_code) == (403, 204)
    apply_journal(target)
    assert ledger_rows(target)[f"whatsapp:{ANA}"]["twilio_status"] == "delivered"


def test_a_day_that_never_went_out_is_named_and_not_resent(target: Target, twilio: TwilioEmulator) -> None:
    """GIVEN briefings delivered on the 18th and the 20th, and a run on the 19th that crashed before delivery
    THEN the ledger names the 19th as missed for that person, and delivering the 21st does not send the 19th."""
    twilio.inbound(ANA, "hi")
    config = settings(twilio, ANA)
    send_briefing(BRIEFING, REPORT_DATE - dt.timedelta(days=2), target, config)
    send_briefing(BRIEFING, REPORT_DATE, target, config)

    missed = DeliveryLedger(target).missed_days(REPORT_DATE)
    send_briefing(BRIEFING, REPORT_DATE + dt.timedelta(days=1), target, config)

    assert [(m.report_date, m.recipient, m.status) for m in missed] == [
        (REPORT_DATE - dt.timedelta(days=1), f"whatsapp:{ANA}", None)
    ]
    assert len(twilio.messages_to(ANA)) == 3
    assert not (target == "duckdb" and duckdb_path().with_name(duckdb_path().name + JOURNAL_SUFFIX).exists())


def test_a_window_that_closes_during_the_run_gets_the_template_in_the_same_run(
    target: Target, twilio: TwilioEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN a manager who is also an owner, whose window closes seconds after the run looked at it (they wrote
    23 hours, 59 minutes and 57 seconds ago), and Twilio slow to answer the first message
    WHEN both digests are delivered
    THEN the first goes as full text while the window is open; the second meets 63016 and is followed, in the
    same run, by the template, which WhatsApp delivers: the person misses nothing."""
    import insights.whatsapp

    monkeypatch.setattr(insights.whatsapp, "WINDOW_MARGIN_SECONDS", 0)  # look as late as the window allows
    sid = approved_template(twilio)
    twilio.inbound(ANA, "hi", at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=24) + dt.timedelta(seconds=3))
    twilio.delay_next(4.0)  # the first message is created at once, and answered after the window closed
    outgoing = [
        Outgoing(f"whatsapp:{ANA}", BRIEFING, TEAM, VARIABLES),
        Outgoing(f"whatsapp:{ANA}", BRIEFING.replace("Sales briefing", "Your deals"), "owner:42", VARIABLES),
    ]

    team, own = send_digests(outgoing, REPORT_DATE, target, settings(twilio, ANA, template_sid=sid))

    assert (team.status, team.kind) == ("sent", "session")
    assert (own.status, own.kind) == ("sent", "template") and "63016" in (own.explanation or "")
    first, failed, template = twilio.settled()
    assert (first["status"], failed["status"], failed["error_code"], template["status"]) == (
        "delivered",
        "failed",
        63016,
        "delivered",
    )
    assert template["body"] == fill_template(TEMPLATE_BODY, VARIABLES)


def test_health_names_a_day_whose_briefing_never_went_out(
    target: Target, twilio: TwilioEmulator, tmp_path: Any
) -> None:
    """GIVEN briefings delivered three days ago and yesterday, and nothing for the day in between (a crashed run)
    WHEN /api/health is asked, without a token
    THEN it names that day as missed, and no recipient's number."""
    import os

    from insights.facts import org_timezone

    twilio.inbound(ANA, "hi")
    yesterday = dt.datetime.now(org_timezone()).date() - dt.timedelta(days=1)
    config = settings(twilio, ANA)
    send_briefing(BRIEFING, yesterday - dt.timedelta(days=2), target, config)
    send_briefing(BRIEFING, yesterday, target, config)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "RECIPIENT", "PUBLIC_BASE"))}

    with serve(env, target) as running:
        health = running.get("/api/health", token=None).json()

    assert health["missed_days"] == [(yesterday - dt.timedelta(days=1)).isoformat()]
    assert ANA not in json.dumps(health)


def test_the_template_is_created_submitted_and_its_approval_shown_from_the_command_line(
    twilio: TwilioEmulator, workspace: Any
) -> None:
    """GIVEN a Twilio account and no template yet
    WHEN `python -m insights.whatsapp create-template` runs, then `template-status` before and after WhatsApp's review
    THEN the first prints the one setting to add (TWILIO_TEMPLATE_SID=HX...) and submits it as a utility template;
    the status says pending (exit 1), then approved (exit 0)."""
    workspace.env.update(twilio.env("+15550000001"))

    created = workspace.run("python", "-m", "insights.whatsapp", "create-template")
    name, sid = created.stdout.strip().split("=")
    workspace.env[name] = sid
    pending = workspace.run("python", "-m", "insights.whatsapp", "template-status", check=False)
    twilio.approve(sid)
    approved = workspace.run("python", "-m", "insights.whatsapp", "template-status")

    assert name == "TWILIO_TEMPLATE_SID" and sid.startswith("HX") and "received" in created.stderr
    assert [r for r in twilio.requests if r[1].endswith("/ApprovalRequests/whatsapp")][0][2]["category"] == "UTILITY"
    assert (pending.returncode, pending.stdout.strip()) == (1, f"{sid}: pending")
    assert approved.stdout.strip() == f"{sid}: approved"


def test_a_ledger_from_the_release_before_digests_keeps_its_rows(target: Target, twilio: TwilioEmulator) -> None:
    """GIVEN a delivery ledger as the release before digests left it (one row per date and recipient)
    WHEN the next delivery runs
    THEN the old rows are kept as the team's, so the day already sent is not sent again."""
    with connect(target) as conn:
        cur = conn.cursor()
        cur.execute("create schema if not exists analytics")
        cur.execute("""create table analytics.briefing_deliveries (
            report_date date not null, recipient text not null, content_hash text not null, status text not null,
            message_sid text, error_code integer, error_message text, attempts integer not null,
            updated_at timestamptz not null, twilio_status text, previous_sids text, summary_id text,
            primary key (report_date, recipient))""")
        cur.execute(
            "insert into analytics.briefing_deliveries values ('2026-11-20', 'whatsapp:+15550000001', 'h', "
            "'accepted', 'SM" + "0" * 32 + "', null, null, 1, now(), 'delivered', null, null)"
        )
        conn.commit()
    twilio.inbound(ANA, "hi")

    [ana] = send_briefing(BRIEFING, REPORT_DATE, target, settings(twilio, ANA))

    assert (ana.status, ana.message_sid) == ("already_sent", "SM" + "0" * 32)
    assert twilio.messages == []
    assert ledger_rows(target)[f"whatsapp:{ANA}"]["kind"] == "session"
