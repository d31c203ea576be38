"""Records of the sandbox org and the rules Zoho CRM applies when they change.

Records are slotted dataclasses whose attribute names are Zoho's API names, so the renderer can
`getattr(record, "Lead_Status")` and a 50,000-lead org stays small in memory (a dict per record would
be about ten times larger). Each field carries its Zoho data kind in the dataclass metadata; that one
declaration drives rendering, write validation and the list of writable fields.

Internal values are kept in their cheapest form: datetimes as epoch seconds (rendered later with the
user's UTC offset), user lookups as the user id (rendered as {name, id, email} from the user table,
like Zoho which always shows the current name), record lookups as `Ref(name, id)`.

Custom fields are the org's, not the dataclass's: an admin adds them at any time (`CustomField`), so
their values live in each record's `custom` map, keyed by API name, and a module's `ModuleSpec` for an
org is the standard one extended with the org's custom fields (`ModuleSpec.with_custom`).
`field_value` and `apply_changes` read and write both kinds alike.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, NamedTuple


class Kind(Enum):
    """Zoho field data types, as far as rendering and validation need to tell them apart."""

    ID = "bigint"
    TEXT = "text"
    NUMBER = "double"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    DATE = "date"
    DATETIME = "datetime"
    USER = "ownerlookup"
    LOOKUP = "lookup"


def _field(kind: Kind, *, writable: bool = True) -> Any:
    return dataclasses.field(default=None, metadata={"kind": kind, "writable": writable})


class Ref(NamedTuple):
    """A record lookup (Account_Name, Converted_Deal, ...), rendered as {"name", "id"}."""

    name: str | None
    id: str


@dataclass(slots=True)
class Lead:
    id: str = _field(Kind.ID, writable=False)
    Owner: str = _field(Kind.USER)
    First_Name: str | None = _field(Kind.TEXT)
    Last_Name: str = _field(Kind.TEXT)
    Full_Name: str = _field(Kind.TEXT, writable=False)
    Company: str | None = _field(Kind.TEXT)
    Email: str | None = _field(Kind.TEXT)
    Phone: str | None = _field(Kind.TEXT)
    Lead_Source: str | None = _field(Kind.TEXT)
    Lead_Status: str | None = _field(Kind.TEXT)
    Industry: str | None = _field(Kind.TEXT)
    Annual_Revenue: float | None = _field(Kind.NUMBER)
    No_of_Employees: int | None = _field(Kind.INTEGER)
    Rating: str | None = _field(Kind.TEXT)
    Country: str | None = _field(Kind.TEXT)
    Description: str | None = _field(Kind.TEXT)
    # Annual_Revenue is a currency field: in a multi-currency org the lead carries its currency and rate too.
    Currency: str | None = _field(Kind.TEXT)
    Exchange_Rate: float | None = _field(Kind.NUMBER)
    Created_Time: int = _field(Kind.DATETIME, writable=False)
    Modified_Time: int = _field(Kind.DATETIME, writable=False)
    Created_By: str = _field(Kind.USER, writable=False)
    Modified_By: str = _field(Kind.USER, writable=False)
    # Conversion goes through Zoho's separate convert action, so these are read-only for writes.
    Converted__s: bool = _field(Kind.BOOLEAN, writable=False)
    Converted_Date_Time: int | None = _field(Kind.DATETIME, writable=False)
    Converted_Deal: Ref | None = _field(Kind.LOOKUP, writable=False)
    Converted_Account: Ref | None = _field(Kind.LOOKUP, writable=False)
    Converted_Contact: Ref | None = _field(Kind.LOOKUP, writable=False)
    Record_Status__s: str = _field(Kind.TEXT, writable=False)
    custom: dict[str, Any] | None = None  # the custom fields' values by API name (`field_value`)


@dataclass(slots=True)
class Deal:
    id: str = _field(Kind.ID, writable=False)
    Owner: str = _field(Kind.USER)
    Deal_Name: str = _field(Kind.TEXT)
    Account_Name: Ref | None = _field(Kind.LOOKUP)
    Contact_Name: Ref | None = _field(Kind.LOOKUP)
    Stage: str = _field(Kind.TEXT)
    Pipeline: str = _field(Kind.TEXT)
    Amount: float | None = _field(Kind.NUMBER)
    # Zoho fills Probability from the Stage, but a rep may override it (Zoho does not bound it);
    # Expected_Revenue always follows Amount x Probability (see `apply_changes`).
    Probability: int = _field(Kind.INTEGER)
    Expected_Revenue: float | None = _field(Kind.NUMBER, writable=False)
    Closing_Date: dt.date | None = _field(Kind.DATE)
    Lead_Source: str | None = _field(Kind.TEXT)
    Type: str | None = _field(Kind.TEXT)
    Next_Step: str | None = _field(Kind.TEXT)
    Reason_For_Loss__s: str | None = _field(Kind.TEXT)
    Description: str | None = _field(Kind.TEXT)
    # The ISO code of the deal's currency, and Zoho's rate for it: units of that currency per one unit of
    # the org's home currency (so the home-currency value is Amount / Exchange_Rate; 1 for the home currency).
    Currency: str = _field(Kind.TEXT)
    Exchange_Rate: float = _field(Kind.NUMBER)
    Created_Time: int = _field(Kind.DATETIME, writable=False)
    Modified_Time: int = _field(Kind.DATETIME, writable=False)
    Created_By: str = _field(Kind.USER, writable=False)
    Modified_By: str = _field(Kind.USER, writable=False)
    custom: dict[str, Any] | None = None  # the custom fields' values by API name (`field_value`)


Record = Lead | Deal
# The standard fields of each record type: every other field name is a custom field's.
STANDARD_FIELDS: dict[type, frozenset[str]] = {
    record_type: frozenset(f.name for f in dataclasses.fields(record_type) if "kind" in f.metadata)
    for record_type in (Lead, Deal)
}


class CustomField(NamedTuple):
    """A field an admin added to a module (Zoho's Setup > Modules and Fields, or the Create Custom Fields
    API), listed by `/settings/fields` with `custom_field: true`.

    `data_type` is Zoho's (picklist, text, integer, double, ...; `CUSTOM_DATA_TYPES`), `values` a picklist's
    options. Zoho derives the API name from the label (spaces become underscores) unless one is given.
    """

    api_name: str
    label: str
    data_type: str
    values: tuple[str, ...]
    id: str
    created_time: int

    @property
    def kind(self) -> Kind:
        return CUSTOM_DATA_TYPES[self.data_type]


# The Zoho data types a custom field can have here, and how the sandbox stores, renders and validates them.
CUSTOM_DATA_TYPES: dict[str, Kind] = {
    "text": Kind.TEXT,
    "textarea": Kind.TEXT,
    "email": Kind.TEXT,
    "phone": Kind.TEXT,
    "website": Kind.TEXT,
    "picklist": Kind.TEXT,
    "integer": Kind.INTEGER,
    "double": Kind.NUMBER,
    "currency": Kind.NUMBER,
    "percent": Kind.NUMBER,
    "boolean": Kind.BOOLEAN,
    "date": Kind.DATE,
    "datetime": Kind.DATETIME,
}


def field_value(record: Record, name: str) -> Any:
    """A field's value: a standard field's attribute, or a custom field's entry (None when unset)."""
    if name in STANDARD_FIELDS[type(record)]:
        return getattr(record, name)
    return None if record.custom is None else record.custom.get(name)


