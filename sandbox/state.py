"""The org's mutable state and the primitive changes every writer goes through.

The API's writes, the history generator and the daily clock all create, change, convert and delete
records with the methods below, so a record looks the same whoever touched it: Modified_Time and
Modified_By are stamped, derived fields are re-derived and deletions land in the deletion log.
`version` counts mutations; readers use it to know when a cached sort is stale. The org's custom fields
are state too: an admin adds, retypes or deletes them at any time (`add_field`, ...), and `spec(module)`
is the module as the org has it now.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .factory import RecordFactory
from .model import (
    CUSTOM_DATA_TYPES,
    MODULES,
    STAGE_HISTORY_FIELDS,
    STANDARD_FIELDS,
    Currency,
    CustomField,
    Deal,
    DeletedEntry,
    IdSequence,
    Kind,
    Lead,
    ModuleSpec,
    Record,
    Ref,
    StageHistoryEntry,
    User,
    apply_changes,
    blank_record,
)
from .timeline import BUSINESS_HOURS, OrgCalendar

HOME_CURRENCY = "USD"  # what a new org's home currency is unless told otherwise
CUSTOM_FIELD_IDS = 600_000  # custom fields get reserved ids from 600,001 on, in the order they were added


@dataclass(frozen=True)
class OrgMeta:
    """Ids of the org's fixed metadata (layouts, the pipeline and its stages)."""

    org_id: str
    company_name: str
    layout_ids: Mapping[str, str]
    pipeline_id: str
    stage_ids: Mapping[str, str]
    forecast_category_ids: Mapping[str, str]
    created_time: int


@dataclass(frozen=True)
class OrgSize:
    """The size the org was generated with; the daily clock scales its volume by it."""

    leads: int
    deals: int


