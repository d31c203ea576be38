"""Send the daily briefing on WhatsApp through Twilio, at most once per report date and recipient.

Twilio's Messages API has no idempotency key, so reruns are made safe by the
delivery ledger (`insights.ledger`): a recipient whose briefing Twilio already
accepted for the date is skipped; a definite refusal (a 4xx, Twilio never
reached) is retried by the next run; an ambiguous outcome (timeout, dropped
connection, 5xx after the request was sent) is looked up in Twilio's message
list before anything is sent again, because the message may exist already.

A 201 is not the end of it: WhatsApp errors such as 63016 (outside the
24-hour window) and 63015 (not joined to the sandbox) come after Twilio
accepted the message, which then turns `failed`. So the run looks at each new
message for a few seconds until Twilio has handed it on or failed it, and
reports a failed one as failed; a message still queued when the run ends is
looked at again by the next run, which resends it if it failed meanwhile.

Each recipient is handled on its own: one invalid number never stops the
others, and Twilio's errors come back with their code and what to do about them.

Two deliveries running at once never both send: each recipient is claimed in
the ledger (`DeliveryLedger.claim`) before its row is read, so the second
delivery finds the first one's message instead of sending its own.

The credentials are checked first with a cheap authenticated read (the
account), so a wrong token is reported as such even on a day that was already
sent, when nothing else would reach Twilio.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import time
from dataclasses import dataclass, replace
from typing import Collection, Literal, NamedTuple, Sequence

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client
from twilio.rest.api.v2010.account.message import MessageInstance

from insights.ledger import DeliveryBusy, DeliveryLedger, LedgerEntry
from insights.settings import TwilioSettings
from warehouse import ConfigError, Target

log = logging.getLogger(__name__)

MAX_BODY_CHARS = 1600  # Twilio refuses longer bodies (21617) and does not split WhatsApp messages
DEFAULT_TIMEOUT_SECONDS = 15.0  # twilio-python's default is to wait forever
RETRY_DELAYS_SECONDS = (0.5, 1.0, 2.0)  # only for answers Twilio guarantees were not processed (429)
# How long a run waits for Twilio to hand its new messages on (or fail them), and the first pause between looks.
DEFAULT_STATUS_WAIT_SECONDS = 10.0
FIRST_STATUS_PAUSE_SECONDS = 0.25
# How far before the ledger's last write a message found in Twilio's list may have been created
# and still count as ours: covers the client timeout, the retries and clock skew. Messages the
# ledger already knows (other dates, a forced resend's first copy) never count.
RECONCILE_MARGIN_SECONDS = 300
RECONCILE_PAGE = 50

# `busy`: another delivery held the recipient's claim for too long; this run did not touch it.
DeliveryStatus = Literal["sent", "already_sent", "failed", "unknown", "busy"]

# Twilio message statuses (MessageInstance.Status). Waiting: Twilio has not handed the message on yet.
# Failed: it never will. Settled: nothing more can change whether the recipient got it.
WAITING_STATUSES = frozenset({"queued", "accepted", "sending", "scheduled"})
FAILED_STATUSES = frozenset({"failed", "undelivered", "canceled"})
SETTLED_STATUSES = frozenset({"delivered", "read", *FAILED_STATUSES})

# What a user should do about the Twilio errors a WhatsApp briefing meets. The 63xxx ones usually
# arrive after the 201, as the error code of a failed message, but may come as a 400 too: they are
# explained the same way wherever they appear.
ERROR_EXPLANATIONS: dict[int, str] = {
    20003: "Twilio refused the credentials: check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN "
    "(live credentials, not test ones; the account must not be suspended).",
    20404: "Twilio does not know this resource: check TWILIO_ACCOUNT_SID.",
    20429: "Twilio is rate-limiting this account (too many concurrent requests); nothing was sent, "
    "the next run retries.",
    21211: "The recipient is not a valid phone number: write it in E.164 form, e.g. +14155550123, "
    "in RECIPIENT_PHONE_NUMBER.",
    21408: "The Twilio account may not send to this number's country: enable the region in the "
    "Twilio console's messaging geographic permissions.",
    21602: "The message was empty: the briefing had no text.",
    21603: "No sender: set TWILIO_FROM_NUMBER to the account's WhatsApp sender.",
    21604: "No recipient: set RECIPIENT_PHONE_NUMBER.",
    21610: "The recipient has opted out (replied STOP) and must opt in again before they can receive messages.",
    21617: "The message is longer than Twilio's 1,600-character limit.",
    63007: "TWILIO_FROM_NUMBER is not a WhatsApp sender on this Twilio account (or it is not approved yet): "
    "use the number the console lists under WhatsApp senders (the sandbox one is +14155238886).",
    63015: "The recipient has not joined the Twilio WhatsApp sandbox (or joined more than 3 days ago): "
    "they must send 'join <sandbox code>' to the sandbox number again.",
    63016: "Outside WhatsApp's 24-hour window: free-form messages reach only people who wrote to the "
    "sender in the last 24 hours. Ask the recipient to message the sender, or send an approved template.",
    63018: "WhatsApp's rate limit for this sender was exceeded; the next run retries.",
    63021: "WhatsApp rejected the content of the message (too long or invalid for the channel).",
}


@dataclass(frozen=True)
class Delivery:
    """What happened to the briefing for one recipient in this run."""

    recipient: str
    status: DeliveryStatus
    message_sid: str | None = None
    error_code: int | None = None
    explanation: str | None = None


class _Outcome(NamedTuple):
    """A recipient's delivery so far, and the status of its message at Twilio when last seen (None: not known)."""

    delivery: Delivery
    twilio_status: str | None = None


