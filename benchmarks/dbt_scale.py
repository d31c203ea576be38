"""dbt at scale: full and daily `dbt build` on about 2,000,000 leads and 1,000,000 deals.

    python -m benchmarks.dbt_scale [--size full|small] [--targets duckdb,postgres]
                                   [--leads-target N --deals-target N | --factor K] [--days 1]

Loading three million records through the HTTP extractor would take hours on a small machine, and the
extractor's own speed is measured by benchmarks.load; this one measures the dbt side. So:

1. A base warehouse is built the way a user builds one: a sandbox org (4,000 leads + 2,000 deals,
   seed 7) served over HTTP and loaded with `python -m pipelines.zoho --destination <target>` on its
   first day (Stage History backfill included) and again after each of a few simulated days
   (`org.advance(1)`), so the raw tables hold several versions of many records, deletions and dlt's
   load log, exactly as real syncs leave them. (`--size small`: 1,000 leads + 500 deals, 2 days.)
2. The warehouse is scaled by a factor K with SQL, in the warehouse itself (the same statements on
   DuckDB and PostgreSQL): every row of each per-record raw table (every `zoho_raw` table except dlt's
   `_dlt_*` tables and the org-level users, deal_stages and currencies) is copied K-1 times. In copy k
   every column that holds a record id gets `-k` appended - `id`, dlt's row key `_dlt_id` and every
   other `*_id` column whose values are not user ids (converted deal/account/contact, a deal's account
   and contact, a stage history row's deal) - found from the warehouse's own columns and values, not
   from a list. Everything else stays identical, so copy k is the same org with other ids: the stages,
   amounts, dates, owners and histories keep the distribution the sandbox generated and the syncs
   recorded, and every mart has K times the rows it would have on the base org (K times the open deals
   each day in deal_daily_states, the same calendar). K defaults to what gives ~2,000,000 leads and
   ~1,000,000 deals; `--size small` (20,000 leads) is a smoke run. The copies are then checkpointed
   (DuckDB) or VACUUM ANALYZEd (PostgreSQL), as a warehouse that grew over months would be.
3. A full `dbt build --full-refresh` runs as a subprocess with a fresh target path, with the options
   scripts/daily.sh gives dbt (DAILY_JOB_OPTIONS: no unit tests);
   measured are its wall time and the peak resident memory of the dbt process (VmHWM, as in
   benchmarks.measure). On DuckDB that includes the database engine, which runs inside dbt; on
   PostgreSQL the dbt process is only the client and the server is not counted in that figure. For a
   server on this machine (the throwaway one) its memory is sampled separately: the private memory of
   all its processes plus the shared buffers once. Between the full build and the day the warehouse is
   checkpointed / VACUUM ANALYZEd once more (what autovacuum does in the day between two builds);
   not between the day's sync and the daily build, which follow each other.
4. Then one simulated day (`--days` for more), written into the raw tables as an incremental sync
   writes it: 1% of the leads and 1% of the deals get a new version (0.8% of the records edited - an
   open deal moves to its next stage and its amount rises by 10%, a lead moves on in its status -
   and 0.2% new records), and 0.05% are deleted. Edited and new records are merged into `leads`/`deals`
   and appended to `lead_versions`/`deal_versions`, deleted ones leave `leads`/`deals` and enter
   `deleted_records`; the sync itself is recorded like dlt records it: a committed row in `_dlt_loads`
   one day after the last sync (int_sync_context takes the newest committed load as the marts' as-of
   instant, so the marts move on by one day), a new `_dlt_pipeline_state` version, and the currencies
   re-merged with the new load id. The changes are modified a minute before that sync. The daily
   `dbt build` (no --full-refresh, the same target path, as scripts/daily.sh runs it) is timed, and
   its time is printed as a share of the full build. Whichever models are incremental, the benchmark
   only runs what the daily job runs.
5. History growth per simulated day: rows and bytes added to lead_versions, deal_versions,
   deal_stage_history (Zoho's Stage History is read on the first sync only, so it does not grow) and
   the mart deal_daily_states, and the whole database. Bytes: PostgreSQL's pg_total_relation_size;
   DuckDB's blocks of each table (`pragma_storage_info`, 256 KiB each, after a CHECKPOINT; small
   tables share blocks, so small deltas are coarse) and the file's used blocks (`pragma database_size`).

PostgreSQL is TEST_DATABASE_URL, or a throwaway local server started as the tests start one (stock
settings, fsync off). Seconds vary with what else runs on the machine; rows and bytes do not.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from benchmarks.measure import Measured, measure
from sandbox import SandboxOrg, SandboxServer
from tests.support.postgres import create_database, drop_database, local_postgres
from tests.support.workspace import Workspace, make_workspace

RAW = "zoho_raw"
MARTS = "analytics"
# What scripts/daily.sh adds to `dbt build` (unit tests run with the test suite, not on each day's data).
DAILY_JOB_OPTIONS = ("--exclude-resource-type", "unit_test")
# Org-level tables: one org has one set of them, however many records it holds.
ORG_TABLES = ("users", "deal_stages", "currencies")
HISTORY = ((RAW, "lead_versions"), (RAW, "deal_versions"), (RAW, "deal_stage_history"), (MARTS, "deal_daily_states"))
SIZES = {
    # leads target, deals target, base org leads, base org deals, simulated days in the base
    "full": (2_000_000, 1_000_000, 4_000, 2_000, 3),
    "small": (20_000, 10_000, 1_000, 500, 2),
}
TIMEZONE = "Asia/Kolkata"
DUCKDB_BLOCK = 262_144
# Shares of each module's records touched on a simulated day (of the records at the start of the day).
EDITED, DELETED, CREATED = 0.008, 0.0005, 0.002
DONE = re.compile(r"Done\. PASS=(\d+) WARN=(\d+) ERROR=(\d+) SKIP=(\d+)")
MODULES = {
    "Leads": {"table": "leads", "versions": "lead_versions", "name": "full_name"},
    "Deals": {"table": "deals", "versions": "deal_versions", "name": "deal_name"},
}


# -- the warehouse, through one small interface for both targets ------------------------------------


class Warehouse:
    """SQL on the workspace's warehouse: DuckDB (the file) or PostgreSQL (DATABASE_URL)."""

    def __init__(self, ws: Workspace, target: str) -> None:
        self.ws, self.target = ws, target
        if target == "duckdb":
            import duckdb

            self.conn = duckdb.connect(str(ws.duckdb_path))
        else:
            import psycopg2

            self.conn = psycopg2.connect(ws.env["DATABASE_URL"])
            self.conn.autocommit = True

    def close(self) -> None:
        self.conn.close()

    def execute(self, sql: str) -> None:
        if self.target == "duckdb":
            self.conn.execute(sql)
        else:
            with self.conn.cursor() as cur:
                cur.execute(sql)

    def query(self, sql: str) -> list[tuple]:
        if self.target == "duckdb":
            return self.conn.execute(sql).fetchall()
        with self.conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()

    def value(self, sql: str) -> Any:
        return self.query(sql)[0][0]

    def tables(self, schema: str) -> list[str]:
        return [
            t
            for (t,) in self.query(
                f"select table_name from information_schema.tables where table_schema = '{schema}' order by table_name"
            )
        ]

    def columns(self, table: str, schema: str = RAW) -> dict[str, str]:
        """Column name -> data type, in table order."""
        return dict(
            self.query(
                "select column_name, data_type from information_schema.columns "
                f"where table_schema = '{schema}' and table_name = '{table}' order by ordinal_position"
            )
        )

    def count(self, schema: str, table: str) -> int:
        return self.value(f'select count(*) from {schema}."{table}"')

    def settle(self) -> None:
        """What happens on its own between loads and builds: a checkpoint, or VACUUM ANALYZE."""
        if self.target == "duckdb":
            self.execute("checkpoint")
        else:
            self.execute("vacuum analyze")

    def table_bytes(self, schema: str, table: str) -> int:
        if self.target == "postgres":
            return self.value(f"select pg_total_relation_size('{schema}.\"{table}\"')")
        blocks = self.value(f"""
            select count(distinct block) from (
                select block_id as block from pragma_storage_info('{schema}.{table}') where block_id >= 0
                union all
                select unnest(additional_block_ids) from pragma_storage_info('{schema}.{table}')
            ) as used""")
        return blocks * DUCKDB_BLOCK

    def database_bytes(self) -> int:
        if self.target == "postgres":
            return self.value("select pg_database_size(current_database())")
        row = self.query("pragma database_size")[0]
        return row[2] * row[4]  # block_size * used_blocks


