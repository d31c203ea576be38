"""List parameters and paging of `GET /crm/v8/{module}`, with Zoho's rules and errors.

Zoho pages a record list two ways:
- `page` + `per_page` (max 200) reach only the first 2,000 records; asking past them fails with
  DISCRETE_PAGINATION_LIMIT_EXCEEDED;
- `page_token` (from `info.next_page_token`, returned from page 1 on) reaches up to 100,000 records
  (`PageTokens(limit=...)`; a token chain is cut at exactly that many, and asking for the page after
  them fails with PAGINATION_LIMIT_EXCEEDED: a client reads further only by starting a new query).
  A token is bound to the user and to the other parameters (TOKEN_BOUND_DATA_MISMATCH otherwise),
  expires after 24 hours (EXPIRED_VALUE), and must not be combined with `page`
  (AMBIGUITY_DURING_PROCESSING); anything unreadable is INVALID_DATA.

Sandbox tokens are keyset cursors: they carry the sort key (sort value, id) of the last record
returned, signed so they cannot be forged. The next page starts right after that key in the current
data, so records that do not change while a client pages are returned exactly once, whatever is
created, changed or deleted meanwhile. A record that changes during paging may move: sorted by
Modified_Time ascending it reappears at the end (seen twice), descending it jumps ahead of the cursor
(missed by this pass); new records sorting after the cursor appear, deleted ones vanish. Zoho behaves
the same way, which is why incremental syncs merge on id and overlap their cursor.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from .zoho_format import ZohoError, parse_datetime

MAX_PER_PAGE = 200
MAX_FIELDS = 50
DISCRETE_LIMIT = 2_000
TOKEN_LIMIT = 100_000
PAGE_TOKEN_TTL = 24 * 3600
SORT_FIELDS = ("id", "Created_Time", "Modified_Time")
SORT_ORDERS = ("asc", "desc")
CONVERTED_VALUES = ("false", "true", "both")


@dataclass(frozen=True)
class ListQuery:
    """Everything that decides which records a list returns, in which order and how many per page."""

    module: str
    fields: tuple[str, ...]
    per_page: int
    sort_by: str
    sort_order: str
    converted: str
    modified_since: int | None

    @property
    def descending(self) -> bool:
        return self.sort_order == "desc"

    def binding(self) -> str:
        """A digest of the parameters a page token is bound to."""
        text = json.dumps(
            [
                self.module,
                sorted(self.fields),
                self.per_page,
                self.sort_by,
                self.sort_order,
                self.converted,
                self.modified_since,
            ]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ListRequest:
    query: ListQuery
    page: int  # the discrete page (1 when a token is used; the token knows its own page)
    page_token: str | None


def parse_list_request(
    module: str, params: Mapping[str, str], if_modified_since: str | None, tz: ZoneInfo
) -> ListRequest:
    fields = tuple(dict.fromkeys(f.strip() for f in params.get("fields", "").split(",") if f.strip()))
    if not fields:
        raise ZohoError("REQUIRED_PARAM_MISSING", {"param_name": "fields"})
    if len(fields) > MAX_FIELDS:
        raise ZohoError("LIMIT_EXCEEDED", {"limit": MAX_FIELDS, "param_name": "fields"})
    # Zoho caps per_page at 200 rather than failing; the cap shows in info.per_page.
    per_page = min(positive_int(params, "per_page", MAX_PER_PAGE), MAX_PER_PAGE)
    sort_by = choice(params, "sort_by", SORT_FIELDS, "id")
    sort_order = choice(params, "sort_order", SORT_ORDERS, "desc")
    converted = choice(params, "converted", CONVERTED_VALUES, "false") if module == "Leads" else "both"
    query = ListQuery(module, fields, per_page, sort_by, sort_order, converted, modified_since(if_modified_since, tz))

    page_token = params.get("page_token") or None
    if page_token is not None:
        if "page" in params:
            raise ZohoError("AMBIGUITY_DURING_PROCESSING", {"ambiguity_due_to": ["page", "page_token"]})
        return ListRequest(query, 1, page_token)
    page = positive_int(params, "page", 1)
    if page * per_page > DISCRETE_LIMIT:
        raise ZohoError("DISCRETE_PAGINATION_LIMIT_EXCEEDED", {"limit": DISCRETE_LIMIT})
    return ListRequest(query, page, None)


def modified_since(header: str | None, tz: ZoneInfo) -> int | None:
    """The If-Modified-Since header as epoch seconds (None when absent); unreadable -> INVALID_DATA."""
    if not header:
        return None
    try:
        return parse_datetime(header, tz)
    except (ValueError, TypeError):
        raise ZohoError("INVALID_DATA", {"header_name": "If-Modified-Since"}) from None


def positive_int(params: Mapping[str, str], name: str, default: int) -> int:
    raw = params.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ZohoError("INVALID_DATA", {"param_name": name, "expected_data_type": "integer"})
    return value


def choice(params: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = params.get(name) or default
    if value not in allowed:
        raise ZohoError("INVALID_DATA", {"param_name": name, "supported_values": list(allowed)})
    return value


@dataclass(frozen=True)
class Cursor:
    last_key: tuple[Any, ...]
    page: int
    served: int
    expires_at: int


class PageTokens:
    """Issues and checks signed keyset page tokens (see the module docstring)."""

    def __init__(
        self, ttl: int = PAGE_TOKEN_TTL, clock: Callable[[], float] = time.time, *, limit: int = TOKEN_LIMIT
    ) -> None:
        if limit < 1:
            raise ValueError("the page token limit must be at least 1 record")
        self.ttl = ttl
        self.clock = clock
        self.limit = limit  # records one chain of tokens reaches (Zoho: 100,000)
        self._secret = secrets.token_bytes(32)

    def issue(
        self, user_id: str, query: ListQuery, last_key: tuple[Any, ...], page: int, served: int
    ) -> tuple[str, int]:
        """A token for the page after `last_key`; returns it and its expiry (epoch seconds)."""
        issued = int(self.clock())
        body = json.dumps([user_id, query.binding(), list(last_key), page, served, issued], separators=(",", ":"))
        encoded = base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")
        return f"{encoded}.{self._sign(encoded)}", issued + self.ttl

    def read(self, token: str, user_id: str, query: ListQuery) -> Cursor:
        try:
            encoded, signature = token.rsplit(".", 1)
            if not hmac.compare_digest(signature, self._sign(encoded)):
                raise ValueError("bad signature")
            owner, binding, last_key, page, served, issued = json.loads(
                base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            )
        except (ValueError, TypeError, binascii.Error):
            raise ZohoError("INVALID_DATA", {"param_name": "page_token"}) from None
        if owner != user_id:
            raise ZohoError("INVALID_DATA", {"param_name": "page_token"})
        if binding != query.binding():
            raise ZohoError("TOKEN_BOUND_DATA_MISMATCH", {"param_name": "page_token"})
        if self.clock() > issued + self.ttl:
            raise ZohoError("EXPIRED_VALUE", {"param_name": "page_token"})
        if served >= self.limit:
            raise ZohoError(
                "PAGINATION_LIMIT_EXCEEDED",
                {"limit": self.limit},
                message=f"You can only get the first {self.limit} records using page_token param",
            )
        return Cursor(tuple(last_key), page, served, issued + self.ttl)

    def remaining(self, served: int) -> int:
        """How many more records a chain that has served `served` may return."""
        return max(0, self.limit - served)

    def _sign(self, encoded: str) -> str:
        return hmac.new(self._secret, encoded.encode(), hashlib.sha256).hexdigest()[:24]
