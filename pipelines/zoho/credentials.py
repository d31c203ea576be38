"""Where the Zoho settings come from, for the extraction and the doctor alike, and the access token they share.

One resolver, so that the doctor checks exactly what the extraction will use. Each setting is looked up:

1. dlt's own environment variable, `SOURCES__ZOHO__<NAME>` (or `SOURCES__ZOHO__ZOHO_CRM__<NAME>`);
2. the plain `ZOHO_<NAME>`;
3. `[sources.zoho]` (or `[sources.zoho.zoho_crm]`) in `.dlt/secrets.toml` / `.dlt/config.toml`, read by
   dlt's own config providers, so the project folder dlt is pointed at (DLT_PROJECT_DIR) is honoured.

The secrets (client id and secret, refresh token) come from the environment or secrets.toml only, as
dlt would have it; dc, accounts_url and credit_floor from any of them. Empty values count as unset.

Zoho lets a refresh token mint 10 access tokens per 10 minutes, and each one lasts an hour. `TokenCache`
keeps the last one in a file only the user can read, so the doctor and the extraction of a daily run
(and a run repeated within the hour) share one token instead of minting one each.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlt.common.configuration.container import Container
from dlt.common.configuration.providers import EnvironProvider
from dlt.common.configuration.providers.provider import ConfigProvider
from dlt.common.configuration.specs import PluggableRunContext
from dlt.common.runtime import run_context
from dlt.common.typing import TSecretStrValue

from warehouse import ConfigError

from .helpers import ZohoClient, ZohoCredentials
from .settings import (
    ACCOUNTS_URLS,
    API_DOMAINS,
    CREDIT_FLOOR,
    DEFAULT_DC,
    RETRY_ATTEMPTS,
    RETRY_BACKOFF_SECONDS,
    TOKEN_REFRESH_MARGIN_SECONDS,
)

logger = logging.getLogger(__name__)

SECRET_NAMES = ("client_id", "client_secret", "refresh_token")
# dlt's sections of the `zoho_crm` source (section "zoho"), most specific first.
SECTIONS = (("sources", "zoho", "zoho_crm"), ("sources", "zoho"))
# Under dlt's data folder (DLT_DATA_DIR, else ~/.dlt), beside its `pipelines` folder and not in it:
# `dlt pipeline --list` shows every folder there as a pipeline.
TOKEN_FOLDER = "zoho_access_tokens"
# Zoho's access tokens last an hour: a file this old holds a dead token (of a sandbox org long stopped,
# a client no longer used), and is removed when another token is saved.
STALE_TOKEN_FILE_SECONDS = 24 * 3600


def setting(name: str) -> str | None:
    """One Zoho setting (`client_id`, `dc`, ...) by the precedence of the module docstring; None if unset."""
    providers: list[ConfigProvider] = list(Container()[PluggableRunContext].providers.providers)
    environment = [p for p in providers if isinstance(p, EnvironProvider)]
    files = [p for p in providers if not isinstance(p, EnvironProvider)]
    return _provided(environment, name) or _clean(os.environ.get(f"ZOHO_{name.upper()}")) or _provided(files, name)


def _provided(providers: list[ConfigProvider], name: str) -> str | None:
    secret = name in SECRET_NAMES
    for provider in providers:
        if provider.is_empty or (secret and not provider.supports_secrets):
            continue
        for sections in SECTIONS:
            value, _ = provider.get_value(name, TSecretStrValue if secret else str, None, *sections)
            if _clean(value) is not None:
                return _clean(value)
    return None


def _clean(value: Any) -> str | None:
    text = "" if value is None else str(value).strip()
    return text or None


@dataclass(frozen=True)
class ZohoSettings:
    """What reaches one Zoho org: the self-client's credentials, its data centre and accounts server."""

    credentials: ZohoCredentials
    dc: str
    accounts_url: str
    credit_floor: int

    @property
    def fallback_api_domain(self) -> str:
        """The API host if a token response lacks `api_domain` (Zoho always sends it)."""
        return API_DOMAINS[self.dc]


def resolve_settings() -> ZohoSettings:
    """The Zoho settings, or ConfigError naming the first one missing or malformed (missing secrets first)."""
    secrets = {name: setting(name) or "" for name in SECRET_NAMES}
    missing = [name for name, value in secrets.items() if not value]
    if missing:
        raise ConfigError(missing_message(missing))
    dc = (setting("dc") or DEFAULT_DC).lower()
    if dc not in ACCOUNTS_URLS:
        raise ConfigError(f"ZOHO_DC must be one of {', '.join(ACCOUNTS_URLS)} (got {dc!r})")
    return ZohoSettings(
        credentials=ZohoCredentials(**secrets),
        dc=dc,
        accounts_url=(setting("accounts_url") or ACCOUNTS_URLS[dc]).rstrip("/"),
        credit_floor=_credit_floor(setting("credit_floor")),
    )


