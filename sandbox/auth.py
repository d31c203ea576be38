"""Zoho Accounts' refresh-token grant and the access-token check of every API call.

Behaviour copied from Zoho's OAuth documentation:
- `POST /oauth/v2/token` takes its parameters from the query string, a form body or (client id and
  secret) HTTP Basic auth, and answers errors with HTTP 200 and `{"error": "invalid_code"}` (unknown
  or revoked refresh token) or `{"error": "invalid_client"}` (wrong client id/secret);
- an access token lives `expires_in` seconds; at most 15 are live per refresh token, and minting the
  16th silently invalidates the oldest (why a client must refresh single-flight);
- Zoho also blocks a refresh token for the rest of a 10-minute window after 10 mints. Tests mint many
  tokens, so that throttle is opt-in here (`mint_limit`).
API calls must send `Authorization: Zoho-oauthtoken <token>` (`Bearer` is accepted too): none gives
401 AUTHENTICATION_FAILURE, an unknown or expired token 401 INVALID_TOKEN.
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .zoho_format import ZohoError

# Fixed, documented sandbox credentials (they open nothing but a local sandbox).
DEFAULT_CLIENT_ID = "1000.SANDBOX0CLIENT0ID0000000000000"
DEFAULT_CLIENT_SECRET = "sandbox0client0secret00000000000000000000"
DEFAULT_REFRESH_TOKEN = "1000.sandbox0refresh0token0000000000.00000000000000000000000000000000"
SCOPE = "ZohoCRM.modules.ALL ZohoCRM.settings.ALL ZohoCRM.users.ALL ZohoCRM.org.ALL"
MAX_LIVE_TOKENS = 15
MINT_WINDOW_SECONDS = 600
THROTTLED = {
    "error_description": "You have made too many requests continuously. Please try again after some time.",
    "error": "Access Denied",
    "status": "failure",
}


@dataclass
class _AccessToken:
    refresh_token: str
    user_id: str
    expires_at: float


class TokenAuthority:
    def __init__(
        self,
        *,
        user_id: str,
        ttl: int = 3600,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        refresh_token: str = DEFAULT_REFRESH_TOKEN,
        mint_limit: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.client_id = client_id
        self.client_secret = client_secret
        self.refresh_tokens = {refresh_token: user_id}
        self.mint_limit = mint_limit
        self.clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[str, _AccessToken] = {}
        self._live: dict[str, deque[str]] = {}
        self._mints: dict[str, deque[float]] = {}

    def grant(self, params: Mapping[str, str], authorization: str | None, api_domain: str) -> dict[str, Any]:
        """The token endpoint's JSON answer (always sent with HTTP 200, like Zoho Accounts)."""
        client_id, client_secret = params.get("client_id"), params.get("client_secret")
        basic = _basic_credentials(authorization)
        if basic is not None:
            client_id, client_secret = basic
        if client_id != self.client_id or client_secret != self.client_secret:
            return {"error": "invalid_client"}
        grant_type = params.get("grant_type")
        if grant_type == "authorization_code":
            return {"error": "invalid_code"}  # the sandbox never issues grant codes
        if grant_type != "refresh_token":
            return {"error": "unsupported_grant_type"}
        refresh_token = params.get("refresh_token", "")
        if refresh_token not in self.refresh_tokens:
            return {"error": "invalid_code"}
        with self._lock:
            if not self._may_mint(refresh_token):
                return dict(THROTTLED)
            token = self._mint(refresh_token)
        return {
            "access_token": token,
            "scope": SCOPE,
            "api_domain": api_domain,
            "token_type": "Bearer",
            "expires_in": self.ttl,
        }

    def _may_mint(self, refresh_token: str) -> bool:
        if self.mint_limit is None:
            return True
        now, mints = self.clock(), self._mints.setdefault(refresh_token, deque())
        while mints and mints[0] <= now - MINT_WINDOW_SECONDS:
            mints.popleft()
        if len(mints) >= self.mint_limit:
            return False
        mints.append(now)
        return True

    def _mint(self, refresh_token: str) -> str:
        token = f"1000.{secrets.token_hex(16)}.{secrets.token_hex(16)}"
        self._tokens[token] = _AccessToken(refresh_token, self.refresh_tokens[refresh_token], self.clock() + self.ttl)
        live = self._live.setdefault(refresh_token, deque())
        live.append(token)
        while len(live) > MAX_LIVE_TOKENS:
            self._tokens.pop(live.popleft(), None)
        return token

    def authenticate(self, authorization: str | None) -> str:
        """The user id behind an API call's Authorization header, or ZohoError (401)."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() not in ("zoho-oauthtoken", "bearer") or not token:
            raise ZohoError("AUTHENTICATION_FAILURE")
        with self._lock:
            access = self._tokens.get(token)
            if access is None or access.expires_at <= self.clock():
                raise ZohoError("INVALID_TOKEN")
            return access.user_id

    def expire_all(self) -> None:
        """Every access token issued so far stops working (their next use gets INVALID_TOKEN)."""
        with self._lock:
            self._tokens.clear()
            self._live.clear()

    def credentials(self) -> dict[str, str]:
        return {
            "ZOHO_CLIENT_ID": self.client_id,
            "ZOHO_CLIENT_SECRET": self.client_secret,
            "ZOHO_REFRESH_TOKEN": next(iter(self.refresh_tokens)),
        }


def _basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    scheme, _, encoded = (authorization or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        client_id, _, client_secret = base64.b64decode(encoded.strip()).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return client_id, client_secret