@dataclass(frozen=True)
class ModuleSpec:
    """What the API needs to know about a module: its fields, their kinds and the write rules."""

    api_name: str
    record_type: type
    mandatory: tuple[str, ...]
    display_field: str
    kinds: Mapping[str, Kind]
    writable: frozenset[str]
    custom: Mapping[str, CustomField] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, api_name: str, record_type: type, mandatory: tuple[str, ...], display_field: str) -> ModuleSpec:
        fields = [f for f in dataclasses.fields(record_type) if "kind" in f.metadata]
        return cls(
            api_name=api_name,
            record_type=record_type,
            mandatory=mandatory,
            display_field=display_field,
            kinds={f.name: f.metadata["kind"] for f in fields},
            writable=frozenset(f.name for f in fields if f.metadata["writable"]),
        )

    def with_custom(self, fields: Iterable[CustomField]) -> ModuleSpec:
        """This module as an org with these custom fields has it: they are read, written and queried like
        the standard fields."""
        custom = {field.api_name: field for field in fields}
        return dataclasses.replace(
            self,
            kinds={**self.kinds, **{n: f.kind for n, f in custom.items()}},
            writable=self.writable | custom.keys(),
            custom=custom,
        )


MODULES: dict[str, ModuleSpec] = {
    "Leads": ModuleSpec.of("Leads", Lead, mandatory=("Last_Name",), display_field="Full_Name"),
    "Deals": ModuleSpec.of("Deals", Deal, mandatory=("Deal_Name", "Stage"), display_field="Deal_Name"),
}


