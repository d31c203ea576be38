"""`SandboxOrg`: a generated Zoho CRM org with its clock, as the HTTP layer and the tests see it.

Reads return what the API would send (datetimes with the users' offset, lookups shaped like Zoho's);
writes go through the same primitives as the daily clock. One re-entrant lock guards the org: the
HTTP server is threaded, and tests advance the clock while a client pages.
"""

from __future__ import annotations

import bisect
import datetime as dt
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from . import activity
from .generator import generate_org
from .model import MODULES, PIPELINE_NAME, STAGES, USD_RATES, Currency, CustomField, DeletedEntry, ModuleSpec, Record
from .state import HOME_CURRENCY, OrgState
from .timeline import OrgCalendar
from .writes import RecordError, invalid_value, mandatory_missing, write_changes
from .zoho_format import Renderer

RECYCLE_BIN_DAYS = 60  # Zoho lists recycle-bin deletions for 60 days, then they are purged (permanent) ...
PERMANENT_LOG_DAYS = 120  # ... and permanent deletions for 120 days.
DAY_SECONDS = 86_400
DELETED_TYPES = ("all", "recycle", "permanent")
USER_TYPES = ("AllUsers", "ActiveUsers", "CurrentUser")


@dataclass(frozen=True)
class Selection:
    """Live records matching a list query, sorted ascending by `keys` = (sort value, id).

    Keys are unique (the id breaks ties), so a page boundary is a position found by bisection and a
    page token only needs the last key it returned (keyset paging).
    """

    keys: list[tuple[Any, str]]
    records: list[Record]

    def rank_after(self, key: Sequence[Any], descending: bool) -> int:
        """How many records, in the requested order, come at or before `key`."""
        key = tuple(key)
        if descending:
            return len(self.keys) - bisect.bisect_left(self.keys, key)
        return bisect.bisect_right(self.keys, key)

    def window(self, start: int, count: int, descending: bool) -> list[Record]:
        """Records at ranks [start, start + count) of the requested order."""
        if not descending:
            return self.records[start : start + count]
        stop = len(self.records) - start
        return self.records[max(0, stop - count) : max(0, stop)][::-1]

    def key_at(self, rank: int, descending: bool) -> tuple[Any, str]:
        return self.keys[len(self.keys) - 1 - rank if descending else rank]


