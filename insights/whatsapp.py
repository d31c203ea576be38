"""Send each person their daily digest on WhatsApp through Twilio, at most once per report date.

    python -m insights.whatsapp create-template     # create and submit the template used outside the window
    python -m insights.whatsapp template-status     # its WhatsApp approval status

WhatsApp delivers free-form text only within 24 hours of the person's last
message to the sender (the customer-service window); anything else fails with
63016 a moment after Twilio accepted it. So before sending, each person's
window is read from Twilio's own message list (their inbound messages of the
last 24 hours). Inside it the whole digest goes as free-form text, split at
line breaks into numbered parts of at most 1,600 characters (`split_parts`:
never cut). Outside it the approved template (TWILIO_TEMPLATE_SID, a utility
template created by `create-template`) carries the day's headline and what
needs attention, and asks the person to reply: their reply opens the window,
and the API then sends the full digest (`insights.replies`). A 63016 that
still happens (the window closed during the run) is followed once by the
template in the same run.

Inside the window the first part may carry a picture (`Outgoing.media_url`: the
day's chart, `insights.chart_links`); the template never does. Twilio fetches the
picture after accepting the message and fails the message when it cannot take it
(11200, 63019, ...): the briefing then goes once more, without the picture, in the
same run. When it was in parts, the later parts, already delivered, go again too.

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

import argparse
import datetime as dt
import hashlib
import json
import logging
import re
import sys
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal, NamedTuple

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client
from twilio.rest.api.v2010.account.message import MessageInstance

from insights.ledger import TEAM, DeliveryBusy, DeliveryKind, DeliveryLedger, LedgerEntry
from insights.recipients import E164
from insights.settings import TwilioSettings
from warehouse import ConfigError, Target

log = logging.getLogger(__name__)

MAX_BODY_CHARS = 1600  # Twilio refuses longer bodies (21617) and does not split WhatsApp messages
# A window closing within this many seconds counts as closed: the free-form parts must reach Twilio in time.
WINDOW_MARGIN_SECONDS = 300
STATUS_CALLBACK_PATH = "/twilio/status"  # under PUBLIC_BASE_URL, served by insights.api
INBOUND_PATH = "/twilio/inbound"
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
    63028: "The template was sent with fewer variables than it has placeholders.",
    21656: "The template's variables were refused: each must be one line, without tabs or runs of spaces.",
    11200: "Twilio could not fetch the message's media (MediaUrl): the API under PUBLIC_BASE_URL did not answer it.",
    63019: "Twilio could not download the message's media (MediaUrl), or it was empty.",
    63034: "The message's media is over WhatsApp's limit (5 MB for an image).",
}
# Twilio's errors for media it could not fetch or WhatsApp would not take. A briefing failed with one of them
# goes again without its chart in the same run: the text matters more than the picture.
MEDIA_ERRORS = frozenset({11200, 11751, 12300, 63019, 63021, 63034})


@dataclass(frozen=True)
class Delivery:
    """What happened to one person's digest in this run."""

    recipient: str
    status: DeliveryStatus
    message_sid: str | None = None
    error_code: int | None = None
    explanation: str | None = None
    digest: str = TEAM
    kind: DeliveryKind | None = None  # session (free-form parts) or template
    parts: tuple[str, ...] = ()  # the SID of every part this delivery stands for


@dataclass(frozen=True)
class Outgoing:
    """One person's digest for the day, ready to go either way.

    `text` is the whole briefing, sent as free-form parts inside WhatsApp's
    24-hour window; `template_variables` fill the approved template outside it
    (None: this digest has no template form, so it can go only in the window).
    `media_url` goes with the first part inside the window: a template is text
    only (Twilio refuses MediaUrl with ContentSid, 63016).
    """

    recipient: str  # whatsapp:+E164
    text: str
    digest: str = TEAM
    template_variables: Mapping[str, str] | None = None
    summary_id: str | None = None
    # A picture for the first free-form part (the day's chart, `insights.chart_links`); never with the template.
    media_url: str | None = None


