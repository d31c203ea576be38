"""dlt source for Zoho CRM (REST API v8): leads, deals, users, deal stages, currencies and the deletion log.

Load contract (dataset `zoho_raw`, tables named after the resources):

- `leads`, `deals`: incremental on `Modified_Time` (parsed to UTC; re-read from
  the last cursor minus an overlap window), merged on `id`. Records deleted in
  Zoho are removed: the `leads_deletions`/`deals_deletions` transformers turn each
  new deletion log entry into a tombstone row for these tables, and dlt's
  `hard_delete` hint deletes the row with that id. Within a load the newest
  version of an id wins (`dedup_sort` on `modified_time`), and each deletion is
  applied once, so a tombstone never removes a record modified after it was deleted.
- `lead_versions`, `deal_versions`: every version of a lead or deal the extractor
  has seen (each record as read, merged on (`id`, `Modified_Time`), never deleted):
  the warehouse's own history. A version holds from its Modified_Time until the next
  version's, or the record's deletion in `deleted_records`.
- `deal_stage_history`: Zoho's Stage History of every deal, read once on the first
  sync (one call per deal), so that the past before the first sync has stages too.
- `deleted_records`: Zoho's deletion log (`/{module}/deleted?type=all`), its own
  cursor on `deleted_time` per module, merged on (`module`, `id`).
- `users` (merged on `id`), `deal_stages` (merged on (`pipeline_id`, `id`)) and `currencies` (merged on
  `iso_code`; `/org/currencies`, whose `is_base` row is the home currency; an org without multi-currency
  gets one row, its home currency from `/org`): small, and read only when they changed. Users by
  If-Modified-Since (one call, 304 when nobody changed). Stages and currencies have no such header: they
  are read when a deal names a (pipeline, stage) or a currency the last read did not list, and at least
  every `METADATA_MAX_AGE_DAYS`; a quiet day costs its record pages and the one users call.

A run may load in several steps (`ExtractSession`): leads and deals are read in
ascending Modified_Time, and each step loads at most `records_per_load` of them,
then the next step continues the same read. A run that fails or is killed keeps
the steps it loaded, and its cursor stands exactly past them.

Every column is declared with its type, so it exists even when Zoho sent no value
for it yet. Lookups are flattened (`Owner` -> `owner__id`, `owner__name`,
`owner__email`); there are no child tables.

The fields of `leads`/`deals` (and their versions) are the org's own: each run reads the
module's `/settings/fields` once and loads every field it lists (custom fields included)
beside the standard ones of `settings.MODULE_FIELDS`, so a field the org adds becomes a
column (dlt's snake_case: `Product_Line` -> `product_line`) with the next run that reads
a record, which the overlap makes nearly every run; only the records changed since carry
its values. Zoho takes 50 fields a request: a module with more is paged with the first 50
and completed by id (see `_with_other_batches`). A field the org deletes keeps its column:
a record read again after the deletion (changed since, or in the overlap) gets null in it,
the others keep their last value, and the versions keep every value they saw. A field
retyped in the org keeps its column and its type: dlt coerces the new values to it where it
can ("12" into a bigint column, 12 into a text one) and puts the others in a variant column
`<column>__v_<type>` (text in a bigint column: `seats__v_text`); declaring the new type would
not change the column but make the load fail, so the extractor never does (`_org_field_hints`).

Credentials and the data centre come from dlt's `SOURCES__ZOHO__CLIENT_ID`, ..., then
the plain `ZOHO_CLIENT_ID`, `ZOHO_CLIENT_SECRET`, `ZOHO_REFRESH_TOKEN`, `ZOHO_DC`,
`ZOHO_ACCOUNTS_URL`, `ZOHO_CREDIT_FLOOR`, then `[sources.zoho]` in `.dlt/secrets.toml` /
`.dlt/config.toml`: the resolver of `credentials.py`, which the doctor uses too.

API reference: https://www.zoho.com/crm/developer/docs/api/v8/
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import dlt
from dlt.sources import DltResource

from .credentials import connect, resolve_settings
from .helpers import (
    CreditFloorReached,
    ZohoClient,
    ZohoError,
    column_hints,
    format_zoho_datetime,
    iter_numbered_pages,
    iter_record_pages,
    parse_zoho_datetime,
    typed_record,
)
from .settings import (
    CURRENCIES_FIELDS,
    CURRENCIES_NOT_ENABLED,
    DEAL_STAGES_FIELDS,
    DELETED_FIELDS,
    DELETED_FLAG,
    FIELDS_PER_REQUEST,
    IDS_PER_REQUEST,
    METADATA_MAX_AGE_DAYS,
    MODULE_FIELDS,
    MODULES,
    OVERLAP_MINUTES,
    PAGE_SIZE,
    PAGE_TOKEN_LIMIT,
    RECORDS_PER_LOAD,
    RETRY_ATTEMPTS,
    RETRY_BACKOFF_SECONDS,
    STAGE_HISTORY_FIELDS,
    STAGE_HISTORY_RELATED_LIST,
    USERS_FIELDS,
    FieldKind,
    field_kind,
)

__all__ = ["zoho_crm", "ExtractObserver", "ExtractSession", "CreditFloorReached", "ZohoError", "RESOURCES"]

RESOURCES = ("leads", "deals", "users", "deal_stages", "currencies", "deleted_records", "deal_stage_history")
RECORD_RESOURCES = tuple(module.lower() for module in MODULES)
# What a full refresh keeps: it cannot be read from Zoho again.
HISTORY_TABLES = ("lead_versions", "deal_versions", "deal_stage_history")
# The source state of the stages and currencies read (what they listed, when, and what a deal showed stale).
METADATA_STATE = ("deal_stages", "currencies", "metadata_due")


@dataclass
class ExtractSession:
    """What outlives one load of a run: the Zoho client (one token for the whole run) and the open
    reads of leads and deals, which the next load of the run continues where the last one stopped.

    `unfinished` names the record resources that stopped at `records_per_load` with more to read;
    `credit_stop` is set when Zoho reported credits below the floor between two pages; `fields` holds
    each module's field list, read from the org once a run, so that every load of the run (and the
    read it continues) asks for the same fields.
    """

    client: ZohoClient | None = None
    records_per_load: int | None = None  # None: everything in one load
    unfinished: set[str] = field(default_factory=set)
    credit_stop: CreditFloorReached | None = None
    decisions: dict[str, bool] = field(default_factory=dict)  # taken once per run (the stage-history backfill)
    fields: dict[str, dict[str, FieldKind]] = field(default_factory=dict)  # each module's field list, read once
    metadata_due: set[str] = field(default_factory=set)  # deal_stages/currencies a deal of this run showed stale
    _reads: dict[str, Iterator[list[dict[str, Any]]]] = field(default_factory=dict)

    def read(self, module: str, start: Any) -> Iterator[list[dict[str, Any]]]:
        """The open read of `module`, started by `start()` on first use."""
        if module not in self._reads:
            self._reads[module] = start()
        return self._reads[module]

    def module_fields(self, module: str, client: ZohoClient) -> dict[str, FieldKind]:
        """The fields of `module` this run reads (`_field_list`), read from the org on first use."""
        if module not in self.fields:
            self.fields[module] = _field_list(client, module)
        return self.fields[module]

    def finished(self, module: str) -> None:
        self._reads.pop(module, None)
        self.unfinished.discard(module.lower())


class ExtractObserver(Protocol):
    """Told about every API call and every page a resource yields (progress, summaries)."""

    def api_call(self, path: str) -> None: ...

    def page(self, resource: str, records: int) -> None: ...


class _Silent:
    def api_call(self, path: str) -> None:
        pass

    def page(self, resource: str, records: int) -> None:
        pass


@dlt.source(name="zoho_crm", section="zoho", max_table_nesting=1)
def zoho_crm(
    overlap_minutes: float = OVERLAP_MINUTES,
    page_size: int = PAGE_SIZE,
    page_token_limit: int = PAGE_TOKEN_LIMIT,
    retry_attempts: int = RETRY_ATTEMPTS,
    retry_backoff_seconds: float = RETRY_BACKOFF_SECONDS,
    records_per_load: int = RECORDS_PER_LOAD,
    records_file_format: str | None = None,
    stage_history_backfill: bool = True,
    observer: ExtractObserver | None = None,
    session: ExtractSession | None = None,
    reread_metadata: bool = False,
) -> list[DltResource]:
    """The Zoho CRM org behind the refresh token, as the five tables of the module docstring.

    The credentials, the data centre (`dc`), its accounts server (`accounts_url`, which
    reaches the local sandbox org) and `credit_floor` are not arguments: `credentials.py`
    resolves them, for the doctor as for this source, so that both use the same ones.

    Args:
        overlap_minutes: How far before the last cursor each incremental read starts.
        page_token_limit: Records one `page_token` chain reaches (Zoho: 100,000); a longer
            read restarts its query from the last Modified_Time before Zoho refuses the next page.
        records_per_load: Most leads/deals one load of a run takes, when the run passes a
            `session` that continues the read in further loads (see `run.load`).
        reread_metadata: Read the pipeline stages and currencies even if no deal showed them
            stale (a full refresh empties the tables).
        records_file_format: dlt loader file format of `leads` and `deals` (the bulk of
            the data), e.g. "jsonl" for DuckDB; None keeps the destination's default.
            The small tables always use insert_values, which can create an empty table.
        stage_history_backfill: Read every deal's Stage History on the first sync (one
            API call per deal); without it the past before the first sync is dated from
            the records' Closing_Date and last change only.
    """
    settings = resolve_settings()  # fails on a missing or malformed setting before any request
    observer = observer or _Silent()
    if session is None:
        session = ExtractSession()
    else:
        session.records_per_load = records_per_load
    if session.client is None:
        session.client = connect(
            settings,
            retry_attempts=retry_attempts,
            retry_backoff_seconds=retry_backoff_seconds,
            credit_floor=settings.credit_floor,
            on_request=observer.api_call,
        )
    client = session.client
    overlap = timedelta(minutes=overlap_minutes)
    deleted_records = _deleted_records(client, overlap, page_size, observer)
    records = {
        module: _module_records(
            client, module, overlap, page_size, page_token_limit, records_file_format, observer, session
        )
        for module in MODULES
    }
    return [
        *records.values(),
        *(_versions(records[module], module, records_file_format, session) for module in MODULES),
        _deal_stage_history(
            client, records["Deals"], page_size, observer, stage_history_backfill, records_file_format, session
        ),
        _users(client, page_size, observer),
        _deal_stages(client, observer, reread_metadata, session),
        _currencies(client, observer, reread_metadata, session),
        deleted_records,
        *(_tombstones(deleted_records, module, records_file_format) for module in MODULES),
    ]


# ---------------------------------------------------------------------- resources


def _module_table_hints(module: str, file_format: str | None) -> dict[str, Any]:
    """Hints of the `leads`/`deals` tables, shared by their resource and by the tombstones."""
    columns = column_hints(MODULE_FIELDS[module])
    columns["Modified_Time"]["dedup_sort"] = "desc"
    columns[DELETED_FLAG] = {"data_type": "bool", "hard_delete": True}
    hints: dict[str, Any] = {
        "table_name": module.lower(),
        "primary_key": "id",
        "write_disposition": {"disposition": "merge", "strategy": "delete-insert"},
        "columns": columns,
    }
    if file_format:
        hints["file_format"] = file_format
    return hints


def _module_records(
    client: ZohoClient,
    module: str,
    overlap: timedelta,
    page_size: int,
    page_token_limit: int,
    file_format: str | None,
    observer: ExtractObserver,
    session: ExtractSession,
) -> DltResource:
    name = module.lower()
    hints = _module_table_hints(module, file_format)
    hints.pop("table_name")

    # Zoho filters on If-Modified-Since (inclusive) server-side; `lag` makes both that
    # header and dlt's own filter start `overlap` before the last cursor, and the merge
    # on `id` absorbs the records read twice.
    @dlt.resource(name=name, **hints)
    def records(
        modified_time: dlt.sources.incremental[datetime] = dlt.sources.incremental(
            "Modified_Time", lag=overlap.total_seconds()
        ),
    ) -> Iterator[list[dict[str, Any]]]:
        fields = session.module_fields(module, client)
        first, *others = _field_batches(fields)
        # A later load of the same run continues the read the previous load stopped, from the
        # exact record it stopped at (the incremental's start value only matters to the first).
        pages = session.read(
            module,
            lambda: iter_record_pages(
                client,
                module,
                first,
                modified_since=modified_time.start_value,
                page_size=page_size,
                chain_limit=page_token_limit,
            ),
        )
        declared = False
        taken = 0
        while True:
            if client.below_floor():
                session.credit_stop = CreditFloorReached(client.credits_remaining or 0, client.credit_floor)
                return
            page = next(pages, None)
            if page is None:
                session.finished(module)
                return
            read = len(page)
            page = _with_other_batches(client, module, page, others)
            observer.page(name, len(page))
            rows = [typed_record(record, fields) for record in page]
            if module == "Deals":
                _watch_metadata(rows, session)
            if declared:
                yield rows
            else:  # the org's other fields, declared once per load with its first page
                declared = True
                yield dlt.mark.with_hints(rows, dlt.mark.make_hints(columns=_org_field_hints(module, fields, name)))
            taken += read
            if session.records_per_load is not None and taken >= session.records_per_load:
                session.unfinished.add(name)
                return

    return records


def _versions(records: DltResource, module: str, file_format: str | None, session: ExtractSession) -> DltResource:
    """Every version of the module's records the extractor reads, kept: the warehouse's own history.

    The records table holds the latest version only; this one keeps each (id, Modified_Time) once (an
    overlapping read merges into the same row) and never deletes, so "the state at the end of day d" can
    be answered later exactly as the syncs saw it.
    """
    columns = column_hints(MODULE_FIELDS[module])
    columns["Modified_Time"]["nullable"] = False
    hints: dict[str, Any] = {
        "primary_key": ("id", "Modified_Time"),
        "write_disposition": {"disposition": "merge", "strategy": "delete-insert"},
        "columns": columns,
    }
    if file_format:
        hints["file_format"] = file_format

    table = f"{module.lower()[:-1]}_versions"
    declared: list[bool] = []

    @dlt.transformer(data_from=records, name=table, **hints)
    def versions(page: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        rows = [dict(record) for record in page]
        if declared:
            yield rows
        else:  # the org's other fields, as the records resource declares them (it read the field list)
            declared.append(True)
            org_fields = _org_field_hints(module, session.fields.get(module, {}), table)
            yield dlt.mark.with_hints(rows, dlt.mark.make_hints(columns=org_fields))

    return versions


# ---------------------------------------------------------------------- the org's field list


def _field_list(client: ZohoClient, module: str) -> dict[str, FieldKind]:
    """The fields of `module` to read, with the kind of each: the standard ones of `MODULE_FIELDS` (the
    models rely on them, with their fixed types) first, then every other field the org's `/settings/fields`
    lists (custom fields, and standard ones the models do not use), typed by `field_kind`.

    Fields a record list cannot return (subforms, multi-select lookups, files) and hidden ones are left out.
    Without an answer (204) the standard fields are read.
    """
    fields: dict[str, FieldKind] = dict(MODULE_FIELDS[module])
    try:
        body = client.get("settings/fields", params={"module": module}) or {}
    except ZohoError as error:
        if error.code in ("OAUTH_SCOPE_MISMATCH", "NO_PERMISSION"):
            raise ZohoError(
                f"reading the {module} field list needs the scope ZohoCRM.settings.fields.READ: {error}",
                code=error.code,
            ) from None
        raise
    for described in body.get("fields") or []:
        name = described.get("api_name")
        if not isinstance(name, str) or not name or name == "id" or name in fields or described.get("visible") is False:
            continue
        kind = field_kind(str(described.get("data_type") or ""), str(described.get("json_type") or ""))
        if kind is not None:
            fields[name] = kind
    return fields


def _field_batches(fields: Mapping[str, FieldKind]) -> list[list[str]]:
    """`fields` in the groups one request may ask for: the first, which the list read pages on, holds the
    standard fields (Modified_Time among them); each further group leaves room for Modified_Time, which
    `_with_other_batches` asks for with it."""
    names = list(fields)
    first, rest = names[:FIELDS_PER_REQUEST], names[FIELDS_PER_REQUEST:]
    if "Modified_Time" not in first:
        raise ValueError("the records are paged on Modified_Time: it must be among the first fields")
    size = FIELDS_PER_REQUEST - 1
    return [first, *(rest[start : start + size] for start in range(0, len(rest), size))]


def _with_other_batches(
    client: ZohoClient, module: str, page: list[dict[str, Any]], batches: list[list[str]]
) -> list[dict[str, Any]]:
    """The page's records completed with the fields of the other `batches`, read by id (100 ids a call).

    Zoho serves 50 fields a request and binds a page token to its field list, so a module with more
    fields is paged with the first batch and each page completed by id, never by reusing a token with
    other fields. A record that changed (or went) between the page and its completion is left out: the
    rest of it would be of another version; its new version is past the cursor, so the next run reads it.
    """
    if not batches or not page:
        return page
    records = {str(record["id"]): dict(record) for record in page}
    complete = set(records)
    ids = list(records)
    for batch in batches:
        answered: set[str] = set()
        for start in range(0, len(ids), IDS_PER_REQUEST):
            params = {
                "fields": ",".join(["Modified_Time", *batch]),
                "ids": ",".join(ids[start : start + IDS_PER_REQUEST]),
            }
            if module == "Leads":
                params["converted"] = "both"  # as the list read: converted leads too
            for extra in (client.get(module, params=params) or {}).get("data") or []:
                record = records.get(str(extra.get("id")))
                if record is not None and extra.get("Modified_Time") == record.get("Modified_Time"):
                    record.update(extra)
                    answered.add(str(extra["id"]))
        complete &= answered
    return [records[record_id] for record_id in ids if record_id in complete]


def _org_field_hints(module: str, fields: Mapping[str, FieldKind], table: str) -> dict[str, dict[str, Any]]:
    """Column hints of the org's fields beyond the standard ones, for `table`.

    A column the table already has with another type is left as it is: the field was retyped in Zoho,
    and a hint with the new type would not change the column (dlt does not alter it) but make the load
    fail on a value the old type cannot hold. Undeclared, dlt coerces what it can and puts the rest in a
    variant column (`<name>__v_<type>`).
    """
    schema = dlt.current.source_schema()
    existing = schema.tables.get(table, {}).get("columns", {})
    others = {name: kind for name, kind in fields.items() if name not in MODULE_FIELDS[module]}
    hints = {}
    for name, hint in column_hints(others).items():
        column = existing.get(schema.naming.normalize_path(name))
        if name != "id" and (column is None or column.get("data_type") in (None, hint["data_type"])):
            hints[name] = hint
    return hints


def _deal_stage_history(
    client: ZohoClient,
    deals: DltResource,
    page_size: int,
    observer: ExtractObserver,
    backfill: bool,
    file_format: str | None,
    session: ExtractSession,
) -> DltResource:
    """Zoho's Stage History of each deal, read on the first sync only (it costs one call per deal).

    The decision is taken once per run and kept in the run's session, so every load step of a first
    sync backfills its deals: the resource state says whether an earlier run already did it, and it is
    only committed with a successful load, so a first sync that loaded nothing backfills again.
    """
    fields = ",".join(name for name in STAGE_HISTORY_FIELDS if name != "deal_id")
    decided = session.decisions
    # A few rows per deal: as big as the deals table, so it loads in the records' file format (the table
    # is simply missing while there is nothing to load; the marts read it as empty then).
    hints: dict[str, Any] = {"file_format": file_format} if file_format else {}

    @dlt.transformer(
        data_from=deals,
        name="deal_stage_history",
        primary_key="id",
        write_disposition="merge",
        columns=column_hints(STAGE_HISTORY_FIELDS),
        **hints,
    )
    def deal_stage_history(page: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        if "now" not in decided:
            state = dlt.current.resource_state()
            decided["now"] = backfill and not state.get("backfilled")
            state["backfilled"] = state.get("backfilled") or decided["now"]
        if not decided["now"]:
            return
        rows = []
        for deal in page:
            for entries in iter_numbered_pages(
                client,
                f"Deals/{deal['id']}/{STAGE_HISTORY_RELATED_LIST}",
                "data",
                {"fields": fields},
                page_size=page_size,
            ):
                rows.extend(typed_record({**entry, "deal_id": deal["id"]}, STAGE_HISTORY_FIELDS) for entry in entries)
        observer.page("deal_stage_history", len(rows))
        if rows:
            yield rows

    return deal_stage_history


def _users(client: ZohoClient, page_size: int, observer: ExtractObserver) -> DltResource:
    @dlt.resource(
        name="users",
        primary_key="id",
        write_disposition="merge",
        columns=column_hints(USERS_FIELDS),
        file_format="insert_values",
    )
    def users() -> Iterator[list[dict[str, Any]]]:
        yield dlt.mark.materialize_table_schema()
        # Only users modified since the newest one read (Zoho answers 304 when none was): an
        # unchanged user list costs one call and no data.
        state = dlt.current.resource_state()
        since = _parse_optional(state.get("since"))
        headers = {"If-Modified-Since": format_zoho_datetime(since + timedelta(seconds=1))} if since else None
        newest = since
        for page in iter_numbered_pages(
            client, "users", "users", {"type": "AllUsers"}, headers=headers, page_size=page_size
        ):
            observer.page("users", len(page))
            rows = [typed_record(user, USERS_FIELDS) for user in page]
            for row in rows:
                modified = row.get("Modified_Time")
                if modified is not None and (newest is None or modified > newest):
                    newest = modified
            yield rows
        if newest is not None:
            state["since"] = newest.isoformat()

    return users


def _deal_stages(client: ZohoClient, observer: ExtractObserver, reread: bool, session: ExtractSession) -> DltResource:
    # Merged on (pipeline, stage) rather than replaced: a run that resumes a half-loaded one can carry the
    # whole list twice into one load, which a replace would insert twice. A stage Zoho deletes stays listed;
    # no deal can be in it any more, so no mart counts it.
    @dlt.resource(
        name="deal_stages",
        primary_key=("pipeline_id", "id"),
        write_disposition="merge",
        columns=column_hints(DEAL_STAGES_FIELDS),
        file_format="insert_values",
    )
    def deal_stages() -> Iterator[list[dict[str, Any]]]:
        yield dlt.mark.materialize_table_schema()
        state = dlt.current.source_state().setdefault("deal_stages", {})
        if not (reread or _metadata_stale("deal_stages", state)):
            return
        # Pipelines hang off layouts; several layouts may share one pipeline.
        layouts = (client.get("settings/layouts", params={"module": "Deals"}) or {}).get("layouts", [])
        stages: dict[tuple[str, str], dict[str, Any]] = {}
        for layout in layouts:
            body = client.get("settings/pipeline", params={"layout_id": layout["id"]}) or {}
            for pipeline in body.get("pipeline", []):
                for stage in pipeline.get("maps") or []:
                    stages[(str(pipeline["id"]), str(stage["id"]))] = typed_record(
                        {
                            "id": stage["id"],
                            "pipeline_id": pipeline["id"],
                            "pipeline": pipeline.get("display_value"),
                            "stage": stage.get("actual_value"),
                            "display_value": stage.get("display_value"),
                            "sequence_number": stage.get("sequence_number"),
                            "forecast_type": stage.get("forecast_type"),
                            "forecast_category": (stage.get("forecast_category") or {}).get("name"),
                            "probability": stage.get("probability"),
                        },
                        DEAL_STAGES_FIELDS,
                    )
        observer.page("deal_stages", len(stages))
        if stages:
            yield list(stages.values())
        state["known"] = sorted([row.get("pipeline") or "", row.get("stage") or ""] for row in stages.values())
        _metadata_read("deal_stages", state, session)

    return deal_stages


def _currencies(client: ZohoClient, observer: ExtractObserver, reread: bool, session: ExtractSession) -> DltResource:
    @dlt.resource(
        name="currencies",
        primary_key="iso_code",
        write_disposition="merge",  # as deal_stages: the whole list, merged so a resumed load cannot double it
        columns=column_hints(CURRENCIES_FIELDS),
        file_format="insert_values",
    )
    def currencies() -> Iterator[list[dict[str, Any]]]:
        yield dlt.mark.materialize_table_schema()
        state = dlt.current.source_state().setdefault("currencies", {})
        if not (reread or _metadata_stale("currencies", state)):
            return
        try:
            listed = (client.get("org/currencies") or {}).get("currencies", [])
        except ZohoError as error:
            if error.code != CURRENCIES_NOT_ENABLED:
                raise
            # One currency only: every amount is already in it, at rate 1.
            org = ((client.get("org") or {}).get("org") or [{}])[0]
            listed = [
                {
                    "id": org.get("id") or "home",
                    "iso_code": org.get("iso_code"),
                    "name": org.get("currency"),
                    "symbol": org.get("currency_symbol"),
                    "exchange_rate": 1,
                    "is_base": True,
                    "is_active": True,
                }
            ]
        rows = [
            typed_record({**currency, "exchange_rate": float(currency["exchange_rate"])}, CURRENCIES_FIELDS)
            for currency in listed
            if currency.get("iso_code")
        ]
        observer.page("currencies", len(rows))
        if rows:
            yield rows
        state["known"] = sorted(row["iso_code"] for row in rows)
        _metadata_read("currencies", state, session)

    return currencies


def _watch_metadata(deals: list[dict[str, Any]], session: ExtractSession) -> None:
    """Mark the stages or currencies stale when a deal names one their last read did not list.

    The mark is kept in the source state, which dlt commits with this very page: a run killed before it
    reads them leaves the mark to the next run. `run.load` reads what is still due after the last load.
    """
    state = dlt.current.source_state()
    known_stages = {tuple(pair) for pair in state.get("deal_stages", {}).get("known", [])}
    stage_names = {stage for _, stage in known_stages}
    known_currencies = set(state.get("currencies", {}).get("known", []))
    due = set(state.get("metadata_due", []))
    for deal in deals:
        stage, pipeline, currency = deal.get("Stage"), deal.get("Pipeline"), deal.get("Currency")
        if stage and ((pipeline or "", stage) not in known_stages if pipeline else stage not in stage_names):
            due.add("deal_stages")
        if currency and currency not in known_currencies:
            due.add("currencies")
    if due:
        state["metadata_due"] = sorted(due)
        session.metadata_due |= due


def _metadata_stale(name: str, state: dict[str, Any]) -> bool:
    """Never read, marked stale by a deal, or read longer than `METADATA_MAX_AGE_DAYS` ago."""
    read_at = _parse_optional(state.get("read_at"))
    return (
        "known" not in state
        or name in dlt.current.source_state().get("metadata_due", [])
        or read_at is None
        or datetime.now(UTC) - read_at > timedelta(days=METADATA_MAX_AGE_DAYS)
    )


def _metadata_read(name: str, state: dict[str, Any], session: ExtractSession) -> None:
    state["read_at"] = datetime.now(UTC).isoformat()
    source_state = dlt.current.source_state()
    source_state["metadata_due"] = [due for due in source_state.get("metadata_due", []) if due != name]
    session.metadata_due.discard(name)


def _deleted_records(client: ZohoClient, overlap: timedelta, page_size: int, observer: ExtractObserver) -> DltResource:
    columns = column_hints(DELETED_FIELDS)
    columns["deleted_time"]["dedup_sort"] = "desc"

    # The table must exist even when nothing was ever deleted (the marts anti-join it):
    # insert_values, unlike JSONL on DuckDB, can load the empty file that creates it.
    @dlt.resource(
        name="deleted_records",
        primary_key=("module", "id"),
        write_disposition="merge",
        columns=columns,
        file_format="insert_values",
    )
    def deleted_records() -> Iterator[list[dict[str, Any]]]:
        yield dlt.mark.materialize_table_schema()
        # Per module: `since` is the newest deleted_time seen; `applied` holds the entries
        # within `overlap` of it, which the next run reads again and must not apply twice
        # (so a tombstone cannot hit a record restored from the recycle bin afterwards).
        state = dlt.current.resource_state()
        for module in MODULES:
            module_state = state.setdefault(module, {"since": None, "applied": {}})
            since = _parse_optional(module_state["since"])
            applied: dict[str, str] = module_state["applied"]
            headers = {"If-Modified-Since": format_zoho_datetime(since - overlap)} if since else None
            newest = since
            for page in iter_numbered_pages(
                client, f"{module}/deleted", "data", {"type": "all"}, headers=headers, page_size=page_size
            ):
                rows = [typed_record({**entry, "module": module}, DELETED_FIELDS) for entry in page]
                fresh = [row for row in rows if _applied_key(row) not in applied]
                for row in fresh:
                    row.setdefault("deleted_time", datetime.now(UTC))
                    applied[_applied_key(row)] = row["deleted_time"].isoformat()
                    newest = row["deleted_time"] if newest is None else max(newest, row["deleted_time"])
                observer.page("deleted_records", len(fresh))
                if fresh:
                    yield fresh
            if newest is not None:
                module_state["since"] = newest.isoformat()
                module_state["applied"] = {
                    key: at for key, at in applied.items() if parse_zoho_datetime(at) >= newest - overlap
                }

    return deleted_records


def _tombstones(deleted_records: DltResource, module: str, file_format: str | None) -> DltResource:
    """Deletion log entries of `module` as tombstones for its table: dlt deletes the rows with their ids.

    A transformer carrying the module table's own hints, so the tombstones merge
    into `leads`/`deals` exactly like records do; within one load the newest of a
    record and its tombstone wins (`dedup_sort` on `modified_time`).
    """

    @dlt.transformer(
        data_from=deleted_records, name=f"{module.lower()}_deletions", **_module_table_hints(module, file_format)
    )
    def tombstones(entries: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        rows = [
            {"id": row["id"], "Modified_Time": row["deleted_time"], DELETED_FLAG: True}
            for row in entries
            if row["module"] == module
        ]
        if rows:
            yield rows

    return tombstones


def _applied_key(row: dict[str, Any]) -> str:
    return f"{row['id']}:{row.get('type', '')}"


def _parse_optional(value: str | None) -> datetime | None:
    return parse_zoho_datetime(value) if value else None