def resolve_module(name: str) -> ModuleSpec | None:
    """Module API names are matched case-insensitively ("leads" works on Zoho too)."""
    for api_name, spec in MODULES.items():
        if api_name.lower() == name.lower():
            return spec
    return None


@dataclass(frozen=True)
class Stage:
    """One entry of the Deals pipeline (Zoho's default stage list and probabilities)."""

    actual_value: str
    display_value: str
    sequence_number: int
    probability: int
    forecast_type: str  # "Open" | "Closed Won" | "Closed Lost": the only reliable won/lost signal
    forecast_category: str

    @property
    def is_open(self) -> bool:
        return self.forecast_type == "Open"


PIPELINE_NAME = "Standard (Standard)"
STAGES: tuple[Stage, ...] = (
    Stage("Qualification", "Qualification", 1, 10, "Open", "Pipeline"),
    Stage("Needs Analysis", "Needs Analysis", 2, 20, "Open", "Pipeline"),
    Stage("Value Proposition", "Value Proposition", 3, 40, "Open", "Pipeline"),
    Stage("Id. Decision Makers", "Identify Decision Makers", 4, 60, "Open", "Pipeline"),
    Stage("Proposal/Price Quote", "Proposal/Price Quote", 5, 75, "Open", "Pipeline"),
    Stage("Negotiation/Review", "Negotiation/Review", 6, 90, "Open", "Pipeline"),
    Stage("Closed Won", "Closed Won", 7, 100, "Closed Won", "Closed"),
    Stage("Closed Lost", "Closed Lost", 8, 0, "Closed Lost", "Omitted"),
    Stage("Closed Lost to Competition", "Closed-Lost to Competition", 9, 0, "Closed Lost", "Omitted"),
)
STAGE_BY_NAME: dict[str, Stage] = {s.actual_value: s for s in STAGES}
OPEN_STAGES: tuple[Stage, ...] = tuple(s for s in STAGES if s.is_open)
FORECAST_CATEGORIES: tuple[str, ...] = ("Pipeline", "Closed", "Omitted")


@dataclass(frozen=True)
class Currency:
    """A currency of the org (Setup > Company Details > Currencies), as `/org/currencies` lists it."""

    id: str
    iso_code: str
    name: str
    symbol: str
    exchange_rate: float  # units of this currency per one unit of the home currency; 1 for the home currency
    is_base: bool  # the home currency, which Zoho never lets an org change
    created_time: int


# Rates against the US dollar, for the currencies a sandbox org can use; rates against another home
# currency are derived from them.
USD_RATES: dict[str, tuple[str, str, float]] = {
    "USD": ("US Dollar - USD", "$", 1.0),
    "EUR": ("Euro - EUR", "€", 0.92),
    "GBP": ("Pound Sterling - GBP", "£", 0.79),
    "JPY": ("Japanese Yen - JPY", "¥", 150.0),
    "INR": ("Indian Rupee - INR", "₹", 83.0),
}