class SandboxOrg:
    """A deterministic Zoho CRM org (Leads, Deals, users, pipeline, deletion log) with a clock.

    `today` defaults to the current date in `timezone`; the org's "now" is the end of `today` and
    `advance(days)` moves it forward one simulated day at a time. The org has multi-currency enabled with
    `home_currency` and `currencies` (ISO codes; default: every currency the sandbox knows); generated
    records are in the home currency, records written through the API may use any of them. `reps` is how
    many sales reps the org has beside its admin and sales manager (six by default; more for a benchmark of
    many owners' digests).
    """

    def __init__(
        self,
        seed: int = 7,
        leads: int = 5000,
        deals: int = 2000,
        timezone: str = "UTC",
        today: dt.date | None = None,
        home_currency: str = HOME_CURRENCY,
        currencies: Sequence[str] | None = None,
        reps: int = 6,
    ) -> None:
        calendar = OrgCalendar(timezone)
        self.lock = threading.RLock()
        self._state: OrgState = generate_org(
            seed, leads, deals, calendar, today or calendar.current_date(), home_currency, currencies, reps
        )
        self.renderer = Renderer(calendar.tz, self._state.users)
        self._selections: OrderedDict[tuple, tuple[int, Selection]] = OrderedDict()

    # -- identity and clock -------------------------------------------------------------------

    @property
    def seed(self) -> int:
        return self._state.seed

    @property
    def timezone(self) -> str:
        return self._state.calendar.timezone

    @property
    def today(self) -> dt.date:
        return self._state.today

    @property
    def home_currency(self) -> str:
        """ISO code of the org's home currency: every report total is in it."""
        return self._state.home_currency

    @property
    def currencies(self) -> list[Currency]:
        """The org's currencies, the home one included (its rate is 1)."""
        return list(self._state.currencies)

    @property
    def now(self) -> int:
        """The org's present as epoch seconds (end of `today`)."""
        return self._state.now

    @property
    def current_user_id(self) -> str:
        """The admin: the user whose refresh token the sandbox hands out."""
        return self._state.admin_id

    def advance(self, days: int = 1) -> dict[str, dict[str, int]]:
        """Play `days` simulated days; returns per module how many records were created/updated/deleted."""
        if days < 0:
            raise ValueError("days must not be negative")
        total = {module: {"created": 0, "updated": 0, "deleted": 0} for module in MODULES}
        with self.lock:
            for _ in range(days):
                for module, counts in activity.simulate_day(self._state).items():
                    for name, count in counts.items():
                        total[module][name] += count
        return total

    # -- reads, rendered as the API renders them ---------------------------------------------

    def records(self, module: str) -> list[dict[str, Any]]:
        """Every live record of `module` (converted leads included) with all fields, oldest id first."""
        with self.lock:
            plan = self.renderer.plan(self._state.spec(module))
            return [self.renderer.record(r, plan) for r in self._state.tables[module].values()]

    def deleted_records(
        self, module: str, kind: str = "all", modified_since: int | None = None
    ) -> list[dict[str, Any]]:
        """The deletion log as `/{module}/deleted` renders it, most recent deletion first.

        An entry's type follows its age: in the recycle bin for 60 days, then permanent (Zoho then
        hides who deleted it and its name) until it drops out of the log after 120 days.
        """
        with self.lock:
            rendered = (
                self._render_deleted(e)
                for e in self._state.deleted[MODULES[module].api_name].values()
                if modified_since is None or e.deleted_time >= modified_since
            )
            entries = [e for e in rendered if e is not None and kind in ("all", e["type"])]
        entries.sort(key=lambda e: (e["_ts"], e["id"]), reverse=True)
        for entry in entries:
            del entry["_ts"]
        return entries

    def _render_deleted(self, entry: DeletedEntry) -> dict[str, Any] | None:
        age_days = (self.now - entry.deleted_time) / DAY_SECONDS
        if age_days > PERMANENT_LOG_DAYS:
            return None
        permanent = entry.permanent or age_days > RECYCLE_BIN_DAYS
        render = self.renderer
        return {
            "deleted_by": None if permanent else render.user(entry.deleted_by, email=False),
            "id": entry.id,
            "display_name": None if permanent else entry.display_name,
            "type": "permanent" if permanent else "recycle",
            "created_by": None if permanent else render.user(entry.created_by, email=False),
            "deleted_time": render.datetime(entry.deleted_time),
            "_ts": entry.deleted_time,
        }

    def users(self, kind: str = "AllUsers") -> list[dict[str, Any]]:
        """Users as `/users?type=...` renders them (`kind` is AllUsers, ActiveUsers or CurrentUser)."""
        with self.lock:
            users = list(self._state.users.values())
            if kind == "ActiveUsers":
                users = [u for u in users if u.status == "active"]
            elif kind == "CurrentUser":
                users = [self._state.users[self.current_user_id]]
            return [self.renderer.user_profile(u) for u in users]

    def layouts(self, module: str) -> list[dict[str, Any]]:
        meta, render = self._state.meta, self.renderer
        created = render.datetime(meta.created_time)
        return [
            {
                "id": meta.layout_ids[module],
                "name": "Standard",
                "api_name": "Standard",
                "display_label": "Standard",
                "status": "active",
                "visible": True,
                "source": "crm",
                "generated_type": "default",
                "created_time": created,
                "modified_time": created,
            }
        ]

    def pipelines(self) -> list[dict[str, Any]]:
        """The Deals pipeline as `/settings/pipeline` renders it (each stage with its probability)."""
        meta = self._state.meta
        return [
            {
                "display_value": PIPELINE_NAME,
                "default": True,
                "actual_value": PIPELINE_NAME,
                "id": meta.pipeline_id,
                "child_available": False,
                "parent": None,
                "maps": [
                    {
                        "display_value": s.display_value,
                        "sequence_number": s.sequence_number,
                        "forecast_category": {
                            "name": s.forecast_category,
                            "id": meta.forecast_category_ids[s.forecast_category],
                        },
                        "actual_value": s.actual_value,
                        "id": meta.stage_ids[s.actual_value],
                        "forecast_type": s.forecast_type,
                        "probability": s.probability,
                    }
                    for s in STAGES
                ],
            }
        ]

    def organization(self) -> dict[str, Any]:
        meta, admin = self._state.meta, self._state.users[self.current_user_id]
        return {
            "id": meta.org_id,
            "company_name": meta.company_name,
            "time_zone": self.timezone,
            "iso_code": "USD",
            "currency_symbol": "$",
            "primary_email": admin.email,
            "country": "United States",
            "domain_name": "zylker-sandbox",
        }

    def stage_history(self, deal_id: str) -> list[dict[str, Any]] | None:
        """A deal's Stage History as the related list renders it, newest first; None for an unknown deal."""
        with self.lock:
            if deal_id not in self._state.tables["Deals"] and deal_id not in self._state.deleted["Deals"]:
                return None
            rows = list(self._state.stage_history.get(deal_id, []))
        render = self.renderer
        return [
            {
                "id": row.id,
                "Stage": row.Stage,
                "Amount": row.Amount,
                "Probability": row.Probability,
                "Expected_Revenue": row.Expected_Revenue,
                "Closing_Date": None if row.Closing_Date is None else row.Closing_Date.isoformat(),
                "Modified_Time": render.datetime(row.Modified_Time),
                "Modified_By": render.user(row.Modified_By, email=False),
            }
            for row in reversed(rows)
        ]

    def currencies_payload(self) -> list[dict[str, Any]]:
        """The currencies as `/org/currencies` renders them (Zoho sends the rate as a decimal string)."""
        admin = self.renderer.user(self.current_user_id, email=False)
        return [
            {
                "symbol": c.symbol,
                "created_time": self.renderer.datetime(c.created_time),
                "is_active": True,
                "exchange_rate": f"{c.exchange_rate:.9f}",
                "format": {
                    "decimal_separator": "Period",
                    "thousand_separator": "Comma",
                    "decimal_places": "0" if c.iso_code == "JPY" else "2",
                },
                "created_by": admin,
                "prefix_symbol": True,
                "is_base": c.is_base,
                "modified_time": self.renderer.datetime(c.created_time),
                "name": c.name,
                "modified_by": admin,
                "id": c.id,
                "iso_code": c.iso_code,
            }
            for c in self._state.currencies
        ]

    def add_currency(self, item: Any, user_id: str) -> dict[str, Any]:
        """Zoho's Add Currencies: a currency the sandbox knows, at the rate given (or its usual one)."""
        with self.lock:
            state = self._state
            code = item.get("iso_code") if isinstance(item, dict) else None
            if code not in USD_RATES:
                return {
                    "code": "INVALID_DATA",
                    "details": {"api_name": "iso_code"},
                    "message": "invalid data",
                    "status": "error",
                }
            if any(c.iso_code == code for c in state.currencies):
                return {
                    "code": "DUPLICATE_DATA",
                    "details": {"api_name": "iso_code"},
                    "message": "duplicate data",
                    "status": "error",
                }
            name, symbol, per_usd = USD_RATES[code]
            home_per_usd = USD_RATES[self.home_currency][2]
            rate = float(item.get("exchange_rate") or round(per_usd / home_per_usd, 9))
            currency = Currency(
                id=state.ids.next(),
                iso_code=code,
                name=name,
                symbol=item.get("symbol") or symbol,
                exchange_rate=rate,
                is_base=False,
                created_time=state.tick(),
            )
            state.currencies.append(currency)
            return {
                "code": "SUCCESS",
                "details": {"id": currency.id},
                "message": "currency added successfully",
                "status": "success",
            }

    # -- custom fields (Zoho's Setup > Modules and Fields, or its Create Custom Fields API) ------

    def spec(self, module: str) -> ModuleSpec:
        """`module` as the org has it now: its standard fields and the custom fields added so far."""
        with self.lock:
            return self._state.spec(module)

    def custom_fields(self, module: str) -> list[CustomField]:
        """The custom fields of `module`, in the order they were added."""
        with self.lock:
            return list(self._state.custom_fields[module].values())

    def add_field(
        self, module: str, label: str, data_type: str, values: Sequence[str] = (), api_name: str | None = None
    ) -> CustomField:
        """Add a custom field, as an admin does: empty on the records so far; records created or edited
        from now on get values for it. Raises ValueError when the org refuses it (see `OrgState.add_field`)."""
        with self.lock:
            return self._state.add_field(module, label, data_type, values, api_name=api_name)

    def retype_field(self, module: str, api_name: str, data_type: str, values: Sequence[str] = ()) -> CustomField:
        """Change a custom field's data type; values that do not read as the new type are emptied."""
        with self.lock:
            return self._state.retype_field(module, api_name, data_type, values)

    def remove_field(self, module: str, api_name: str) -> CustomField:
        """Delete a custom field with its values."""
        with self.lock:
            return self._state.remove_field(module, api_name)

    def layout_module(self, layout_id: str) -> str | None:
        return next((m for m, lid in self._state.meta.layout_ids.items() if lid == layout_id), None)

    # -- list queries (callers hold `lock`) ------------------------------------------------------

    def select(
        self, module: str, sort_by: str, converted: str = "both", modified_since: int | None = None
    ) -> Selection:
        """Live records for a list query, sorted; cached until the org next changes."""
        if module != "Leads":
            converted = "both"
        cache_key = (module, sort_by, converted, modified_since)
        cached = self._selections.get(cache_key)
        if cached is not None and cached[0] == self._state.version:
            self._selections.move_to_end(cache_key)
            return cached[1]
        records: Iterable[Record] = self._state.tables[module].values()
        if converted != "both":
            wanted = converted == "true"
            records = (r for r in records if r.Converted__s is wanted)  # type: ignore[union-attr]
        if modified_since is not None:
            records = (r for r in records if r.Modified_Time >= modified_since)
        pairs = sorted(((getattr(r, sort_by), r.id), r) for r in records)  # keys are unique: no record compare
        selection = Selection([k for k, _ in pairs], [r for _, r in pairs])
        self._selections[cache_key] = (self._state.version, selection)
        while len(self._selections) > 16:
            self._selections.popitem(last=False)
        return selection

    def record(self, module: str, record_id: str) -> Record | None:
        return self._state.tables[module].get(record_id)

    # -- writes (per-record results, as in Zoho's write responses) ----------------------------

    def insert(self, module: str, items: Sequence[Any], user_id: str) -> list[dict[str, Any]]:
        with self.lock:
            state, when, results = self._state, self._state.tick(), []
            for index, item in enumerate(items):
                try:
                    changes = self._changes(module, item, index, creating=True)
                except RecordError as error:
                    results.append(error.payload)
                    continue
                results.append(self._success(state.create(module, changes, when, user_id), "record added"))
            return results

    def update(self, module: str, items: Sequence[Any], user_id: str) -> list[dict[str, Any]]:
        with self.lock:
            state, when, results = self._state, self._state.tick(), []
            for index, item in enumerate(items):
                try:
                    record = self._target(module, item, index)
                    changes = self._changes(module, item, index, creating=False)
                except RecordError as error:
                    results.append(error.payload)
                    continue
                state.change(module, record, changes, when, user_id)
                results.append(self._success(record, "record updated"))
            return results

    def delete(self, module: str, ids: Sequence[str], user_id: str) -> list[dict[str, Any]]:
        """Deleted records go to the recycle bin (`/deleted?type=recycle`)."""
        with self.lock:
            state, when, results = self._state, self._state.tick(), []
            for record_id in ids:
                if record_id in state.tables[module]:
                    state.remove(module, record_id, when, user_id)
                    results.append(
                        {
                            "code": "SUCCESS",
                            "details": {"id": record_id},
                            "message": "record deleted",
                            "status": "success",
                        }
                    )
                else:
                    results.append(
                        {
                            "code": "INVALID_DATA",
                            "details": {"id": record_id},
                            "message": "the id given seems to be invalid",
                            "status": "error",
                        }
                    )
            return results

    def _changes(self, module: str, item: Any, index: int, *, creating: bool) -> dict[str, Any]:
        return write_changes(
            self._state.spec(module),
            item,
            index,
            self._state.users,
            self._state.ids.next,
            creating=creating,
            currencies=[c.iso_code for c in self._state.currencies],
        )

    def _target(self, module: str, item: Any, index: int) -> Record:
        if not isinstance(item, dict) or item.get("id") in (None, ""):
            raise mandatory_missing("id", index)
        record = self._state.tables[module].get(str(item["id"]))
        if record is None:
            raise invalid_value("id", index, message="the id given seems to be invalid")
        return record

    def _success(self, record: Record, message: str) -> dict[str, Any]:
        render = self.renderer
        return {
            "code": "SUCCESS",
            "details": {
                "Modified_Time": render.datetime(record.Modified_Time),
                "Modified_By": render.user(record.Modified_By, email=False),
                "Created_Time": render.datetime(record.Created_Time),
                "id": record.id,
                "Created_By": render.user(record.Created_By, email=False),
            },
            "message": message,
            "status": "success",
        }
