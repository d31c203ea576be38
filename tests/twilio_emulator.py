"""A local Twilio REST emulator: the Messages resource of the 2010-04-01 API, over real HTTP.

The real `twilio` client talks to it once `client.api.base_url` (or
`TWILIO_API_BASE`) points here, so the delivery code is tested end to end
without Twilio. It follows Twilio's wire contract: form-encoded
creates, HTTP Basic auth, 201 with the Message resource (RFC 2822 dates, string
`num_segments`), list pages whose only non-meta key is `messages`, and the legacy
error body `{"code", "message", "more_info", "status"}` (never RFC 9457, which
would make the SDK raise a different exception).

Messages live as they do at Twilio: a create answers 201 `queued`, and the
message moves on by itself, to `delivered` (date_sent set), or to `failed` with
an error code for the WhatsApp errors Twilio reports only after accepting the
request (63015 not joined to the sandbox, 63016 outside the 24-hour window,
63018, 63021). The move happens as soon as anyone looks (a fetch or a list),
or after `hold_status(seconds)`; `set_status` moves a message by hand.

Knobs reproduce what a delivery ledger must survive: numbers rejected with a
given error code (synchronously, 400, for the codes Twilio refuses at once,
such as 21211, 21408, 21610, 21614; asynchronously for the 63xxx ones), a 429
that creates nothing, and the ambiguous outcomes that create the message but
leave the client unsure (500 or 503 after the create, a response slower than
the client's timeout, a dropped connection).

    with TwilioEmulator() as twilio:
        twilio.reject("+15550000002", 63016)  # 201 queued, then failed with 63016
        twilio.fail_next(status=500)          # next create: message created, client sees 500
        ...
        assert len(twilio.messages_to("whatsapp:+15550000001")) == 1
"""

from __future__ import annotations

import base64
import datetime as dt
import hmac
import json
import math
import re
import secrets
import threading
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

API_VERSION = "2010-04-01"
SANDBOX_SENDER = "whatsapp:+14155238886"
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_ACCOUNT = re.compile(rf"^/{API_VERSION}/Accounts/(?P<account>AC[0-9a-f]{{32}})\.json$")
_MESSAGES = re.compile(rf"^/{API_VERSION}/Accounts/(?P<account>AC[0-9a-f]{{32}})/Messages(?:/(?P<sid>[A-Z]{{2}}[0-9a-f]{{32}}))?\.json$")

# Twilio's wording for the errors the emulator can produce; `{to}` / `{from_}` are filled in.
ERROR_TEXT = {
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
    63007: (400, "Twilio could not find a Channel with the specified From address: {from_}"),
    63015: (400, "Channel Sandbox can only send messages to phone numbers that have joined the Sandbox"),
    63016: (
        400,
        "Failed to send freeform message because you are outside the allowed window. "
        "If you are using WhatsApp, please use a Message Template.",
    ),
    63018: (400, "Rate limit exceeded for Channel"),
    63021: (400, "Channel invalid content error"),
}
# The WhatsApp errors Twilio reports after answering 201: the message turns `failed` with the code.
ASYNC_CODES = frozenset({63015, 63016, 63018, 63021})


