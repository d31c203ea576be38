"""Zoho's wire format: error envelopes, datetimes and record rendering.

Everything a client parses goes through here, so the sandbox speaks one dialect:
- errors are `{"code", "details", "message", "status": "error"}` with Zoho's HTTP status per code;
- datetimes are ISO-8601 with second precision and the CRM user's UTC offset
  (`2026-11-20T15:04:05+05:30`), dates are `YYYY-MM-DD`;
- user lookups are `{"name", "id", "email"}`, record lookups `{"name", "id"}`.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from zoneinfo import ZoneInfo

from .model import Kind, ModuleSpec, Record, Ref, User

CONTENT_TYPE = "application/json;charset=UTF-8"

# code -> (HTTP status, message). Messages follow Zoho's error documentation.
ERRORS: dict[str, tuple[int, str]] = {
    "AUTHENTICATION_FAILURE": (401, "Authentication failed"),
    "INVALID_TOKEN": (401, "invalid oauth token"),
    "INVALID_URL_PATTERN": (404, "Please check if the URL trying to access is a correct one"),
    "INVALID_REQUEST_METHOD": (400, "The http request method type is not a valid one"),
    "INVALID_MODULE": (400, "the module name given seems to be invalid"),
    "REQUIRED_PARAM_MISSING": (400, "One of the expected parameter is missing"),
    "MANDATORY_NOT_FOUND": (400, "required field not found"),
    "LIMIT_EXCEEDED": (400, "the limit has been exceeded"),
    "INVALID_DATA": (400, "invalid data"),
    "PATTERN_NOT_MATCHED": (400, "Please check whether the input values are correct"),
    "DISCRETE_PAGINATION_LIMIT_EXCEEDED": (
        400,
        "You can only get the first 2000 records without using page_token param",
    ),
    "PAGINATION_LIMIT_EXCEEDED": (400, "You can only get the first 100000 records using page_token param"),
    "AMBIGUITY_DURING_PROCESSING": (400, "ambiguity while processing the request"),
    "TOKEN_BOUND_DATA_MISMATCH": (400, "the page token is bound to different parameters"),
    "EXPIRED_VALUE": (400, "the page token has expired"),
    "CURRENCIES_NOT_ENABLED": (403, "Multi currency is not enabled"),
    "SYNTAX_ERROR": (400, "error occured while parsing the query"),
    "INVALID_QUERY": (400, "invalid query"),
    "TOO_MANY_REQUESTS": (429, "You have made too many requests. Please try again after some time."),
    "INTERNAL_ERROR": (500, "Internal Server Error"),
}


class ZohoError(Exception):
    """An API error; `payload` is the JSON body Zoho sends for it."""

    def __init__(
        self,
        code: str,
        details: Mapping[str, Any] | None = None,
        *,
        message: str | None = None,
        status: int | None = None,
    ) -> None:
        default_status, default_message = ERRORS[code]
        self.code = code
        self.status = status or default_status
        self.message = message or default_message
        self.details = dict(details or {})
        super().__init__(f"{self.code}: {self.message}")

    @property
    def payload(self) -> dict[str, Any]:
        return {"code": self.code, "details": self.details, "message": self.message, "status": "error"}


def encode_json(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def format_datetime(ts: int, tz: ZoneInfo) -> str:
    return dt.datetime.fromtimestamp(ts, tz).isoformat(timespec="seconds")


def parse_datetime(text: str, tz: ZoneInfo) -> int:
    """Parse an If-Modified-Since style value to epoch seconds.

    Zoho documents ISO-8601 with an offset (`2019-07-25T15:26:49+05:30`); `Z`, a naive value (taken
    in the org timezone) and the RFC 1123 form HTTP clients send by habit are accepted too.
    Raises ValueError when the text is none of these.
    """
    text = text.strip()
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(text)  # raises ValueError/TypeError on garbage
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return int(parsed.timestamp())


# (API name, converter or None, whether it is a custom field's), per field to render.
FieldPlan = list[tuple[str, Callable[[Any], Any] | None, bool]]


class Renderer:
    """Turns internal records into the dicts Zoho would send, in the users' timezone."""

    def __init__(self, tz: ZoneInfo, users: Mapping[str, User]) -> None:
        self.tz = tz
        self.users = users
        self._converters: dict[Kind, Callable[[Any], Any]] = {
            Kind.DATETIME: self.datetime,
            Kind.DATE: lambda d: None if d is None else d.isoformat(),
            Kind.USER: self.user,
            Kind.LOOKUP: self.lookup,
        }

    def datetime(self, ts: int | None) -> str | None:
        return None if ts is None else format_datetime(ts, self.tz)

    def user(self, user_id: str | None, *, email: bool = True) -> dict[str, Any] | None:
        """User lookup; write responses and the deletion log omit the email, like Zoho's samples."""
        if user_id is None:
            return None
        user = self.users[user_id]
        ref = {"name": user.full_name, "id": user.id}
        if email:
            ref["email"] = user.email
        return ref

    @staticmethod
    def lookup(ref: Ref | None) -> dict[str, Any] | None:
        return None if ref is None else {"name": ref.name, "id": ref.id}

    def plan(self, spec: ModuleSpec, fields: Iterable[str] | None = None) -> FieldPlan:
        """Which fields to render and how; `id` always comes first, unknown fields are dropped.

        `spec` is the module as the org has it (`OrgState.spec`), so its custom fields render too."""
        names = spec.kinds if fields is None else ["id", *(f for f in fields if f in spec.kinds and f != "id")]
        return [(name, self._converters.get(spec.kinds[name]), name in spec.custom) for name in names]

    @staticmethod
    def record(record: Record, plan: FieldPlan) -> dict[str, Any]:
        out = {}
        custom = record.custom or {}
        for name, convert, is_custom in plan:
            value = custom.get(name) if is_custom else getattr(record, name)
            out[name] = value if convert is None else convert(value)
        return out

    def user_profile(self, user: User) -> dict[str, Any]:
        """A `/users` entry as Zoho's Get Users renders it."""
        return {
            "id": user.id,
            "full_name": user.full_name,
            "first_name": user.first_name,
            "last_name": user.last_name,
            "email": user.email,
            "status": user.status,
            "role": self.lookup(user.role),
            "profile": self.lookup(user.profile),
            "time_zone": self.tz.key,
            "Modified_Time": self.datetime(user.modified_time),
            "created_time": self.datetime(user.created_time),
        }
