"""A local Twilio emulator for WhatsApp: the 2010-04-01 Messages API and the v1 Content API, over real HTTP.

Why it exists: the delivery code is tested end to end with the real `twilio`
client, and an emulator kinder than Twilio turns a broken delivery into a green
suite. So every rule below is one Twilio or Meta documents (each is cited where
it is encoded), and where the sources disagree or say nothing the emulator takes
the reading that is *not* kinder than Twilio, and says so in a comment.

Wire contract. The real client talks to it once `client.api.base_url` and
`client.content.base_url` (or `TWILIO_API_BASE`) point here. Messages: form-encoded
creates, HTTP Basic auth, 201 with the Message resource (RFC 2822 dates, string
`num_segments`/`num_media`), list pages whose only non-meta key is `messages`,
and the legacy error body `{"code", "message", "more_info", "status"}` (never
RFC 9457, which would make the SDK raise a different exception). Content API:
JSON bodies (twilio-python sends JSON there, with every unused content type as
`null`), ISO 8601 `...Z` dates (twilio-python parses them with
`deserialize.iso8601_datetime`), list pages `{"contents": [...], "meta": {"key": "contents", ...}}`.

The 24-hour customer-service window, per recipient, by default. WhatsApp lets
a business send free-form messages (`Body` and/or `MediaUrl`) only within 24
hours of the recipient's last message to it; anything else needs an approved
template sent with `ContentSid` (twilio.com/docs/api/errors/63016). So a
free-form message to a `whatsapp:` number that never wrote, or wrote more than 24
hours ago, answers 201 `queued` and then turns `failed` with 63016, as Twilio
does (it is not a 400). The window is decided when the message is created.
`inbound(number, at=...)` simulates that person writing to the sender: it creates
the inbound Message resource (listed and fetchable like any other), opens the
window from `at`, and POSTs Twilio's incoming-message webhook if one is set.
`accept(number)` only stops a `reject(...)`; it opens no window.

Templates. `POST /v1/Content` creates one; `POST .../ApprovalRequests/whatsapp`
submits it to WhatsApp: `received`, then `pending`, and it stays pending (Meta
takes minutes to days) until a test calls `approve(sid)` / `reject_template(sid,
reason)` or sets `approval_delay`. Meta's format rules are applied at submission
and turn the template `rejected` with a reason. A `ContentSid` send renders the
`twilio/text` body with `ContentVariables` (defaults from the template's
`variables`); outside the window the template must be approved, or the message
fails with 63016; inside it, WhatsApp needs no approval for twilio/text.

Messages move by themselves: a background ticker takes each new message from
`queued` to `sent` to `delivered` (`STATUS_STEP_SECONDS` apart, after any
`hold_status`), or to `failed` with the code decided at creation, and anyone
looking (a fetch, a list, `.messages`) sees every move whose time has come.
`set_status` moves one by hand. Each move after the initial status POSTs the
message's `StatusCallback`, form-encoded and signed with `X-Twilio-Signature`
exactly as Twilio signs, in order, from a background thread; every attempt is
recorded in `.callbacks` (`wait_callbacks(n)` waits for them). A message with
`MediaUrl`s is answered first; the media are then fetched with GET, as Twilio
does, recorded in `.media_fetches`, and fail the message when WhatsApp would
not take them.

Knobs reproduce what a delivery ledger must survive: numbers rejected with a
given error code (synchronously, 400, for the codes Twilio refuses at once,
such as 21211, 21408, 21610, 21614; asynchronously for the 63xxx ones), a 429
that creates nothing, and the ambiguous outcomes that create the message but
leave the client unsure (500 or 503 after the create, a response slower than
the client's timeout, a dropped connection).

    with TwilioEmulator() as twilio:
        twilio.inbound("+15550000001", at=now - timedelta(hours=1))  # Ana wrote an hour ago
        twilio.reject("+15550000002", 63015)  # 201 queued, then failed with 63015
        twilio.fail_next(status=500)          # next create: message created, client sees 500
        ...
        assert len(twilio.messages_to("whatsapp:+15550000001")) == 1

What happened is kept for assertions: `.messages` (what was sent through the
API, oldest first; the inbound ones are in `.inbound_messages`, and both are in
the API's list, newest first), `.requests`, `.callbacks`, `.media_fetches`.
A separate process (a benchmark) uses the control routes: `POST /_emulator/inbound
{"from": "+1555...", "body": "hi", "hours_ago": 1}` simulates a reply,
`GET /_emulator/messages` and `GET /_emulator/callbacks` show what happened,
`POST /_emulator/reset` starts over.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import math
import queue
import re
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

API_VERSION = "2010-04-01"
SANDBOX_SENDER = "whatsapp:+14155238886"
# WhatsApp's customer-service window (twilio.com/docs/api/errors/63016).
WINDOW = dt.timedelta(hours=24)
# Pause between a message's automatic moves (queued -> sent -> delivered): small, so tests stay fast.
STATUS_STEP_SECONDS = 0.05
BODY_MAX_CHARS = 1600  # `Body`, and a twilio/text body (twilio.com/docs/content/twilio-text; errors/21617)
TEMPLATE_MAX_CHARS = 1024  # a WhatsApp template, variables substituted (twilio.com/docs/api/errors/63021)
TEMPLATE_CATEGORIES = frozenset({"UTILITY", "MARKETING", "AUTHENTICATION"})

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_ACCOUNT = re.compile(rf"^/{API_VERSION}/Accounts/(?P<account>AC[0-9a-f]{{32}})\.json$")
_MESSAGES = re.compile(
    rf"^/{API_VERSION}/Accounts/(?P<account>AC[0-9a-f]{{32}})/Messages(?:/(?P<sid>[A-Z]{{2}}[0-9a-f]{{32}}))?\.json$"
)
_CONTENT = re.compile(r"^/v1/Content(?:/(?P<sid>[^/]+)(?P<sub>/ApprovalRequests(?P<wa>/whatsapp)?)?)?$")
_CONTENT_SID = re.compile(r"^HX[0-9a-fA-F]{32}$")
_PLACEHOLDER = re.compile(r"\{\{([A-Za-z0-9_]+)\}\}")  # variable names cannot hold spaces (content/using-variables...)
_TEMPLATE_NAME = re.compile(r"^[a-z0-9_]{1,512}$")
# A body variable may not hold a newline, a tab or more than four consecutive spaces (twilio.com/docs/api/errors/21656).
_BAD_VARIABLE = re.compile(r"[\n\t]| {5,}")

# Twilio's wording for the errors the emulator can produce; `{to}` / `{from_}` / `{path}` are filled in.
ERROR_TEXT = {
    11200: (400, "HTTP retrieval failure"),
    11751: (400, "Media exceeds messaging provider size limit"),
    20001: (400, "Bad request"),
    20003: (401, "Authenticate"),
    20404: (404, "The requested resource {path} was not found"),
    20429: (429, "Too Many Requests"),
    20500: (500, "Internal Server Error"),
    20503: (503, "Service Unavailable"),
    21211: (400, "The 'To' number {to} is not a valid phone number."),
    21408: (400, "Permission to send an SMS has not been enabled for the region indicated by the 'To' number: {to}."),
    21602: (400, "Message body is required."),
    21603: (400, "A 'From' phone number is required."),
    21604: (400, "A 'To' phone number is required."),
    21610: (400, "Attempt to send to unsubscribed recipient"),
    21614: (400, "'To' number is not a valid mobile number"),
    21617: (400, "The concatenated message body exceeds the 1600 character limit."),
    21654: (400, "A ContentSid must be specified if ContentVariables are provided in the request."),
    21655: (400, "The ContentSid is Invalid"),
    21656: (400, "The Content Variables parameter is invalid."),
    63007: (400, "Twilio could not find a Channel with the specified From address: {from_}"),
    63015: (400, "Channel Sandbox can only send messages to phone numbers that have joined the Sandbox"),
    63016: (
        400,
        "Failed to send freeform message because you are outside the allowed window. "
        "If you are using WhatsApp, please use a Message Template.",
    ),
    63018: (400, "Rate limit exceeded for Channel"),
    63019: (400, "Media failed to download"),
    63021: (400, "Channel invalid content error"),
    63028: (400, "Number of parameters provided does not match the expected number of parameters"),
    63034: (400, "Media exceeds size limit"),
}
# The WhatsApp errors Twilio reports after answering 201: the message turns `failed` with the code.
ASYNC_CODES = frozenset({11200, 11751, 63015, 63016, 63018, 63019, 63021, 63028, 63034})

# What WhatsApp takes through Twilio, with its size limit in bytes
# (twilio.com/docs/whatsapp/guidance-whatsapp-media-messages): images 5 MB, anything 16 MB in all.
# image/webp is "only used for WhatsApp stickers, which have additional requirements": a static sticker
# is at most 100 KB, the stricter of Meta's two sticker limits (animated ones may reach 500 KB).
_MB = 1024 * 1024
MEDIA_LIMITS = {
    "image/jpeg": 5 * _MB,
    "image/png": 5 * _MB,
    "image/webp": 100 * 1024,
    "audio/ogg": 16 * _MB,
    "audio/amr": 16 * _MB,
    "audio/3gpp": 16 * _MB,
    "audio/aac": 16 * _MB,
    "audio/mpeg": 16 * _MB,
    "video/mp4": 16 * _MB,
    "application/pdf": 16 * _MB,
    "application/msword": 16 * _MB,
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": 16 * _MB,
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": 16 * _MB,
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": 16 * _MB,
    "text/vcard": 16 * _MB,
    "text/x-vcard": 16 * _MB,
}
MEDIA_TOTAL_LIMIT = 16 * _MB


def _rfc2822(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")


def _iso(moment: dt.datetime) -> str:
    """The Content API's date format, the one twilio-python's `iso8601_datetime` parses."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _address_key(address: str) -> str:
    """`whatsapp:+1555...` and `+1555...` name the same recipient for knobs and lookups."""
    return address.strip().removeprefix("whatsapp:")