class OrgState:
    def __init__(
        self,
        *,
        seed: int,
        size: OrgSize,
        calendar: OrgCalendar,
        today: dt.date,
        users: list[User],
        ids: IdSequence,
        meta: OrgMeta,
        factory: RecordFactory,
        currencies: list[Currency],
        custom_fields: dict[str, dict[str, CustomField]],
    ) -> None:
        self.seed = seed
        self.size = size
        self.calendar = calendar
        self.today = today
        self.users: dict[str, User] = {u.id: u for u in users}
        self.admin_id = users[0].id
        self.ids = ids
        self.meta = meta
        self.factory = factory
        self.tables: dict[str, dict[str, Record]] = {module: {} for module in MODULES}
        self.deleted: dict[str, dict[str, DeletedEntry]] = {module: {} for module in MODULES}
        self.clock = 0  # the latest timestamp the org has issued
        self.version = 0
        self.currencies = currencies
        self.home_currency = next(c.iso_code for c in currencies if c.is_base)
        # Deal id -> its Stage History, oldest first (kept after the deal is deleted, as Zoho keeps it
        # with the deal in the recycle bin).
        self.stage_history: dict[str, list[StageHistoryEntry]] = {}
        self._history_rows = 0
        # Module -> API name -> field, in the order they were added (the factory fills new records from it).
        self.custom_fields = custom_fields
        self._fields_added = sum(len(fields) for fields in custom_fields.values())
        self._specs: dict[str, ModuleSpec] = {}

    # -- custom fields ------------------------------------------------------------------------

    def spec(self, module: str) -> ModuleSpec:
        """The module as the org has it now: its standard fields and its custom fields."""
        if module not in self._specs:
            self._specs[module] = MODULES[module].with_custom(self.custom_fields[module].values())
        return self._specs[module]

    def add_field(
        self,
        module: str,
        label: str,
        data_type: str,
        values: Iterable[str] = (),
        *,
        api_name: str | None = None,
        when: int | None = None,
    ) -> CustomField:
        """Add a custom field to `module`, empty on every record so far (Zoho fills no existing record).

        Zoho's API name is the label with underscores for what is not a letter or digit, unless one is given.
        Raises ValueError naming what is wrong: an unknown data type, a picklist without values, a name the
        module has already (its standard fields included, in any case).
        """
        name = api_name or re.sub(r"[^A-Za-z0-9]+", "_", label.strip()).strip("_")
        options = _field_options(data_type, values)
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,99}", name):
            raise ValueError("the API name must start with a letter and hold letters, digits and underscores")
        taken = {n.lower() for n in (*STANDARD_FIELDS[MODULES[module].record_type], *self.custom_fields[module])}
        if name.lower() in taken:
            raise ValueError(f"{module} already has a field named {name}")
        self._fields_added += 1
        field = CustomField(
            name,
            label.strip() or name,
            data_type,
            options,
            self.ids.reserved(CUSTOM_FIELD_IDS + self._fields_added),
            self.tick() if when is None else when,
        )
        self.custom_fields[module][name] = field
        self._fields_changed(module)
        return field

    def retype_field(self, module: str, api_name: str, data_type: str, values: Iterable[str] = ()) -> CustomField:
        """Change a custom field's data type (Zoho's Update Custom Field); each record's value is converted,
        or emptied when it cannot be, and no record counts as modified (Zoho does not touch them)."""
        old = self.custom_fields[module][api_name]
        options = _field_options(data_type, values)
        field = old._replace(data_type=data_type, values=options)
        self.custom_fields[module][api_name] = field
        for record in self.tables[module].values():
            if record.custom and api_name in record.custom:
                apply_changes(record, {api_name: _converted(record.custom[api_name], field.kind)})
        self._fields_changed(module)
        return field

    def remove_field(self, module: str, api_name: str) -> CustomField:
        """Delete a custom field and its values (Zoho's Delete Custom Field); no record counts as modified."""
        field = self.custom_fields[module].pop(api_name)
        for record in self.tables[module].values():
            apply_changes(record, {api_name: None})
        self._fields_changed(module)
        return field

    def _fields_changed(self, module: str) -> None:
        self._specs.pop(module, None)
        self.version += 1

    def currency(self, iso_code: str) -> Currency | None:
        return next((c for c in self.currencies if c.iso_code == iso_code), None)

    def _priced(self, record: Record, changes: Mapping[str, Any]) -> Mapping[str, Any]:
        """`changes` with the Exchange_Rate Zoho applies: the currency's current rate when a record changes
        currency without naming a rate, and always exactly 1 in the home currency."""
        currency = changes.get("Currency", record.Currency) or self.home_currency
        if currency == self.home_currency:
            rate = 1
        elif "Exchange_Rate" in changes and changes["Exchange_Rate"] is not None:
            rate = changes["Exchange_Rate"]
        elif "Currency" in changes or record.Exchange_Rate is None:
            rate = self.currency(currency).exchange_rate  # type: ignore[union-attr]
        else:
            rate = record.Exchange_Rate
        return {**changes, "Currency": currency, "Exchange_Rate": rate}

    @property
    def now(self) -> int:
        """The end of `today`: the org's present."""
        return self.calendar.day_end(self.today)

    def tick(self) -> int:
        """The timestamp of an API write.

        The org's time is simulated, so writes are stamped one second after the latest event the
        org has issued (and not before today's office hours). Time therefore never runs backwards:
        a client syncing on max(Modified_Time) never misses a later write.
        """
        return self.stamp(self.calendar.day_start(self.today) + BUSINESS_HOURS[0])

    def stamp(self, ts: int) -> int:
        """Issue `ts`, moved just past the latest issued timestamp if it would be earlier."""
        self.clock = max(ts, self.clock + 1)
        return self.clock

    def create(self, module: str, changes: Mapping[str, Any], when: int, user_id: str) -> Record:
        record = blank_record(module, self.ids.next(), when, user_id)
        apply_changes(record, self._priced(record, changes), self.calendar.local_date(when))
        self.add(module, record)
        return record

    def add(self, module: str, record: Record) -> None:
        if record.Currency is None:
            record.Currency, record.Exchange_Rate = self.home_currency, 1
        self.tables[module][record.id] = record
        if isinstance(record, Deal):
            self._track_stage(record, record.Created_Time, record.Created_By)
        self.version += 1

    def change(self, module: str, record: Record, changes: Mapping[str, Any], when: int, user_id: str) -> None:
        if "Currency" in changes or "Exchange_Rate" in changes:
            changes = self._priced(record, changes)
        apply_changes(record, changes, self.calendar.local_date(when))
        record.Modified_Time = when
        record.Modified_By = user_id
        if isinstance(record, Deal) and STAGE_HISTORY_FIELDS & changes.keys():
            self._track_stage(record, when, user_id)
        self.version += 1

    def _track_stage(self, deal: Deal, when: int, user_id: str) -> None:
        """Write the deal's Stage History row for a change at `when` (the values after the change)."""
        history = self.stage_history.setdefault(deal.id, [])
        if history and history[-1].Modified_Time == when:
            history.pop()  # one write, one row: the creation row already holds the values set with it
        self._history_rows += 1
        history.append(
            StageHistoryEntry(
                # Own number range (a 9 after the org prefix), so record ids stay as they were without history.
                id=f"{self.ids.prefix}9{self._history_rows:011d}",
                Stage=deal.Stage,
                Amount=deal.Amount,
                Probability=deal.Probability,
                Expected_Revenue=deal.Expected_Revenue,
                Closing_Date=deal.Closing_Date,
                Modified_Time=when,
                Modified_By=user_id,
            )
        )

    def remove(self, module: str, record_id: str, when: int, user_id: str) -> DeletedEntry:
        """Delete a record: it leaves the live table and enters the deletion log (recycle bin)."""
        record = self.tables[module].pop(record_id)
        display = getattr(record, MODULES[module].display_field)
        entry = DeletedEntry(record.id, display, record.Created_By, user_id, when)
        self.deleted[module][record.id] = entry
        self.version += 1
        return entry

    def convert(self, lead: Lead, when: int, rng: random.Random, *, with_deal: bool) -> Record | None:
        """Convert a lead the way Zoho's convert action does.

        Zoho creates an account and a contact (and, optionally, a deal) and links them from the lead,
        which stays in the Leads module with Converted__s = true.
        """
        converter = self.factory.editor(lead.Owner, when)
        account = Ref(lead.Company or lead.Full_Name, self.ids.next())
        contact = Ref(lead.Full_Name, self.ids.next())
        deal = None
        if with_deal:
            deal = self.factory.deal(
                rng,
                when,
                owner=converter,
                account=account,
                contact=contact,
                source=lead.Lead_Source,
                deal_type="New Business",
            )
            self.add("Deals", deal)
        self.change(
            "Leads",
            lead,
            {
                "Converted__s": True,
                "Converted_Date_Time": when,
                "Converted_Account": account,
                "Converted_Contact": contact,
                "Converted_Deal": None if deal is None else Ref(deal.Deal_Name, deal.id),
            },
            when,
            converter,
        )
        return deal


def _field_options(data_type: str, values: Iterable[str]) -> tuple[str, ...]:
    """The picklist values of a custom field of `data_type`; ValueError for a type the sandbox does not know,
    a picklist without values, or values of a field that is not a picklist."""
    if data_type not in CUSTOM_DATA_TYPES:
        raise ValueError(f"data_type must be one of {', '.join(CUSTOM_DATA_TYPES)}")
    options = tuple(dict.fromkeys(str(v) for v in values))
    if (data_type == "picklist") != bool(options):
        raise ValueError("a picklist needs its values, and only a picklist has values")
    return options


def _converted(value: Any, kind: Kind) -> Any:
    """A custom field's value after a change of its type: kept when it reads as the new type, else None."""
    try:
        if kind is Kind.TEXT:
            return value if isinstance(value, str) else str(value)
        if kind is Kind.NUMBER:
            return float(value)
        if kind is Kind.INTEGER:
            return int(value) if float(value).is_integer() else None
    except (TypeError, ValueError):
        return None
    return None
