"""The day's main chart travels with the briefing on WhatsApp, through a signed link that only Twilio can use.

The delivery runs as `python -m insights.deliver` on a private copy of the built warehouse, the API as a user
starts it (`python -m insights.api`) on the port PUBLIC_BASE_URL names, and the Twilio emulator fetches a
message's media over HTTP after accepting it, as Twilio does, failing the message when it cannot take it.
No model runs (OLLAMA_BASE_URL answers nothing): the standard briefing goes, which is all the chart needs.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from insights.chart_links import LINK_LIFETIME, sign_chart_url
from insights.ledger import TEAM
from insights.recipients import Recipient
from insights.settings import TwilioSettings
from insights.whatsapp import Outgoing, create_template, send_digests, twilio_client
from tests.conftest import SANDBOX_TODAY
from tests.support.api import RunningApi, free_port, serve
from tests.support.workspace import Workspace
from tests.twilio_emulator import TwilioEmulator

ANA, BEN = "+15550000001", "+15550000002"
# The day before the sandbox org's own today: complete in the built marts.
REPORT_DAY = dt.date.fromisoformat(SANDBOX_TODAY) - dt.timedelta(days=1)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NO_MODEL = "http://127.0.0.1:9"  # nothing listens: the standard briefing is sent


def settings_for(twilio: TwilioEmulator, *numbers: str, public_base_url: str | None = None) -> TwilioSettings:
    return TwilioSettings(
        account_sid=twilio.account_sid,
        auth_token=twilio.auth_token,
        from_number="+14155238886",
        recipients=tuple(Recipient(None, f"whatsapp:{n}", "manager", None, "test") for n in numbers),
        api_base=twilio.url,
        public_base_url=public_base_url,
    )


def creates(twilio: TwilioEmulator) -> dict[str, list[dict[str, str]]]:
    """The form of each message create that reached Twilio, by recipient, in order."""
    found: dict[str, list[dict[str, str]]] = {}
    for method, path, form in twilio.requests:
        if method == "POST" and path.endswith("/Messages.json"):
            found.setdefault(form["To"].removeprefix("whatsapp:"), []).append(form)
    return found


def _address(whatsapp: str) -> str:
    return whatsapp.removeprefix("whatsapp:")


def deliver(ws: Workspace) -> Any:
    return ws.run("python", "-m", "insights.deliver", "--date", REPORT_DAY.isoformat(), timeout=180)


@pytest.fixture
def api(warehouse: Workspace, twilio: TwilioEmulator) -> Iterator[RunningApi]:
    """The API on the port PUBLIC_BASE_URL names, over the private warehouse, with the Twilio account's settings;
    the delivery's settings point at it and at the emulator."""
    port = free_port()
    warehouse.env.update(twilio.env(ANA, BEN), PUBLIC_BASE_URL=f"http://127.0.0.1:{port}", OLLAMA_BASE_URL=NO_MODEL)
    with serve(warehouse.env, "duckdb", port=port) as running:
        yield running


def test_the_session_briefing_carries_the_main_chart_and_the_template_never_does(
    warehouse: Workspace, twilio: TwilioEmulator, api: RunningApi
) -> None:
    """GIVEN a manager who wrote an hour ago, one who never wrote, an approved template, and PUBLIC_BASE_URL
    pointing at the API
    WHEN the day's briefing is delivered
    THEN the first gets the briefing with the day's pipeline chart on its first part: Twilio fetched it from the
    API (a PNG under 5 MB) and every part is delivered, the first with one media; the second gets the template,
    text only; and the run said once that the session messages carry the chart."""
    sid, _ = create_template(twilio_client(settings_for(twilio)))
    twilio.approve(sid)
    warehouse.env["TWILIO_TEMPLATE_SID"] = sid
    twilio.inbound(ANA, "morning", at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))

    result = deliver(warehouse)

    to_ana, [to_ben] = twilio.settled(ANA), twilio.settled(BEN)
    assert [(m["status"], m["num_media"]) for m in to_ana] == [("delivered", "1")] + [("delivered", "0")] * (
        len(to_ana) - 1
    ), to_ana
    assert (to_ben["status"], to_ben["num_media"]) == ("delivered", "0"), to_ben
    forms = creates(twilio)
    assert ["MediaUrl" in form for form in forms[ANA]] == [True] + [False] * (len(to_ana) - 1)
    assert not any("ContentSid" in form for form in forms[ANA])
    [template] = forms[BEN]
    assert "ContentSid" in template and "MediaUrl" not in template
    [fetch] = twilio.media_fetches
    link = urlsplit(fetch["url"])
    assert f"{link.scheme}://{link.netloc}" == api.url
    assert link.path == f"/media/charts/open_pipeline/{REPORT_DAY.isoformat()}.png"
    expires = int(parse_qs(link.query)["expires"][0])
    assert abs(expires - (time.time() + LINK_LIFETIME.total_seconds())) < 300
    assert (fetch["status"], fetch["content_type"]) == (200, "image/png")
    assert 0 < fetch["bytes"] < 5 * 1024 * 1024
    said = [line for line in result.stderr.splitlines() if "chart:" in line]
    assert len(said) == 1 and "the session messages carry the chart" in said[0], result.stderr
    assert "signature=" not in result.stderr  # the link itself is never printed

    answer = httpx.get(fetch["url"], timeout=30)
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    assert answer.content[:8] == PNG_SIGNATURE and len(answer.content) == fetch["bytes"]
    assert int(answer.headers["content-length"]) == fetch["bytes"]