@dataclass(frozen=True)
class Part:
    """One Twilio message: free-form text, or the template with its variables; `expected` is the body Twilio
    will show for it (what reconciliation looks for in the message list)."""

    expected: str
    content_sid: str | None = None
    variables: Mapping[str, str] | None = None
    media_url: str | None = None  # free-form parts only

    @property
    def hash(self) -> str:
        return body_hash(self.expected)


@dataclass(frozen=True)
class _Plan:
    kind: DeliveryKind
    parts: tuple[Part, ...]
    content_hash: str  # the ledger's content_hash: the whole text, or the rendered template


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
    """Send the one briefing `message` to every recipient of `settings` as the team digest (see `send_digests`)."""
    outgoing = [Outgoing(recipient_address(r), message, summary_id=summary_id) for r in settings.recipients]
    return send_digests(outgoing, report_date, target, settings, force=force, timeout=timeout, status_wait=status_wait)


def send_digests(
    outgoing: Sequence[Outgoing],
    report_date: dt.date,
    target: Target,
    settings: TwilioSettings,
    *,
    force: bool = False,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    status_wait: float = DEFAULT_STATUS_WAIT_SECONDS,
) -> list[Delivery]:
    """Deliver each digest unless it already went for `report_date`.

    Each person's window is read from Twilio first (`window_open`): inside it
    the full text goes as numbered free-form parts; outside it the approved
    template (TWILIO_TEMPLATE_SID) with the day's headline and what needs
    attention. A free-form part that still meets 63016 (the window closed
    during the run) is followed, once, by the template.

    `force` sends again what Twilio already accepted. `status_wait` bounds the
    seconds spent waiting for Twilio to hand new messages on (or fail them).
    Never raises for a recipient's Twilio error; raises `ConfigError` when
    Twilio refuses the credentials, `DeliveryBusy` when another delivery holds
    the DuckDB warehouse, and the driver's error when the ledger cannot be
    written, all before anything is sent.
    """
    if any(not o.text.strip() for o in outgoing):
        raise ValueError("a briefing is empty; nothing to send")
    sender = whatsapp_address(settings.from_number)
    ledger = DeliveryLedger(target)
    client = twilio_client(settings, timeout)
    check_credentials(client, settings)
    sending = _Sending(client, ledger, report_date, sender, settings)
    with ledger.claim_warehouse():
        ledger.ensure_table()
        unique = list({(o.recipient, o.digest): o for o in outgoing}.values())
        outcomes = [sending.claimed(o, force=force) for o in unique]
        deliveries = _await_statuses(client, ledger, report_date, outcomes, status_wait)
        for i, (o, delivery) in enumerate(zip(unique, deliveries)):
            if delivery.error_code == 63016 and delivery.kind == "session" and sending.template_ready(o):
                # The window closed between the look and the send: the template is what reaches the person now.
                log.warning("the 24-hour window of %s closed during the run; sending the template instead", o.recipient)
                retried = sending.claimed(o, force=False, mode="template")
                [deliveries[i]] = _await_statuses(client, ledger, report_date, [retried], status_wait)
                deliveries[i] = replace(
                    deliveries[i],
                    explanation=(
                        "the 24-hour window closed during the run (63016); the template went instead"
                        + (f". {deliveries[i].explanation}" if deliveries[i].explanation else "")
                    ),
                )
            elif delivery.error_code in MEDIA_ERRORS and delivery.kind == "session" and o.media_url:
                code = delivery.error_code
                log.warning(
                    "Twilio could not take the chart for %s (error %s); sending the text alone", o.recipient, code
                )
                retried = sending.claimed(replace(o, media_url=None), force=False, mode="session")
                [deliveries[i]] = _await_statuses(client, ledger, report_date, [retried], status_wait)
                deliveries[i] = replace(
                    deliveries[i],
                    explanation=(
                        f"Twilio could not take the chart (error {code}); the briefing went without it"
                        + (f". {deliveries[i].explanation}" if deliveries[i].explanation else "")
                    ),
                )
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
    words = {
        "sent": "sent to {}",
        "already_sent": "already sent to {}",
        "failed": "FAILED for {}",
        "unknown": "outcome UNKNOWN for {}",
        "busy": "left to another running delivery for {}",
    }
    parts = [words[s].format(n) for s, n in counts.items()]
    noun = "message" if any(d.digest != TEAM for d in deliveries) else "recipient"
    text = ", ".join(parts) + f" of {len(deliveries)} {noun}{'s' if len(deliveries) != 1 else ''}"
    if set(counts) == {"already_sent"}:
        text += "; nothing new was sent"
    return (0 if set(counts) <= {"sent", "already_sent"} else 1), text


