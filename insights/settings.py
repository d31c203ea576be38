"""Settings of the briefing, the delivery and the API, read from the environment in one place.

Each group is read only when the step that needs it runs, so `--dry-run` works
without Twilio credentials and the API works without Ollama. A missing required
variable raises `ConfigError` naming it; the CLIs print that one line and exit
non-zero. Secrets are kept out of `repr()` so they never reach a log.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from insights.recipients import Recipient, load_recipients
from warehouse import ConfigError

DEFAULT_OLLAMA_URL = "http://localhost:11434"
DEFAULT_OLLAMA_MODEL = "llama3.2:1b"
# The largest context the briefing may ask for; it asks for less whenever the prompt allows (faster on a CPU).
DEFAULT_MAX_NUM_CTX = 8192
# How long one answer may take. A complete answer is a few hundred tokens and num_predict caps it, so even
# llama3.2:1b on a two-core runner answers well within this; a stuck server costs this much, not more.
DEFAULT_TIMEOUT_S = 90.0


def _positive(name: str, default: float) -> float:
    return number_setting(name, default)


def seconds_setting(name: str, default: float, *, zero_allowed: bool = False) -> float:
    """A duration in seconds from the environment variable `name`, else `default`."""
    return number_setting(name, default, zero_allowed=zero_allowed, unit=" of seconds")


def number_setting(name: str, default: float, *, zero_allowed: bool = False, unit: str = "") -> float:
    """A number from the environment variable `name`, else `default`; ConfigError naming it when it is not
    a positive number (or zero, where `zero_allowed`)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (value >= 0 if zero_allowed else value > 0):
        kind = "zero or a positive number" if zero_allowed else "a positive number"
        raise ConfigError(f"{name} must be {kind}{unit} (got {raw!r})")
    return value


def _required(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is not set")
    return value


@dataclass(frozen=True)
class OllamaSettings:
    """Where the model runs. A malformed OLLAMA_BASE_URL is not a ConfigError: the briefing is a daily job
    that must still go out, so the model stage treats it like an unreachable Ollama (see `url_problem`)."""

    base_url: str
    model: str
    max_num_ctx: int = DEFAULT_MAX_NUM_CTX  # OLLAMA_NUM_CTX: the model's (or the machine's) context limit
    timeout: float = DEFAULT_TIMEOUT_S  # OLLAMA_TIMEOUT, seconds

    @classmethod
    def from_env(cls) -> OllamaSettings:
        return cls(
            base_url=os.environ.get("OLLAMA_BASE_URL", "").strip() or DEFAULT_OLLAMA_URL,
            model=os.environ.get("OLLAMA_MODEL", "").strip() or DEFAULT_OLLAMA_MODEL,
            max_num_ctx=int(_positive("OLLAMA_NUM_CTX", DEFAULT_MAX_NUM_CTX)),
            timeout=_positive("OLLAMA_TIMEOUT", DEFAULT_TIMEOUT_S),
        )

    @property
    def url_problem(self) -> str | None:
        """Why `base_url` cannot be an Ollama server's address, or None. Like Ollama's own client, a bare
        `host:port` means http."""
        url = self.base_url if "://" in self.base_url else f"http://{self.base_url}"
        try:
            parts = urlsplit(url)
            _ = parts.port  # raises ValueError for a port that is not a number in 0..65535
        except ValueError as exc:
            return f"OLLAMA_BASE_URL {self.base_url!r} is not a valid URL ({exc})"
        if parts.scheme not in ("http", "https"):
            return f"OLLAMA_BASE_URL {self.base_url!r} is not a valid URL (the scheme must be http or https)"
        if any(ch.isspace() for ch in url):
            return f"OLLAMA_BASE_URL {self.base_url!r} is not a valid URL (it contains a space)"
        if not parts.hostname:
            return f"OLLAMA_BASE_URL {self.base_url!r} is not a valid URL (no host name)"
        return None


NO_RECIPIENTS = "no recipients: set RECIPIENTS_FILE (or write recipients.yml) or RECIPIENT_PHONE_NUMBER"


@dataclass(frozen=True)
class TwilioSettings:
    account_sid: str
    auth_token: str = field(repr=False)
    from_number: str
    # Who gets which briefing: the recipients file and RECIPIENT_PHONE_NUMBER (insights.recipients).
    recipients: tuple[Recipient, ...]
    # Only for pointing the client at a proxy or a local emulator; unset in production.
    api_base: str | None = None
    # PUBLIC_BASE_URL: where this project's API is reached from outside, without a trailing slash; optional.
    public_base_url: str | None = None
    # TWILIO_TEMPLATE_SID: the approved template (HX...) sent outside WhatsApp's 24-hour window; optional.
    template_sid: str | None = None

    @classmethod
    def from_env(cls, *, recipients: tuple[Recipient, ...] | None = None) -> TwilioSettings:
        """The settings from the environment. `recipients`, when given, stands in for the recipients'
        sources (the doctor checks those on their own and still checks the credentials when they are wrong)."""
        if recipients is None:
            recipients = load_recipients()  # RecipientsError (a ConfigError) names each line that is wrong
            if not recipients:
                raise ConfigError(NO_RECIPIENTS)
        return cls(
            account_sid=_required("TWILIO_ACCOUNT_SID"),
            auth_token=_required("TWILIO_AUTH_TOKEN"),
            from_number=_required("TWILIO_FROM_NUMBER"),
            recipients=recipients,
            api_base=os.environ.get("TWILIO_API_BASE", "").strip() or None,
            public_base_url=_public_base_url(),
            template_sid=_template_sid(),
        )


def _template_sid() -> str | None:
    """TWILIO_TEMPLATE_SID: a Content SID (HX and 32 hex digits), as `python -m insights.whatsapp create-template`
    prints it."""
    raw = os.environ.get("TWILIO_TEMPLATE_SID", "").strip()
    if raw and not re.fullmatch(r"HX[0-9a-fA-F]{32}", raw):
        raise ConfigError(f"TWILIO_TEMPLATE_SID must be a Content SID, HX and 32 hex digits (got {raw[:40]!r})")
    return raw or None


def _public_base_url() -> str | None:
    """PUBLIC_BASE_URL, an http(s) URL with a host and no query, without its trailing slash; None when unset."""
    raw = os.environ.get("PUBLIC_BASE_URL", "").strip()
    if not raw:
        return None
    shown = "a URL with a user or password in it" if "@" in raw else repr(raw)  # never echo a password
    wrong = (
        f"PUBLIC_BASE_URL must be an http(s) URL with a host and no query, e.g. https://crm.example.com (got {shown}"
    )
    try:
        parts = urlsplit(raw)
        _ = parts.port  # raises ValueError for a port that is not a number in 0..65535
    except ValueError as exc:
        raise ConfigError(f"{wrong}: {exc})") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ConfigError(f"{wrong}: the scheme must be http or https)")
    if not parts.hostname:
        raise ConfigError(f"{wrong}: no host name)")
    if parts.query or parts.fragment or raw.endswith(("?", "#")):
        raise ConfigError(f"{wrong}: remove the ?query or #fragment)")
    if any(ch.isspace() for ch in raw):
        raise ConfigError(f"{wrong}: it contains a space)")
    return raw.rstrip("/")


@dataclass(frozen=True)
class ApiSettings:
    token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls) -> ApiSettings:
        return cls(token=os.environ.get("API_TOKEN", "").strip() or None)