def test_a_reply_to_the_template_gets_the_briefing_with_its_chart(
    warehouse: Workspace, twilio: TwilioEmulator, api: RunningApi
) -> None:
    """GIVEN a manager who got the morning's template (they had not written in 24 hours), and Twilio's incoming
    messages sent to the API
    WHEN they reply
    THEN the API sends them the full briefing in the session, its first part carrying the day's chart, which
    Twilio fetched from the API."""
    sid, _ = create_template(twilio_client(settings_for(twilio)))
    twilio.approve(sid)
    warehouse.env["TWILIO_TEMPLATE_SID"] = sid
    twilio.set_inbound_webhook(f"{api.url}/twilio/inbound")
    deliver(warehouse)
    assert [form.get("MediaUrl") for form in creates(twilio)[BEN]] == [None]  # the template: text only

    twilio.inbound(BEN, "send it please")
    deadline = time.monotonic() + 30
    while len(twilio.messages_to(BEN)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)

    template, *briefing = twilio.settled(BEN)
    assert briefing and [m["num_media"] for m in briefing] == ["1"] + ["0"] * (len(briefing) - 1), briefing
    assert all(m["status"] == "delivered" for m in briefing)
    [fetch] = twilio.media_fetches
    assert urlsplit(fetch["url"]).path == f"/media/charts/open_pipeline/{REPORT_DAY.isoformat()}.png"
    assert (fetch["status"], fetch["content_type"]) == (200, "image/png")


def test_the_chart_link_is_refused_without_its_signature_on_another_day_or_after_it_expired(
    warehouse: Workspace, twilio: TwilioEmulator, api: RunningApi
) -> None:
    """GIVEN the API with the account's auth token, and a link to the day's chart signed with it
    WHEN the link is asked for as signed, then without its signature, with the signature altered, for another
    day or another chart with the same signature, signed for an unknown chart, and signed but expired
    THEN only the link as signed answers (200, a PNG, also to HEAD); the others get 403, an unknown chart 404,
    and none of them shows a picture."""
    url = sign_chart_url(api.url, twilio.auth_token, REPORT_DAY)
    path, query = url.removeprefix(api.url).split("?")
    signature = parse_qs(query)["signature"][0]
    other_day = (REPORT_DAY - dt.timedelta(days=1)).isoformat()
    expired = sign_chart_url(
        api.url, twilio.auth_token, REPORT_DAY, now=time.time() - LINK_LIFETIME.total_seconds() - 60
    )
    foreign = sign_chart_url(api.url, "another-accounts-token", REPORT_DAY)

    signed = httpx.get(url, timeout=30)
    head = httpx.head(url, timeout=30)
    refused = {
        "no signature": httpx.get(api.url + path, timeout=30),
        "signature altered": httpx.get(url.replace(signature, signature[:-1] + ("0" if signature[-1] != "0" else "1"))),
        "another day": httpx.get(url.replace(REPORT_DAY.isoformat(), other_day)),
        "another chart": httpx.get(url.replace("/open_pipeline/", "/won_by_week/")),
        "expired": httpx.get(expired),
        "another token": httpx.get(foreign),
    }
    unknown = httpx.get(api.url + re.sub(r"/open_pipeline/", "/secret_chart/", path) + "?" + query)

    assert signed.status_code == 200 and signed.content[:8] == PNG_SIGNATURE
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(signed.content)
    assert {why: r.status_code for why, r in refused.items()} == dict.fromkeys(refused, 403)
    assert unknown.status_code == 404
    assert all(not r.content.startswith(PNG_SIGNATURE) for r in (*refused.values(), unknown))