class _Ambiguous(Exception):
    """The create may or may not have reached Twilio."""


class _Refused(Exception):
    """The create definitely did not create a message."""

    def __init__(self, code: int | None, explanation: str) -> None:
        super().__init__(explanation)
        self.code = code
        self.explanation = explanation


def send_briefing(
    message: str,
    report_date: dt.date,
    target: Target,
    settings: TwilioSettings,
    *,
    force: bool = False,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    status_wait: float = DEFAULT_STATUS_WAIT_SECONDS,
    summary_id: str | None = None,
) -> list[Delivery]:
    """Send `message` to every recipient in `settings` unless it was already sent for `report_date`.

    `force` sends again to recipients whose briefing Twilio already accepted.
    `status_wait` bounds the seconds spent waiting for Twilio to hand the new
    messages on (or fail them) after the sends. `summary_id` is recorded in
    the ledger with each attempt: the stored briefing the message came from.
    Never raises for a recipient's Twilio error; raises `ConfigError` when
    Twilio refuses the credentials, `DeliveryBusy` when another delivery holds
    the DuckDB warehouse, and the driver's error when the ledger cannot be
    written, all before anything is sent.
    """
    body = fit_body(message)
    if not body:
        raise ValueError("the briefing is empty; nothing to send")
    content_hash = body_hash(body)
    sender = whatsapp_address(settings.from_number)
    ledger = DeliveryLedger(target)
    client = twilio_client(settings, timeout)
    check_credentials(client, settings)
    with ledger.claim_warehouse():
        ledger.ensure_table()
        outcomes = [
            _claimed(client, ledger, report_date, recipient, sender, body, content_hash, force=force,
                     summary_id=summary_id)
            for recipient in dict.fromkeys(whatsapp_address(n) for n in settings.recipients)
        ]
        deliveries = _await_statuses(client, ledger, report_date, outcomes, status_wait)
    for delivery in deliveries:
        _log_delivery(delivery, report_date)
    return deliveries


def outcome(deliveries: Sequence[Delivery]) -> tuple[int, str]:
    """The exit status and the words for what happened to each recipient, e.g. "sent to 1, already sent to 1".

    0 when every recipient has the briefing (sent now or by an earlier run), 1 when any does not or may not.
    """
    counts: dict[str, int] = {}
    for d in deliveries:
        counts[d.status] = counts.get(d.status, 0) + 1
    words = {"sent": "sent to {}", "already_sent": "already sent to {}", "failed": "FAILED for {}",
             "unknown": "outcome UNKNOWN for {}", "busy": "left to another running delivery for {}"}
    parts = [words[s].format(n) for s, n in counts.items()]
    text = ", ".join(parts) + f" of {len(deliveries)} recipient{'s' if len(deliveries) != 1 else ''}"
    if set(counts) == {"already_sent"}:
        text += "; nothing new was sent"
    return (0 if set(counts) <= {"sent", "already_sent"} else 1), text