def split_parts(text: str, limit: int = MAX_BODY_CHARS) -> list[str]:
    """`text` as WhatsApp messages of at most `limit` UTF-16 units, split at line breaks and numbered "(1/2)".

    Nothing is ever cut: lines are packed into each message while they fit,
    and only a single line longer than a whole message is split, between words.
    """
    body = text.strip()
    if _utf16_len(body) <= limit:
        return [body]
    room = limit - len("(99/99) ")
    lines: list[str] = []
    for line in body.split("\n"):
        while _utf16_len(line) > room:  # a line longer than a message: at the last space that fits
            cut = line[:room].rfind(" ")
            cut = cut if cut > 0 else room
            lines.append(line[:cut])
            line = line[cut:].lstrip()
        lines.append(line)
    parts: list[str] = []
    current: list[str] = []
    for line in lines:
        if current and _utf16_len("\n".join([*current, line])) > room:
            parts.append("\n".join(current).strip())
            current = []
        if current or line.strip():  # a part never starts with blank lines
            current.append(line)
    if current:
        parts.append("\n".join(current).strip())
    return [f"({i}/{len(parts)}) {part}" for i, part in enumerate(parts, 1)]


def fill_template(body: str, variables: Mapping[str, str]) -> str:
    """The template's body with its `{{n}}` placeholders filled: the text Twilio shows for the message."""
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: variables.get(m[1], m[0]), body)


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


def status_callback_url(settings: TwilioSettings) -> str | None:
    """Where Twilio reports each message's status: the API under PUBLIC_BASE_URL, when there is one."""
    return f"{settings.public_base_url.rstrip('/')}{STATUS_CALLBACK_PATH}" if settings.public_base_url else None


def recipient_address(recipient: object) -> str:
    """A recipient of the settings (a `Recipient`, or a number as written) as a WhatsApp address."""
    return whatsapp_address(getattr(recipient, "whatsapp", None) or str(recipient))


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


def window_open(client: Client, recipient: str, sender: str, now: dt.datetime | None = None) -> bool | None:
    """Whether `recipient` wrote to `sender` within WhatsApp's 24-hour window (with a margin), asked of Twilio.

    The window is read from Twilio's own Messages list (the person's inbound
    messages of the last 24 hours), not from a record of ours that could drift
    from it. None when Twilio cannot be asked.
    """
    now = now or dt.datetime.now(dt.UTC)
    opened_after = now - dt.timedelta(hours=24) + dt.timedelta(seconds=WINDOW_MARGIN_SECONDS)
    try:
        messages = client.messages.list(
            from_=recipient, to=sender, date_sent_after=now - dt.timedelta(hours=24), limit=20
        )
    except (TwilioException, requests.exceptions.RequestException) as exc:
        log.info("could not read the 24-hour window of %s from Twilio: %s", recipient, type(exc).__name__)
        return None
    return any(
        (m.direction or "").startswith("inbound")
        and (m.date_sent or m.date_created) is not None
        and (m.date_sent or m.date_created) >= opened_after  # type: ignore[operator]
        for m in messages
    )


# --------------------------------------------------------------------------- one recipient