@pytest.mark.parametrize("public_base_url", [None, "unreachable"], ids=["no PUBLIC_BASE_URL", "nothing answers"])
def test_without_a_reachable_public_base_url_the_briefing_goes_without_its_chart(
    warehouse: Workspace, twilio: TwilioEmulator, public_base_url: str | None
) -> None:
    """GIVEN two managers inside the 24-hour window, and PUBLIC_BASE_URL not set, or set where nothing answers
    WHEN the day's briefing is delivered
    THEN both get the briefing as text, with no media asked of Twilio, and the run says so once, not once per
    recipient."""
    warehouse.env.update(twilio.env(ANA, BEN), OLLAMA_BASE_URL=NO_MODEL)
    warehouse.env.pop("PUBLIC_BASE_URL", None)
    if public_base_url:
        warehouse.env["PUBLIC_BASE_URL"] = f"http://127.0.0.1:{free_port()}"
    for number in (ANA, BEN):
        twilio.inbound(number, "morning")

    result = deliver(warehouse)

    messages = twilio.settled()
    assert {_address(m["to"]) for m in messages} == {ANA, BEN}
    assert {(m["status"], m["num_media"]) for m in messages} == {("delivered", "0")}, messages
    assert all("MediaUrl" not in form for forms in creates(twilio).values() for form in forms)
    said = [line for line in result.stderr.splitlines() if "chart" in line]
    assert len(said) == 1 and "the briefing goes without" in said[0], result.stderr
    expected = "PUBLIC_BASE_URL is not set" if public_base_url is None else "cannot be fetched (ConnectionError)"
    assert expected in said[0]


def test_a_chart_twilio_cannot_fetch_does_not_cost_the_briefing(
    twilio: TwilioEmulator, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN a manager inside the 24-hour window and a chart link that stops answering after the run checked it
    WHEN the briefing is sent with it
    THEN Twilio fails the message with the chart (11200, it could not fetch it), and the same run sends the
    briefing again without it, which is delivered; the delivery says why the chart is missing."""
    monkeypatch.setenv("DUCKDB_PATH", str(tmp_path / "warehouse.duckdb"))
    twilio.inbound(ANA, "morning")
    gone = f"http://127.0.0.1:{free_port()}/media/charts/open_pipeline/{REPORT_DAY.isoformat()}.png"
    briefing = "*Sales briefing*\n\nOpen pipeline is 1.24M across 42 deals."

    [ana] = send_digests(
        [Outgoing(f"whatsapp:{ANA}", briefing, TEAM, media_url=gone)], REPORT_DAY, "duckdb", settings_for(twilio, ANA)
    )

    with_chart, without = twilio.settled(ANA)
    assert (with_chart["status"], with_chart["error_code"], with_chart["num_media"]) == ("failed", 11200, "1")
    assert (without["status"], without["num_media"], without["body"]) == ("delivered", "0", briefing)
    assert ana.status == "sent" and ana.message_sid == without["sid"]
    assert "could not take the chart (error 11200)" in (ana.explanation or "")
    assert [f["url"] for f in twilio.media_fetches] == [gone]


def test_the_api_needs_the_auth_token_to_serve_a_chart(warehouse: Workspace, twilio: TwilioEmulator) -> None:
    """GIVEN the API started without TWILIO_AUTH_TOKEN (it serves the metrics without any Twilio setting)
    WHEN a chart link signed with some token is asked for
    THEN it answers 503 naming the missing setting: without the token no link can be checked, and none is served."""
    env = {k: v for k, v in warehouse.env.items() if not k.startswith("TWILIO_")}
    with serve(env, "duckdb") as running:
        answer = httpx.get(sign_chart_url(running.url, twilio.auth_token, REPORT_DAY), timeout=30)

    assert answer.status_code == 503 and "TWILIO_AUTH_TOKEN" in answer.json()["detail"]
