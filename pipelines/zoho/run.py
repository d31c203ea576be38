"""Run the Zoho CRM source into the warehouse: one call that leaves `zoho_raw` current.

`load()` is what the CLI, the tests and the benchmarks call. It takes care of
what a bare `pipeline.run()` leaves to the caller:

- a load interrupted earlier is finished first, then new data is extracted in
  the same call (dlt's `run` would only finish the old load);
- the incremental state lives in the destination (`_dlt_pipeline_state`), so a
  fresh machine continues where the last run stopped; and local state that the
  destination does not know (the DuckDB file was deleted, a new database) is
  dropped, so that destination gets a full load instead of an empty increment;
- each destination has its own dlt working folder, keyed by where it points,
  so a cursor kept for one warehouse is never used for another;
- leads and deals are loaded in steps of at most `records_per_load` records
  (extract, normalize, load, then the next step continues the same read), so a
  run that fails or is killed part-way keeps every step it finished and the next
  run continues from there; and memory stays that of one step, however big the org;
- when Zoho reports API credits below the floor, the run loads what it read and
  stops with `CreditFloorReached` (the command's "try later" exit status).
"""

from __future__ import annotations

import ctypes
import hashlib
import platform
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import dlt
from dlt.common.destination.exceptions import DestinationUndefinedEntity
from dlt.common.pipeline import get_dlt_pipelines_dir
from dlt.pipeline.helpers import pipeline_drop

from warehouse import RAW_SCHEMA, TARGETS, ConfigError, Target, dlt_postgres_credentials, duckdb_path, postgres_url

from . import HISTORY_TABLES, METADATA_STATE, RECORD_RESOURCES, RESOURCES, ExtractSession, zoho_crm

PIPELINE_NAME = "zoho_crm"
JSONL_FILE_MAX_ROWS = 20_000
# DuckDB spills to disk beyond this; row order in the raw tables does not matter, and not keeping
# it lets inserts stream within the limit.
# No vacuum in the loader's checkpoints: each load job closes the file, and that checkpoint merged the
# step's new 20,000-row row groups into the table's last ones, rewriting up to three row groups of
# 122,880 rows in one go: 150 MB over the resting level once a table has 120,000 rows, less before, so
# the peak grew with the org (241 MB at 70,000 records, 376 MB at 350,000). Without it the row groups
# stay as loaded and the next writer with DuckDB's default (dbt's build) compacts them; a load's peak
# stays near its resting level (230 / 266 MB).
DUCKDB_CONFIG = {"memory_limit": "160MB", "preserve_insertion_order": False, "max_vacuum_tasks": 0}
# Load jobs run at once. A DuckDB job holds its file's rows (up to one step's 20,000 records) uncommitted
# in memory plus a 32 MiB JSON read buffer, about 100 MB, so two jobs at once (leads and lead_versions)
# could pass the cap above: seen as "Out of Memory" on a 20,000-lead step. One at a time keeps a step's
# memory bounded whatever the machine; PostgreSQL streams its inserts and gains from more.
LOAD_WORKERS = {"duckdb": 1, "postgres": 20}
# Rows per INSERT statement of an insert_values file (the deletion log, users, stages). DuckDB parses a
# VALUES list of 12,000 deletions into about 300 MB, while 1,000 rows at a time take under 40 MB; dlt's
# default only splits at 16 MB of SQL, so the peak grew with the org's deletion log.
DUCKDB_ROWS_PER_INSERT = 1_000
# Longest INSERT sent to PostgreSQL. dlt's default reads 16 MB of a file per statement, and each of the
# parallel load jobs held that text several times over (read, joined, encoded): 350 MB at 70,000 records.
# 4 MB statements keep a load near 220 MB at any size, and are no slower.
POSTGRES_QUERY_BYTES = 4 * 1024 * 1024
# malloc arenas of the loading process (glibc's default is 8 per core). dlt loads in a thread pool and
# DuckDB runs its own threads, and each thread that allocates may get an arena of its own whose freed
# pages stay mapped: the resting level between DuckDB load steps rose from 170 to 210 MB over a
# 350,000-record load, and PostgreSQL's 20 load threads peaked at 231 / 290 MB (70,000 / 700,000
# records). With two: DuckDB rests near 190 MB, PostgreSQL peaks at 188 / 239 MB, no slower.
MALLOC_ARENAS = 2