class _Sending:
    """What one delivery run knows while it sends: the client, the ledger, the windows it read, the template."""

    def __init__(
        self, client: Client, ledger: DeliveryLedger, report_date: dt.date, sender: str, settings: TwilioSettings
    ) -> None:
        self.client, self.ledger, self.report_date, self.sender = client, ledger, report_date, sender
        self.template_sid = settings.template_sid
        self.status_callback = status_callback_url(settings)
        self._windows: dict[str, bool | None] = {}
        self._template_body: str | None = None

    def template_ready(self, outgoing: Outgoing) -> bool:
        return bool(self.template_sid) and outgoing.template_variables is not None

    def window(self, recipient: str) -> bool | None:
        if recipient not in self._windows:
            self._windows[recipient] = window_open(self.client, recipient, self.sender)
        return self._windows[recipient]

    def template_body(self) -> str | None:
        """The template's text as Twilio renders it (fetched once a run), for the body its messages will show."""
        if self._template_body is None and self.template_sid:
            try:
                content = self.client.content.v1.contents(self.template_sid).fetch()
                self._template_body = ((content.types or {}).get("twilio/text") or {}).get("body") or ""
            except (TwilioException, requests.exceptions.RequestException) as exc:
                log.warning("could not read the template %s from Twilio (%s)", self.template_sid, type(exc).__name__)
                self._template_body = ""
        return self._template_body or None

    def plan(self, outgoing: Outgoing, mode: DeliveryKind | None = None) -> _Plan | Delivery:
        """How the digest goes today: free-form parts in the window, the template outside; a Delivery if neither can."""
        if mode is None and not E164.match(outgoing.recipient.removeprefix("whatsapp:")):
            mode = "session"  # not a phone number: Twilio refuses it at once (21211), which says what to fix
        if mode is None:
            open_ = self.window(outgoing.recipient)
            mode = "session" if open_ or (open_ is None and not self.template_ready(outgoing)) else "template"
        if mode == "template" and not self.template_ready(outgoing):
            return Delivery(
                outgoing.recipient,
                "failed",
                digest=outgoing.digest,
                error_code=63016,
                explanation=(
                    "outside WhatsApp's 24-hour window (the person has not written in the last 24 hours) and no approved "
                    "template is configured: run `python -m insights.whatsapp create-template` and set the "
                    "TWILIO_TEMPLATE_SID it prints; nothing was sent"
                ),
            )
        if mode == "session":
            texts = split_parts(outgoing.text)
            # The chart rides on the first part only; the ledger's hash stays the text's, so a run without the
            # chart (or with a fresh link) still recognises the same briefing.
            parts = tuple(Part(text, media_url=outgoing.media_url if i == 0 else None) for i, text in enumerate(texts))
            return _Plan("session", parts, body_hash(outgoing.text.strip()))
        assert outgoing.template_variables is not None
        variables = dict(outgoing.template_variables)
        body = self.template_body()
        expected = fill_template(body, variables) if body else f"{self.template_sid} {json.dumps(variables)}"
        return _Plan("template", (Part(expected, self.template_sid, variables),), body_hash(expected))

    def claimed(self, outgoing: Outgoing, *, force: bool, mode: DeliveryKind | None = None) -> _Outcome:
        """`deliver` while holding the digest's claim, so a concurrent delivery cannot send it too."""
        try:
            with self.ledger.claim(self.report_date, outgoing.recipient, outgoing.digest):
                return self.deliver(outgoing, force=force, mode=mode)
        except DeliveryBusy as busy:
            if self.ledger.target == "duckdb":
                raise
            return _Outcome(
                Delivery(
                    outgoing.recipient, "busy", digest=outgoing.digest, explanation=f"{busy}; this run left it alone"
                )
            )

    def deliver(self, outgoing: Outgoing, *, force: bool, mode: DeliveryKind | None = None) -> _Outcome:
        ledger, day, recipient, digest = self.ledger, self.report_date, outgoing.recipient, outgoing.digest
        entry = ledger.get(day, recipient, digest)
        resent_because = None
        plan: _Plan | Delivery | None = None
        sent: list[str] = []  # parts of this plan already at Twilio
        if entry is not None and not force:
            if entry.status == "accepted":
                status, failure = entry.twilio_status, None
                sids = entry.part_sids or ((entry.message_sid,) if entry.message_sid else ())
                if sids and status not in SETTLED_STATUSES:
                    # It may have failed after the last run stopped looking (63016 comes after the 201).
                    status, failure = _look_at(self.client, ledger, day, recipient, sids[-1], digest)
                if failure is None:
                    return _Outcome(
                        Delivery(
                            recipient,
                            "already_sent",
                            entry.message_sid,
                            digest=digest,
                            kind=entry.kind,
                            parts=sids,
                            explanation="already sent for this date; --force sends it again",
                        ),
                        status,
                    )
                log.warning(
                    "Twilio failed the briefing already sent to %s (%s, error %s); sending it again",
                    recipient,
                    failure.message_sid,
                    failure.error_code,
                )
                resent_because = f"Twilio failed the earlier message {failure.message_sid} (error {failure.error_code})"
                if failure.error_code == 63016 and mode is None and self.template_ready(outgoing):
                    mode = "template"
            elif entry.status in ("pending", "unknown"):
                plan = self.plan(outgoing, entry.kind if mode is None else mode)
                if isinstance(plan, Delivery):
                    return _Outcome(plan)
                if entry.kind == plan.kind and entry.content_hash == plan.content_hash:
                    sent = list(entry.part_sids)  # the same briefing: what went, went; the rest follows
                settled = self._reconcile(entry, plan, sent)
                if settled is not None:
                    return settled
                if not sent:
                    log.info("no trace of the earlier attempt to %s in Twilio's message list; sending", recipient)
        if plan is None:
            plan = self.plan(outgoing, mode)
        if isinstance(plan, Delivery):
            if entry is None or entry.status != "accepted":
                ledger.start_attempt(day, recipient, "", outgoing.summary_id, digest=digest, kind="template")
                ledger.finish(
                    day, recipient, "failed", error_code=plan.error_code, error_message=plan.explanation, digest=digest
                )
            return _Outcome(plan)
        if not sent:
            # Any SID the row held moves to its previous_sids: reconciliation never mistakes it for this attempt's.
            ledger.start_attempt(day, recipient, plan.content_hash, outgoing.summary_id, digest=digest, kind=plan.kind)
        return self._send(outgoing, plan, sent, resent_because)

    def _send(self, outgoing: Outgoing, plan: _Plan, sent: list[str], resent_because: str | None) -> _Outcome:
        ledger, day, recipient, digest = self.ledger, self.report_date, outgoing.recipient, outgoing.digest
        status: str | None = None
        for part in plan.parts[len(sent) :]:
            try:
                sid, status = create_message(self.client, self.sender, recipient, part, self.status_callback)
            except _Refused as refused:
                ledger.finish(
                    day, recipient, "failed", error_code=refused.code, error_message=refused.explanation, digest=digest
                )
                return _Outcome(
                    Delivery(
                        recipient,
                        "failed",
                        sent[0] if sent else None,
                        refused.code,
                        refused.explanation,
                        digest=digest,
                        kind=plan.kind,
                        parts=tuple(sent),
                    )
                )
            except _Ambiguous as ambiguous:
                ledger.finish(day, recipient, "unknown", error_message=str(ambiguous), digest=digest)
                entry = ledger.get(day, recipient, digest)
                assert entry is not None
                found = self._find_part(entry, part)
                if isinstance(found, _Outcome):
                    return found
                if found is None:
                    return _Outcome(
                        Delivery(
                            recipient,
                            "unknown",
                            digest=digest,
                            kind=plan.kind,
                            parts=tuple(sent),
                            explanation=(
                                f"{ambiguous}. Twilio may have accepted the message; the next run looks for it in "
                                "Twilio's message list and sends only if it is not there."
                            ),
                        )
                    )
                sid, status = found.sid, found.status  # this very attempt went through
            ledger.add_part(day, recipient, sid, digest)
            sent.append(sid)
        ledger.finish(
            day, recipient, "accepted", message_sid=sent[0], twilio_status=status, digest=digest, kind=plan.kind
        )
        return _Outcome(
            Delivery(
                recipient, "sent", sent[0], explanation=resent_because, digest=digest, kind=plan.kind, parts=tuple(sent)
            ),
            status,
        )

    def _reconcile(self, entry: LedgerEntry, plan: _Plan, sent: list[str]) -> _Outcome | None:
        """Settle an interrupted attempt from Twilio's message list.

        Each part is recorded the moment Twilio accepts it, so only the part in
        flight when the attempt stopped can exist unrecorded: found, it joins
        `sent`, and when every part is then at Twilio the digest is settled
        (`already_sent`). An earlier attempt with other content (a rerun built
        another briefing) settles the day when any of it is found. Returns an
        `unknown` delivery when Twilio cannot be asked (nothing is sent
        blindly), and None when the rest should be sent.
        """
        same = entry.kind == plan.kind and entry.content_hash == plan.content_hash
        if same:
            if len(sent) == len(plan.parts):
                return self._settled(entry, sent, None)
            hashes = {plan.parts[len(sent)].hash}
        else:
            hashes = {entry.content_hash, *(p.hash for p in plan.parts)} - {""}
        found = self._find(entry, hashes)
        if found is None or isinstance(found, _Outcome):
            return found
        log.info("found the attempt to %s in Twilio's message list: %s (%s)", entry.recipient, found.sid, found.status)
        failure = _settle(self.ledger, entry.report_date, entry.recipient, found, entry.digest)
        if failure is not None:
            return _Outcome(failure, found.status)
        self.ledger.add_part(entry.report_date, entry.recipient, found.sid, entry.digest)
        sent.append(found.sid)
        if not same or len(sent) == len(plan.parts):
            return self._settled(entry, sent, found.status)
        return None

    def _settled(self, entry: LedgerEntry, sent: list[str], status: str | None) -> _Outcome:
        self.ledger.finish(
            entry.report_date,
            entry.recipient,
            "accepted",
            message_sid=sent[0],
            twilio_status=status,
            digest=entry.digest,
        )
        return _Outcome(
            Delivery(
                entry.recipient,
                "already_sent",
                sent[0],
                digest=entry.digest,
                kind=entry.kind,
                parts=tuple(sent),
                explanation="an earlier attempt had reached Twilio; not sent again",
            ),
            status,
        )

    def _find_part(self, entry: LedgerEntry, part: Part) -> MessageInstance | _Outcome | None:
        found = self._find(entry, {part.hash})
        if isinstance(found, MessageInstance):
            failure = _settle(self.ledger, entry.report_date, entry.recipient, found, entry.digest)
            if failure is not None:
                return _Outcome(failure, found.status)
        return found

    def _find(self, entry: LedgerEntry, hashes: set[str]) -> MessageInstance | _Outcome | None:
        try:
            return _find_message(
                self.client,
                entry.recipient,
                self.sender,
                entry.updated_at - RECONCILE_MARGIN_SECONDS,
                hashes,
                self.ledger.known_sids(entry.recipient),
            )
        except (TwilioException, requests.exceptions.RequestException) as exc:
            return _Outcome(
                Delivery(
                    entry.recipient,
                    "unknown",
                    digest=entry.digest,
                    explanation=(
                        f"An attempt may have reached Twilio and its message list could not be checked "
                        f"({type(exc).__name__}); nothing more was sent. The next run checks again."
                    ),
                )
            )