def missing_message(missing: list[str]) -> str:
    plain = ", ".join(f"ZOHO_{name.upper()}" for name in missing)
    dlt_names = ", ".join(f"SOURCES__ZOHO__{name.upper()}" for name in missing)
    verb = "is" if len(missing) == 1 else "are"
    return f"{plain} {verb} not set (or {dlt_names} / [sources.zoho] in .dlt/secrets.toml)"


def _credit_floor(raw: str | None) -> int:
    if raw is None:
        return CREDIT_FLOOR
    try:
        floor = int(raw)
    except ValueError:
        floor = -1
    if floor < 0:
        raise ConfigError(f"ZOHO_CREDIT_FLOOR must be a whole number of API credits, 0 or more (got {raw!r})")
    return floor


def connect(
    settings: ZohoSettings,
    *,
    retry_attempts: int = RETRY_ATTEMPTS,
    retry_backoff_seconds: float = RETRY_BACKOFF_SECONDS,
    credit_floor: int = 0,
    on_request: Callable[[str], None] | None = None,
) -> ZohoClient:
    """A client of the org, starting from the access token an earlier process left in the cache."""
    return ZohoClient(
        settings.credentials,
        settings.accounts_url,
        fallback_api_domain=settings.fallback_api_domain,
        retry_attempts=retry_attempts,
        retry_backoff_seconds=retry_backoff_seconds,
        credit_floor=credit_floor,
        on_request=on_request,
        token_cache=TokenCache.of(settings),
    )


# ---------------------------------------------------------------------- the shared access token


@dataclass(frozen=True)
class CachedToken:
    access_token: str
    api_domain: str
    expires_at: float  # seconds since the epoch: it has to mean the same in the next process

    def seconds_left(self) -> float:
        return self.expires_at - time.time()


class TokenCache:
    """The last access token of one client, accounts server and refresh token, in a file of its own.

    The file is the user's alone (0600, in a 0700 folder); one found with wider permissions or another
    owner is ignored. Its name is a hash: a token minted from another refresh token (say the user made a
    new one with more scopes) is never picked up. A token with `TOKEN_REFRESH_MARGIN_SECONDS` or less
    left is not used; one Zoho rejected is dropped. A cache that cannot be read or written is skipped:
    it only saves token requests, and never stops a run.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def of(cls, settings: ZohoSettings) -> TokenCache:
        credentials = settings.credentials
        key = hashlib.sha256(
            "\n".join((credentials.client_id, settings.accounts_url, credentials.refresh_token)).encode()
        ).hexdigest()[:32]
        return cls(Path(run_context.active().get_data_entity(TOKEN_FOLDER)) / f"{key}.json")

    def load(self) -> CachedToken | None:
        """The cached token if it still has more than the margin left."""
        try:
            status = self.path.stat()
            if status.st_mode & 0o077 or (hasattr(os, "getuid") and status.st_uid != os.getuid()):
                logger.warning("ignoring the cached Zoho access token: its file is not the user's alone")
                return None
            body = json.loads(self.path.read_text())
            token = CachedToken(str(body["access_token"]), str(body["api_domain"]), float(body["expires_at"]))
        except (OSError, ValueError, KeyError, TypeError):  # none yet, or unreadable: a new token is requested
            return None
        return token if token.seconds_left() > TOKEN_REFRESH_MARGIN_SECONDS else None

    def save(self, access_token: str, api_domain: str, expires_in: float) -> None:
        """Keep a token Zoho just minted, valid `expires_in` seconds from now."""
        token = CachedToken(access_token, api_domain, time.time() + expires_in)
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(descriptor, 0o600)  # also when a leftover of a killed run was there with other permissions
            with os.fdopen(descriptor, "w") as out:
                json.dump(
                    {
                        "access_token": token.access_token,
                        "api_domain": token.api_domain,
                        "expires_at": token.expires_at,
                    },
                    out,
                )
            os.replace(temporary, self.path)  # a process reading meanwhile sees the old token or the new one
        except OSError as exc:
            logger.warning(
                "could not cache the Zoho access token (%s); the next run requests its own", type(exc).__name__
            )
            return
        self._prune()

    def _prune(self) -> None:
        for other in self.path.parent.glob("*.json"):
            try:
                if time.time() - other.stat().st_mtime > STALE_TOKEN_FILE_SECONDS:
                    other.unlink()
            except OSError:
                pass

    def drop(self, access_token: str) -> None:
        """Forget `access_token` (Zoho rejected it), unless another process already cached a newer one."""
        cached = self.load()
        if cached is not None and cached.access_token != access_token:
            return
        try:
            self.path.unlink()
        except OSError:
            pass