@dataclass(frozen=True)
class LoadSummary:
    """What one `load()` did: records read from Zoho per resource, API calls, wall time."""

    destination: str
    records: dict[str, int]
    api_calls: int
    seconds: float
    resumed_loads: int = 0  # loads left by an interrupted run, finished before extracting
    full_load: bool = False  # no cursor to continue from: everything was read
    loads: int = 1  # extract-normalize-load steps this run took
    phases: dict[str, float] = field(default_factory=dict)  # seconds in extract, normalize and load

    def line(self) -> str:
        counts = " ".join(f"{name}={self.records.get(name, 0)}" for name in RESOURCES)
        resumed = f" | resumed {self.resumed_loads} interrupted load(s)" if self.resumed_loads else ""
        return f"loaded {counts} | api_calls={self.api_calls}{resumed} | {self.seconds:.1f}s"


@dataclass
class Progress:
    """Counts what the source reports and shows it on `stream` while the run goes.

    On a terminal one status line is redrawn in place; in a log (not a TTY) a line
    is written at most every `interval` seconds, and per page with `verbose`.
    """

    stream: TextIO = field(default_factory=lambda: sys.stderr)
    verbose: bool = False
    quiet: bool = False
    interval: float = 2.0
    records: Counter = field(default_factory=Counter)
    pages: Counter = field(default_factory=Counter)
    api_calls: int = 0
    _last_shown: float = 0.0
    _live: bool = False

    def api_call(self, path: str) -> None:
        self.api_calls += 1

    def page(self, resource: str, records: int) -> None:
        self.pages[resource] += 1
        self.records[resource] += records
        if self.quiet:
            return
        tty = self.stream.isatty()
        if self.verbose and not tty:
            self._write(f"  {resource}: page {self.pages[resource]}, {records} records")
        elif tty or time.monotonic() - self._last_shown >= self.interval:
            self._status()

    def stage(self, message: str) -> None:
        if not self.quiet:
            self._end_live()
            self._write(message)

    def extracted(self) -> None:
        if not self.quiet:
            self._status(final=True)

    def _status(self, final: bool = False) -> None:
        parts = [f"{name} {self.records[name]:,} ({self.pages[name]} p.)" for name in RESOURCES if self.pages[name]]
        line = f"extract: {' · '.join(parts) or 'nothing new'} · {self.api_calls} API calls"
        self._last_shown = time.monotonic()
        if self.stream.isatty() and not final:
            self.stream.write(f"\r\033[K{line}")
            self.stream.flush()
            self._live = True
        else:
            self._end_live()
            self._write(line)

    def _end_live(self) -> None:
        if self._live:
            self.stream.write("\r\033[K")
            self._live = False

    def _write(self, line: str) -> None:
        print(line, file=self.stream, flush=True)