def fit_body(message: str) -> str:
    """The message, cut to Twilio's limit at a line boundary if it is longer.

    Counted in UTF-16 code units, the conservative reading of Twilio's 1,600
    characters (an emoji counts twice).
    """
    body = message.strip()
    if _utf16_len(body) <= MAX_BODY_CHARS:
        return body
    log.warning("the briefing has %d characters; WhatsApp messages are cut at %d", _utf16_len(body), MAX_BODY_CHARS)
    kept: list[str] = []
    used = 0
    for char in body:
        used += 2 if ord(char) > 0xFFFF else 1
        if used > MAX_BODY_CHARS - 1:
            break
        kept.append(char)
    cut = "".join(kept)
    if "\n" in cut[len(cut) // 2 :]:
        cut = cut[: cut.rindex("\n")]
    return cut.rstrip() + "…"


def body_hash(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def whatsapp_address(number: str) -> str:
    """`whatsapp:+E164` from what a user may write: `+1 415-555 0123`, `whatsapp:+14155550123`, `0014155550123`."""
    raw = number.strip()
    if raw.lower().startswith("whatsapp:"):
        raw = raw[len("whatsapp:") :]
    raw = re.sub(r"[\s().\-]", "", raw)
    if raw.startswith("00"):
        raw = "+" + raw[2:]
    elif raw.isdigit():
        raw = "+" + raw
    return f"whatsapp:{raw}"


def explain(code: int | None, message: str | None = None) -> str:
    """A plain-language explanation of a Twilio error code, falling back on Twilio's own text."""
    if code in ERROR_EXPLANATIONS:
        return ERROR_EXPLANATIONS[code]  # type: ignore[index]
    detail = (message or "").removeprefix("Unable to create record: ").strip()
    link = f" (https://www.twilio.com/docs/errors/{code})" if code else ""
    return f"Twilio error {code or 'without a code'}: {detail or 'no details'}{link}"


def check_credentials(client: Client, settings: TwilioSettings, *, strict: bool = False) -> None:
    """Fetch the account: Twilio's cheapest authenticated read. `ConfigError` when the credentials are refused.

    Any other failure (Twilio unreachable, a 5xx) is re-raised when `strict`,
    else left to the sends, which report it per recipient.
    """
    try:
        client.api.v2010.accounts(settings.account_sid).fetch()
    except TwilioRestException as exc:
        if exc.status in (401, 403) or exc.code in (20003, 20404):
            raise ConfigError(explain(exc.code if exc.code in ERROR_EXPLANATIONS else 20003)) from None
        if strict:
            raise
        log.info("could not check the Twilio credentials: HTTP %s (code %s)", exc.status, exc.code)
    except (TwilioException, requests.exceptions.RequestException) as exc:
        if strict:
            raise
        log.info("could not check the Twilio credentials: %s", type(exc).__name__)


# --------------------------------------------------------------------------- one recipient


def _claimed(
    client: Client,
    ledger: DeliveryLedger,
    report_date: dt.date,
    recipient: str,
    sender: str,
    body: str,
    content_hash: str,
    *,
    force: bool,
    summary_id: str | None,
) -> _Outcome:
    """`_deliver_one` while holding the recipient's claim, so a concurrent delivery cannot send too."""
    try:
        with ledger.claim(report_date, recipient):
            return _deliver_one(client, ledger, report_date, recipient, sender, body, content_hash, force=force,
                                summary_id=summary_id)
    except DeliveryBusy as busy:
        if ledger.target == "duckdb":
            raise
        return _Outcome(Delivery(recipient, "busy", explanation=f"{busy}; this run left it alone"))


def _deliver_one(
    client: Client,
    ledger: DeliveryLedger,
    report_date: dt.date,
    recipient: str,
    sender: str,
    body: str,
    content_hash: str,
    *,
    force: bool,
    summary_id: str | None = None,
) -> _Outcome:
    entry = ledger.get(report_date, recipient)
    resent_because = None
    if entry is not None and not force:
        if entry.status == "accepted":
            status, failure = entry.twilio_status, None
            if entry.message_sid and status not in SETTLED_STATUSES:
                # It may have failed after the last run stopped looking (63016 comes after the 201).
                status, failure = _look_at(client, ledger, report_date, recipient, entry.message_sid)
            if failure is None:
                return _Outcome(Delivery(recipient, "already_sent", entry.message_sid,
                                         explanation="already sent for this date; --force sends it again"), status)
            log.warning("Twilio failed the briefing already sent to %s (%s, error %s); sending it again",
                        recipient, failure.message_sid, failure.error_code)
            resent_because = f"Twilio failed the earlier message {failure.message_sid} (error {failure.error_code})"
        elif entry.status in ("pending", "unknown"):
            # The last attempt may have created a message: look before sending another.
            settled = _reconcile(client, ledger, entry, sender, {entry.content_hash, content_hash},
                                 exclude=ledger.known_sids(recipient))
            if settled is not None:
                return settled
            log.info("no trace of the earlier attempt to %s in Twilio's message list; sending", recipient)

    # Any SID the row held moves to its previous_sids: reconciliation never mistakes it for this attempt's.
    ledger.start_attempt(report_date, recipient, content_hash, summary_id)
    try:
        sid, status = _create(client, sender, recipient, body)
    except _Refused as refused:
        ledger.finish(report_date, recipient, "failed", error_code=refused.code, error_message=refused.explanation)
        return _Outcome(Delivery(recipient, "failed", None, refused.code, refused.explanation))
    except _Ambiguous as ambiguous:
        ledger.finish(report_date, recipient, "unknown", error_message=str(ambiguous))
        attempt = ledger.get(report_date, recipient)
        assert attempt is not None
        settled = _reconcile(client, ledger, attempt, sender, {content_hash}, exclude=ledger.known_sids(recipient))
        if settled is None:
            return _Outcome(Delivery(recipient, "unknown", explanation=(
                f"{ambiguous}. Twilio may have accepted the message; the next run looks for it in "
                "Twilio's message list and sends only if it is not there."
            )))
        if settled.delivery.status == "already_sent":  # the attempt of this very run went through
            return _Outcome(Delivery(recipient, "sent", settled.delivery.message_sid, explanation=resent_because),
                            settled.twilio_status)
        return settled
    ledger.finish(report_date, recipient, "accepted", message_sid=sid, twilio_status=status)
    return _Outcome(Delivery(recipient, "sent", sid, explanation=resent_because), status)


def _create(client: Client, sender: str, recipient: str, body: str) -> tuple[str, str | None]:
    """POST the message: its SID and status. Retry only answers Twilio guarantees were not processed (429).

    A 503 is not one of them: Twilio may have created the message before
    answering it, so it is ambiguous like any other 5xx.
    """
    for delay in (*RETRY_DELAYS_SECONDS, None):
        try:
            created = client.messages.create(to=recipient, from_=sender, body=body)
            return created.sid, created.status  # type: ignore[return-value]
        except TwilioRestException as exc:
            throttled = exc.status == 429 or exc.code == 20429
            if throttled and delay is not None:
                log.info("Twilio answered %s (code %s); retrying in %.1fs", exc.status, exc.code, delay)
                time.sleep(delay)
                continue
            if throttled:
                raise _Refused(20429, explain(20429)) from exc
            if exc.status >= 500:
                raise _Ambiguous(f"Twilio answered HTTP {exc.status} (code {exc.code})") from exc
            raise _Refused(exc.code, explain(exc.code, exc.msg)) from exc
        except requests.exceptions.RequestException as exc:
            if _never_reached(exc):
                raise _Refused(None, f"Could not connect to Twilio ({type(exc).__name__}); nothing was sent, "
                               "the next run retries.") from exc
            raise _Ambiguous(f"No answer from Twilio ({type(exc).__name__})") from exc
        except TwilioException as exc:  # e.g. an unreadable 2xx body: the message may exist
            raise _Ambiguous(f"Unreadable answer from Twilio ({exc})") from exc
    raise AssertionError("unreachable")


def _never_reached(exc: requests.exceptions.RequestException) -> bool:
    """True when the request provably never reached Twilio (connection refused, DNS, connect timeout)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError):
        cause = exc.args[0] if exc.args else None
        reason = getattr(cause, "reason", cause)
        return type(reason).__name__ in {"NewConnectionError", "NameResolutionError", "ConnectTimeoutError"}
    return False


def _reconcile(
    client: Client,
    ledger: DeliveryLedger,
    entry: LedgerEntry,
    sender: str,
    hashes: set[str],
    *,
    exclude: Collection[str] = (),
) -> _Outcome | None:
    """Settle an ambiguous attempt from Twilio's message list.

    Returns the settled delivery when the message is found, an `unknown` one
    when Twilio cannot be asked (nothing is sent blindly), and None when the
    message is not there, so the briefing should be sent. `exclude` holds the
    SIDs the ledger ever recorded for the recipient: messages of earlier
    attempts (a forced resend's first copy, a failed one), never this one.
    """
    try:
        found = _find_message(client, entry.recipient, sender, entry.updated_at - RECONCILE_MARGIN_SECONDS,
                              hashes, exclude)
    except (TwilioException, requests.exceptions.RequestException) as exc:
        return _Outcome(Delivery(entry.recipient, "unknown", explanation=(
            f"An attempt may have reached Twilio and its message list could not be checked "
            f"({type(exc).__name__}); nothing more was sent. The next run checks again."
        )))
    if found is None:
        return None
    log.info("found the attempt to %s in Twilio's message list: %s (%s)", entry.recipient, found.sid, found.status)
    failure = _settle(ledger, entry.report_date, entry.recipient, found)
    if failure is not None:
        return _Outcome(failure, found.status)
    ledger.finish(entry.report_date, entry.recipient, "accepted", message_sid=found.sid, twilio_status=found.status)
    return _Outcome(Delivery(entry.recipient, "already_sent", found.sid,
                             explanation="an earlier attempt had reached Twilio; not sent again"), found.status)


def _find_message(
    client: Client, recipient: str, sender: str, since: float, hashes: set[str], exclude: Collection[str]
) -> MessageInstance | None:
    """Our newest message to `recipient` with one of these body hashes created after `since`.

    Two lists, because `date_sent` stays null while a message is queued and
    Twilio's DateSent filter then misses it: the most recent page without a date
    filter first, then everything sent since the day of `since`.
    """
    since_day = dt.datetime.fromtimestamp(since, dt.timezone.utc).date()
    lists = (
        lambda: client.messages.list(to=recipient, from_=sender, limit=RECONCILE_PAGE),
        lambda: client.messages.list(to=recipient, from_=sender, date_sent_after=since_day, limit=RECONCILE_PAGE * 4),
    )
    for listing in lists:
        for message in listing():  # newest first
            created = message.date_created.timestamp() if message.date_created else None
            if (
                message.sid not in exclude
                and message.body is not None
                and body_hash(message.body) in hashes
                and (created is None or created >= since)
            ):
                return message
    return None


# --------------------------------------------------------------------------- after the 201


def _await_statuses(
    client: Client, ledger: DeliveryLedger, report_date: dt.date, outcomes: list[_Outcome], wait: float
) -> list[Delivery]:
    """The deliveries, once Twilio has handed each message still waiting on, or failed it, or `wait` seconds passed.

    Real Twilio answers a create with `queued` and reports WhatsApp errors
    (63016, 63015, ...) only when the message turns `failed` a moment later:
    without this look, such a recipient would be reported as sent, and never
    retried. The pause between looks doubles from a quarter of a second.
    """
    deliveries = [outcome.delivery for outcome in outcomes]
    waiting = {
        i for i, (delivery, status) in enumerate(outcomes)
        if delivery.message_sid and delivery.status in ("sent", "already_sent") and status in WAITING_STATUSES
    }
    deadline = time.monotonic() + wait
    pause = FIRST_STATUS_PAUSE_SECONDS
    while waiting:
        for i in sorted(waiting):
            delivery = deliveries[i]
            assert delivery.message_sid is not None
            status, failure = _look_at(client, ledger, report_date, delivery.recipient, delivery.message_sid)
            if failure is not None:
                deliveries[i] = failure
            if status not in WAITING_STATUSES:  # handed on, failed, or gone (None: it cannot be found)
                waiting.discard(i)
        remaining = deadline - time.monotonic()
        if not waiting or remaining <= 0:
            break
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, 2.0)
    for i in waiting:
        deliveries[i] = replace(deliveries[i], explanation=(
            f"Twilio accepted the message but had not passed it on to WhatsApp after {wait:g}s; "
            "the next run checks it again and resends if it failed."
        ))
    return deliveries


def _look_at(
    client: Client, ledger: DeliveryLedger, report_date: dt.date, recipient: str, sid: str
) -> tuple[str | None, Delivery | None]:
    """Fetch message `sid` and record what Twilio says of it: (its status, the failed delivery if it failed).

    When Twilio cannot be asked the status stays what it was (`queued`, for
    the caller: try again later); a SID Twilio does not know gives None.
    """
    try:
        message = client.messages(sid).fetch()
    except TwilioRestException as exc:
        if exc.status == 404:
            log.warning("Twilio does not know message %s to %s any more; leaving it as sent", sid, recipient)
            return None, None
        log.info("could not fetch message %s to %s: HTTP %s", sid, recipient, exc.status)
        return "queued", None
    except (TwilioException, requests.exceptions.RequestException) as exc:
        log.info("could not fetch message %s to %s: %s", sid, recipient, type(exc).__name__)
        return "queued", None
    failure = _settle(ledger, report_date, recipient, message)
    if failure is None:
        ledger.note_twilio_status(report_date, recipient, message.status)  # type: ignore[arg-type]
    return message.status, failure  # type: ignore[return-value]


def _settle(ledger: DeliveryLedger, report_date: dt.date, recipient: str, message: MessageInstance) -> Delivery | None:
    """If Twilio failed `message`, record the failure (the next run retries) and return the failed delivery."""
    if message.status not in FAILED_STATUSES:
        return None
    code = message.error_code
    explanation = explain(code, message.error_message) if code else (
        f"Twilio reports the message {message.status}{': ' + message.error_message if message.error_message else ''}."
    )
    ledger.finish(report_date, recipient, "failed", message_sid=message.sid, error_code=code,
                  error_message=explanation, twilio_status=message.status)
    return Delivery(recipient, "failed", message.sid, code, explanation)


# --------------------------------------------------------------------------- plumbing


def twilio_client(settings: TwilioSettings, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> Client:
    """twilio-python's client with a timeout, its HTTP log kept quiet, and TWILIO_API_BASE applied."""
    http_log = logging.getLogger(f"{__name__}.http")
    if http_log.level == logging.NOTSET:
        # twilio-python logs every request at INFO; keep the run's log about deliveries.
        http_log.setLevel(logging.WARNING)
    client = Client(
        settings.account_sid,
        settings.auth_token,
        http_client=TwilioHttpClient(timeout=timeout, logger=http_log),
    )
    if settings.api_base:
        client.api.base_url = settings.api_base.rstrip("/")
    return client


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _log_delivery(delivery: Delivery, report_date: dt.date) -> None:
    if delivery.status in ("sent", "already_sent"):
        log.info("briefing for %s to %s: %s (%s)", report_date, delivery.recipient, delivery.status, delivery.message_sid)
    elif delivery.status == "failed":
        log.error("briefing for %s to %s failed (Twilio error %s): %s",
                  report_date, delivery.recipient, delivery.error_code, delivery.explanation)
    else:
        log.warning("briefing for %s to %s: outcome unknown: %s", report_date, delivery.recipient, delivery.explanation)