def create_message(
    client: Client, sender: str, recipient: str, part: Part, status_callback: str | None = None
) -> tuple[str, str | None]:
    """POST one message: its SID and status. Retry only answers Twilio guarantees were not processed (429).

    A 503 is not one of them: Twilio may have created the message before
    answering it, so it is ambiguous like any other 5xx.
    """
    what: dict[str, object] = (
        {"content_sid": part.content_sid, "content_variables": json.dumps(dict(part.variables or {}))}
        if part.content_sid
        else {"body": part.expected}
    )
    if part.media_url and not part.content_sid:
        what["media_url"] = [part.media_url]
    if status_callback:
        what["status_callback"] = status_callback
    for delay in (*RETRY_DELAYS_SECONDS, None):
        try:
            created = client.messages.create(to=recipient, from_=sender, **what)  # type: ignore[arg-type]
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
                raise _Refused(
                    None, f"Could not connect to Twilio ({type(exc).__name__}); nothing was sent, the next run retries."
                ) from exc
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


def _find_message(
    client: Client, recipient: str, sender: str, since: float, hashes: set[str], exclude: Collection[str]
) -> MessageInstance | None:
    """Our newest message to `recipient` with one of these body hashes created after `since`.

    Two lists, because `date_sent` stays null while a message is queued and
    Twilio's DateSent filter then misses it: the most recent page without a date
    filter first, then everything sent since the day of `since`.
    """
    since_day = dt.datetime.fromtimestamp(since, dt.UTC).date()
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
    retried. Every part of a briefing in parts is looked at. The pause between
    looks doubles from a quarter of a second.
    """
    deliveries = [outcome.delivery for outcome in outcomes]
    waiting = {
        (i, sid)
        for i, (delivery, status) in enumerate(outcomes)
        if delivery.status in ("sent", "already_sent") and status in WAITING_STATUSES
        for sid in (delivery.parts or ((delivery.message_sid,) if delivery.message_sid else ()))
    }
    deadline = time.monotonic() + wait
    pause = FIRST_STATUS_PAUSE_SECONDS
    while waiting:
        for i, sid in sorted(waiting):
            delivery = deliveries[i]
            if delivery.status == "failed":  # another part failed already
                waiting.discard((i, sid))
                continue
            status, failure = _look_at(client, ledger, report_date, delivery.recipient, sid, delivery.digest)
            if failure is not None:
                deliveries[i] = replace(failure, kind=delivery.kind, parts=delivery.parts)
            if status not in WAITING_STATUSES:  # handed on, failed, or gone (None: it cannot be found)
                waiting.discard((i, sid))
        remaining = deadline - time.monotonic()
        if not waiting or remaining <= 0:
            break
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, 2.0)
    for i in {i for i, _ in waiting}:
        deliveries[i] = replace(
            deliveries[i],
            explanation=(
                f"Twilio accepted the message but had not passed it on to WhatsApp after {wait:g}s; "
                "the next run checks it again and resends if it failed."
            ),
        )
    return deliveries


def _look_at(
    client: Client, ledger: DeliveryLedger, report_date: dt.date, recipient: str, sid: str, digest: str = TEAM
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
    failure = _settle(ledger, report_date, recipient, message, digest)
    if failure is None:
        ledger.note_twilio_status(report_date, recipient, message.status, digest)  # type: ignore[arg-type]
    return message.status, failure  # type: ignore[return-value]


def _settle(
    ledger: DeliveryLedger, report_date: dt.date, recipient: str, message: MessageInstance, digest: str = TEAM
) -> Delivery | None:
    """If Twilio failed `message`, record the failure (the next run retries) and return the failed delivery."""
    if message.status not in FAILED_STATUSES:
        return None
    code = message.error_code
    explanation = (
        explain(code, message.error_message)
        if code
        else (
            f"Twilio reports the message {message.status}{': ' + message.error_message if message.error_message else ''}."
        )
    )
    ledger.finish(
        report_date,
        recipient,
        "failed",
        message_sid=message.sid,
        error_code=code,
        error_message=explanation,
        twilio_status=message.status,
        digest=digest,
    )
    return Delivery(recipient, "failed", message.sid, code, explanation, digest=digest)


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
    if settings.api_base:  # both hosts the project uses: the Messages API and the Content API
        client.api.base_url = settings.api_base.rstrip("/")
        client.content.base_url = settings.api_base.rstrip("/")
    return client


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _log_delivery(delivery: Delivery, report_date: dt.date) -> None:
    if delivery.status in ("sent", "already_sent"):
        log.info(
            "briefing for %s to %s (%s): %s as %s (%s)",
            report_date,
            delivery.recipient,
            delivery.digest,
            delivery.status,
            delivery.kind,
            " ".join(delivery.parts) or delivery.message_sid,
        )
    elif delivery.status == "failed":
        log.error(
            "briefing for %s to %s failed (Twilio error %s): %s",
            report_date,
            delivery.recipient,
            delivery.error_code,
            delivery.explanation,
        )
    else:
        log.warning("briefing for %s to %s: outcome unknown: %s", report_date, delivery.recipient, delivery.explanation)


# --------------------------------------------------------------------------- the template

TEMPLATE_NAME = "crm_daily_briefing"
# A utility template (an internal report, nothing promotional): text before the first placeholder and after the
# last, text between any two, numbered in order: what WhatsApp's review asks of a template's body.
TEMPLATE_BODY = "Good morning. Here is {{1}}.\n\n{{2}}\n\nNeeds attention: {{3}}\n\nReply to get the full briefing."
TEMPLATE_SAMPLES = {
    "1": "the sales briefing for Mon 7 Dec 2026",
    "2": "Open pipeline is 1.24M across 42 deals (weighted 512K).",
    "3": "3 open deals worth 85K are past the closing date; 1 deal lost, worth 12K.",
}


def create_template(client: Client, name: str = TEMPLATE_NAME) -> tuple[str, str]:
    """Create the briefing's template with the Content API and submit it to WhatsApp as a utility template.

    Returns (its HX SID, the approval status Twilio reports).
    """
    from twilio.rest.content.v1.content import ContentList

    request = ContentList.ContentCreateRequest(
        {
            "friendly_name": name,
            "language": "en",
            "variables": TEMPLATE_SAMPLES,
            "types": {"twilio/text": {"body": TEMPLATE_BODY}},
        }
    )
    content = client.content.v1.contents.create(request)
    from twilio.rest.content.v1.content.approval_create import ApprovalCreateList

    approval = client.content.v1.contents(content.sid).approval_create.create(
        ApprovalCreateList.ContentApprovalRequest({"name": name, "category": "UTILITY"})
    )
    return str(content.sid), str(approval.status or "received")


def template_status(client: Client, sid: str) -> tuple[str, str]:
    """(WhatsApp approval status, rejection reason) of template `sid`: approved, pending, received, rejected, ..."""
    fetched = client.content.v1.contents(sid).approval_fetch().fetch()
    whatsapp = fetched.whatsapp or {}
    return str(whatsapp.get("status") or "unsubmitted"), str(whatsapp.get("rejection_reason") or "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m insights.whatsapp",
        description=(
            "The WhatsApp template the briefing uses outside the 24-hour window: create it (Content API), submit it "
            "for WhatsApp approval as a utility template, and see its approval status."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create-template", help="create the template and submit it for approval")
    create.add_argument("--name", default=TEMPLATE_NAME, help=f"the template's name (default {TEMPLATE_NAME})")
    commands.add_parser("template-status", help="the approval status of TWILIO_TEMPLATE_SID")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        settings = TwilioSettings.from_env(recipients=())
        client = twilio_client(settings)
        check_credentials(client, settings, strict=True)
        if args.command == "create-template":
            sid, status = create_template(client, args.name)
            print(f"created template {args.name} ({sid}); WhatsApp approval: {status}", file=sys.stderr)
            print("add this setting (environment, .env or the workflow's secrets):", file=sys.stderr)
            print(f"TWILIO_TEMPLATE_SID={sid}")
            return 0
        if not settings.template_sid:
            raise ConfigError("TWILIO_TEMPLATE_SID is not set (python -m insights.whatsapp create-template makes one)")
        status, reason = template_status(client, settings.template_sid)
        print(f"{settings.template_sid}: {status}" + (f" ({reason})" if reason else ""))
        return 0 if status == "approved" else 1
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (TwilioException, requests.exceptions.RequestException) as exc:
        print(
            f"error: Twilio could not be asked: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}", file=sys.stderr
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
