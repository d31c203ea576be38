"""HTTP for the Zoho CRM source: OAuth refresh, retries, paging, and turning Zoho values into typed ones.

Zoho quirks handled here (see https://www.zoho.com/crm/developer/docs/api/v8/):
token errors arrive as HTTP 200 with an `error` key; an expired access token is
answered with 401 `INVALID_TOKEN` (sometimes `AUTHENTICATION_FAILURE`); "no data"
is 204 (or 304 with If-Modified-Since) with an empty body; more than 2,000
records can only be reached with `page_token`, and one token chain ends at
100,000 (PAGINATION_LIMIT_EXCEEDED); datetimes carry the CRM user's UTC offset. Nothing here logs or raises with a token or a secret in it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import requests

from .settings import (
    API_DOMAINS,
    API_PATH,
    COQL_LIMIT,
    IDS_PER_REQUEST,
    LOOKUP_PARTS,
    PAGE_TOKEN_LIMIT,
    REQUEST_TIMEOUT_SECONDS,
    RETRY_ATTEMPTS,
    RETRY_BACKOFF_SECONDS,
    RETRY_MAX_DELAY_SECONDS,
    TOKEN_PATH,
    TOKEN_REFRESH_MARGIN_SECONDS,
    FieldKind,
)

if TYPE_CHECKING:
    from .credentials import TokenCache

logger = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
# The token endpoint's answer once a refresh token minted 10 access tokens in 10 minutes (HTTP 200).
TOKEN_THROTTLED = "Access Denied"
EXPIRED_TOKEN_CODES = frozenset({"INVALID_TOKEN", "AUTHENTICATION_FAILURE"})
# A page token Zoho no longer honours: the query starts again from where the read got to.
RESTARTABLE_PAGE_CODES = frozenset({"PAGINATION_LIMIT_EXCEEDED", "EXPIRED_VALUE", "TOKEN_BOUND_DATA_MISMATCH"})
CREDITS_HEADER = "X-API-CREDITS-REMAINING"
# Failures of the connection itself, including a body cut off mid-transfer.
CONNECTION_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)


class ZohoError(RuntimeError):
    """Zoho refused a request or could not be reached; the message is safe to print.

    `code` is Zoho's error code (`PAGINATION_LIMIT_EXCEEDED`, ...) when Zoho sent one.
    `retry_later` marks failures that waiting cures (API credits or token mints used up):
    the command exits with its "try later" status instead of plain failure.
    """

    def __init__(self, message: str, *, code: str | None = None, retry_later: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.retry_later = retry_later


class CreditFloorReached(ZohoError):
    """Zoho reports fewer API credits left than the configured floor: stop, and continue on the next run."""

    def __init__(self, remaining: int, floor: int) -> None:
        super().__init__(
            f"Zoho API credits left ({remaining:,}) are below ZOHO_CREDIT_FLOOR ({floor:,}); what was read"
            " is loaded, and the next run continues from there",
            code="CREDIT_FLOOR",
            retry_later=True,
        )
        self.remaining = remaining
        self.floor = floor


@dataclass(frozen=True)
class ZohoCredentials:
    """The OAuth client and the refresh token of a self-client (or server-based) app."""

    client_id: str
    client_secret: str = field(repr=False)
    refresh_token: str = field(repr=False)


class ZohoClient:
    """A session against one Zoho org: mints access tokens and GETs CRM API paths.

    The access token is renewed shortly before it expires and, once per request,
    when Zoho answers 401 anyway (tokens can be revoked, and an org allows only 15
    live tokens per refresh token). Refreshes are single-flight so parallel
    resources never mint tokens that evict each other. With a `token_cache` the
    client starts from the token an earlier process minted, and leaves its own
    there for the next: Zoho allows a refresh token 10 new tokens per 10 minutes.
    """

    def __init__(
        self,
        credentials: ZohoCredentials,
        accounts_url: str,
        *,
        fallback_api_domain: str = API_DOMAINS["com"],
        retry_attempts: int = RETRY_ATTEMPTS,
        retry_backoff_seconds: float = RETRY_BACKOFF_SECONDS,
        credit_floor: int = 0,
        on_request: Callable[[str], None] | None = None,
        token_cache: TokenCache | None = None,
    ) -> None:
        self._credentials = credentials
        self._token_cache = token_cache
        self._token_url = accounts_url.rstrip("/") + TOKEN_PATH
        self._fallback_api_domain = fallback_api_domain
        self._retry_attempts = max(1, retry_attempts)
        self._retry_backoff = retry_backoff_seconds
        self._on_request = on_request or (lambda path: None)
        self._session = requests.Session()
        self._lock = threading.Lock()
        self._access_token: str | None = None
        self._token_expires_at = 0.0
        self._api_base: str | None = None
        self.token_from_cache = False  # the token in use was minted by an earlier process
        self.credit_floor = credit_floor
        self.credits_remaining: int | None = None  # from X-API-CREDITS-REMAINING (sent once half is used)

    # ------------------------------------------------------------------ OAuth

    def _token(self, *, stale: str | None = None) -> str:
        """A valid access token; `stale` is one Zoho just rejected and must be replaced."""
        with self._lock:
            if stale is not None and self._token_cache is not None:
                self._token_cache.drop(stale)
            elif self._access_token is None:
                self._take_cached()
            fresh = self._access_token is not None and time.monotonic() < self._token_expires_at
            if not fresh or self._access_token == stale:
                self._refresh()
            assert self._access_token is not None
            return self._access_token

    def _take_cached(self) -> None:
        cached = self._token_cache.load() if self._token_cache is not None else None
        if cached is None:
            return
        self._access_token = cached.access_token
        self._token_expires_at = time.monotonic() + cached.seconds_left() - TOKEN_REFRESH_MARGIN_SECONDS
        self._api_base = cached.api_domain.rstrip("/") + API_PATH
        self.token_from_cache = True
        logger.info("reusing the cached Zoho access token (valid %ds more)", int(cached.seconds_left()))

    def _refresh(self) -> None:
        # Form body, not query string: the secrets then never appear in a URL or an access log.
        data = {
            "grant_type": "refresh_token",
            "client_id": self._credentials.client_id,
            "client_secret": self._credentials.client_secret,
            "refresh_token": self._credentials.refresh_token,
        }
        response, body = self._send("POST", self._token_url, what="token request", counted=False, data=data)
        if body is None:
            raise ZohoError(f"token request failed: HTTP {response.status_code}, not JSON")
        if "access_token" not in body:
            # Zoho reports token errors with HTTP 200 and e.g. {"error": "invalid_code"}.
            error = str(body.get("error") or f"HTTP {response.status_code}")
            raise ZohoError(
                f"token request failed: {error}{_TOKEN_HINTS.get(error, '')}",
                code=error,
                retry_later=error == TOKEN_THROTTLED,
            )
        expires_in = float(body.get("expires_in") or 3600)
        api_domain = str(body.get("api_domain") or self._fallback_api_domain)
        self._access_token = body["access_token"]
        self._token_expires_at = time.monotonic() + max(expires_in - TOKEN_REFRESH_MARGIN_SECONDS, expires_in / 2)
        self._api_base = api_domain.rstrip("/") + API_PATH
        self.token_from_cache = False
        logger.info("obtained a Zoho access token (valid %ss)", int(expires_in))
        if self._token_cache is not None:
            self._token_cache.save(body["access_token"], api_domain, expires_in)

    # ------------------------------------------------------------------ requests

    def below_floor(self) -> bool:
        """True once Zoho reported fewer credits left than the floor (0: no floor)."""
        return (
            self.credit_floor > 0 and self.credits_remaining is not None and self.credits_remaining < self.credit_floor
        )

    def check_floor(self) -> None:
        if self.below_floor():
            assert self.credits_remaining is not None
            raise CreditFloorReached(self.credits_remaining, self.credit_floor)

    def get(
        self, path: str, params: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None
    ) -> dict[str, Any] | None:
        """GET `{api_domain}/crm/v8/{path}`; returns the JSON body, or None for 204/304 (no data).

        Raises CreditFloorReached instead of calling once Zoho reported credits below the floor.
        """
        return self._call("GET", path, params=params, headers=headers)

    def post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """POST a JSON body (a COQL query) to `{api_domain}/crm/v8/{path}`; like `get`."""
        return self._call("POST", path, json=dict(body))

    def _call(
        self, method: str, path: str, *, headers: Mapping[str, str] | None = None, **kwargs: Any
    ) -> dict[str, Any] | None:
        self.check_floor()
        token = self._token()
        for attempt in (1, 2):
            assert self._api_base is not None
            response, body = self._send(
                method,
                f"{self._api_base}/{path.lstrip('/')}",
                what=f"{method} {path}",
                counted=True,
                headers={**(headers or {}), "Authorization": f"Zoho-oauthtoken {token}"},
                **kwargs,
            )
            if response.status_code in (204, 304):
                return None
            code = str((body or {}).get("code", ""))
            if response.status_code == 401 and code in EXPIRED_TOKEN_CODES and attempt == 1:
                logger.info("access token rejected (%s); refreshing once", code)
                token = self._token(stale=token)
                continue
            if response.status_code >= 400 or body is None:
                message = (body or {}).get("message") or response.reason
                raise ZohoError(
                    f"{method} {path} failed: HTTP {response.status_code} {code or ''} {message}".replace(
                        "  ", " "
                    ).strip(),
                    code=code or None,
                )
            return body
        raise AssertionError("unreachable")

    def _send(
        self, method: str, url: str, *, what: str, counted: bool, **kwargs: Any
    ) -> tuple[requests.Response, dict[str, Any] | None]:
        """One HTTP exchange and its JSON body, retried with exponential backoff on 429, 5xx, connection
        errors and unreadable bodies.

        A 2xx whose body is not JSON (cut off by a proxy, an HTML maintenance page) is as transient as
        a 5xx, so it is retried the same way, and reported as what it is when the attempts run out.
        `counted` exchanges are reported to `on_request` once per answer Zoho gives (an API call that
        costs credits), retries included.
        """
        delay = self._retry_backoff
        for attempt in range(1, self._retry_attempts + 1):
            try:
                response = self._session.request(method, url, timeout=REQUEST_TIMEOUT_SECONDS, **kwargs)
            except CONNECTION_ERRORS as exc:
                if attempt == self._retry_attempts:
                    raise ZohoError(f"{what}: cannot reach {_host(url)} ({type(exc).__name__})") from None
                problem = type(exc).__name__
            else:
                if counted:
                    self._on_request(what)
                    self._note_credits(response)
                body, unreadable = _read_body(response)
                if response.status_code not in RETRYABLE_STATUS and not unreadable:
                    return response, body
                if response.status_code in RETRYABLE_STATUS:
                    code = (body or {}).get("code") or (body or {}).get("error") or response.reason
                    problem = f"HTTP {response.status_code} {code}"
                else:
                    problem = unreadable
                if attempt == self._retry_attempts:
                    raise ZohoError(
                        f"{what} failed: {problem} after {attempt} attempts",
                        retry_later=response.status_code == 429,
                    )
                retry_after = _retry_after_seconds(response)
                if retry_after is not None:
                    delay = retry_after
            wait = min(delay, RETRY_MAX_DELAY_SECONDS) * (1 + random.random() / 10)
            logger.warning(
                "%s: %s, retrying in %.1fs (attempt %d of %d)", what, problem, wait, attempt + 1, self._retry_attempts
            )
            time.sleep(wait)
            delay *= 2
        raise AssertionError("unreachable")

    def _note_credits(self, response: requests.Response) -> None:
        value = response.headers.get(CREDITS_HEADER, "").strip()
        if value.isdigit():
            self.credits_remaining = int(value)


_TOKEN_HINTS = {
    "invalid_client": " (check ZOHO_CLIENT_ID / ZOHO_CLIENT_SECRET, and ZOHO_DC: the client belongs to one data centre)",
    "invalid_code": " (the refresh token is invalid or revoked: generate a new ZOHO_REFRESH_TOKEN)",
    TOKEN_THROTTLED: " (Zoho allows 10 new access tokens per refresh token per 10 minutes: wait 10 minutes and run"
    " again; the refresh token is fine, do not generate a new one)",
}


def _read_body(response: requests.Response) -> tuple[dict[str, Any] | None, str | None]:
    """The JSON object of a response, and for a 2xx that should have one but does not, why not."""
    if response.status_code in (204, 304):
        return None, None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        return body, None
    if 200 <= response.status_code < 300:
        kind = (response.headers.get("Content-Type") or "no content type").split(";")[0]
        return None, f"unreadable response body (HTTP {response.status_code}, {kind}, {len(response.content)} bytes)"
    return None, None


def _retry_after_seconds(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.strip().isdigit() else None


def _host(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0]


# ---------------------------------------------------------------------- paging


def iter_record_pages(
    client: ZohoClient,
    module: str,
    fields: Sequence[str],
    *,
    modified_since: datetime | None,
    page_size: int,
    chain_limit: int = PAGE_TOKEN_LIMIT,
) -> Iterator[list[dict[str, Any]]]:
    """Pages of a module's records, oldest modification first, modified at or after `modified_since`.

    Zoho serves only 2,000 records by `page` number; `page_token` (returned from
    the first page on) reaches further, so we always follow the token. But one
    chain of tokens ends after `chain_limit` records (100,000: the next page is
    400 PAGINATION_LIMIT_EXCEEDED), so a longer read is a series of queries. When
    a chain is full, or Zoho ends it sooner, the query starts again with
    If-Modified-Since = the last Modified_Time read. That header is inclusive, so
    the records of that second come again; the ones already yielded are dropped
    here and every record is yielded once (one changed meanwhile comes again with
    its new time, as it would within a chain). Zoho ending a chain sooner than
    `chain_limit` costs one refused request; later chains stop before it. A page
    token Zoho refuses otherwise (expired, or bound to other data) restarts the
    query the same way.

    A whole chain of records of one second (a bulk import of more records than a
    chain reaches) cannot be passed by any Modified_Time query: the rest of that
    second is then read by COQL, keyset-paged on id, and the read goes on from the
    next second.
    """
    if "Modified_Time" not in fields:
        raise ValueError("the records are read in Modified_Time order: request the Modified_Time field")
    params: dict[str, Any] = {
        "fields": ",".join(fields),
        "per_page": page_size,
        "sort_by": "Modified_Time",
        "sort_order": "asc",
    }
    if module == "Leads":
        params["converted"] = "both"  # the default hides converted leads
    since = modified_since
    resume = _ResumePoint()
    while True:  # one page_token chain per pass
        headers = {"If-Modified-Since": format_zoho_datetime(since)} if since else {}
        page_token: str | None = None
        served = fresh = 0
        chain_full = False
        chain_start: datetime | None = None
        while True:
            if page_token and served + page_size > chain_limit:
                chain_full = True
                break  # the next page would pass the ceiling: start a new chain instead
            try:
                body = client.get(
                    module, params={**params, "page_token": page_token} if page_token else params, headers=headers
                )
            except ZohoError as exc:
                if exc.code not in RESTARTABLE_PAGE_CODES or not page_token:
                    raise
                if exc.code == "PAGINATION_LIMIT_EXCEEDED":
                    chain_limit = served  # Zoho's ceiling is lower than assumed: stop before it from now on
                    chain_full = True
                else:
                    logger.info("%s: Zoho refused the page token (%s); restarting the query", module, exc.code)
                break
            if body is None:
                return
            records = body.get("data") or []
            if chain_start is None and records and isinstance(records[0].get("Modified_Time"), str):
                chain_start = parse_zoho_datetime(records[0]["Modified_Time"])
            served += len(records)
            page = [record for record in records if resume.read(record)]
            fresh += len(page)
            yield page
            info = body.get("info") or {}
            page_token = info.get("next_page_token")
            if not info.get("more_records") or not page_token:
                return
        restart = resume.restart()
        if restart is not None and chain_full and (chain_start == restart or resume.read_at_newest() * 2 >= served):
            # A whole chain of one second (a bulk import) cannot be passed by any Modified_Time query,
            # and a chain that ends in a second holding half of it likely ends in such a one: read the
            # rest of that second by COQL, keyset-paged on id, then go on from the next second.
            logger.info(
                "%s: %d+ records share Modified_Time %s; reading them by COQL",
                module,
                served,
                format_zoho_datetime(restart),
            )
            yield from _records_of_one_second(client, module, params, restart, resume)
            since = restart + timedelta(seconds=1)
            continue
        if restart is None or (chain_full and (fresh == 0 or (since is not None and restart <= since))):
            raise _stuck(module, served, since)
        logger.info(
            "%s: page_token chain ended after %d records; restarting the query from If-Modified-Since %s",
            module,
            served,
            format_zoho_datetime(restart),
        )
        since = restart


def _records_of_one_second(
    client: ZohoClient, module: str, params: Mapping[str, Any], second: datetime, resume: _ResumePoint
) -> Iterator[list[dict[str, Any]]]:
    """Every record last modified in `second` not read yet: their ids by COQL (keyset on id, 2,000 a
    call, so no OFFSET ceiling applies), then the records themselves by id, 100 a call.

    COQL renders lookups as bare ids, so the records come from the Records API, like all others.
    """
    literal = format_zoho_datetime(second)
    by_id = {"fields": params["fields"], **({"converted": params["converted"]} if "converted" in params else {})}
    last_id = "0"
    while True:
        body = client.post(
            "coql",
            {
                "select_query": f"select id from {module} where Modified_Time = '{literal}' and id > {last_id}"
                f" order by id asc limit {COQL_LIMIT}"
            },
        )
        ids = [str(row["id"]) for row in (body or {}).get("data") or []]
        wanted = [record_id for record_id in ids if not resume.already_read(second, record_id)]
        for start in range(0, len(wanted), IDS_PER_REQUEST):
            page = client.get(module, params={**by_id, "ids": ",".join(wanted[start : start + IDS_PER_REQUEST])})
            yield (page or {}).get("data") or []
        if not ids or not ((body or {}).get("info") or {}).get("more_records"):
            return
        last_id = ids[-1]


class _ResumePoint:
    """Where a new query continues a read: the newest Modified_Time read so far, and the ids read at it.

    The restarted query (If-Modified-Since = that time, inclusive) returns those
    records again; `read` tells them apart so each is yielded once.
    """

    def __init__(self) -> None:
        self._time: datetime | None = None
        self._ids: set[str] = set()
        self._yielded_time: datetime | None = None
        self._yielded_ids: frozenset[str] = frozenset()

    def read(self, record: Mapping[str, Any]) -> bool:
        """Note a record read; False if it was already yielded before the last restart."""
        raw = record.get("Modified_Time")
        if not isinstance(raw, str):
            return True
        at, record_id = parse_zoho_datetime(raw), str(record.get("id"))
        if self._time is None or at > self._time:
            self._time, self._ids = at, {record_id}
        elif at == self._time:
            self._ids.add(record_id)
        return not (at == self._yielded_time and record_id in self._yielded_ids)

    def read_at_newest(self) -> int:
        """How many records were read at the newest Modified_Time read so far."""
        return len(self._ids)

    def already_read(self, at: datetime, record_id: str) -> bool:
        """Whether the record `record_id`, modified at `at`, was read already (at the newest time read)."""
        return at == self._time and record_id in self._ids

    def restart(self) -> datetime | None:
        """The If-Modified-Since of the next query (None: nothing to continue from)."""
        self._yielded_time, self._yielded_ids = self._time, frozenset(self._ids)
        return self._time


def _stuck(module: str, served: int, since: datetime | None) -> ZohoError:
    """The error of a read that cannot go on: restarting from `since` would return the same chain again."""
    if since is None:
        return ZohoError(
            f"GET {module}: Zoho ended a page_token chain of records without Modified_Time; cannot restart it"
        )
    return ZohoError(
        f"GET {module}: {served:,} records or more share Modified_Time {format_zoho_datetime(since)}, as many as"
        " one page_token query reaches, so Zoho's Records API cannot page past them"
        " (a Bulk Read export can; see Zoho's PAGINATION_LIMIT_EXCEEDED)"
    )


def iter_numbered_pages(
    client: ZohoClient,
    path: str,
    data_key: str,
    params: Mapping[str, Any],
    *,
    headers: Mapping[str, str] | None = None,
    page_size: int,
) -> Iterator[list[dict[str, Any]]]:
    """Pages of an endpoint paged by `page` number (users, the deletion log)."""
    page = 1
    while True:
        body = client.get(path, params={**params, "page": page, "per_page": page_size}, headers=headers)
        if body is None:
            return
        yield body.get(data_key) or []
        if not (body.get("info") or {}).get("more_records"):
            return
        page += 1


# ---------------------------------------------------------------------- values


def parse_zoho_datetime(value: str) -> datetime:
    """A Zoho datetime (ISO 8601 with the user's offset, or Z) as an aware UTC datetime."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"datetime without a UTC offset: {value!r}")
    return parsed.astimezone(UTC)


def format_zoho_datetime(value: datetime) -> str:
    """The If-Modified-Since form Zoho documents: second precision with an explicit offset."""
    return value.astimezone(UTC).replace(microsecond=0).isoformat()


def typed_record(record: Mapping[str, Any], fields: Mapping[str, FieldKind]) -> dict[str, Any]:
    """`id` and the declared `fields` of a record, datetimes parsed to UTC, nulls dropped.

    Keeping only declared fields keeps the raw schema fixed (Zoho adds `$` metadata
    and lists that would become child tables). Dropping nulls keeps dlt from
    inventing untyped columns for empty lookups; every column exists anyway
    because the resources declare them all.
    """
    out: dict[str, Any] = {}
    for key, value in record.items():
        if (key != "id" and key not in fields) or value is None or value == {}:
            continue
        if fields.get(key) == "timestamp" and isinstance(value, str):
            value = parse_zoho_datetime(value)
        elif fields.get(key) == "date" and isinstance(value, str):
            value = date.fromisoformat(value)
        out[key] = value
    return out


def column_hints(fields: Mapping[str, FieldKind], *, key: str = "id") -> dict[str, dict[str, Any]]:
    """dlt column hints for every column a field list produces, lookups flattened (`Owner__id`, ...).

    Hints use Zoho's names, as the data and the incremental cursor do; dlt
    normalizes all of them alike (`Owner__id` -> `owner__id`).
    """
    columns: dict[str, dict[str, Any]] = {key: {"data_type": "text", "nullable": False}}
    for name, kind in fields.items():
        if kind in LOOKUP_PARTS:
            for part in LOOKUP_PARTS[kind]:
                columns[f"{name}__{part}"] = {"data_type": "text"}
        else:
            columns[name] = {"data_type": kind}
    return columns