def load(
    destination: Target = "duckdb",
    *,
    full_refresh: bool = False,
    progress: Progress | None = None,
    session: ExtractSession | None = None,
    **source_options: Any,
) -> LoadSummary:
    """Extract Zoho CRM into `destination`'s `zoho_raw` schema and return what was done.

    Args:
        full_refresh: Empty the raw tables and forget all cursors first, then read everything; the history
            tables (`HISTORY_TABLES`) are kept.
        session: The run's `ExtractSession` (a fresh one by default; the benchmarks pass one
            whose client replays recorded pages, to measure the load without the network).
        source_options: Passed to `zoho_crm()` (e.g. `page_size`, `overlap_minutes`).

    Raises:
        ConfigError: a setting is missing or malformed (the message names it).
        dlt.pipeline.exceptions.PipelineStepFailed: Zoho or the destination failed; the
            cause is chained (a `ZohoError` for API and OAuth problems).
    """
    started = time.monotonic()
    _limit_malloc_arenas()
    progress = progress or Progress(quiet=True)
    # JSONL loads into DuckDB ~4x faster than insert_values, with a fraction of the memory.
    records_file_format = "jsonl" if destination == "duckdb" else None
    session = session or ExtractSession()
    source = zoho_crm(
        observer=progress,
        records_file_format=records_file_format,
        session=session,
        reread_metadata=full_refresh,
        **source_options,
    )
    pipeline = make_pipeline(destination)
    progress.stage(f"{PIPELINE_NAME} -> {destination} ({describe_destination(destination)}), dataset {RAW_SCHEMA}")

    if _forget_state_unknown_to_destination(pipeline):
        progress.stage("the warehouse holds no earlier load: local dlt state dropped, loading everything")
    pipeline.sync_destination()

    resumed = 0
    if pipeline.has_pending_data:
        progress.stage("finishing the load an interrupted run left behind")
        _normalize(pipeline)
        resumed = len(pipeline.list_normalized_load_packages())
        pipeline.load(workers=LOAD_WORKERS[destination])

    full_load = full_refresh or not _has_cursors(pipeline)
    # The very first load appends the versions instead of merging them: the steps of one run never read a
    # record twice, and a merge into the growing table made a first load of 350,000 records 2.4x slower.
    # Later runs (the overlap window, a resumed or refreshed load) merge on (id, Modified_Time).
    first_load = full_load and not full_refresh

    def with_hints(resources: Any) -> Any:
        if first_load:
            for name in ("lead_versions", "deal_versions"):
                if name in resources.resources:
                    resources.resources[name].apply_hints(write_disposition="append")
        return resources

    if full_refresh:
        progress.stage(
            "full refresh: emptying the raw tables and forgetting the cursors "
            f"(the history is kept: {', '.join(HISTORY_TABLES)})"
        )
        _drop_current_state(pipeline)
    elif full_load:
        progress.stage("first load: reading the whole org")
    phases = {"extract": 0.0, "normalize": 0.0, "load": 0.0}
    loads = 0

    def step(resources: Any) -> None:
        """One extract-normalize-load of `resources`, timed per phase."""
        nonlocal loads
        loads += 1
        clock = time.monotonic()
        pipeline.extract(resources)
        phases["extract"] += time.monotonic() - clock
        progress.extracted()
        progress.stage("normalize" if loads == 1 else f"normalize (step {loads})")
        clock = time.monotonic()
        _normalize(pipeline)
        phases["normalize"] += time.monotonic() - clock
        progress.stage("load" if loads == 1 else f"load (step {loads})")
        clock = time.monotonic()
        pipeline.load(workers=LOAD_WORKERS[destination])
        phases["load"] += time.monotonic() - clock

    step(with_hints(source))
    while session.credit_stop is None and session.unfinished:
        # The next step reads on from where this one stopped, with the versions and Stage History its
        # records carry; the small tables are done.
        step(
            with_hints(
                zoho_crm(
                    observer=progress, records_file_format=records_file_format, session=session, **source_options
                ).with_resources(*RECORD_RESOURCES, *HISTORY_TABLES)
            )
        )
    if session.credit_stop is not None:
        raise session.credit_stop
    if session.metadata_due:
        # A deal read after the stages or currencies were (they are read alongside the records in the first
        # step) named one they do not list: read them now, so today's build already knows it.
        progress.stage(f"read again: {', '.join(sorted(session.metadata_due))}")
        step(
            zoho_crm(
                observer=progress, records_file_format=records_file_format, session=session, **source_options
            ).with_resources(*sorted(session.metadata_due))
        )
    return LoadSummary(
        destination=destination,
        records=dict(progress.records),
        api_calls=progress.api_calls,
        seconds=time.monotonic() - started,
        resumed_loads=resumed,
        full_load=full_load,
        loads=loads,
        phases=phases,
    )


