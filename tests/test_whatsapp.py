"""WhatsApp delivery: each recipient gets the day's briefing once, whatever goes wrong in between.

The real `twilio` client talks over HTTP to the local Twilio emulator
(`tests/twilio_emulator.py`); the delivery ledger lives in a real DuckDB file
or a real Postgres database.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import pytest

from insights.settings import TwilioSettings
from insights.whatsapp import send_briefing
from tests.twilio_emulator import TwilioEmulator
from warehouse import ConfigError, Target, connect

REPORT_DATE = dt.date(2026, 11, 20)
ANA, BEN, CHO = "+15550000001", "+15550000002", "+15550000003"
BRIEFING = "*Sales briefing, 20 Nov 2026*\nOpen pipeline: $1.24M (+3.1% vs yesterday)\nWon today: 3 deals, $84.0K"


@pytest.fixture
def target(empty_warehouse: Target) -> Target:
    """An empty warehouse of each kind (tests/conftest.py)."""
    return empty_warehouse


def settings(twilio: TwilioEmulator, *recipients: str, auth_token: str | None = None) -> TwilioSettings:
    """The account's settings for these recipients, each of whom wrote to the sender an hour ago: inside
    WhatsApp's 24-hour window, where the briefing goes as free-form text (tests/test_reaching_people.py tells
    the story outside it)."""
    for number in recipients:
        digits = number.removeprefix("whatsapp:").lstrip("+")
        if digits.isdigit() and len(digits) >= 7:
            twilio.inbound(number, "hi", at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    return TwilioSettings(
        account_sid=twilio.account_sid,
        auth_token=auth_token or twilio.auth_token,
        from_number="+14155238886",
        recipients=recipients,
        api_base=twilio.url,
    )


def lines_of(messages: list[dict[str, Any]]) -> list[str]:
    """The lines a person reads across a briefing's messages, without the parts' numbers "(1/2) "."""
    bodies = [m["body"].split(" ", 1)[1] if len(messages) > 1 else m["body"] for m in messages]
    return [line for body in bodies for line in body.split("\n") if line.strip()]


def ledger(target: Target) -> dict[str, dict[str, Any]]:
    """The delivery ledger as a user would query it, by recipient."""
    with connect(target) as conn:
        cur = conn.cursor()
        cur.execute("select recipient, status, message_sid, error_code, attempts from analytics.briefing_deliveries")
        return {
            r[0]: dict(zip(("recipient", "status", "message_sid", "error_code", "attempts"), r)) for r in cur.fetchall()
        }


def test_a_second_run_for_the_same_date_sends_nothing_and_force_sends_again(
    target: Target, twilio: TwilioEmulator
) -> None:
    """GIVEN two recipients, one written with the `whatsapp:` prefix
    WHEN the briefing for a date is delivered, then delivered again, then forced
    THEN each recipient gets it once from the first two runs, and once more when forced."""
    config = settings(twilio, ANA, f"whatsapp:{BEN}")

    first = send_briefing(BRIEFING, REPORT_DATE, target, config)
    second = send_briefing(BRIEFING, REPORT_DATE, target, config)

    assert [d.status for d in first] == ["sent", "sent"]
    assert [d.status for d in second] == ["already_sent", "already_sent"]
    assert [d.message_sid for d in second] == [d.message_sid for d in first]
    assert [m["to"] for m in twilio.messages] == [f"whatsapp:{ANA}", f"whatsapp:{BEN}"]
    assert twilio.messages[0]["from"] == "whatsapp:+14155238886"
    assert twilio.messages[0]["body"] == BRIEFING

    forced = send_briefing(BRIEFING, REPORT_DATE, target, config, force=True)

    assert [d.status for d in forced] == ["sent", "sent"]
    assert len(twilio.messages) == 4
    assert {r["message_sid"] for r in ledger(target).values()} == {d.message_sid for d in forced}


def test_the_next_date_is_sent_even_when_today_was(target: Target, twilio: TwilioEmulator) -> None:
    """GIVEN yesterday's briefing was delivered
    WHEN today's is delivered
    THEN it is sent: the ledger keys on the report date."""
    config = settings(twilio, ANA)
    send_briefing(BRIEFING, REPORT_DATE, target, config)

    [today] = send_briefing(BRIEFING.replace("20 Nov", "21 Nov"), REPORT_DATE + dt.timedelta(days=1), target, config)

    assert today.status == "sent"
    assert len(twilio.messages_to(ANA)) == 2


@pytest.mark.parametrize(
    "misbehaviour", ["500 after create", "503 after create", "timeout after create", "connection dropped after create"]
)
def test_an_ambiguous_answer_after_twilio_created_the_message_does_not_send_twice(
    target: Target, twilio: TwilioEmulator, misbehaviour: str
) -> None:
    """GIVEN Twilio creates the message but the client sees a 500, a 503, a timeout or a dropped connection
    WHEN the briefing is delivered, and the run is repeated
    THEN the message is found in Twilio's message list and never sent a second time
    (a 503 is no promise that nothing was created: only a 429 is retried blindly)."""
    {
        "500 after create": lambda: twilio.fail_next(500),
        "503 after create": lambda: twilio.fail_next(503),
        "timeout after create": lambda: twilio.delay_next(2.0),
        "connection dropped after create": lambda: twilio.drop_next(),
    }[misbehaviour]()
    config = settings(twilio, ANA, BEN)

    [ana, ben] = send_briefing(BRIEFING, REPORT_DATE, target, config, timeout=0.5)
    again = send_briefing(BRIEFING, REPORT_DATE, target, config, timeout=0.5)

    [created] = twilio.messages_to(ANA)
    assert (ana.status, ana.message_sid) == ("sent", created["sid"])
    assert ben.status == "sent"
    assert [d.status for d in again] == ["already_sent", "already_sent"]
    assert len(twilio.messages) == 2
    assert ledger(target)[f"whatsapp:{ANA}"]["status"] == "accepted"


def test_an_outcome_left_unknown_is_settled_by_the_next_run_without_resending(
    target: Target, twilio: TwilioEmulator
) -> None:
    """GIVEN the connection drops after Twilio created the message and Twilio's message list is down too
    WHEN the briefing is delivered, and delivered again once Twilio is back
    THEN the first run reports the outcome as unknown and sends nothing more,
    and the second run finds the message instead of sending another."""
    twilio.drop_next()
    twilio.fail_next(500, method="GET", create=False, count=2)  # the window's look, then the search for the message
    config = settings(twilio, ANA)

    [first] = send_briefing(BRIEFING, REPORT_DATE, target, config)

    assert first.status == "unknown"
    assert "next run" in first.explanation
    assert ledger(target)[f"whatsapp:{ANA}"]["status"] == "unknown"

    [second] = send_briefing(BRIEFING, REPORT_DATE, target, config)

    [created] = twilio.messages
    assert (second.status, second.message_sid) == ("already_sent", created["sid"])
    assert ledger(target)[f"whatsapp:{ANA}"]["message_sid"] == created["sid"]


def test_an_unknown_attempt_that_twilio_later_failed_is_reported_and_retried(
    target: Target, twilio: TwilioEmulator
) -> None:
    """GIVEN an attempt left unknown, whose message Twilio then failed asynchronously (63016)
    WHEN the briefing is delivered again, and once more
    THEN the second run reports 63016 with its explanation without sending, and the third sends anew."""
    twilio.drop_next()
    twilio.fail_next(500, method="GET", create=False, count=2)  # the window's look, then the search for the message
    config = settings(twilio, ANA)
    send_briefing(BRIEFING, REPORT_DATE, target, config)
    [lost] = twilio.messages
    twilio.set_status(lost["sid"], "failed", error_code=63016)

    [second] = send_briefing(BRIEFING, REPORT_DATE, target, config)
    [third] = send_briefing(BRIEFING, REPORT_DATE, target, config)

    assert (second.status, second.message_sid, second.error_code) == ("failed", lost["sid"], 63016)
    assert "24-hour" in second.explanation
    assert third.status == "sent" and third.message_sid != lost["sid"]
    assert len(twilio.messages) == 2


def test_a_forced_resend_that_never_reached_twilio_is_sent_by_the_next_run(
    target: Target, twilio: TwilioEmulator
) -> None:
    """GIVEN the day's briefing was delivered, then resent with --force, but that connection dropped before
    Twilio created anything while Twilio's message list was down too
    WHEN the briefing is delivered again
    THEN the first message is not mistaken for the forced copy: the copy is sent, once."""
    config = settings(twilio, ANA)
    [first] = send_briefing(BRIEFING, REPORT_DATE, target, config)
    twilio.drop_next(create=False)
    twilio.fail_next(500, method="GET", create=False)

    [forced] = send_briefing(BRIEFING, REPORT_DATE, target, config, force=True)
    [after] = send_briefing(BRIEFING, REPORT_DATE, target, config)
    [again] = send_briefing(BRIEFING, REPORT_DATE, target, config)

    assert forced.status == "unknown"
    assert after.status == "sent" and after.message_sid != first.message_sid
    assert (again.status, again.message_sid) == ("already_sent", after.message_sid)
    assert [m["sid"] for m in twilio.messages] == [first.message_sid, after.message_sid]


def test_an_attempt_twilio_never_received_is_sent_by_the_next_run(target: Target, twilio: TwilioEmulator) -> None:
    """GIVEN the connection drops before Twilio created anything
    WHEN the briefing is delivered twice
    THEN the first run cannot tell and sends nothing more; the second finds no message and sends it, once."""
    twilio.drop_next(create=False)
    config = settings(twilio, ANA)

    [first] = send_briefing(BRIEFING, REPORT_DATE, target, config)
    [second] = send_briefing(BRIEFING, REPORT_DATE, target, config)

    assert first.status == "unknown"
    assert second.status == "sent"
    assert [m["sid"] for m in twilio.messages] == [second.message_sid]


def test_a_rejected_number_is_explained_and_the_other_recipients_still_get_theirs(
    target: Target, twilio: TwilioEmulator
) -> None:
    """GIVEN one recipient outside WhatsApp's 24-hour window (Twilio accepts the message, then fails it
    with 63016) and one number that is not a phone number (Twilio refuses it at once with 21211)
    WHEN the briefing is delivered to them and to a third recipient
    THEN the third gets it, and each failure carries Twilio's code and what to do about it."""
    twilio.reject(BEN, 63016)
    config = settings(twilio, BEN, "12", ANA)

    ben, bad, ana = send_briefing(BRIEFING, REPORT_DATE, target, config)

    assert (ana.status, ana.message_sid) == ("sent", twilio.messages_to(ANA)[0]["sid"])
    assert (ben.status, ben.error_code, ben.message_sid) == ("failed", 63016, twilio.messages_to(BEN)[0]["sid"])
    assert "24-hour" in ben.explanation and "template" in ben.explanation
    assert (bad.status, bad.error_code) == ("failed", 21211)
    assert "E.164" in bad.explanation
    rows = ledger(target)
    assert (rows[f"whatsapp:{BEN}"]["status"], rows[f"whatsapp:{BEN}"]["error_code"]) == ("failed", 63016)
    assert [(m["to"], m["status"]) for m in twilio.settled()] == [
        (f"whatsapp:{BEN}", "failed"),
        (f"whatsapp:{ANA}", "delivered"),
    ]


