"""Validation of record writes (`POST`/`PUT /crm/v8/{module}`), answered per record as Zoho does.

Zoho validates each item of `data` on its own and reports one result per item: a failed item gets
`{"code": "MANDATORY_NOT_FOUND" | "INVALID_DATA", "details": {"api_name", "json_path", ...},
"message", "status": "error"}` while the others are saved. Read-only fields (Created_Time,
Full_Name, Probability, ...) and unknown keys are ignored, as Zoho ignores them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Mapping
from typing import Any

from .model import STAGE_BY_NAME, Kind, ModuleSpec, Ref, User

MAX_RECORDS_PER_WRITE = 100


class RecordError(Exception):
    """One item of a write failed; `payload` is its entry in the response's `data` list."""

    def __init__(self, code: str, message: str, details: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.payload = {"code": code, "details": dict(details), "message": message, "status": "error"}


def mandatory_missing(api_name: str, index: int) -> RecordError:
    return RecordError(
        "MANDATORY_NOT_FOUND",
        "required field not found",
        {"api_name": api_name, "json_path": f"$.data[{index}].{api_name}"},
    )


def invalid_value(api_name: str, index: int, kind: Kind | None = None, message: str = "invalid data") -> RecordError:
    details: dict[str, Any] = {"api_name": api_name, "json_path": f"$.data[{index}].{api_name}"}
    if kind is not None:
        details["expected_data_type"] = kind.value
    return RecordError("INVALID_DATA", message, details)


def write_changes(
    spec: ModuleSpec,
    item: Any,
    index: int,
    users: Mapping[str, User],
    mint_id: Callable[[], str],
    *,
    creating: bool,
    currencies: Collection[str] = (),
) -> dict[str, Any]:
    """The internal values to set for one `data` item, or RecordError."""
    if not isinstance(item, dict):
        raise RecordError(
            "INVALID_DATA", "invalid data", {"expected_data_type": "jsonobject", "json_path": f"$.data[{index}]"}
        )
    changes = {
        name: _coerce(spec.kinds[name], name, value, index, users, mint_id)
        for name, value in item.items()
        if name in spec.writable
    }
    for name in spec.mandatory:
        if (creating or name in changes) and changes.get(name) in (None, ""):
            raise mandatory_missing(name, index)
    if "Stage" in changes and changes["Stage"] not in STAGE_BY_NAME:
        raise invalid_value("Stage", index, message="invalid data: not a stage of the pipeline")
    if "Currency" in changes and changes["Currency"] not in currencies:
        raise invalid_value("Currency", index, message="invalid data: not a currency of the org")
    if "Exchange_Rate" in changes and changes["Exchange_Rate"] is not None and changes["Exchange_Rate"] <= 0:
        raise invalid_value("Exchange_Rate", index, Kind.NUMBER)
    return changes


def _coerce(
    kind: Kind, name: str, value: Any, index: int, users: Mapping[str, User], mint_id: Callable[[], str]
) -> Any:
    if value is None:
        if kind is Kind.USER:
            raise invalid_value(name, index, kind)
        return None
    if kind is Kind.TEXT and isinstance(value, str):
        return value
    if kind is Kind.NUMBER and isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if kind is Kind.INTEGER and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is Kind.BOOLEAN and isinstance(value, bool):
        return value
    if kind is Kind.DATE and isinstance(value, str) and len(value) == 10:
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    if kind is Kind.USER:
        user_id = value.get("id") if isinstance(value, dict) else value
        user = users.get(str(user_id))
        if user is not None and user.status == "active":
            return user.id
    if kind is Kind.LOOKUP and isinstance(value, dict):
        ref_id, ref_name = value.get("id"), value.get("name")
        if ref_name is not None and not isinstance(ref_name, str):
            raise invalid_value(name, index, kind)
        if ref_id is None and ref_name:
            return Ref(ref_name, mint_id())  # sandbox convenience: a lookup by name creates the target
        if isinstance(ref_id, (str, int)) and str(ref_id).isdigit():
            return Ref(ref_name, str(ref_id))
    raise invalid_value(name, index, kind)