def _rfc2822(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%a, %d %b %Y %H:%M:%S +0000")


def _address_key(address: str) -> str:
    """`whatsapp:+1555...` and `+1555...` name the same recipient for knobs and lookups."""
    return address.strip().removeprefix("whatsapp:")


def _parse_date_filter(value: str) -> dt.datetime:
    """`DateSent` values come as `YYYY-MM-DD` (the docs) or `YYYY-MM-DDTHH:MM:SSZ` (what twilio-python sends)."""
    if len(value) == 10:
        return dt.datetime.fromisoformat(value).replace(tzinfo=dt.timezone.utc)
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True)
class _Plan:
    """Where a new message goes next by itself, and from when."""

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
        self._lock = threading.Lock()
        self._messages: list[dict[str, Any]] = []
        self._plans: dict[str, _Plan] = {}  # by message SID: the next move of a message still queued
        self._status_delay = 0.0
        self._rejections: dict[str, tuple[int, bool]] = {}  # by number: (code, asynchronous)
        self._faults: list[_Fault] = []
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> "TwilioEmulator":
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="twilio-emulator", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None, "use the emulator as a context manager"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def env(self, *recipients: str) -> dict[str, str]:
        """The variables a user would export to send through this account."""
        return {
            "TWILIO_ACCOUNT_SID": self.account_sid,
            "TWILIO_AUTH_TOKEN": self.auth_token,
            "TWILIO_FROM_NUMBER": next(iter(self.senders)).removeprefix("whatsapp:"),
            "RECIPIENT_PHONE_NUMBER": ",".join(recipients),
            "TWILIO_API_BASE": self.url,
        }

    # ------------------------------------------------------------------ knobs

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
        """Stop rejecting `number` (the user fixed it, or the recipient opened the 24-hour window)."""
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
        """Move a message along its lifecycle by hand (sent, delivered, read, failed, undelivered)."""
        with self._lock:
            self._plans.pop(sid, None)
            self._move(next(m for m in self._messages if m["sid"] == sid), status, error_code)

    def reset(self) -> None:
        with self._lock:
            self._messages.clear()
            self._plans.clear()
            self._status_delay = 0.0
            self._rejections.clear()
            self._faults.clear()
            self.requests.clear()

    def _add(self, count: int, fault: _Fault) -> None:
        with self._lock:
            self._faults.extend([fault] * count)

    # ------------------------------------------------------------------ what happened

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Every message created so far (each a Message resource as the API renders it), oldest first.

        Looking moves every message whose time has come to its next status.
        """
        with self._lock:
            now = time.monotonic()
            for message in self._messages:
                plan = self._plans.get(message["sid"])
                if plan is not None and plan.at <= now:
                    del self._plans[message["sid"]]
                    self._move(message, plan.status, plan.error_code)
            return [dict(m) for m in self._messages]

    def messages_to(self, address: str) -> list[dict[str, Any]]:
        key = _address_key(address)
        return [m for m in self.messages if _address_key(m["to"]) == key]

    def create_requests(self) -> int:
        """How many create POSTs reached the emulator (accepted or not)."""
        with self._lock:
            return sum(1 for method, path, _ in self.requests if method == "POST" and path.endswith("/Messages.json"))

    # ------------------------------------------------------------------ the API

    @staticmethod
    def _move(message: dict[str, Any], status: str, error_code: int | None) -> None:
        now = _rfc2822(dt.datetime.now(dt.timezone.utc))
        message.update(status=status, date_updated=now, error_code=error_code, error_message=None)
        if status in {"sent", "delivered", "read", "undelivered"} and message["date_sent"] is None:
            message["date_sent"] = now
        if error_code is not None:
            message["error_message"] = ERROR_TEXT.get(error_code, (400, "Error"))[1].format(
                to=message["to"], from_=message["from"], path=""
            )

    def _take_fault(self, method: str) -> _Fault | None:
        with self._lock:
            for i, fault in enumerate(self._faults):
                if fault.method == method:
                    return self._faults.pop(i)
        return None

    def _authorised(self, header: str | None, account: str) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return (
            hmac.compare_digest(user, self.account_sid)
            and hmac.compare_digest(password, self.auth_token)
            and account == self.account_sid
        )

    def _account(self) -> dict[str, Any]:
        """The account resource as Twilio returns it (the fields a client reads)."""
        return {
            "sid": self.account_sid,
            "friendly_name": "CRM Intelligence",
            "status": "active",
            "type": "Full",
            "owner_account_sid": self.account_sid,
            "auth_token": self.auth_token,
            "date_created": _rfc2822(dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)),
            "date_updated": _rfc2822(dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)),
            "uri": f"/{API_VERSION}/Accounts/{self.account_sid}.json",
            "subresource_uris": {"messages": f"/{API_VERSION}/Accounts/{self.account_sid}/Messages.json"},
        }

    def _create(self, account: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        to, from_, body = form.get("To", ""), form.get("From", ""), form.get("Body", "")
        if not to:
            return _error(21604)
        channel, _, number = to.rpartition(":")
        if channel not in {"", "whatsapp"} or not _E164.match(number):
            return _error(21211, to=to)
        if not from_ and not form.get("MessagingServiceSid"):
            return _error(21603)
        if from_ and from_ not in self.senders:
            return _error(63007, from_=from_)
        if not body and not form.get("MediaUrl") and not form.get("ContentSid"):
            return _error(21602)
        if len(body) > 1600:
            return _error(21617)
        with self._lock:
            code, asynchronous = self._rejections.get(_address_key(to), (None, False))
        if code is not None and not asynchronous:
            return _error(code, to=to, from_=from_)
        now = _rfc2822(dt.datetime.now(dt.timezone.utc))
        sid = "SM" + secrets.token_hex(16)
        uri = f"/{API_VERSION}/Accounts/{account}/Messages/{sid}.json"
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
            "num_media": "0",
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
        with self._lock:
            self._messages.append(message)
            self._plans[sid] = _Plan(
                time.monotonic() + self._status_delay, "failed" if code is not None else "delivered", code
            )
        return 201, answer

    def _list(self, account: str, query: dict[str, str]) -> dict[str, Any]:
        found = self.messages[::-1]  # newest first, as Twilio lists them
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
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout knob); Twilio would not notice either

        def _route(self, method: str) -> None:
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            form: dict[str, str] = {}
            if method == "POST":
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[-1] for k, v in parse_qs(self.rfile.read(length).decode(), keep_blank_values=True).items()}
            with emulator._lock:
                emulator.requests.append((method, parts.path, form or query))

            if method == "POST" and parts.path == "/_emulator/reset":
                emulator.reset()
                return self._send(200, {"reset": True})
            if method == "GET" and parts.path == "/_emulator/messages":
                return self._send(200, {"messages": emulator.messages})

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

            if method == "POST" and sid is None:
                status, payload = emulator._create(account, form)
            elif method == "GET" and sid is None:
                status, payload = 200, emulator._list(account, query)
            elif method == "GET":
                found = [m for m in emulator.messages if m["sid"] == sid]
                status, payload = (200, found[0]) if found else _error(20404, path=parts.path)
            else:
                status, payload = _error(20404, path=parts.path)

            if fault is None:
                return self._send(status, payload)
            # Misbehave after the work is done: the message exists, the client cannot know.
            if fault.kind == "drop":
                self.close_connection = True
                return None
            time.sleep(fault.seconds)
            if fault.kind == "error":
                return self._send(*_status_error(fault.status))
            return self._send(status, payload)

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

    return Handler