def test_the_run_waits_for_twilio_to_pass_each_message_on(target: Target, twilio: TwilioEmulator) -> None:
    """GIVEN Twilio keeps new messages queued for a moment, then fails the one to a recipient outside
    WhatsApp's 24-hour window
    WHEN the briefing is delivered
    THEN the run waits for the outcome: that recipient is reported failed with 63016, the other sent."""
    twilio.hold_status(0.6)
    twilio.reject(BEN, 63016)

    ana, ben = send_briefing(BRIEFING, REPORT_DATE, target, settings(twilio, ANA, BEN), status_wait=5)

    assert (ana.status, ben.status, ben.error_code) == ("sent", "failed", 63016)
    assert {r["recipient"]: r["status"] for r in ledger(target).values()} == {
        f"whatsapp:{ANA}": "accepted",
        f"whatsapp:{BEN}": "failed",
    }


def test_a_message_that_fails_after_the_run_stopped_looking_is_resent_by_the_next_run(
    target: Target, twilio: TwilioEmulator
) -> None:
    """GIVEN Twilio keeps the message queued longer than the run waits, and fails it later (63016)
    WHEN the briefing is delivered, then twice more
    THEN the first run reports it sent and says the next run checks it; the second sees the failure and
    sends the briefing again, saying why; the third finds that one delivered and sends nothing."""
    twilio.hold_status()
    config = settings(twilio, ANA)

    [first] = send_briefing(BRIEFING, REPORT_DATE, target, config, status_wait=0.3)

    assert first.status == "sent" and "next run checks" in first.explanation
    twilio.set_status(first.message_sid, "failed", error_code=63016)
    twilio.hold_status(0)

    [second] = send_briefing(BRIEFING, REPORT_DATE, target, config)
    [third] = send_briefing(BRIEFING, REPORT_DATE, target, config)

    assert second.status == "sent" and second.message_sid != first.message_sid
    assert "63016" in second.explanation
    assert (third.status, third.message_sid) == ("already_sent", second.message_sid)
    assert [m["status"] for m in twilio.settled()] == ["failed", "delivered"]
    row = ledger(target)[f"whatsapp:{ANA}"]
    assert (row["status"], row["attempts"]) == ("accepted", 2)