@dataclass(slots=True)
class User:
    id: str
    first_name: str
    last_name: str
    email: str
    role: Ref
    profile: Ref
    created_time: int
    modified_time: int
    status: str = "active"  # "active" | "inactive"

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}"


@dataclass(slots=True)
class DeletedEntry:
    """A row of the deletion log behind `GET /{module}/deleted`.

    Zoho lists recycle-bin deletions for 60 days and permanent ones for 120 days; a recycle-bin entry
    becomes permanent when the bin is purged. The type is therefore derived from the entry's age when
    rendered (see `SandboxOrg`), only `permanent` records an explicit permanent deletion.
    """

    id: str
    display_name: str | None
    created_by: str | None
    deleted_by: str | None
    deleted_time: int
    permanent: bool = False


@dataclass(slots=True)
class StageHistoryEntry:
    """A row of a deal's Stage History (Zoho's DealHistory module, the "Stage History" related list).

    Zoho writes one when a deal is created and whenever its Stage, Amount, Probability or Closing_Date
    changes, with the values after the change and who made it.
    """

    id: str
    Stage: str
    Amount: float | None
    Probability: int | None
    Expected_Revenue: float | None
    Closing_Date: dt.date | None
    Modified_Time: int
    Modified_By: str


STAGE_HISTORY_FIELDS = frozenset({"Stage", "Amount", "Probability", "Closing_Date"})


def full_name(first: str | None, last: str | None) -> str:
    return " ".join(part for part in (first, last) if part)


def apply_changes(record: Record, changes: Mapping[str, Any], close_day: dt.date | None = None) -> None:
    """Set `changes` on `record` and re-derive what Zoho derives.

    - Leads: Full_Name follows First_Name/Last_Name.
    - Deals: Probability and Expected_Revenue follow the Stage ("automatically populated based on
      chosen Stage") unless the same write sets a Probability; Expected_Revenue follows Amount. When a deal moves into a closed stage (won or
      lost) the sandbox sets its Closing_Date to the day it closed, in the org timezone, as a tidy sales
      team would. Real orgs often leave it stale; the marts cap the close day at the last change.
    """
    standard = STANDARD_FIELDS[type(record)]
    for name, value in changes.items():
        if name in standard:
            setattr(record, name, value)
        elif value is not None:
            if record.custom is None:
                record.custom = {}
            record.custom[name] = value
        elif record.custom is not None:
            record.custom.pop(name, None)
    if isinstance(record, Lead):
        if "First_Name" in changes or "Last_Name" in changes:
            record.Full_Name = full_name(record.First_Name, record.Last_Name)
        return
    if "Stage" in changes:
        stage = STAGE_BY_NAME[record.Stage]
        if "Probability" not in changes:
            record.Probability = stage.probability
        if not stage.is_open:
            if close_day is None:
                raise ValueError("closing a deal needs the day it closed")
            record.Closing_Date = close_day
    if "Stage" in changes or "Amount" in changes or "Probability" in changes:
        record.Expected_Revenue = expected_revenue(record.Amount, record.Probability)


def expected_revenue(amount: float | None, probability: int) -> float | None:
    if amount is None:
        return None
    value = amount * probability / 100
    return int(value) if float(value).is_integer() else round(value, 2)


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


def blank_record(module: str, record_id: str, when: int, user_id: str) -> Record:
    """A new record with the system fields Zoho fills on creation."""
    record = MODULES[module].record_type(
        id=record_id,
        Owner=user_id,
        Created_Time=when,
        Modified_Time=when,
        Created_By=user_id,
        Modified_By=user_id,
    )
    if isinstance(record, Lead):
        record.Converted__s = False
        record.Record_Status__s = "Available"
    else:
        record.Pipeline = PIPELINE_NAME
    return record