@contextlib.contextmanager
def opened(ws: Workspace, target: str) -> Iterator[Warehouse]:
    db = Warehouse(ws, target)
    try:
        yield db
    finally:
        db.close()


def quoted(name: str) -> str:
    return f'"{name}"'


def text(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def timestamp(moment: dt.datetime) -> str:
    return f"cast({text(moment.isoformat(sep=' '))} as timestamp with time zone)"


# -- 1. the base warehouse: a sandbox org loaded by the extractor over a few days -------------------


def build_base(
    targets: list[str], workspaces: dict[str, Workspace], leads: int, deals: int, days: int, seed: int
) -> dict[str, Any]:
    # The org's history ends the day before today, so the syncs (today) are the newest thing it knows.
    today = dt.datetime.now(ZoneInfo(TIMEZONE)).date()
    org = SandboxOrg(seed=seed, leads=leads, deals=deals, timezone=TIMEZONE, today=today - dt.timedelta(days=days + 1))
    started = time.perf_counter()
    with SandboxServer(org, port=0) as server:
        for ws in workspaces.values():
            ws.env.update(server.env())
        for day in range(days + 1):
            if day:
                org.advance(1)
            for target in targets:
                workspaces[target].run("python", "-m", "pipelines.zoho", "--destination", target, timeout=1800)
    return {"seconds": time.perf_counter() - started}


# -- 2. scaling by K ---------------------------------------------------------------------------------


def record_tables(db: Warehouse) -> list[str]:
    return [t for t in db.tables(RAW) if not t.startswith("_dlt_") and t not in ORG_TABLES]


def id_columns(db: Warehouse, table: str) -> list[str]:
    """The columns of `table` made unique per copy: dlt's row key and every record id, user ids excepted."""
    users = f"{RAW}.users"
    found = []
    for name, kind in db.columns(table).items():
        if kind.lower() not in ("varchar", "text", "character varying"):
            continue
        if name == "_dlt_id":
            found.append(name)
        elif name != "_dlt_load_id" and (name == "id" or name.endswith("_id")):
            # A user id stays: a copy of the org has the same sales team. Anything else names a record.
            others = db.value(
                f"select count(*) from {RAW}.{table} where {quoted(name)} is not null "
                f"and {quoted(name)} not in (select id from {users})"
            )
            if others:
                found.append(name)
    return found


def scale(db: Warehouse, factor: int) -> dict[str, Any]:
    started = time.perf_counter()
    copied = {}
    for table in record_tables(db):
        ids = id_columns(db, table)
        columns = list(db.columns(table))
        select = ", ".join(
            f"{quoted(c)} || '-' || cast(copies.k as varchar)" if c in ids else quoted(c) for c in columns
        )
        if factor > 1:
            db.execute(
                f"insert into {RAW}.{table} ({', '.join(map(quoted, columns))}) "
                f"select {select} from {RAW}.{table} cross join generate_series(1, {factor - 1}) as copies(k)"
            )
        copied[table] = ids
    db.settle()
    return {"seconds": time.perf_counter() - started, "id_columns": copied}


# -- 4. one simulated day, as an incremental sync writes it ------------------------------------------


@dataclass
class Day:
    synced_at: dt.datetime
    load_id: str
    changes: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0


def last_sync(db: Warehouse) -> dt.datetime:
    """The instant the marts are as of now (int_sync_context): the newest committed load, or a later change."""
    candidates = [db.value(f"select max(inserted_at) from {RAW}._dlt_loads where status = 0")]
    for table, column in (
        ("lead_versions", "modified_time"),
        ("deal_versions", "modified_time"),
        ("deleted_records", "deleted_time"),
    ):
        candidates.append(db.value(f"select max({column}) from {RAW}.{table}"))
    return max(c for c in candidates if c is not None)


def share_below(share: float) -> str:
    """The md5 prefix below which `share` of all ids fall (md5 is the same function on both targets)."""
    return f"{min(int(share * 16**8), 16**8 - 1):08x}"


def overridden(columns: list[str], overrides: dict[str, str], alias: str) -> str:
    return ", ".join(overrides.get(c, f"{alias}.{quoted(c)}") for c in columns)


def simulate_day(db: Warehouse, number: int) -> Day:
    started = time.perf_counter()
    synced = last_sync(db) + dt.timedelta(days=1)
    day = Day(synced_at=synced, load_id=repr(synced.timestamp()))
    changed_at = timestamp(synced - dt.timedelta(minutes=1))
    load = text(day.load_id)
    salt = text(f"-day-{number}")
    edited, deleted = share_below(EDITED), share_below(EDITED + DELETED)
    created = share_below(EDITED + DELETED + CREATED)

    db.execute("drop table if exists bench_pick")
    db.execute("create temp table bench_pick (module varchar, id varchar, role varchar)")
    for module, spec in MODULES.items():
        db.execute(f"""
            insert into bench_pick
            select {text(module)}, id, case
                when md5(id || {salt}) < '{edited}' then 'edit'
                when md5(id || {salt}) < '{deleted}' then 'delete'
                else 'template' end
            from {RAW}.{spec["table"]}
            where md5(id || {salt}) < '{created}'""")

    # deals: an open deal moves to its pipeline's next stage (its probability with it); amount +10%
    db.execute("drop table if exists bench_deal_edits")
    db.execute(f"""
        create temp table bench_deal_edits as
        select d.id,
            coalesce(n.stage, d.stage) as stage,
            coalesce(n.probability, d.probability) as probability,
            cast(round(cast(d.amount * 1.1 as numeric), 2) as double precision) as amount
        from {RAW}.deals as d
        inner join bench_pick as p on p.module = 'Deals' and p.id = d.id and p.role = 'edit'
        left join {RAW}.deal_stages as c
            on c.pipeline = d.pipeline and c.stage = d.stage and c.forecast_type = 'Open'
        left join {RAW}.deal_stages as n
            on n.pipeline_id = c.pipeline_id and n.sequence_number = c.sequence_number + 1""")
    db.execute("drop table if exists bench_first_stage")
    db.execute(f"""
        create temp table bench_first_stage as
        select s.pipeline, s.stage, s.probability
        from {RAW}.deal_stages as s
        where s.forecast_type = 'Open' and s.sequence_number = (
            select min(o.sequence_number) from {RAW}.deal_stages as o
            where o.pipeline = s.pipeline and o.forecast_type = 'Open')""")

    for module, spec in MODULES.items():
        table, versions = spec["table"], spec["versions"]
        columns = list(db.columns(table))
        version_columns = [c for c in db.columns(versions) if c in columns]
        picked = f"select id from bench_pick where module = {text(module)}"
        new_suffix = text(f"-new{number}")

        # edits, merged on id into the current state (dlt's delete-insert merge gives the row a new key)
        row = table  # the updated table's name qualifies its columns
        sets = {
            "modified_time": changed_at,
            "modified_by__id": f"{row}.owner__id",
            "modified_by__name": f"{row}.owner__name",
            "modified_by__email": f"{row}.owner__email",
            "description": text(f"Edited on simulated day {number}"),
            "_dlt_load_id": load,
            "_dlt_id": f"{text(f'day{number}-')} || {row}.id",
        }
        if module == "Deals":
            sets.update(
                stage="e.stage",
                probability="e.probability",
                amount="e.amount",
                expected_revenue="e.amount * e.probability / 100.0",
            )
            assignments = ", ".join(f"{quoted(c)} = {v}" for c, v in sets.items() if c in columns)
            db.execute(f"update {RAW}.deals set {assignments} from bench_deal_edits as e where deals.id = e.id")
        else:
            sets["lead_status"] = (
                "case leads.lead_status when 'Not Contacted' then 'Attempted to Contact' "
                "when 'Attempted to Contact' then 'Contacted' "
                "when 'Contact in Future' then 'Contacted' "
                "when 'Contacted' then 'Pre-Qualified' else leads.lead_status end"
            )
            assignments = ", ".join(f"{quoted(c)} = {v}" for c, v in sets.items() if c in columns)
            db.execute(f"update {RAW}.leads set {assignments} where leads.id in ({picked} and role = 'edit')")

        # new records: a copy of a template record with a new id, created a minute before the sync
        overrides = {
            "id": f"t.id || {new_suffix}",
            "_dlt_id": f"{text(f'day{number}-')} || t.id || {new_suffix}",
            "created_time": changed_at,
            "modified_time": changed_at,
            "_dlt_load_id": load,
            "created_by__id": "t.owner__id",
            "created_by__name": "t.owner__name",
            "created_by__email": "t.owner__email",
            "modified_by__id": "t.owner__id",
            "modified_by__name": "t.owner__name",
            "modified_by__email": "t.owner__email",
        }
        if module == "Deals":
            overrides.update(
                stage="f.stage",
                probability="f.probability",
                expected_revenue="t.amount * f.probability / 100.0",
                closing_date=f"cast({changed_at} as date) + 30",
                reason_for_loss__s="null",
                account_name__id=f"t.account_name__id || {new_suffix}",
                contact_name__id=f"t.contact_name__id || {new_suffix}",
            )
            source = f"{RAW}.deals as t inner join bench_first_stage as f on f.pipeline = t.pipeline"
        else:
            overrides.update(
                lead_status="'Not Contacted'",
                converted__s="false",
                **{c: "null" for c in columns if c.startswith("converted_") and c != "converted__s"},
            )
            source = f"{RAW}.leads as t"
        db.execute(
            f"insert into {RAW}.{table} ({', '.join(map(quoted, columns))}) "
            f"select {overridden(columns, overrides, 't')} from {source} "
            f"where t.id in ({picked} and role = 'template')"
        )

        # every record the sync read is a new version
        db.execute(
            f"insert into {RAW}.{versions} ({', '.join(map(quoted, version_columns))}) "
            f"select {', '.join(map(quoted, version_columns))} from {RAW}.{table} "
            f"where _dlt_load_id = {load}"
        )

        # deletions: the deletion log's entry, and the record leaves the current state
        deletion_columns = list(db.columns("deleted_records"))
        entry = {
            "id": "t.id",
            "module": text(module),
            "type": "'recycle'",
            "display_name": f"t.{spec['name']}",
            "deleted_time": changed_at,
            "deleted_by__id": "t.owner__id",
            "deleted_by__name": "t.owner__name",
            "created_by__id": "t.created_by__id",
            "created_by__name": "t.created_by__name",
            "_dlt_load_id": load,
            "_dlt_id": f"{text(f'day{number}-deleted-')} || t.id",
        }
        db.execute(
            f"insert into {RAW}.deleted_records ({', '.join(map(quoted, deletion_columns))}) "
            f"select {', '.join(entry.get(c, 'null') for c in deletion_columns)} from {RAW}.{table} as t "
            f"where t.id in ({picked} and role = 'delete')"
        )
        db.execute(f"delete from {RAW}.{table} where id in ({picked} and role = 'delete')")

        counts = dict(db.query(f"select role, count(*) from bench_pick where module = {text(module)} group by role"))
        day.changes[module] = {
            "edited": counts.get("edit", 0),
            "created": counts.get("template", 0),
            "deleted": counts.get("delete", 0),
        }

    # the sync itself, as dlt records it
    db.execute(f"""
        insert into {RAW}._dlt_pipeline_state
            (version, engine_version, pipeline_name, state, created_at, version_hash, _dlt_load_id, _dlt_id)
        select version + 1, engine_version, pipeline_name, state, {timestamp(synced)}, version_hash, {load},
            {text(f"day{number}-state")}
        from {RAW}._dlt_pipeline_state
        where version = (select max(version) from {RAW}._dlt_pipeline_state)""")
    if "currencies" in db.tables(RAW):
        db.execute(f"update {RAW}.currencies set _dlt_load_id = {load}")
    db.execute(f"""
        insert into {RAW}._dlt_loads (load_id, schema_name, status, inserted_at, schema_version_hash)
        select {load}, schema_name, 0, {timestamp(synced)}, schema_version_hash
        from {RAW}._dlt_loads
        where inserted_at = (select max(inserted_at) from {RAW}._dlt_loads)""")
    for name in ("bench_pick", "bench_deal_edits", "bench_first_stage"):
        db.execute(f"drop table if exists {name}")
    day.seconds = time.perf_counter() - started
    return day


# -- 3. and 5. measuring -----------------------------------------------------------------------------


def history_sizes(db: Warehouse) -> dict[str, tuple[int, int]]:
    """(rows, bytes) of each history table, and of the whole database."""
    db.settle()
    present = {schema: set(db.tables(schema)) for schema in (RAW, MARTS)}
    sizes = {}
    for schema, table in HISTORY:
        if table in present[schema]:
            sizes[table] = (db.count(schema, table), db.table_bytes(schema, table))
        else:
            sizes[table] = (0, 0)
    sizes["database"] = (0, db.database_bytes())
    return sizes


@dataclass
class Build:
    seconds: float
    peak_mb: float
    nodes: str
    slowest: list[str]
    warnings: list[str]
    server_mb: float | None = None


class ServerMemory:
    """Peak memory of a PostgreSQL server on this machine while a build runs, sampled every 0.2 s.

    The server's processes (the postmaster listening on `port` and its children): their private
    memory (RssAnon) summed, plus the shared buffers touched once (the largest RssShmem; every backend
    maps the same segment). None when the server is not a local process (TEST_DATABASE_URL elsewhere).
    """

    def __init__(self, ws: Workspace) -> None:
        self.pids: list[int] = []
        host, port = ws.env.get("PGHOST", ""), ws.env.get("PGPORT", "5432")
        if host in ("127.0.0.1", "localhost", "::1") or host.startswith("/"):
            self.postmaster = self._postmaster(port)
        else:
            self.postmaster = None
        self.peak_kb = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    @staticmethod
    def _postmaster(port: str) -> int | None:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if args and args[0].endswith(b"postgres") and b"-p" in args and port.encode() in args:
                return int(entry.name)
        return None

    def _sample(self) -> int:
        private, shared = 0, 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = dict(line.split(":", 1) for line in (entry / "status").read_text().splitlines() if ":" in line)
            except OSError:
                continue
            if int(entry.name) != self.postmaster and fields.get("PPid", "").strip() != str(self.postmaster):
                continue
            private += int(fields.get("RssAnon", "0 kB").split()[0])
            shared = max(shared, int(fields.get("RssShmem", "0 kB").split()[0]))
        return private + shared

    def _watch(self) -> None:
        while not self._done.is_set():
            self.peak_kb = max(self.peak_kb, self._sample())
            self._done.wait(0.2)

    def __enter__(self) -> ServerMemory:
        if self.postmaster:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self.postmaster:
            self._thread.join()

    @property
    def peak_mb(self) -> float | None:
        return self.peak_kb / 1024 if self.postmaster else None


def node_name(unique_id: str) -> str:
    return unique_id.split(".")[2]  # resource type, package, name[, a test's hash]


def dbt_build(ws: Workspace, target: str, *extra: str) -> Build:
    path = ws.root / "dbt" / f"target-{target}"
    server = ServerMemory(ws) if target == "postgres" else contextlib.nullcontext()
    with server:
        run: Measured = measure(
            ws, "dbt", "build", "--target", target, "--target-path", str(path), *DAILY_JOB_OPTIONS, *extra
        )
    done = DONE.search(run.stdout)
    nodes = f"PASS={done[1]} WARN={done[2]} ERROR={done[3]} SKIP={done[4]}" if done else "?"
    slowest, warnings = [], []
    results = path / "run_results.json"
    if results.exists():
        ranked = sorted(json.loads(results.read_text())["results"], key=lambda r: -r["execution_time"])
        slowest = [f"{node_name(r['unique_id'])} {r['execution_time']:.1f}s" for r in ranked[:3]]
        warnings = [
            f"{node_name(r['unique_id'])}: {r['message']}" for r in ranked if r["status"] not in ("pass", "success")
        ]
    return Build(
        seconds=run.seconds,
        peak_mb=run.peak_mb,
        nodes=nodes,
        slowest=slowest,
        warnings=warnings,
        server_mb=server.peak_mb if isinstance(server, ServerMemory) else None,
    )


@dataclass
class Result:
    target: str
    factor: int
    counts: dict[str, int]
    scale_seconds: float
    id_columns: dict[str, list[str]]
    full: Build
    database_after_full: int
    daily_states_after_full: tuple[int, int]
    days: list[tuple[Day, Build, dict[str, tuple[int, int]]]] = field(default_factory=list)


def choose_factor(ws: Workspace, target: str, leads_target: int, deals_target: int, factor: int | None) -> int:
    if factor:
        return factor
    with opened(ws, target) as db:
        leads, deals = db.count(RAW, "leads"), db.count(RAW, "deals")
    return max(1, round((leads_target + deals_target) / max(1, leads + deals)))


def bench_target(ws: Workspace, target: str, factor: int, days: int, say) -> Result:
    with opened(ws, target) as db:
        say(f"[{target}] scaling x{factor}")
        scaled = scale(db, factor)
        counts = {t: db.count(RAW, t) for t in record_tables(db)}
    say(f"[{target}] scaled in {scaled['seconds']:.0f}s: " + ", ".join(f"{t} {n:,}" for t, n in counts.items()))

    say(f"[{target}] full dbt build")
    full = dbt_build(ws, target, "--full-refresh")
    say(f"[{target}] full build {full.seconds:.1f}s, {full.peak_mb:,.0f} MB, {full.nodes}")
    clock = time.perf_counter()
    with opened(ws, target) as db:
        before = history_sizes(db)
    say(f"[{target}] history measured in {time.perf_counter() - clock:.0f}s (after a checkpoint / VACUUM ANALYZE)")
    result = Result(
        target,
        factor,
        counts,
        scaled["seconds"],
        scaled["id_columns"],
        full,
        before["database"][1],
        before["deal_daily_states"],
    )

    for number in range(1, days + 1):
        with opened(ws, target) as db:
            day = simulate_day(db, number)
        say(f"[{target}] day {number} written in {day.seconds:.1f}s: {day.changes}")
        build = dbt_build(ws, target)
        say(f"[{target}] daily build {build.seconds:.1f}s, {build.peak_mb:,.0f} MB, {build.nodes}")
        with opened(ws, target) as db:
            after = history_sizes(db)
            as_of = db.value(f"select as_of_date from {MARTS}_intermediate.int_sync_context")
        say(f"[{target}] marts now as of {as_of}")
        growth = {name: (after[name][0] - before[name][0], after[name][1] - before[name][1]) for name in after}
        result.days.append((day, build, growth))
        before = after
    return result


# -- the report ----------------------------------------------------------------------------------------


def mb(n: float) -> str:
    return f"{n / 1_048_576:,.1f} MB"


def signed_mb(n: float) -> str:
    return ("+" if n >= 0 else "-") + mb(abs(n))


def report(results: list[Result], base: dict[str, Any], args: argparse.Namespace) -> None:
    rows: list[tuple[str, list[str]]] = []

    def server(build: Build) -> str:
        if build.server_mb is None:
            return "-"
        return f"{build.server_mb:,.0f} MB (private + shared buffers)"

    def row(label: str, cell) -> None:
        rows.append((label, [cell(r) for r in results]))

    row("scale factor K (copies of the base org)", lambda r: f"{r.factor}")
    row("leads / deals (current state)", lambda r: f"{r.counts.get('leads', 0):,} / {r.counts.get('deals', 0):,}")
    row(
        "lead_versions / deal_versions",
        lambda r: f"{r.counts.get('lead_versions', 0):,} / {r.counts.get('deal_versions', 0):,}",
    )
    row(
        "deal_stage_history / deleted_records",
        lambda r: f"{r.counts.get('deal_stage_history', 0):,} / {r.counts.get('deleted_records', 0):,}",
    )
    row("scaling the raw tables (SQL, not a load)", lambda r: f"{r.scale_seconds:,.0f} s")
    row("full `dbt build --full-refresh`", lambda r: f"{r.full.seconds:,.1f} s")
    row(
        "  peak memory of the dbt process",
        lambda r: (
            f"{r.full.peak_mb:,.0f} MB" + (" (server not counted)" if r.target == "postgres" else " (engine included)")
        ),
    )
    row("  peak memory of the PostgreSQL server", lambda r: server(r.full))
    row("  nodes", lambda r: r.full.nodes)
    row("  slowest nodes", lambda r: ", ".join(r.full.slowest))
    row("  database size after it", lambda r: mb(r.database_after_full))
    row(
        "  deal_daily_states after it",
        lambda r: f"{r.daily_states_after_full[0]:,} rows, {mb(r.daily_states_after_full[1])}",
    )
    for index in range(args.days):
        n = index + 1

        def cell(r: Result, fn, index: int = index) -> str:
            return fn(*r.days[index]) if index < len(r.days) else "-"

        row(
            f"day {n}: leads edited / new / deleted",
            lambda r: cell(r, lambda d, b, g: "{edited:,} / {created:,} / {deleted:,}".format(**d.changes["Leads"])),
        )
        row(
            f"day {n}: deals edited / new / deleted",
            lambda r: cell(r, lambda d, b, g: "{edited:,} / {created:,} / {deleted:,}".format(**d.changes["Deals"])),
        )
        row(
            f"day {n}: daily `dbt build`",
            lambda r: cell(
                r, lambda d, b, g: f"{b.seconds:,.1f} s = {b.seconds / r.full.seconds:.2f} of the full build"
            ),
        )
        row("  peak memory of the dbt process", lambda r: cell(r, lambda d, b, g: f"{b.peak_mb:,.0f} MB"))
        row("  peak memory of the PostgreSQL server", lambda r: cell(r, lambda d, b, g: server(b)))
        row("  nodes", lambda r: cell(r, lambda d, b, g: b.nodes))
        row("  slowest nodes", lambda r: cell(r, lambda d, b, g: ", ".join(b.slowest)))
        for _, table in HISTORY:
            row(
                f"  added to {table}",
                lambda r, table=table: cell(r, lambda d, b, g: f"{g[table][0]:+,} rows, {signed_mb(g[table][1])}"),
            )
        row("  added to the whole database", lambda r: cell(r, lambda d, b, g: signed_mb(g["database"][1])))

    heading = ["DuckDB" if r.target == "duckdb" else "PostgreSQL" for r in results]
    width = max(len(label) for label, _ in rows)
    widths = [max(len(h), *(len(cells[i]) for _, cells in rows)) for i, h in enumerate(heading)]
    print(
        f"\ndbt at scale: sandbox org of {args.base_leads:,} leads + {args.base_deals:,} deals (seed {args.seed}, "
        f"{args.base_days} simulated days, loaded over HTTP in {base['seconds']:.0f} s), copied K times in the "
        f"warehouse; {args.days} simulated day(s) of 1% change"
    )
    print("  " + " " * width + " | " + " | ".join(h.ljust(w) for h, w in zip(heading, widths)))
    print("  " + "-" * width + "-+-" + "-+-".join("-" * w for w in widths))
    for label, cells in rows:
        print("  " + label.ljust(width) + " | " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)))
    if results:
        ids = results[0].id_columns
        print("  columns made unique per copy: " + "; ".join(f"{t}: {', '.join(c)}" for t, c in ids.items()))
    for r in results:
        for when, build in [("full build", r.full)] + [(f"day {i + 1}", b) for i, (_, b, _) in enumerate(r.days)]:
            for warning in build.warnings:
                print(f"  {r.target} {when}, not passed: {warning}")
    print(
        "  DuckDB bytes: the table's 256 KiB blocks (small tables share blocks: coarse for small deltas); "
        "PostgreSQL: pg_total_relation_size. deal_stage_history is read on the first sync only."
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    parser.add_argument(
        "--size",
        choices=sorted(SIZES),
        default="full",
        help="full: ~2,000,000 leads + 1,000,000 deals; small: ~20,000 + 10,000 (default: %(default)s)",
    )
    parser.add_argument("--targets", default="duckdb,postgres", help="default: %(default)s")
    parser.add_argument("--leads-target", type=int, help="leads wanted after scaling (default: from --size)")
    parser.add_argument("--deals-target", type=int, help="deals wanted after scaling (default: from --size)")
    parser.add_argument("--factor", type=int, help="copies of the base org (overrides the targets)")
    parser.add_argument("--days", type=int, default=1, help="simulated days after the full build (default: 1)")
    parser.add_argument("--base-leads", type=int, help="leads of the sandbox org (default: from --size)")
    parser.add_argument("--base-deals", type=int, help="deals of the sandbox org (default: from --size)")
    parser.add_argument("--base-days", type=int, help="simulated days synced before scaling (default: from --size)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="build in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    leads_target, deals_target, base_leads, base_deals, base_days = SIZES[args.size]
    args.leads_target = args.leads_target or leads_target
    args.deals_target = args.deals_target or deals_target
    args.base_leads = args.base_leads or base_leads
    args.base_deals = args.base_deals or base_deals
    args.base_days = base_days if args.base_days is None else args.base_days
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(targets) - {"duckdb", "postgres"}
    if unknown:
        parser.error(f"unknown target(s): {', '.join(sorted(unknown))}")

    started = time.perf_counter()

    def say(message: str) -> None:
        print(f"{time.perf_counter() - started:7.1f}s  {message}", flush=True)

    with contextlib.ExitStack() as stack:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            tmp = args.keep
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="crm-dbt-scale-")))
        workspaces = {t: make_workspace(tmp / t) for t in targets}
        if "postgres" in targets:
            admin_url = stack.enter_context(local_postgres())
            database = f"dbt_scale_{uuid.uuid4().hex[:8]}"
            workspaces["postgres"].use_postgres(create_database(admin_url, database))
            if not args.keep:
                stack.callback(drop_database, admin_url, database)
        say(
            f"base org {args.base_leads:,} leads + {args.base_deals:,} deals, {args.base_days} simulated days "
            f"-> {', '.join(targets)}"
        )
        base = build_base(targets, workspaces, args.base_leads, args.base_deals, args.base_days, args.seed)
        say(f"base loaded in {base['seconds']:.0f}s")
        factor = choose_factor(workspaces[targets[0]], targets[0], args.leads_target, args.deals_target, args.factor)
        results = []
        for target in targets:
            results.append(bench_target(workspaces[target], target, factor, args.days, say))
        report(results, base, args)


if __name__ == "__main__":
    main()