def test_a_failed_send_is_retried_by_the_next_run(target: Target, twilio: TwilioEmulator) -> None:
    """GIVEN a recipient Twilio failed yesterday evening (63015: left the sandbox)
    WHEN they rejoin and the briefing is delivered again
    THEN it is sent to them, and only to them."""
    twilio.reject(BEN, 63015)
    config = settings(twilio, ANA, BEN)
    first = send_briefing(BRIEFING, REPORT_DATE, target, config)
    assert [d.status for d in first] == ["sent", "failed"]
    assert "join" in first[1].explanation

    twilio.accept(BEN)
    second = send_briefing(BRIEFING, REPORT_DATE, target, config)

    assert [d.status for d in second] == ["already_sent", "sent"]
    assert len(twilio.messages_to(ANA)) == 1
    assert [m["status"] for m in twilio.settled(BEN)] == ["failed", "delivered"]
    assert ledger(target)[f"whatsapp:{BEN}"]["attempts"] == 2


def test_rate_limited_requests_are_retried_with_backoff_and_sent_once(
    twilio: TwilioEmulator, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN Twilio answers 429 (nothing created) twice
    WHEN the briefing is delivered
    THEN the client waits, tries again and the message is sent once."""
    monkeypatch.setenv("DUCKDB_PATH", str(tmp_path / "warehouse.duckdb"))
    twilio.throttle_next(2)

    [ana] = send_briefing(BRIEFING, REPORT_DATE, "duckdb", settings(twilio, ANA))

    assert ana.status == "sent"
    assert twilio.create_requests() == 3
    assert len(twilio.messages) == 1


def test_wrong_credentials_are_explained_and_the_token_never_logged(
    twilio: TwilioEmulator, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """GIVEN a wrong TWILIO_AUTH_TOKEN, and logging at its most verbose
    WHEN the briefing is delivered
    THEN the run stops on a configuration error naming the variables, before any message is attempted,
    and the token appears in no log line."""
    monkeypatch.setenv("DUCKDB_PATH", str(tmp_path / "warehouse.duckdb"))
    caplog.set_level(logging.DEBUG)
    logging.getLogger("insights.whatsapp.http").setLevel(logging.DEBUG)
    wrong = "wrong-token-7f3a9c"
    try:
        with pytest.raises(ConfigError) as refused:
            send_briefing(BRIEFING, REPORT_DATE, "duckdb", settings(twilio, ANA, BEN, auth_token=wrong))
    finally:
        logging.getLogger("insights.whatsapp.http").setLevel(logging.NOTSET)

    assert "TWILIO_AUTH_TOKEN" in str(refused.value)
    assert twilio.create_requests() == 0
    assert "GET Request:" in caplog.text  # the HTTP log was on
    assert wrong not in caplog.text
    assert wrong not in repr(settings(twilio, ANA, auth_token=wrong))


def test_wrong_credentials_are_reported_even_on_a_day_already_sent(target: Target, twilio: TwilioEmulator) -> None:
    """GIVEN the day's briefing was delivered to everyone
    WHEN the auth token is then changed to a wrong one and the delivery reruns
    THEN the rerun reports the credentials as a configuration error instead of quietly succeeding."""
    send_briefing(BRIEFING, REPORT_DATE, target, settings(twilio, ANA))

    with pytest.raises(ConfigError, match="TWILIO_AUTH_TOKEN"):
        send_briefing(BRIEFING, REPORT_DATE, target, settings(twilio, ANA, auth_token="revoked-token"))

    assert len(twilio.messages) == 1


def test_when_twilio_cannot_be_reached_nothing_is_sent_and_the_next_run_retries(
    target: Target, twilio: TwilioEmulator
) -> None:
    """GIVEN TWILIO_API_BASE points at a port where nothing listens
    WHEN the briefing is delivered, then delivered again with Twilio reachable
    THEN the first run fails plainly (the connection was refused, so nothing can have been sent)
    and the second sends it."""
    unreachable = TwilioSettings(twilio.account_sid, twilio.auth_token, "+14155238886", (ANA,), "http://127.0.0.1:9")

    [first] = send_briefing(BRIEFING, REPORT_DATE, target, unreachable)
    [second] = send_briefing(BRIEFING, REPORT_DATE, target, settings(twilio, ANA))

    assert (first.status, first.error_code) == ("failed", None)
    assert "Could not connect to Twilio" in first.explanation
    assert second.status == "sent"
    assert len(twilio.messages) == 1


@pytest.mark.slow
@pytest.mark.parametrize("target", ["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_the_deliver_command_sends_each_recipient_the_days_briefing_once(
    warehouse: Any, twilio: TwilioEmulator, target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN a warehouse built from the sandbox CRM, no local model running, no WhatsApp template, one recipient
    who wrote to the sender an hour ago and one who never did (outside WhatsApp's 24-hour window)
    WHEN `python -m insights.deliver` runs, and runs again after that recipient wrote to the sender
    THEN the first run sends the stored briefing to the first, sends nothing that would fail to the other and
    exits 1 naming the window and error 63016; the second sends it only to the recipient who missed it, and exits 0."""
    warehouse.env.update(twilio.env(ANA, BEN), OLLAMA_BASE_URL="http://127.0.0.1:9")
    twilio.inbound(ANA, "hi", at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    monkeypatch.delenv("DESTINATION__POSTGRES__CREDENTIALS", raising=False)
    for name in ("DUCKDB_PATH", "DATABASE_URL"):  # so this process reads the same warehouse
        monkeypatch.setenv(name, warehouse.env[name])
    deliver = ("python", "-m", "insights.deliver", "--target", target, "--date", "2026-11-20")

    first = warehouse.run(*deliver, check=False)

    assert first.returncode == 1, first.stderr
    assert "63016" in first.stderr and "24-hour" in first.stderr
    sent = twilio.messages_to(ANA)
    with connect(target, read_only=True) as conn:
        cur = conn.cursor()
        cur.execute("select message from analytics.ai_summaries order by created_at desc limit 1")
        stored = cur.fetchone()[0].strip()
    assert lines_of(sent) == [line for line in stored.split("\n") if line.strip()]

    assert twilio.messages_to(BEN) == []
    twilio.inbound(BEN, "good morning")
    second = warehouse.run(*deliver, check=False)

    assert second.returncode == 0, second.stderr
    assert "already_sent" in second.stderr
    assert len(twilio.messages_to(ANA)) == len(sent)
    assert {m["status"] for m in twilio.settled(BEN)} == {"delivered"} and lines_of(
        twilio.messages_to(BEN)
    ) == lines_of(sent)
    assert {r["recipient"]: (r["status"], r["attempts"]) for r in ledger(target).values()} == {
        f"whatsapp:{ANA}": ("accepted", 1),
        f"whatsapp:{BEN}": ("accepted", 2),
    }