def _parse_date_filter(value: str) -> dt.datetime:
    """`DateSent` values come as `YYYY-MM-DD` (the docs) or `YYYY-MM-DDTHH:MM:SSZ` (what twilio-python sends)."""
    if len(value) == 10:
        return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC)
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True)
class _Step:
    """A move a message makes by itself, and from when."""

    at: float  # time.monotonic()
    status: str
    error_code: int | None = None


@dataclass
class _Fault:
    kind: str  # "error" | "delay" | "drop" | "throttle"
    method: str  # which requests it hits: "POST" (creates) or "GET" (lists and fetches)
    status: int = 500
    create: bool = True  # create the message before misbehaving (POST only)
    seconds: float = 0.0


@dataclass
class _Approval:
    """A template's WhatsApp approval request, as submitted, and what decided it."""

    name: str
    category: str
    submitted: float  # time.monotonic()
    rule_broken: str | None = None  # the reason Meta's format check rejects it with
    decision: str | None = None  # "approved" | "rejected", by a knob
    reason: str = ""


class TwilioEmulator:
    """A Twilio account with one WhatsApp sender, served on 127.0.0.1 on a free port."""

    def __init__(
        self,
        account_sid: str | None = None,
        auth_token: str | None = None,
        senders: tuple[str, ...] = (SANDBOX_SENDER,),
    ) -> None:
        self.account_sid = account_sid or "AC" + secrets.token_hex(16)
        self.auth_token = auth_token or secrets.token_hex(16)
        self.senders = set(senders)
        self._first_sender = senders[0]
        self._channel_install_sid = "XE" + secrets.token_hex(16)
        self._lock = threading.Lock()
        self._messages: list[dict[str, Any]] = []  # both directions, in creation order
        self._by_sid: dict[str, dict[str, Any]] = {}
        self._plans: dict[str, list[_Step]] = {}  # by message SID: the moves still ahead of it
        self._media_pending: dict[str, float] = {}  # by message SID: waiting for its media; when it may move
        self._status_callbacks: dict[str, str] = {}  # by message SID
        self._status_delay = 0.0
        self._rejections: dict[str, tuple[int, bool]] = {}  # by number: (code, asynchronous)
        self._last_inbound: dict[str, dt.datetime] = {}  # by number: when they last wrote
        self._faults: list[_Fault] = []
        self._contents: dict[str, dict[str, Any]] = {}  # by HX SID: the Content resource
        self._approvals: dict[str, _Approval] = {}  # by HX SID
        self.approval_delay: float | None = None  # seconds after submission until WhatsApp approves; None: never
        self.inbound_webhook: str | None = None
        self.requests: list[tuple[str, str, Any]] = []
        self.callbacks: list[dict[str, Any]] = []
        self.media_fetches: list[dict[str, Any]] = []
        self._callbacks_changed = threading.Condition()
        self._callback_queue: queue.Queue[tuple[str, str, dict[str, str]] | None] = queue.Queue()
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> TwilioEmulator:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._server.serve_forever, args=(0.05,), name="twilio-emulator", daemon=True),
            threading.Thread(target=self._tick, name="twilio-emulator-ticker", daemon=True),
            threading.Thread(target=self._deliver_callbacks, name="twilio-emulator-callbacks", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._stop.set()
        self._callback_queue.put(None)  # after the callbacks already due: they are still sent
        for thread in self._threads[1:]:
            thread.join(timeout=5)
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None, "use the emulator as a context manager"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def sender(self) -> str:
        """The (first) WhatsApp sender, `whatsapp:+E164`: where `inbound` messages go."""
        return self._first_sender

    def env(self, *recipients: str) -> dict[str, str]:
        """The variables a user would export to send through this account."""
        return {
            "TWILIO_ACCOUNT_SID": self.account_sid,
            "TWILIO_AUTH_TOKEN": self.auth_token,
            "TWILIO_FROM_NUMBER": self._first_sender.removeprefix("whatsapp:"),
            "RECIPIENT_PHONE_NUMBER": ",".join(recipients),
            "TWILIO_API_BASE": self.url,
        }

    # ------------------------------------------------------------------ knobs

    def inbound(
        self,
        number: str,
        body: str = "hi",
        *,
        at: dt.datetime | None = None,
        profile_name: str = "WhatsApp User",
    ) -> dict[str, Any]:
        """`number` writes `body` to the (first) sender at `at` (now by default): the inbound Message resource.

        Opens (or extends) that number's 24-hour window from `at`; put `at` more
        than 24 hours back to leave it closed. POSTs the incoming-message webhook,
        if one is set, and returns once that POST is answered (recorded in `.callbacks`).
        """
        address = number if number.startswith("whatsapp:") else f"whatsapp:{number}"
        if not _E164.match(_address_key(address)):
            raise ValueError(f"not an E.164 number: {number!r}")
        moment = at or _now()
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        stamp = _rfc2822(moment)
        sid = "SM" + secrets.token_hex(16)
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}.json"
        message = {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": body,
            "date_created": stamp,
            "date_sent": stamp,
            "date_updated": stamp,
            "direction": "inbound",
            "error_code": None,
            "error_message": None,
            "from": address,
            "messaging_service_sid": None,
            "num_media": "0",
            "num_segments": "1",
            "price": None,
            "price_unit": None,
            "sid": sid,
            "status": "received",
            "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
            "to": self._first_sender,
            "uri": uri,
        }
        key = _address_key(address)
        with self._lock:
            self._messages.append(message)
            self._by_sid[sid] = message
            if key not in self._last_inbound or moment > self._last_inbound[key]:
                self._last_inbound[key] = moment
            webhook = self.inbound_webhook
        if webhook:
            # The fields Twilio sends for an incoming WhatsApp message (twilio.com/docs/messaging/guides/webhook-request).
            self._post(
                "inbound",
                webhook,
                {
                    "MessageSid": sid,
                    "SmsMessageSid": sid,
                    "SmsSid": sid,
                    "AccountSid": self.account_sid,
                    "From": address,
                    "To": self._first_sender,
                    "Body": body,
                    "NumMedia": "0",
                    "NumSegments": "1",
                    "ReferralNumMedia": "0",
                    "ProfileName": profile_name,
                    "WaId": key.removeprefix("+"),
                    "SmsStatus": "received",
                    "MessageType": "text",
                    "ApiVersion": API_VERSION,
                },
                sid,
            )
        return dict(message)

    def set_inbound_webhook(self, url: str | None) -> None:
        """Where Twilio POSTs each incoming message (the sender's "A message comes in" URL); None: nowhere."""
        with self._lock:
            self.inbound_webhook = url

    def reject(self, number: str, code: int, *, asynchronous: bool | None = None) -> None:
        """Refuse every message to `number` with Twilio's error `code`.

        As Twilio does: the 63xxx WhatsApp errors (ASYNC_CODES) come after a 201
        `queued`, when the message turns `failed`; the others (21211, 21408,
        21610, 21614, ...) are a 400 and create nothing. `asynchronous` overrides.
        """
        with self._lock:
            later = code in ASYNC_CODES if asynchronous is None else asynchronous
            self._rejections[_address_key(number)] = (code, later)

    def accept(self, number: str) -> None:
        """Stop rejecting `number` (the user fixed it). It opens no 24-hour window: only `inbound` does."""
        with self._lock:
            self._rejections.pop(_address_key(number), None)

    def fail_next(self, status: int = 500, *, method: str = "POST", create: bool = True, count: int = 1) -> None:
        """The next `count` `method` requests answer `status`; creates still create the message unless `create=False`."""
        self._add(count, _Fault("error", method, status=status, create=create))

    def delay_next(self, seconds: float, *, create: bool = True, count: int = 1) -> None:
        """The next creates (message created first, unless `create=False`) answer only after `seconds`."""
        self._add(count, _Fault("delay", "POST", create=create, seconds=seconds))

    def drop_next(self, *, create: bool = True, count: int = 1) -> None:
        """The next creates close the connection without an answer (after creating the message, by default)."""
        self._add(count, _Fault("drop", "POST", create=create))

    def throttle_next(self, count: int = 1) -> None:
        """The next creates get 429 / 20429, which Twilio guarantees created nothing."""
        self._add(count, _Fault("throttle", "POST", status=429, create=False))

    def hold_status(self, seconds: float = math.inf) -> None:
        """Messages created from now on stay `queued` for `seconds` (forever by default) before moving on."""
        with self._lock:
            self._status_delay = seconds

    def set_status(self, sid: str, status: str, error_code: int | None = None) -> None:
        """Move a message along its lifecycle by hand (sent, delivered, read, failed, undelivered), with its callback."""
        with self._lock:
            self._plans.pop(sid, None)
            self._media_pending.pop(sid, None)
            self._move(self._by_sid[sid], status, error_code)

    def approve(self, sid: str) -> None:
        """WhatsApp approves template `sid` (submitting it first, as `friendly_name`/UTILITY, if nobody did)."""
        self._decide(sid, "approved", "")

    def reject_template(self, sid: str, reason: str = "The template was rejected by WhatsApp.") -> None:
        """WhatsApp rejects template `sid` with `reason` (its `rejection_reason`)."""
        self._decide(sid, "rejected", reason)

    def reset(self) -> None:
        with self._lock:
            self._messages.clear()
            self._by_sid.clear()
            self._plans.clear()
            self._media_pending.clear()
            self._status_callbacks.clear()
            self._status_delay = 0.0
            self._rejections.clear()
            self._last_inbound.clear()
            self._faults.clear()
            self._contents.clear()
            self._approvals.clear()
            self.approval_delay = None
            self.inbound_webhook = None
            self.requests.clear()
            self.media_fetches.clear()
        with self._callbacks_changed:
            self.callbacks.clear()

    def _add(self, count: int, fault: _Fault) -> None:
        with self._lock:
            self._faults.extend([fault] * count)

    def _decide(self, sid: str, decision: str, reason: str) -> None:
        with self._lock:
            content = self._contents[sid]
            approval = self._approvals.get(sid)
            if approval is None:
                name = re.sub(r"[^a-z0-9_]", "_", (content.get("friendly_name") or sid).lower())
                approval = self._approvals[sid] = _Approval(name, "UTILITY", time.monotonic())
            approval.decision, approval.reason = decision, reason

    # ------------------------------------------------------------------ what happened

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Every message sent through the API (outbound), each as the API renders it, oldest first.

        Looking moves every message whose time has come to its next status.
        Inbound ones (`inbound`) are in `inbound_messages`, and in the API's list.
        """
        with self._lock:
            self._advance(time.monotonic())
            return [dict(m) for m in self._messages if m["direction"] != "inbound"]

    @property
    def inbound_messages(self) -> list[dict[str, Any]]:
        """Every message people wrote to the sender (`inbound`), oldest created first."""
        with self._lock:
            return [dict(m) for m in self._messages if m["direction"] == "inbound"]

    def messages_to(self, address: str) -> list[dict[str, Any]]:
        key = _address_key(address)
        return [m for m in self.messages if _address_key(m["to"]) == key]

    def create_requests(self) -> int:
        """How many create POSTs reached the emulator (accepted or not)."""
        with self._lock:
            return sum(1 for method, path, _ in self.requests if method == "POST" and path.endswith("/Messages.json"))

    def settled(self, to: str | None = None, seconds: float = 5.0) -> list[dict[str, Any]]:
        """The outbound messages (to `to`), once each has gone as far as it goes by itself (delivered or
        failed; `read` only by hand), or after `seconds`: what the person would end up seeing."""
        deadline = time.monotonic() + seconds
        while True:
            messages = self.messages_to(to) if to else self.messages
            if (
                all(m["status"] not in ("queued", "accepted", "sending", "sent") for m in messages)
                or time.monotonic() > deadline
            ):
                return messages
            time.sleep(0.05)

    def wait_callbacks(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The callbacks recorded once there are at least `count` (status and inbound); TimeoutError after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._callbacks_changed:
            while len(self.callbacks) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{len(self.callbacks)} callbacks after {timeout}s, expected {count}: {self.callbacks}"
                    )
                self._callbacks_changed.wait(left)
            return list(self.callbacks)

    # ------------------------------------------------------------------ moving messages

    def _tick(self) -> None:
        """Messages move by themselves, whether or not anyone looks."""
        while not self._stop.wait(0.01):
            with self._lock:
                self._advance(time.monotonic())

    def _advance(self, now: float) -> None:
        """Make every move whose time has come. Call with the lock held."""
        for sid in list(self._plans):
            steps = self._plans[sid]
            while steps and steps[0].at <= now:
                step = steps.pop(0)
                self._move(self._by_sid[sid], step.status, step.error_code)
            if not steps:
                del self._plans[sid]

    def _plan(self, sid: str, start: float, code: int | None) -> None:
        """From `start`: queued -> failed with `code`, or queued -> sent -> delivered. Call with the lock held."""
        step = STATUS_STEP_SECONDS
        if code is not None:
            self._plans[sid] = [_Step(start + step, "failed", code)]
        else:
            self._plans[sid] = [_Step(start + step, "sent"), _Step(start + 2 * step, "delivered")]

    def _move(self, message: dict[str, Any], status: str, error_code: int | None) -> None:
        """A status change, and its status callback. Call with the lock held (callbacks keep this order)."""
        now = _rfc2822(_now())
        message.update(status=status, date_updated=now, error_code=error_code, error_message=None)
        if status in {"sent", "delivered", "read", "undelivered"} and message["date_sent"] is None:
            message["date_sent"] = now
        if error_code is not None:
            message["error_message"] = ERROR_TEXT.get(error_code, (400, "Error"))[1].format(
                to=message["to"], from_=message["from"], path=""
            )
        url = self._status_callbacks.get(message["sid"])
        if url:
            self._callback_queue.put(("status", url, self._status_params(message)))

    def _status_params(self, message: dict[str, Any]) -> dict[str, str]:
        """What Twilio POSTs to a StatusCallback (twilio.com/docs/messaging/guides/outbound-message-status-in-status-callbacks,
        and the WhatsApp fields seen in captured callbacks: ChannelPrefix, ChannelToAddress, ChannelInstallSid, EventType)."""
        status = message["status"]
        params = {
            "MessageSid": message["sid"],
            "SmsSid": message["sid"],
            "MessageStatus": status,
            "SmsStatus": status,
            "AccountSid": message["account_sid"],
            "From": message["from"],
            "To": message["to"],
            "ApiVersion": API_VERSION,
        }
        if message["to"].startswith("whatsapp:"):
            params.update(
                ChannelPrefix="whatsapp",
                ChannelToAddress=_address_key(message["to"]),
                ChannelInstallSid=self._channel_install_sid,
            )
        if message["messaging_service_sid"]:
            params["MessagingServiceSid"] = message["messaging_service_sid"]
        if status in {"failed", "undelivered"} and message["error_code"] is not None:
            params["ErrorCode"] = str(message["error_code"])
            params["ErrorMessage"] = message["error_message"] or ""
        if status in {"delivered", "read"}:
            params["EventType"] = status.upper()
        return params

    # ------------------------------------------------------------------ outgoing HTTP (callbacks, media)

    def signature(self, url: str, params: dict[str, str]) -> str:
        """`X-Twilio-Signature` for a form POST to `url` (twilio.com/docs/usage/webhooks/webhooks-security):
        base64 of HMAC-SHA1, keyed with the auth token, over the full URL then each parameter name and value,
        names sorted."""
        data = url + "".join(name + params[name] for name in sorted(params))
        digest = hmac.new(self.auth_token.encode(), data.encode(), hashlib.sha1).digest()
        return base64.b64encode(digest).decode()

    def _deliver_callbacks(self) -> None:
        while True:
            job = self._callback_queue.get()
            if job is None:
                return
            kind, url, params = job
            self._post(kind, url, params, params.get("MessageSid"))

    def _post(self, kind: str, url: str, params: dict[str, str], message_sid: str | None) -> None:
        """POST `params` to `url`, signed as Twilio signs, and record the attempt."""
        signature = self.signature(url, params)
        record: dict[str, Any] = {
            "kind": kind,
            "url": url,
            "params": dict(params),
            "signature": signature,
            "message_sid": message_sid,
            "status": None,
            "error": None,
        }
        request = urllib.request.Request(
            url,
            data=urlencode(params).encode(),
            method="POST",
            headers={
                "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
                "X-Twilio-Signature": signature,
                "I-Twilio-Idempotency-Token": secrets.token_hex(16),
                "User-Agent": "TwilioProxy/1.1",
            },
        )
        try:
            with _OPENER.open(request, timeout=5) as response:
                record["status"] = response.status
        except urllib.error.HTTPError as exc:
            record["status"] = exc.code
        except (urllib.error.URLError, OSError, ValueError) as exc:
            record["error"] = str(exc)
        with self._callbacks_changed:
            self.callbacks.append(record)
            self._callbacks_changed.notify_all()

    def _check_media(self, sid: str, urls: list[str]) -> None:
        """Fetch each MediaUrl with GET, as Twilio does after answering, and fail the message if WhatsApp would.

        Codes: a fetch that fails (connection, 4xx/5xx) 11200 "HTTP retrieval failure"; 0 bytes 63019
        (twilio.com/docs/api/errors/63019); a type WhatsApp does not take 63021 ("confirm their MIME type is
        supported by the messaging channel", errors/63021); an image over 5 MB 63034 ("re-attempt with media of
        size 5 MB or less", errors/63034); over 16 MB in all 11751 (errors/11751). Twilio documents no single
        code for each case on WhatsApp; these are the pages that name the cause.
        """
        failure: int | None = None
        total = 0
        for url in urls:
            record: dict[str, Any] = {"url": url, "status": None, "content_type": None, "bytes": 0, "error": None}
            try:
                with _OPENER.open(
                    urllib.request.Request(url, headers={"User-Agent": "TwilioProxy/1.1"}), timeout=5
                ) as r:
                    data = r.read(MEDIA_TOTAL_LIMIT + 1)
                    record.update(status=r.status, content_type=r.headers.get("Content-Type"), bytes=len(data))
            except urllib.error.HTTPError as exc:
                record.update(status=exc.code, content_type=exc.headers.get("Content-Type"))
                failure = failure or 11200
            except (urllib.error.URLError, OSError, ValueError) as exc:
                record["error"] = str(exc)
                failure = failure or 11200
            else:
                kind = (record["content_type"] or "").split(";")[0].strip().lower()
                total += record["bytes"]
                if record["bytes"] == 0:
                    failure = failure or 63019
                elif kind not in MEDIA_LIMITS:
                    failure = failure or 63021
                elif record["bytes"] > MEDIA_LIMITS[kind]:
                    failure = failure or (63034 if kind.startswith("image/") else 11751)
            with self._lock:
                self.media_fetches.append(record)
        if failure is None and total > MEDIA_TOTAL_LIMIT:
            failure = 11751
        with self._lock:
            start = self._media_pending.pop(sid, None)
            if start is not None:  # nobody moved it by hand meanwhile
                self._plan(sid, max(start, time.monotonic()), failure)

    # ------------------------------------------------------------------ the Messages API

    def _take_fault(self, method: str) -> _Fault | None:
        with self._lock:
            for i, fault in enumerate(self._faults):
                if fault.method == method:
                    return self._faults.pop(i)
        return None

    def _credentials_ok(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return hmac.compare_digest(user, self.account_sid) and hmac.compare_digest(password, self.auth_token)

    def _authorised(self, header: str | None, account: str) -> bool:
        return self._credentials_ok(header) and account == self.account_sid

    def _account(self) -> dict[str, Any]:
        """The account resource as Twilio returns it (the fields a client reads)."""
        return {
            "sid": self.account_sid,
            "friendly_name": "CRM Intelligence",
            "status": "active",
            "type": "Full",
            "owner_account_sid": self.account_sid,
            "auth_token": self.auth_token,
            "date_created": _rfc2822(dt.datetime(2024, 1, 1, tzinfo=dt.UTC)),
            "date_updated": _rfc2822(dt.datetime(2024, 1, 1, tzinfo=dt.UTC)),
            "uri": f"/{API_VERSION}/Accounts/{self.account_sid}.json",
            "subresource_uris": {"messages": f"/{API_VERSION}/Accounts/{self.account_sid}/Messages.json"},
        }

    def _in_window(self, to: str) -> bool:
        """Whether `to` wrote to the sender less than 24 hours ago. Call with the lock held."""
        last = self._last_inbound.get(_address_key(to))
        return last is not None and _now() - last < WINDOW

    def _create(
        self, account: str, form: dict[str, str], media_urls: list[str]
    ) -> tuple[int, dict[str, Any], Callable[[], None] | None]:
        """Validate and create a message: (HTTP status, body, what to do once the answer is sent)."""
        to, from_, body = form.get("To", ""), form.get("From", ""), form.get("Body", "")
        content_sid, raw_variables = form.get("ContentSid", ""), form.get("ContentVariables")
        if not to:
            return (*_error(21604), None)
        channel, _, number = to.rpartition(":")
        if channel not in {"", "whatsapp"} or not _E164.match(number):
            return (*_error(21211, to=to), None)
        if not from_ and not form.get("MessagingServiceSid"):
            return (*_error(21603), None)
        if from_ and from_ not in self.senders:
            return (*_error(63007, from_=from_), None)
        if raw_variables is not None and not content_sid:
            return (*_error(21654), None)  # twilio.com/docs/api/errors/21654
        if not body and not media_urls and not content_sid:
            return (*_error(21602), None)
        if len(body) > BODY_MAX_CHARS:
            return (*_error(21617), None)
        with self._lock:
            code, asynchronous = self._rejections.get(_address_key(to), (None, False))
            template = self._contents.get(content_sid) if content_sid else None
        if code is not None and not asynchronous:
            return (*_error(code, to=to, from_=from_), None)

        whatsapp = channel == "whatsapp"
        missing: list[str] = []
        if content_sid:
            if template is None:
                return (*_error(21655), None)  # unknown, deleted or another account's (errors/21655)
            text = _template_body(template)
            values, problem = _content_variables(raw_variables, _PLACEHOLDER.findall(text))
            if problem:
                return (*_error(21656), None)
            body, missing = _render(text, values, template.get("variables") or {})

        with self._lock:
            if code is None and whatsapp:
                in_window = self._in_window(to)
                if content_sid:
                    # Outside the window a template must be approved by WhatsApp (twilio.com/docs/content/
                    # content-types-overview: "Template Approval Required" out of session, none in session for
                    # twilio/text), and sent without Body or MediaUrl (errors/63016: "Remove Body and MediaUrl
                    # when you send a content template"). Twilio reports both as 63016.
                    if not in_window and (
                        self._approval_status(content_sid) != "approved" or form.get("Body") or media_urls
                    ):
                        code = 63016
                    elif missing:
                        code = 63028  # a placeholder with no value and no default (errors/63028)
                    elif len(body) > TEMPLATE_MAX_CHARS:
                        # errors/63021 states the 1,024 limit for template sends; applied in the window too,
                        # the stricter reading (Twilio does not say it lifts it in session).
                        code = 63021
                elif not in_window:
                    code = 63016  # free-form outside the 24-hour window (errors/63016)
            elif code is None and missing:
                code = 63028

            now = _rfc2822(_now())
            sid = "SM" + secrets.token_hex(16)
            uri = f"/{API_VERSION}/Accounts/{account}/Messages/{sid}.json"
            fetch_media = bool(media_urls) and not content_sid
            message = {
                "account_sid": account,
                "api_version": API_VERSION,
                "body": body,
                "date_created": now,
                "date_sent": None,
                "date_updated": now,
                "direction": "outbound-api",
                "error_code": None,
                "error_message": None,
                "from": from_,
                "messaging_service_sid": form.get("MessagingServiceSid"),
                "num_media": str(len(media_urls)) if fetch_media else "0",
                "num_segments": "1",
                "price": None,
                "price_unit": None,
                "sid": sid,
                "status": "accepted" if form.get("MessagingServiceSid") else "queued",
                "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
                "to": to,
                "uri": uri,
            }
            answer = dict(message)  # `queued`, whoever looks at the message meanwhile
            self._messages.append(message)
            self._by_sid[sid] = message
            if form.get("StatusCallback"):
                self._status_callbacks[sid] = form["StatusCallback"]
            start = time.monotonic() + self._status_delay
            if fetch_media and code is None:
                self._media_pending[sid] = start  # moves once its media are checked
            else:
                self._plan(sid, start, code)

        after = (
            (lambda: threading.Thread(target=self._check_media, args=(sid, media_urls), daemon=True).start())
            if fetch_media
            else None
        )
        return 201, answer, after

    def _list(self, account: str, query: dict[str, str]) -> dict[str, Any]:
        with self._lock:
            self._advance(time.monotonic())
            ordered = sorted(
                enumerate(self._messages),
                key=lambda im: (parsedate_to_datetime(im[1]["date_created"]), im[0]),
                reverse=True,
            )  # newest first, as Twilio lists them
            found = [dict(m) for _, m in ordered]
        if "To" in query:
            found = [m for m in found if m["to"] == query["To"]]
        if "From" in query:
            found = [m for m in found if m["from"] == query["From"]]
        for key, keep in (("DateSent", "eq"), ("DateSent>", "ge"), ("DateSent<", "le")):
            if key in query:
                # Like Twilio, a message not sent yet (queued, date_sent null) matches no DateSent filter.
                bound = _parse_date_filter(query[key])
                found = [m for m in found if m["date_sent"] and _matches(m["date_sent"], bound, keep)]
        page_size = max(1, min(int(query.get("PageSize", 50)), 1000))
        page = int(query.get("Page", 0))
        chunk = found[page * page_size : (page + 1) * page_size]
        base = f"/{API_VERSION}/Accounts/{account}/Messages.json"
        filters = {k: v for k, v in query.items() if k not in {"Page", "PageSize", "PageToken"}}

        def page_uri(number: int) -> str:
            return f"{base}?{urlencode({**filters, 'PageSize': page_size, 'Page': number})}"

        more = (page + 1) * page_size < len(found)
        return {
            "messages": chunk,
            "end": page * page_size + max(len(chunk) - 1, 0),
            "first_page_uri": page_uri(0),
            "next_page_uri": page_uri(page + 1) if more else None,
            "page": page,
            "page_size": page_size,
            "previous_page_uri": page_uri(page - 1) if page else None,
            "start": page * page_size,
            "uri": page_uri(page),
        }

    # ------------------------------------------------------------------ the Content API

    def _content_url(self, sid: str) -> str:
        return f"{self.url}/v1/Content/{sid}"

    def _create_content(self, payload: Any) -> tuple[int, dict[str, Any]]:
        """POST /v1/Content: `language` and `types` are required (twilio.com/docs/content/content-api-resources)."""
        if not isinstance(payload, dict):
            return _bad_request("The request body must be a JSON object")
        language, types, variables = payload.get("language"), payload.get("types"), payload.get("variables") or {}
        if not isinstance(language, str) or not language:
            return _bad_request("Missing required parameter language in the post body")
        if not isinstance(types, dict):
            return _bad_request("Missing required parameter types in the post body")
        # twilio-python sends every content type it knows, the unused ones as null.
        types = {
            name: {k: v for k, v in value.items() if v is not None} if isinstance(value, dict) else value
            for name, value in types.items()
            if value is not None
        }
        if not types:
            return _bad_request("At least one content type is required")
        text = types.get("twilio/text")
        if text is not None and (
            not isinstance(text, dict) or not isinstance(text.get("body"), str) or not text["body"]
        ):
            return _bad_request("twilio/text requires a body")
        if text is not None and len(text["body"]) > BODY_MAX_CHARS:
            return _bad_request("twilio/text body exceeds the 1600 character limit")
        # Up to 100 variables, keys of at most 16 characters (twilio.com/docs/content/using-variables-with-content-api).
        if (
            not isinstance(variables, dict)
            or len(variables) > 100
            or any(not isinstance(k, str) or len(k) > 16 or not isinstance(v, str) for k, v in variables.items())
        ):
            return _bad_request("Invalid variables")
        now = _iso(_now())
        sid = "HX" + secrets.token_hex(16)
        url = self._content_url(sid)
        content = {
            "account_sid": self.account_sid,
            "date_created": now,
            "date_updated": now,
            "friendly_name": payload.get("friendly_name"),
            "language": language,
            "links": {
                "approval_create": f"{url}/ApprovalRequests/whatsapp",
                "approval_fetch": f"{url}/ApprovalRequests",
            },
            "sid": sid,
            "types": types,
            "url": url,
            "variables": variables,
        }
        with self._lock:
            self._contents[sid] = content
        return 201, dict(content)

    def _list_contents(self, query: dict[str, str]) -> dict[str, Any]:
        with self._lock:
            found = [dict(c) for c in self._contents.values()]
        page_size = max(1, min(int(query.get("PageSize", 50)), 1000))
        page = int(query.get("Page", 0))
        chunk = found[page * page_size : (page + 1) * page_size]
        base = f"{self.url}/v1/Content"

        def page_url(number: int) -> str:
            return f"{base}?{urlencode({'PageSize': page_size, 'Page': number})}"

        more = (page + 1) * page_size < len(found)
        return {
            "contents": chunk,
            "meta": {
                "first_page_url": page_url(0),
                "key": "contents",
                "next_page_url": page_url(page + 1) if more else None,
                "page": page,
                "page_size": page_size,
                "previous_page_url": page_url(page - 1) if page else None,
                "url": page_url(page),
            },
        }

    def _submit_for_approval(self, sid: str, payload: Any) -> tuple[int, dict[str, Any]]:
        """POST /v1/Content/{sid}/ApprovalRequests/whatsapp {name, category}: 201, status `received`.

        Meta's format check runs on submission; a template that fails it reads `rejected`
        (with the reason) from then on. Twilio does not document a 400 for these at submission,
        so none is given: the approval status is where a user learns of it.
        """
        if not isinstance(payload, dict) or not payload.get("name") or not payload.get("category"):
            return _bad_request("Missing required parameters name and category")
        name, category = str(payload["name"]), str(payload["category"])
        with self._lock:
            content = self._contents[sid]
            approval = _Approval(
                name, category.upper(), time.monotonic(), rule_broken=_template_rule_broken(name, category, content)
            )
            self._approvals[sid] = approval
            return 201, {**self._whatsapp_approval(sid, "received"), "send_ttl_seconds": None, "bid_amount": None}

    def _approval_status(self, sid: str) -> str:
        """A template's WhatsApp approval status now. Call with the lock held."""
        approval = self._approvals.get(sid)
        if approval is None:
            return "unsubmitted"
        if approval.decision:
            return approval.decision
        if approval.rule_broken:
            return "rejected"
        if self.approval_delay is not None and time.monotonic() - approval.submitted >= self.approval_delay:
            return "approved"
        return "pending"

    def _whatsapp_approval(self, sid: str, status: str | None = None) -> dict[str, Any]:
        """The `whatsapp` object of an approval fetch (twilio.com/en-us/changelog/content-api-flows-approval).
        Call with the lock held."""
        approval = self._approvals.get(sid)
        content = self._contents[sid]
        status = status or self._approval_status(sid)
        reason = ""
        if approval is not None and status == "rejected":
            reason = approval.reason if approval.decision == "rejected" else approval.rule_broken or ""
        return {
            "allow_category_change": True,
            "category": approval.category if approval else "",
            "content_type": next(iter(content["types"]), ""),
            "flows": None,
            "name": approval.name if approval else "",
            "rejection_reason": reason,
            "status": status,
            "type": "whatsapp",
        }

    def _fetch_approval(self, sid: str) -> dict[str, Any]:
        with self._lock:
            return {
                "account_sid": self.account_sid,
                "sid": sid,
                "url": f"{self._content_url(sid)}/ApprovalRequests",
                "whatsapp": self._whatsapp_approval(sid),
            }

    def _content_route(self, method: str, path: str, query: dict[str, str], payload: Any) -> tuple[int, Any]:
        match = _CONTENT.match(path)
        assert match is not None
        sid, sub, whatsapp = match["sid"], match["sub"], match["wa"]
        if sid is None:
            if method == "POST":
                return self._create_content(payload)
            if method == "GET":
                return 200, self._list_contents(query)
            return _error(20404, path=path)
        with self._lock:
            known = sid in self._contents
        if not known:
            return _error(20404, path=path)
        if sub is None and method == "GET":
            with self._lock:
                return 200, dict(self._contents[sid])
        if sub is None and method == "DELETE":
            with self._lock:
                del self._contents[sid]
                self._approvals.pop(sid, None)
            return 204, None
        if whatsapp and method == "POST":
            return self._submit_for_approval(sid, payload)
        if sub and not whatsapp and method == "GET":
            return 200, self._fetch_approval(sid)
        return _error(20404, path=path)


# urllib without the environment's proxies: callbacks and media fetches go straight to the test's servers.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _template_body(content: dict[str, Any]) -> str:
    """The text a template sends on WhatsApp: its twilio/text body (else the first type's body)."""
    types = content.get("types") or {}
    text = types.get("twilio/text") or next((t for t in types.values() if isinstance(t, dict) and t.get("body")), {})
    return text.get("body") or ""


def _content_variables(raw: str | None, placeholders: list[str]) -> tuple[dict[str, str], bool]:
    """ContentVariables as {key: value}, and whether Twilio refuses them with 21656 (twilio.com/docs/api/errors/21656):
    not a JSON object, a value null or empty, or a value used in the body holding a newline, a tab or more than
    four consecutive spaces. A synchronous 400, as twilio-python users report it (twilio/twilio-python#892)."""
    if raw is None:
        return {}, False
    try:
        parsed = json.loads(raw)
    except ValueError:
        return {}, True
    if not isinstance(parsed, dict):
        return {}, True
    values: dict[str, str] = {}
    for key, value in parsed.items():
        if value is None or value == "" or isinstance(value, (bool, dict, list)):
            return {}, True
        values[str(key)] = str(value)
    if any(_BAD_VARIABLE.search(values[key]) for key in placeholders if key in values):
        return {}, True
    return values, False


def _render(text: str, values: dict[str, str], defaults: dict[str, str]) -> tuple[str, list[str]]:
    """The body with each placeholder replaced by its value, else the template's default; and those with neither."""
    missing: list[str] = []

    def value(match: re.Match[str]) -> str:
        key = match[1]
        if key in values:
            return values[key]
        if defaults.get(key):
            return defaults[key]
        missing.append(key)
        return match[0]

    return _PLACEHOLDER.sub(value, text), missing


def _template_rule_broken(name: str, category: str, content: dict[str, Any]) -> str | None:
    """Why Meta's format check rejects a template submitted for WhatsApp, or None.

    Name: lowercase alphanumerics and underscores, at most 512 (Meta's rule as BSPs document it). Category:
    UTILITY, MARKETING or AUTHENTICATION. Body (twilio.com/docs/content/using-variables-with-content-api and
    twilio-text): at most 1,024 characters; no placeholder at the start or end (a placeholder followed only by
    punctuation counts as the end); no two placeholders side by side (only whitespace between them);
    numbered placeholders 1..n with none skipped; at least 2x+1 words that are not placeholders for x
    placeholders. Twilio's page says the start/end/adjacent cases pass "with a sample"; Meta's own rule has no
    such exception, so they are rejected whatever the samples: the reading not kinder than the real review.
    """
    if not _TEMPLATE_NAME.match(name):
        return "INVALID_FORMAT: the template name may contain only lowercase letters, digits and underscores"
    if category.upper() not in TEMPLATE_CATEGORIES:
        return f"INVALID_FORMAT: unknown category {category!r}"
    body = _template_body(content)
    if not body:
        return None
    if len(body) > TEMPLATE_MAX_CHARS:
        return "INVALID_FORMAT: the body is longer than 1,024 characters"
    keys = _PLACEHOLDER.findall(body)
    if not keys:
        return None
    if re.match(r"^\s*\{\{[A-Za-z0-9_]+\}\}", body) or re.search(r"\{\{[A-Za-z0-9_]+\}\}[\s\.,;:!?]*$", body):
        return "INVALID_FORMAT: the body starts or ends with a variable"
    if re.search(r"\}\}\s*\{\{", body):
        return "INVALID_FORMAT: two variables are next to each other"
    numbers = sorted({int(k) for k in keys if k.isdigit()})
    if numbers and numbers != list(range(1, len(numbers) + 1)):
        return "INVALID_FORMAT: the variables are not sequential (one is skipped)"
    words = [w for w in _PLACEHOLDER.sub(" ", body).split() if re.search(r"\w", w)]
    if len(words) < 2 * len(keys) + 1:
        return "INVALID_FORMAT: too many variables for the length of the message"
    return None


def _matches(date_sent: str, bound: dt.datetime, keep: str) -> bool:
    sent = parsedate_to_datetime(date_sent)
    return {"eq": sent.date() == bound.date(), "ge": sent >= bound, "le": sent <= bound}[keep]


def _error(code: int, *, to: str = "", from_: str = "", path: str = "") -> tuple[int, dict[str, Any]]:
    status, text = ERROR_TEXT.get(code, (400, "Error"))
    return status, {
        "code": code,
        "message": text.format(to=to, from_=from_, path=path),
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def _bad_request(message: str) -> tuple[int, dict[str, Any]]:
    """A 400 from the Content API. The status is what twilio-python acts on; the code (20001) is not confirmed."""
    return 400, {
        "code": 20001,
        "message": message,
        "more_info": "https://www.twilio.com/docs/errors/20001",
        "status": 400,
    }


def _status_error(status: int) -> tuple[int, dict[str, Any]]:
    """Twilio's body for a bare HTTP failure (5xx, 429) with that status."""
    code = {429: 20429, 503: 20503}.get(status, 20500)
    body = _error(code)[1]
    return status, {**body, "status": status}


def _handler_for(emulator: TwilioEmulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "TwilioEmulator/1"

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        def _send(self, status: int, payload: Any) -> None:
            data = b"" if payload is None else json.dumps(payload).encode()
            try:
                self.send_response(status)
                if payload is not None:
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout knob); Twilio would not notice either

        def _route(self, method: str) -> None:
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)) if method in {"POST", "DELETE"} else b""
            is_json = (self.headers.get("Content-Type") or "").startswith("application/json")
            lists = {} if is_json else parse_qs(raw.decode(), keep_blank_values=True)
            form = {k: v[-1] for k, v in lists.items()}
            payload: Any = None
            if is_json and raw:
                try:
                    payload = json.loads(raw)
                except ValueError:
                    payload = ValueError
            with emulator._lock:
                logged = (
                    (raw.decode(errors="replace") if payload is ValueError else payload) if is_json else (form or query)
                )
                emulator.requests.append((method, parts.path, logged))

            if method == "POST" and parts.path == "/_emulator/reset":
                emulator.reset()
                return self._send(200, {"reset": True})
            if method == "GET" and parts.path == "/_emulator/messages":
                return self._send(200, {"messages": emulator.messages, "inbound": emulator.inbound_messages})
            if method == "GET" and parts.path == "/_emulator/callbacks":
                return self._send(200, {"callbacks": list(emulator.callbacks)})
            if method == "POST" and parts.path == "/_emulator/inbound":
                # A separate process simulates a reply: {"from": "+1555...", "body": "...", "hours_ago": 1}.
                fields = payload if isinstance(payload, dict) else form
                try:
                    at = _now() - dt.timedelta(hours=float(fields.get("hours_ago") or 0))
                    message = emulator.inbound(
                        str(fields["from"]),
                        str(fields.get("body", "hi")),
                        at=at,
                        profile_name=str(fields.get("profile_name", "WhatsApp User")),
                    )
                except (KeyError, ValueError) as exc:
                    return self._send(400, {"error": str(exc)})
                return self._send(201, message)

            if _CONTENT.match(parts.path):
                if not emulator._credentials_ok(self.headers.get("Authorization")):
                    return self._send(*_error(20003))
                if method == "POST" and (not is_json or payload is ValueError):
                    return self._send(*_bad_request("The request body must be JSON (Content-Type: application/json)"))
                return self._send(*emulator._content_route(method, parts.path, query, payload))

            account_match = _ACCOUNT.match(parts.path)
            if method == "GET" and account_match:
                # Fetching the account: what a credential check does. Twilio answers 401 (20003) to bad credentials.
                if not emulator._authorised(self.headers.get("Authorization"), account_match["account"]):
                    return self._send(*_error(20003))
                return self._send(200, emulator._account())

            match = _MESSAGES.match(parts.path)
            if not match:
                return self._send(*_error(20404, path=parts.path))
            account, sid = match["account"], match["sid"]
            if not emulator._authorised(self.headers.get("Authorization"), account):
                return self._send(*_error(20003))

            fault = emulator._take_fault(method)
            if fault and fault.kind == "throttle":
                return self._send(*_error(20429))
            if fault and not fault.create:
                # Misbehave before doing anything: nothing is created.
                time.sleep(fault.seconds)
                if fault.kind == "drop":
                    self.close_connection = True
                    return None
                return self._send(*_status_error(fault.status if fault.kind == "error" else 503))

            after: Callable[[], None] | None = None
            if method == "POST" and sid is None:
                status, body, after = emulator._create(account, form, lists.get("MediaUrl", []))
            elif method == "GET" and sid is None:
                status, body = 200, emulator._list(account, query)
            elif method == "GET":
                with emulator._lock:
                    emulator._advance(time.monotonic())
                    found = emulator._by_sid.get(sid)
                    status, body = (200, dict(found)) if found else _error(20404, path=parts.path)
            else:
                status, body = _error(20404, path=parts.path)

            try:
                if fault is None:
                    return self._send(status, body)
                # Misbehave after the work is done: the message exists, the client cannot know.
                if fault.kind == "drop":
                    self.close_connection = True
                    return None
                time.sleep(fault.seconds)
                if fault.kind == "error":
                    return self._send(*_status_error(fault.status))
                return self._send(status, body)
            finally:
                if after is not None:
                    after()  # e.g. fetch the media: Twilio answers first

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def do_DELETE(self) -> None:
            self._route("DELETE")

    return Handler
