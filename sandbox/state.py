"""The org's mutable state and the primitive changes every writer goes through.

The API's writes, the history generator and the daily clock all create, change, convert and delete
records with the methods below, so a record looks the same whoever touched it: Modified_Time and
Modified_By are stamped, derived fields are re-derived and deletions land in the deletion log.
`version` counts mutations; readers use it to know when a cached sort is stale.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .model import (
    MODULES,
    PIPELINE_NAME,
    STAGE_HISTORY_FIELDS,
    Currency,
    Deal,
    DeletedEntry,
    Lead,
    Record,
    Ref,
    StageHistoryEntry,
    User,
    apply_changes,
)
from .timeline import BUSINESS_HOURS, OrgCalendar

if TYPE_CHECKING:
    from .generator import RecordFactory

HOME_CURRENCY = "USD"  # what a new org's home currency is unless told otherwise


class IdSequence:
    """Zoho-shaped ids: 19-digit numeric strings, an org prefix followed by a 12-digit counter.

    The counter only grows, so ids sort in creation order (as Zoho's do, roughly) and, having a fixed
    width, compare the same as strings and as numbers. Metadata (layouts, stages, roles) uses small
    reserved numbers below the first record id.
    """

    FIRST_RECORD = 1_000_000

    def __init__(self, prefix: int) -> None:
        if not 1_000_000 <= prefix <= 9_999_999:
            raise ValueError("the id prefix must have 7 digits")
        self.prefix = prefix
        self._counter = self.FIRST_RECORD

    def next(self) -> str:
        self._counter += 1
        return f"{self.prefix}{self._counter:012d}"

    def reserved(self, number: int) -> str:
        if not 0 < number < self.FIRST_RECORD:
            raise ValueError("reserved ids are below the record range")
        return f"{self.prefix}{number:012d}"


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
    def __init__(self, *, seed: int, size: OrgSize, calendar: OrgCalendar, today: dt.date, users: list[User],
                 ids: IdSequence, meta: OrgMeta, factory: RecordFactory, currencies: list[Currency]) -> None:
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
        history.append(StageHistoryEntry(
            # Own number range (a 9 after the org prefix), so record ids stay as they were without history.
            id=f"{self.ids.prefix}9{self._history_rows:011d}", Stage=deal.Stage, Amount=deal.Amount, Probability=deal.Probability,
            Expected_Revenue=deal.Expected_Revenue, Closing_Date=deal.Closing_Date, Modified_Time=when,
            Modified_By=user_id))

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
            deal = self.factory.deal(rng, when, owner=converter, account=account, contact=contact,
                                     source=lead.Lead_Source, deal_type="New Business")
            self.add("Deals", deal)
        self.change("Leads", lead, {
            "Converted__s": True,
            "Converted_Date_Time": when,
            "Converted_Account": account,
            "Converted_Contact": contact,
            "Converted_Deal": None if deal is None else Ref(deal.Deal_Name, deal.id),
        }, when, converter)
        return deal


def blank_record(module: str, record_id: str, when: int, user_id: str) -> Record:
    """A new record with the system fields Zoho fills on creation."""
    record = MODULES[module].record_type(
        id=record_id, Owner=user_id, Created_Time=when, Modified_Time=when, Created_By=user_id,
        Modified_By=user_id,
    )
    if isinstance(record, Lead):
        record.Converted__s = False
        record.Record_Status__s = "Available"
    else:
        record.Pipeline = PIPELINE_NAME
    return record
