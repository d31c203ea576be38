"""Signed links to the day's charts, so WhatsApp can carry a chart that only Twilio can fetch.

A WhatsApp message carries media by URL: Twilio fetches it, without credentials, from
PUBLIC_BASE_URL where the API runs. An open `/charts/<day>.png` would show the org's
pipeline to anyone who guesses it, so the link is signed and expires:

    /media/charts/<chart>/<YYYY-MM-DD>.png?expires=<unix seconds>&signature=<hex>

The signature is HMAC-SHA256 over the route path and the expiry, keyed with a key
derived from TWILIO_AUTH_TOKEN under a label of its own (`link_key`). Both ends
already hold that token (the delivery to send, the API to check Twilio's callbacks),
so there is no new secret to set, and the token itself never keys anything but
Twilio's own signatures. Rotating the token invalidates the links, which is what
rotating a secret should do. Changing the chart, the day or the expiry breaks the
signature; a link past its expiry is refused whatever its signature.

Links live LINK_LIFETIME (3 days). Twilio fetches the media once, when it takes the
message (a message waits in its queue for at most its validity period, 10 hours by
default), and WhatsApp keeps its own copy: the link need not outlive that. Three
days leave room for a delivery that is looked at again the next morning, and bound
what a forwarded or logged link exposes. The signature covers the route path only,
not the host, so a proxy that adds a prefix or rewrites the host does not break it.

The delivery attaches the main chart to the session message (never to a template:
Twilio refuses MediaUrl with ContentSid, error 63016) only after fetching it once
through PUBLIC_BASE_URL as Twilio will (`briefing_chart`): when that fails, the
briefing goes without its chart, rather than failing at WhatsApp for want of it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from insights.charts import CHART_NAMES, MAIN_CHART

if TYPE_CHECKING:
    from insights.settings import TwilioSettings

ROUTE = "/media/charts/{name}/{day}.png"
LINK_LIFETIME = dt.timedelta(days=3)
KEY_LABEL = b"crm-intelligence chart links v1"
# WhatsApp's limit for an image (twilio.com/docs/whatsapp/guidance-whatsapp-media-messages).
MAX_MEDIA_BYTES = 5 * 1024 * 1024
PREFLIGHT_TIMEOUT_SECONDS = 30.0
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_EXPIRES = re.compile(r"[0-9]{1,12}")  # unix seconds, as the link spells them


@dataclass(frozen=True)
class Refusal:
    """Why a request for a chart is refused: the HTTP status and what the caller is told."""

    status: int
    detail: str


def link_key(auth_token: str) -> bytes:
    """The links' key: HMAC-SHA256 of a fixed label under the auth token, so the token itself is never the key."""
    return hmac.new(auth_token.encode(), KEY_LABEL, hashlib.sha256).digest()


def chart_path(name: str, day: dt.date) -> str:
    return ROUTE.format(name=name, day=day.isoformat())


def signature(auth_token: str, path: str, expires: int) -> str:
    return hmac.new(link_key(auth_token), f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()


def sign_chart_url(
    public_base_url: str,
    auth_token: str,
    day: dt.date,
    name: str = MAIN_CHART,
    *,
    now: float | None = None,
    lifetime: dt.timedelta = LINK_LIFETIME,
) -> str:
    """The signed URL of chart `name` of `day` under PUBLIC_BASE_URL, valid for `lifetime` from `now`."""
    if name not in CHART_NAMES:
        raise ValueError(f"unknown chart {name!r}")
    path = chart_path(name, day)
    expires = int((time.time() if now is None else now) + lifetime.total_seconds())
    return f"{public_base_url.rstrip('/')}{path}?expires={expires}&signature={signature(auth_token, path, expires)}"


def verify(auth_token: str, path: str, expires: str, offered: str, *, now: float | None = None) -> bool:
    """Whether `offered` signs `path` until `expires` (unix seconds, as the link spells them) and that is not past."""
    if not _EXPIRES.fullmatch(expires):
        return False
    expected = signature(auth_token, path, int(expires))
    signed = hmac.compare_digest(offered.encode(), expected.encode())  # constant time, whatever was offered
    return signed and int(expires) >= (time.time() if now is None else now)


def refusal(name: str, day: str, expires: str, offered: str) -> Refusal | None:
    """Why the API must not serve this chart request (None: serve it). Reads TWILIO_AUTH_TOKEN.

    An unknown chart or a malformed day is 404; a link without a valid signature, or past its expiry, 403.
    """
    if name not in CHART_NAMES or not _DAY.fullmatch(day):
        return Refusal(404, "no such chart")
    try:
        wanted = dt.date.fromisoformat(day)
    except ValueError:
        return Refusal(404, "no such chart")
    token = os.environ.get("TWILIO_AUTH_TOKEN", "").strip()
    if not token:
        return Refusal(503, "this server cannot check chart links: TWILIO_AUTH_TOKEN is not set")
    if not verify(token, chart_path(name, wanted), expires, offered):
        return Refusal(403, "this link is not signed by this server, or it has expired")
    return None


def briefing_chart(settings: TwilioSettings, day: dt.date) -> tuple[str | None, str]:
    """The signed URL of `day`'s main chart for the session messages, or None; and one line saying which.

    The URL is fetched once here, as Twilio will fetch it: a link Twilio cannot fetch fails the message at
    WhatsApp (11200), so without a chart that answers the briefing goes as text only. The line never shows
    the signature (a run's log may be read by more people than the chart).
    """
    if not settings.public_base_url:
        return None, "PUBLIC_BASE_URL is not set: the briefing goes without its chart"
    url = sign_chart_url(settings.public_base_url, settings.auth_token, day)
    where = f"{settings.public_base_url}{chart_path(MAIN_CHART, day)}"
    problem = _fetch_problem(url)
    if problem:
        return None, f"the chart at {where} cannot be fetched ({problem}): the briefing goes without it"
    return url, f"the session messages carry the chart {where} (a link valid {LINK_LIFETIME.days} days)"


def _fetch_problem(url: str) -> str | None:
    """Why Twilio could not take this URL as a WhatsApp image, or None."""
    import requests

    try:
        answer = requests.get(url, timeout=PREFLIGHT_TIMEOUT_SECONDS)
    except requests.RequestException as exc:
        return type(exc).__name__
    kind = answer.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if answer.status_code != 200:
        return f"HTTP {answer.status_code}"
    if kind != "image/png":
        return f"it is {kind or 'untyped'}, not image/png"
    if len(answer.content) > MAX_MEDIA_BYTES:
        return f"{len(answer.content):,} bytes, over WhatsApp's 5 MB"
    return None
