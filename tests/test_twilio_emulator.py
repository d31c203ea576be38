"""The Twilio emulator behaves as WhatsApp on Twilio does, checked with the real library on both ends.

An emulator kinder than Twilio makes the delivery tests lie, so this checks it
on its own: twilio-python's `Client` creates messages and templates against it
(`client.api.base_url` and `client.content.base_url` point at it), and a tiny
local web server plays the user's app, receiving the status callbacks and the
incoming-message webhook and checking each signature with twilio-python's
`RequestValidator`, as the app would.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from twilio.rest.content.v1.content import ContentList
from twilio.rest.content.v1.content.approval_create import ApprovalCreateList

from tests.twilio_emulator import TwilioEmulator

ANA, BEN = "+15550000001", "+15550000002"
SENDER = "whatsapp:+14155238886"
SETTLED = {"delivered", "read", "failed", "undelivered"}
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64  # only its type and size matter to the emulator


class Receiver:
    """The user's web app: records every POST (path, signature, form) and serves media on GET."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                with receiver.changed:
                    receiver.posts.append(
                        {
                            "path": self.path,
                            "signature": self.headers.get("X-Twilio-Signature", ""),
                            "content_type": self.headers.get("Content-Type", ""),
                            "params": {k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()},
                        }
                    )
                    receiver.changed.notify_all()
                self.send_response(204)
                self.end_headers()

            def do_GET(self) -> None:
                if self.path == "/chart.png":
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.send_header("Content-Length", str(len(PNG)))
                    self.end_headers()
                    self.wfile.write(PNG)
                else:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def wait_posts(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self.changed:
            while len(self.posts) < count:
                assert self.changed.wait(max(deadline - time.monotonic(), 0)), (
                    f"only {len(self.posts)} POSTs: {self.posts}"
                )
            return list(self.posts)


@pytest.fixture
def client(twilio: TwilioEmulator) -> Client:
    c = Client(twilio.account_sid, twilio.auth_token)
    c.api.base_url = twilio.url
    c.content.base_url = twilio.url
    return c


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


def settle(client: Client, sid: str, timeout: float = 3.0) -> Any:
    """The message once Twilio has delivered or failed it."""
    deadline = time.monotonic() + timeout
    while True:
        message = client.messages(sid).fetch()
        if message.status in SETTLED or time.monotonic() > deadline:
            return message
        time.sleep(0.02)


def ago(**delta: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(**delta)


def template(client: Client, body: str, variables: dict[str, str] | None = None) -> str:
    request = ContentList.ContentCreateRequest(
        {
            "friendly_name": "daily_briefing",
            "language": "en",
            "variables": variables,
            "types": {"twilio/text": {"body": body}},
        }
    )
    return client.content.v1.contents.create(request).sid


def submit(client: Client, sid: str, name: str = "daily_briefing", category: str = "UTILITY") -> Any:
    request = ApprovalCreateList.ContentApprovalRequest({"name": name, "category": category})
    return client.content.v1.contents(sid).approval_create.create(request)


def approval(client: Client, sid: str) -> dict[str, Any]:
    return client.content.v1.contents(sid).approval_fetch().fetch().whatsapp


BRIEFING = "Your sales briefing for {{1}} is ready: {{2}}. Reply to this message to read it in full."


# --------------------------------------------------------------------------- the 24-hour window


def test_free_form_text_to_someone_who_never_wrote_is_accepted_then_fails_with_63016(
    twilio: TwilioEmulator, client: Client
) -> None:
    """GIVEN a recipient who never wrote to the sender (even after `accept`, which opens no window)
    WHEN a free-form text is sent to them
    THEN Twilio answers 201 queued, and the message then turns failed with 63016."""
    twilio.accept(ANA)

    created = client.messages.create(to=f"whatsapp:{ANA}", from_=SENDER, body="Good morning")
    fetched = settle(client, created.sid)

    assert created.status == "queued"
    assert (fetched.status, fetched.error_code) == ("failed", 63016)
    assert "outside the allowed window" in fetched.error_message


def test_free_form_text_within_24_hours_of_their_message_is_delivered(twilio: TwilioEmulator, client: Client) -> None:
    """GIVEN a recipient who wrote to the sender an hour ago
    WHEN a free-form text is sent to them
    THEN it is sent, then delivered, with no error."""
    twilio.inbound(ANA, "brief", at=ago(hours=1))

    created = client.messages.create(to=f"whatsapp:{ANA}", from_=SENDER, body="Good morning")
    fetched = settle(client, created.sid)

    assert (fetched.status, fetched.error_code, fetched.body) == ("delivered", None, "Good morning")
    assert fetched.date_sent is not None


def test_the_window_closes_24_hours_after_their_last_message(twilio: TwilioEmulator, client: Client) -> None:
    """GIVEN a recipient whose last message to the sender is 25 hours old
    WHEN a free-form text is sent to them
    THEN it fails with 63016."""
    twilio.inbound(ANA, "brief", at=ago(hours=25))

    fetched = settle(client, client.messages.create(to=f"whatsapp:{ANA}", from_=SENDER, body="Hello").sid)

    assert (fetched.status, fetched.error_code) == ("failed", 63016)


def test_an_inbound_message_is_listed_and_fetched_like_any_other(twilio: TwilioEmulator, client: Client) -> None:
    """GIVEN a recipient who wrote to the sender an hour ago, and a message sent to someone else since
    WHEN the messages from them to the sender since two hours ago are listed, and the inbound one fetched
    THEN it is there, inbound and received; a window starting after it finds nothing."""
    inbound = twilio.inbound(ANA, "brief please", at=ago(hours=1), profile_name="Ana")
    twilio.inbound(BEN, "hi")
    client.messages.create(to=f"whatsapp:{BEN}", from_=SENDER, body="Hello Ben")

    [found] = client.messages.list(from_=f"whatsapp:{ANA}", to=SENDER, date_sent_after=ago(hours=2))
    later = client.messages.list(from_=f"whatsapp:{ANA}", to=SENDER, date_sent_after=ago(minutes=30))
    fetched = client.messages(inbound["sid"]).fetch()
    everything = client.messages.list()

    assert (found.sid, found.direction, found.status, found.body) == (
        inbound["sid"],
        "inbound",
        "received",
        "brief please",
    )
    assert (found.num_segments, found.num_media, found.to) == ("1", "0", SENDER)
    assert abs((found.date_sent - ago(hours=1)).total_seconds()) < 5
    assert later == []
    assert (fetched.direction, fetched.from_) == ("inbound", f"whatsapp:{ANA}")
    assert [m.direction for m in everything] == ["outbound-api", "inbound", "inbound"]  # newest first
    assert [m["sid"] for m in twilio.inbound_messages][0] == inbound["sid"] and len(twilio.messages) == 1


# --------------------------------------------------------------------------- templates


def test_a_template_is_created_submitted_to_whatsapp_and_approved_through_the_content_api(
    twilio: TwilioEmulator, client: Client
) -> None:
    """GIVEN a twilio/text template created with the Content API
    WHEN it is submitted for WhatsApp approval, fetched while Meta reviews it, then approved, then deleted
    THEN the submission reads received, the review pending (it stays so), approval approved, and the deleted one is gone."""
    sid = template(client, BRIEFING, {"1": "20 Nov", "2": "pipeline up 3%"})

    content = client.content.v1.contents(sid).fetch()
    listed = [c.sid for c in client.content.v1.contents.list()]
    submitted = submit(client, sid)
    time.sleep(0.1)
    pending = approval(client, sid)
    twilio.approve(sid)
    approved = approval(client, sid)

    assert sid.startswith("HX") and len(sid) == 34 and listed == [sid]
    assert (content.language, content.variables, content.account_sid) == (
        "en",
        {"1": "20 Nov", "2": "pipeline up 3%"},
        twilio.account_sid,
    )
    assert content.types == {"twilio/text": {"body": BRIEFING}}
    assert isinstance(content.date_created, dt.datetime)
    assert content.links["approval_fetch"].endswith(f"/v1/Content/{sid}/ApprovalRequests")
    assert (submitted.name, submitted.category, submitted.status) == ("daily_briefing", "UTILITY", "received")
    assert (pending["status"], pending["content_type"], pending["rejection_reason"]) == ("pending", "twilio/text", "")
    assert approved["status"] == "approved"

    assert client.content.v1.contents(sid).delete() is True
    with pytest.raises(TwilioRestException) as gone:
        client.content.v1.contents(sid).fetch()
    assert gone.value.status == 404


@pytest.mark.parametrize(
    "body, name, category",
    [
        ("{{1}} is your sales briefing for today, reply to read it in full", "daily_briefing", "UTILITY"),
        ("Your sales briefing for today is ready to read: {{1}}.", "daily_briefing", "UTILITY"),
        ("Your sales briefing for {{1}} {{2}} is ready, reply to read it in full", "daily_briefing", "UTILITY"),
        (
            "Your sales briefing for {{1}} is ready: {{3}}. Reply to this message to read it in full.",
            "daily_briefing",
            "UTILITY",
        ),
        ("x" * 1025, "daily_briefing", "UTILITY"),
        (BRIEFING, "Daily Briefing", "UTILITY"),
        (BRIEFING, "daily_briefing", "NEWSLETTER"),
    ],
)
def test_a_template_breaking_whatsapps_format_rules_is_rejected_with_a_reason(
    client: Client, body: str, name: str, category: str
) -> None:
    """GIVEN a template starting or ending with a placeholder, with adjacent or skipped placeholders, a body over
    1,024 characters, a name with capitals and spaces, or an unknown category
    WHEN it is submitted for WhatsApp approval
    THEN the submission is received, and the approval then reads rejected, with the reason."""
    sid = template(client, body)

    assert submit(client, sid, name, category).status == "received"
    status = approval(client, sid)
    assert status["status"] == "rejected" and status["rejection_reason"]


def test_a_template_sent_outside_the_window_fails_while_pending_and_is_delivered_once_approved(
    twilio: TwilioEmulator, client: Client
) -> None:
    """GIVEN a template submitted for WhatsApp approval, and a recipient who never wrote
    WHEN it is sent with its variables while approval is pending, then again once WhatsApp approved it
    THEN the first fails with 63016; the second is delivered with the variables in its body."""
    sid = template(client, BRIEFING)
    submit(client, sid)
    variables = json.dumps({"1": "20 Nov", "2": "pipeline $1.24M (+3.1%)"})

    pending = settle(
        client,
        client.messages.create(to=f"whatsapp:{ANA}", from_=SENDER, content_sid=sid, content_variables=variables).sid,
    )
    twilio.approve(sid)
    approved = settle(
        client,
        client.messages.create(to=f"whatsapp:{ANA}", from_=SENDER, content_sid=sid, content_variables=variables).sid,
    )

    assert (pending.status, pending.error_code) == ("failed", 63016)
    assert (approved.status, approved.error_code) == ("delivered", None)
    assert approved.body == (
        "Your sales briefing for 20 Nov is ready: pipeline $1.24M (+3.1%). Reply to this message to read it in full."
    )


def test_a_template_approves_itself_after_approval_delay(twilio: TwilioEmulator, client: Client) -> None:
    """GIVEN a test that lets WhatsApp's review take 0.2 s
    WHEN a template is submitted and its approval fetched at once, then after the delay
    THEN it reads pending, then approved."""
    twilio.approval_delay = 0.2
    sid = template(client, BRIEFING)
    submit(client, sid)

    first = approval(client, sid)["status"]
    time.sleep(0.25)

    assert (first, approval(client, sid)["status"]) == ("pending", "approved")


def test_a_placeholder_with_no_value_and_no_default_fails_the_message_with_63028(
    twilio: TwilioEmulator, client: Client
) -> None:
    """GIVEN an approved template with two placeholders and no defaults
    WHEN it is sent with a value for the first only
    THEN the message fails with 63028."""
    sid = template(client, BRIEFING)
    twilio.approve(sid)

    fetched = settle(
        client,
        client.messages.create(
            to=f"whatsapp:{ANA}", from_=SENDER, content_sid=sid, content_variables=json.dumps({"1": "20 Nov"})
        ).sid,
    )

    assert (fetched.status, fetched.error_code) == ("failed", 63028)


@pytest.mark.parametrize(
    "variables",
    [
        json.dumps({"1": "20 Nov", "2": "pipeline up\nwon 3 deals"}),
        json.dumps({"1": "20 Nov", "2": "pipeline\tup"}),
        json.dumps({"1": "20 Nov", "2": "pipeline     up"}),
        json.dumps({"1": "20 Nov", "2": ""}),
        "not json",
        json.dumps(["20 Nov", "pipeline up"]),
    ],
)
def test_content_variables_twilio_refuses_create_nothing(
    twilio: TwilioEmulator, client: Client, variables: str
) -> None:
    """GIVEN an approved template
    WHEN it is sent with a value holding a newline, a tab or five spaces, an empty value, or ContentVariables
    that are not a JSON object
    THEN Twilio refuses the request with 400 / 21656 and creates nothing."""
    sid = template(client, BRIEFING)
    twilio.approve(sid)

    with pytest.raises(TwilioRestException) as refused:
        client.messages.create(to=f"whatsapp:{ANA}", from_=SENDER, content_sid=sid, content_variables=variables)

    assert (refused.value.status, refused.value.code) == (400, 21656)
    assert twilio.messages == []


def test_an_unknown_content_sid_is_refused_with_21655(twilio: TwilioEmulator, client: Client) -> None:
    """GIVEN no template
    WHEN a message names a ContentSid
    THEN Twilio refuses it with 400 / 21655."""
    with pytest.raises(TwilioRestException) as refused:
        client.messages.create(to=f"whatsapp:{ANA}", from_=SENDER, content_sid="HX" + "0" * 32)

    assert (refused.value.status, refused.value.code) == (400, 21655)


def test_a_body_over_1600_characters_is_refused_with_21617(twilio: TwilioEmulator, client: Client) -> None:
    """GIVEN a recipient inside the window
    WHEN a 1,601-character body is sent
    THEN Twilio refuses it with 400 / 21617 and creates nothing."""
    twilio.inbound(ANA)

    with pytest.raises(TwilioRestException) as refused:
        client.messages.create(to=f"whatsapp:{ANA}", from_=SENDER, body="x" * 1601)

    assert (refused.value.status, refused.value.code) == (400, 21617)
    assert twilio.messages == []


# --------------------------------------------------------------------------- media


def test_media_is_fetched_after_the_answer_and_a_missing_one_fails_the_message(
    twilio: TwilioEmulator, client: Client, receiver: Receiver
) -> None:
    """GIVEN a recipient inside the window, a chart served by the app, and a URL that answers 404
    WHEN a message with the chart and one with the missing URL are sent
    THEN Twilio fetched both with GET: the first is delivered with one media, the second fails (11200)."""
    twilio.inbound(ANA)

    chart = settle(
        client,
        client.messages.create(
            to=f"whatsapp:{ANA}", from_=SENDER, body="Today's chart", media_url=[f"{receiver.base}/chart.png"]
        ).sid,
    )
    missing = settle(
        client,
        client.messages.create(to=f"whatsapp:{ANA}", from_=SENDER, media_url=[f"{receiver.base}/missing.png"]).sid,
    )

    assert (chart.status, chart.num_media) == ("delivered", "1")
    assert (missing.status, missing.error_code) == ("failed", 11200)
    assert [(f["url"], f["status"], f["content_type"], f["bytes"]) for f in twilio.media_fetches] == [
        (f"{receiver.base}/chart.png", 200, "image/png", len(PNG)),
        (f"{receiver.base}/missing.png", 404, None, 0),
    ]


# --------------------------------------------------------------------------- callbacks and webhooks


def test_status_callbacks_arrive_signed_and_in_order(
    twilio: TwilioEmulator, client: Client, receiver: Receiver
) -> None:
    """GIVEN a recipient inside the window and a status callback URL with a query string
    WHEN a message is sent and delivered, then read
    THEN the app receives sent, delivered and read, in that order (nothing for queued), each signed so that
    RequestValidator with the auth token accepts it, and neither a forged signature nor another token passes."""
    twilio.inbound(ANA)
    url = f"{receiver.base}/twilio/status?run=1"

    sid = client.messages.create(to=f"whatsapp:{ANA}", from_=SENDER, body="Hello", status_callback=url).sid
    settle(client, sid)
    twilio.set_status(sid, "read")
    posts = receiver.wait_posts(3)
    recorded = twilio.wait_callbacks(3)

    validator = RequestValidator(twilio.auth_token)
    assert [p["params"]["MessageStatus"] for p in posts] == ["sent", "delivered", "read"]
    assert [p["params"].get("EventType") for p in posts] == [None, "DELIVERED", "READ"]
    for post in posts:
        assert post["path"] == "/twilio/status?run=1"
        assert post["content_type"].startswith("application/x-www-form-urlencoded")
        assert validator.validate(url, post["params"], post["signature"])
        assert not validator.validate(url, post["params"], post["signature"][::-1])
        assert not RequestValidator("wrong-token").validate(url, post["params"], post["signature"])
        assert not validator.validate(url, {**post["params"], "MessageStatus": "failed"}, post["signature"])
    first = posts[0]["params"]
    assert (first["MessageSid"], first["SmsSid"], first["SmsStatus"]) == (sid, sid, "sent")
    assert (first["AccountSid"], first["From"], first["To"]) == (twilio.account_sid, SENDER, f"whatsapp:{ANA}")
    assert (first["ApiVersion"], first["ChannelPrefix"]) == ("2010-04-01", "whatsapp")
    assert [(r["kind"], r["status"], r["url"]) for r in recorded] == [("status", 204, url)] * 3


def test_a_failed_message_calls_back_once_with_its_error(
    twilio: TwilioEmulator, client: Client, receiver: Receiver
) -> None:
    """GIVEN a recipient who never wrote
    WHEN a free-form text is sent with a status callback
    THEN the app receives one callback: failed, with ErrorCode 63016 and its message."""
    url = f"{receiver.base}/status"

    client.messages.create(to=f"whatsapp:{BEN}", from_=SENDER, body="Hello", status_callback=url)
    [post] = receiver.wait_posts(1)
    time.sleep(0.15)

    assert len(receiver.posts) == 1
    assert (post["params"]["MessageStatus"], post["params"]["ErrorCode"]) == ("failed", "63016")
    assert "window" in post["params"]["ErrorMessage"]
    assert RequestValidator(twilio.auth_token).validate(url, post["params"], post["signature"])


def test_an_inbound_message_is_posted_to_the_webhook_signed_before_inbound_returns(
    twilio: TwilioEmulator, receiver: Receiver
) -> None:
    """GIVEN the sender's incoming-message webhook points at the app
    WHEN a recipient writes to the sender
    THEN the app has already received the message, with Twilio's WhatsApp fields, signed with the auth token."""
    url = f"{receiver.base}/twilio/inbound"
    twilio.set_inbound_webhook(url)

    message = twilio.inbound(ANA, "brief", profile_name="Ana")

    [post] = receiver.posts
    params = post["params"]
    assert RequestValidator(twilio.auth_token).validate(url, params, post["signature"])
    assert (params["MessageSid"], params["SmsMessageSid"], params["SmsSid"]) == (message["sid"],) * 3
    assert (params["From"], params["To"], params["Body"]) == (f"whatsapp:{ANA}", SENDER, "brief")
    assert (params["ProfileName"], params["WaId"], params["SmsStatus"]) == ("Ana", ANA[1:], "received")
    assert (params["NumMedia"], params["NumSegments"], params["MessageType"]) == ("0", "1", "text")
    assert (params["AccountSid"], params["ApiVersion"]) == (twilio.account_sid, "2010-04-01")
    assert [(c["kind"], c["status"]) for c in twilio.callbacks] == [("inbound", 204)]


def test_a_separate_process_can_simulate_a_reply_over_http(twilio: TwilioEmulator, client: Client) -> None:
    """GIVEN only the emulator's URL (as a benchmark process has)
    WHEN it POSTs a reply from a recipient to the control route
    THEN that recipient's window is open: a free-form text to them is delivered."""
    import urllib.request

    request = urllib.request.Request(
        f"{twilio.url}/_emulator/inbound",
        method="POST",
        data=json.dumps({"from": ANA, "body": "brief", "hours_ago": 2}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=5) as answer:
        assert answer.status == 201

    fetched = settle(client, client.messages.create(to=f"whatsapp:{ANA}", from_=SENDER, body="Hello").sid)
    assert fetched.status == "delivered"