def _drop_current_state(pipeline: dlt.Pipeline) -> None:
    """Drop the tables that mirror the org now, with their cursors, and keep the history tables.

    The versions the syncs saw and Zoho's Stage History cannot be read again (Zoho keeps only the current
    record): a full refresh that emptied them would rewrite every past day. Read again, each record merges
    into the version it already has.
    """
    if pipeline.default_schema_name is None:
        return  # nothing was ever loaded
    current = [name for name in RESOURCES if name not in HISTORY_TABLES]
    drop = pipeline_drop(
        pipeline,
        resources=[*current, *(f"{name}_deletions" for name in RECORD_RESOURCES)],
        state_paths=list(METADATA_STATE),
    )
    drop()


def make_pipeline(destination: Target) -> dlt.Pipeline:
    """The `zoho_crm` pipeline for one warehouse, with its own working folder."""
    if destination == "duckdb":
        path = duckdb_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        # DuckDB caches the blocks of the tables it merges into up to 80% of RAM by default, so
        # the process grew with the warehouse; a cap keeps a full load's memory flat.
        target = dlt.destinations.duckdb(
            credentials={"database": str(path), "global_config": dict(DUCKDB_CONFIG)},
            max_rows_per_insert=DUCKDB_ROWS_PER_INSERT,
        )
    elif destination == "postgres":
        target = dlt.destinations.postgres(
            credentials=dlt_postgres_credentials(postgres_url()), max_query_length=POSTGRES_QUERY_BYTES
        )
    else:
        raise ConfigError(f"unknown destination {destination!r}; expected one of {', '.join(TARGETS)}")
    # One working folder per warehouse: local state made for one database must never
    # steer the increments of another.
    key = hashlib.sha256(describe_destination(destination).encode()).hexdigest()[:12]
    pipelines_dir = Path(get_dlt_pipelines_dir()) / f"{PIPELINE_NAME}-{destination}-{key}"
    return dlt.pipeline(
        pipeline_name=PIPELINE_NAME,
        pipelines_dir=str(pipelines_dir),
        destination=target,
        dataset_name=RAW_SCHEMA,
    )


def describe_destination(destination: Target) -> str:
    """Where the warehouse is, without credentials: the DuckDB file or host:port/database."""
    if destination == "duckdb":
        return str(duckdb_path().resolve())
    parts = urlsplit(postgres_url())
    return f"{parts.hostname}:{parts.port or 5432}{parts.path}"


def _forget_state_unknown_to_destination(pipeline: dlt.Pipeline) -> bool:
    """Drop the local working folder if the destination has no committed state of this pipeline.

    Otherwise a deleted DuckDB file (or an emptied database) would get an
    incremental load on top of nothing. Pending packages go too: they were made
    for a warehouse that no longer exists. Returns True if something was dropped.
    """
    if not pipeline.has_data:
        return False
    with pipeline.destination_client() as client:
        try:
            known = client.is_storage_initialized() and client.get_stored_state(pipeline.pipeline_name) is not None  # type: ignore[attr-defined]
        except DestinationUndefinedEntity:
            known = False
    if not known:
        pipeline.drop()
    return not known


def _normalize(pipeline: dlt.Pipeline) -> None:
    """Normalize with files of at most JSONL_FILE_MAX_ROWS rows.

    DuckDB infers a JSONL file's columns from its first 20,480 rows and rejects
    a later row with a key it has not seen (a lead converted late in the file,
    a tombstone's `_deleted`); files no longer than that are read whole.
    """
    with dlt.config.values({"normalize.data_writer.file_max_items": JSONL_FILE_MAX_ROWS}):
        pipeline.normalize()


def _limit_malloc_arenas() -> None:
    """Cap glibc's malloc arenas at MALLOC_ARENAS for the rest of the process (Linux with glibc only).

    `mallopt` is the runtime form of the MALLOC_ARENA_MAX environment variable, which glibc reads only
    at start; elsewhere (macOS, musl) there is nothing to set.
    """
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_arena_max = -8  # from glibc's malloc.h
    libc.mallopt(m_arena_max, MALLOC_ARENAS)


def _has_cursors(pipeline: dlt.Pipeline) -> bool:
    resources = pipeline.state.get("sources", {}).get("zoho_crm", {}).get("resources", {})
    return any(resources.get(name, {}).get("incremental") for name in ("leads", "deals"))
