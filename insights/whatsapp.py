"""Send the daily briefing on WhatsApp through Twilio, at most once per report date and recipient.

Twilio's Messages API has no idempotency key, so reruns are made safe by the
delivery ledger (`insights.ledger`): a recipient whose briefing Twilio already
accepted for the date is skipped; a definite refusal (a 4xx, Twilio never
reached) is retried by the next run; an ambiguous outcome (timeout, dropped
connection, 5xx after the request was sent) is looked up in Twilio's message
list before anything is sent again, because the message may exist already.

Each recipient is handled on its own: one invalid number never stops the
others, and Twilio's errors come back with their code and what to do about them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import time
from dataclasses import dataclass
from typing import Collection, Literal

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from insights.ledger import DeliveryLedger, LedgerEntry
from insights.settings import TwilioSettings
from pipelines.warehouse import Target

log = logging.getLogger(__name__)

MAX_BODY_CHARS = 1600  # Twilio refuses longer bodies (21617) and does not split WhatsApp messages
DEFAULT_TIMEOUT_SECONDS = 15.0  # twilio-python's default is to wait forever
RETRY_DELAYS_SECONDS = (0.5, 1.0, 2.0)  # only for answers Twilio guarantees were not processed
# How far before the ledger's last write a message found in Twilio's list may have been created
# and still count as ours: covers the client timeout, the retries and clock skew. Messages the
# ledger already knows (other dates, a forced resend's first copy) never count.
RECONCILE_MARGIN_SECONDS = 300
RECONCILE_PAGE = 50

DeliveryStatus = Literal["sent", "already_sent", "failed", "unknown"]

# What a user should do about the Twilio errors a WhatsApp briefing meets. Twilio documents
# 63007/63015/63016 as asynchronous too; they are explained the same way wherever they appear.
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
) -> list[Delivery]:
    """Send `message` to every recipient in `settings` unless it was already sent for `report_date`.

    `force` sends again to recipients whose briefing Twilio already accepted.
    Never raises for a recipient's Twilio error; raises only when the ledger
    (the warehouse) cannot be written, before anything is sent.
    """
    body = fit_body(message)
    if not body:
        raise ValueError("the briefing is empty; nothing to send")
    content_hash = body_hash(body)
    sender = whatsapp_address(settings.from_number)
    ledger = DeliveryLedger(target)
    ledger.ensure_table()
    client = _client(settings, timeout)
    deliveries = []
    for recipient in dict.fromkeys(whatsapp_address(n) for n in settings.recipients):
        delivery = _deliver_one(client, ledger, report_date, sender, recipient, body, content_hash, force=force)
        _log_delivery(delivery, report_date)
        deliveries.append(delivery)
    return deliveries


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


# --------------------------------------------------------------------------- one recipient


def _deliver_one(
    client: Client,
    ledger: DeliveryLedger,
    report_date: dt.date,
    sender: str,
    recipient: str,
    body: str,
    content_hash: str,
    *,
    force: bool,
) -> Delivery:
    entry = ledger.get(report_date, recipient)
    if entry is not None and not force:
        if entry.status == "accepted":
            return Delivery(recipient, "already_sent", entry.message_sid,
                            explanation="already sent for this date; --force sends it again")
        if entry.status in ("pending", "unknown"):
            # The last attempt may have created a message: look before sending another.
            settled = _reconcile(client, ledger, entry, sender, {entry.content_hash, content_hash},
                                 exclude=ledger.known_sids(recipient))
            if settled is not None:
                return settled
            log.info("no trace of the earlier attempt to %s in Twilio's message list; sending", recipient)

    ledger.start_attempt(report_date, recipient, content_hash)
    try:
        sid = _create(client, sender, recipient, body)
    except _Refused as refused:
        ledger.finish(report_date, recipient, "failed", error_code=refused.code, error_message=refused.explanation)
        return Delivery(recipient, "failed", None, refused.code, refused.explanation)
    except _Ambiguous as ambiguous:
        ledger.finish(report_date, recipient, "unknown", error_message=str(ambiguous))
        attempt = ledger.get(report_date, recipient)
        assert attempt is not None
        earlier = ledger.known_sids(recipient)
        if entry is not None and entry.message_sid:  # a forced resend: the first message is not this one
            earlier.add(entry.message_sid)
        settled = _reconcile(client, ledger, attempt, sender, {content_hash}, exclude=earlier)
        if settled is None:
            settled = Delivery(recipient, "unknown", explanation=(
                f"{ambiguous}. Twilio may have accepted the message; the next run looks for it in "
                "Twilio's message list and sends only if it is not there."
            ))
        elif settled.status == "already_sent":  # the attempt of this very run went through
            settled = Delivery(recipient, "sent", settled.message_sid)
        return settled
    ledger.finish(report_date, recipient, "accepted", message_sid=sid)
    return Delivery(recipient, "sent", sid)


def _create(client: Client, sender: str, recipient: str, body: str) -> str:
    """POST the message; retry only answers Twilio guarantees were not processed (429, 503)."""
    for delay in (*RETRY_DELAYS_SECONDS, None):
        try:
            return client.messages.create(to=recipient, from_=sender, body=body).sid  # type: ignore[return-value]
        except TwilioRestException as exc:
            throttled = exc.status == 429 or exc.code == 20429
            if (throttled or exc.status == 503) and delay is not None:
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
) -> Delivery | None:
    """Settle an ambiguous attempt from Twilio's message list.

    Returns the settled delivery when the message is found, an `unknown` one
    when Twilio cannot be asked (nothing is sent blindly), and None when the
    message is not there, so the briefing should be sent.
    """
    try:
        found = _find_message(client, entry.recipient, sender, entry.updated_at - RECONCILE_MARGIN_SECONDS,
                              hashes, exclude)
    except (TwilioException, requests.exceptions.RequestException) as exc:
        return Delivery(entry.recipient, "unknown", explanation=(
            f"An attempt may have reached Twilio and its message list could not be checked "
            f"({type(exc).__name__}); nothing more was sent. The next run checks again."
        ))
    if found is None:
        return None
    sid, status, error_code = found
    log.info("found the attempt to %s in Twilio's message list: %s (%s)", entry.recipient, sid, status)
    if status in ("failed", "undelivered") and error_code:
        explanation = explain(error_code)
        ledger.finish(entry.report_date, entry.recipient, "failed", message_sid=sid, error_code=error_code,
                      error_message=explanation)
        return Delivery(entry.recipient, "failed", sid, error_code, explanation)
    ledger.finish(entry.report_date, entry.recipient, "accepted", message_sid=sid)
    return Delivery(entry.recipient, "already_sent", sid,
                    explanation="an earlier attempt had reached Twilio; not sent again")


def _find_message(
    client: Client, recipient: str, sender: str, since: float, hashes: set[str], exclude: Collection[str]
) -> tuple[str, str, int | None] | None:
    """Our newest message to `recipient` with one of these body hashes created after `since`: (sid, status, error).

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
                return message.sid, message.status, message.error_code  # type: ignore[return-value]
    return None


# --------------------------------------------------------------------------- plumbing


def _client(settings: TwilioSettings, timeout: float) -> Client:
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
