"""The WhatsApp delivery ledger, `analytics.briefing_deliveries`: one row per report date, recipient and digest.

A digest is what the person gets: `team` (the manager's briefing) or
`owner:<zoho user id>` (an owner's own deals). A row `skipped` says the owner
had nothing to report that day, so "no message" is a recorded outcome, never
a gap: a date with no row at all for someone who gets briefings is a missed
day (`missed_days`), which the next run, `make check` and `/api/health` name.

Twilio's Messages API has no idempotency key, so the ledger is what makes a
rerun safe. The row is written `pending` before the POST and updated with the
outcome after it: `accepted` (Twilio returned a message SID; never sent again
for that date), `failed` (Twilio definitely refused, was never reached, or
failed the message after accepting it; the next run retries) or `unknown` (the
request may have created a message; the next run looks for it in Twilio's
message list before sending anything). A row still `pending` on the next run
means the process died mid-send, which is as ambiguous as `unknown`.

`kind` says how the briefing went: `session` (free-form text, in numbered
parts of at most 1,600 characters, inside WhatsApp's 24-hour window) or
`template` (the approved template, outside it). `part_sids` lists the SID of
every part sent so far, in order, so a run killed between two parts sends
only the rest. Twilio's status callbacks (`record_status`) keep
`twilio_status` and `error_code` up to date after the run; a status never
moves backwards (a late `sent` does not undo `read`).

Two columns beyond the contract's: `twilio_status`, the message's status at
Twilio when last looked at (WhatsApp errors such as 63016 arrive after Twilio
accepted the message, so an `accepted` row whose status was not final yet is
looked at again by the next run), and `previous_sids`, every SID an earlier
attempt for the row recorded (space-separated), so that a message found in
Twilio's list is never mistaken for the copy of a later attempt.

`summary_id` names the `analytics.ai_summaries` row whose message the attempt
sent, so "the briefing the team got" is a join, not a guess.

Every call opens and closes its own connection: DuckDB allows one writer per
file, and the pipeline or dbt may need the file between two sends.

Two deliveries may start at once (a scheduled run and a manual one). Reading a
row and then writing it is not enough to stop both from sending, so a delivery
first *claims* what it is about to send (`claim_warehouse`, `claim`):

- on PostgreSQL, a transaction-scoped advisory lock per report date and
  recipient, held on a connection of its own while that recipient is handled.
  The second delivery waits for the first, then reads the ledger and finds the
  message accepted. The lock dies with the process or the connection, so a
  killed run never leaves a stale claim, and a transaction-scoped lock also
  works through Supabase's transaction pooler.
- on DuckDB, one process may write the file at a time anyway, so the claim is
  an exclusive `flock` on a file next to the warehouse, for the whole delivery:
  a second delivery stops at once with `DeliveryBusy` instead of failing later
  on DuckDB's own file lock. The kernel releases it when the process dies.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from warehouse import MARTS_SCHEMA, Target, as_date, connect, duckdb_path, placeholder

TABLE = f"{MARTS_SCHEMA}.briefing_deliveries"

LedgerStatus = Literal["pending", "accepted", "failed", "unknown", "skipped"]
DeliveryKind = Literal["session", "template"]
TEAM = "team"  # the manager's digest; an owner's is owner_digest(user id)

_DDL = f"""
create table if not exists {TABLE} (
    report_date date not null,
    recipient text not null,
    content_hash text not null,
    status text not null,
    message_sid text,
    error_code integer,
    error_message text,
    attempts integer not null,
    updated_at timestamptz not null,
    twilio_status text,
    previous_sids text,
    summary_id text,
    digest text not null,
    kind text,
    part_sids text,
    primary key (report_date, recipient, digest)
)
"""
_COLUMNS = (
    "report_date, recipient, content_hash, status, message_sid, error_code, error_message, attempts, "
    "twilio_status, previous_sids, extract(epoch from updated_at), summary_id, digest, kind, part_sids"
)
# Twilio's message statuses in the order a message moves through them; a callback never moves a row back.
# Failures end a message's life whatever came before (a `failed` after `sent` is news, not a step back).
STATUS_ORDER = {"accepted": 0, "scheduled": 0, "queued": 1, "sending": 2, "sent": 3, "delivered": 4, "read": 5}
FINAL_FAILURES = frozenset({"failed", "undelivered", "canceled"})
# How far back a missed day is still worth naming: older news is not sent unasked anyway.
MISSED_LOOKBACK_DAYS = 14
# How long a delivery waits for another one handling the same recipient and date (PostgreSQL).
CLAIM_WAIT_SECONDS = 120


class DeliveryBusy(RuntimeError):
    """Another delivery holds the claim; this one must not send."""


@dataclass(frozen=True)
class LedgerEntry:
    report_date: dt.date
    recipient: str
    content_hash: str
    status: LedgerStatus
    message_sid: str | None
    error_code: int | None
    error_message: str | None
    attempts: int
    twilio_status: str | None  # the message's status at Twilio when last looked at
    previous_sids: tuple[str, ...]  # SIDs recorded by earlier attempts for this date and recipient
    updated_at: float  # seconds since the epoch: comparable with Twilio's timestamps on both drivers
    summary_id: str | None = None  # the ai_summaries row the attempt sent
    digest: str = TEAM
    kind: DeliveryKind | None = None
    part_sids: tuple[str, ...] = ()  # the SIDs of the parts sent so far, in order


def owner_digest(user_id: str) -> str:
    return f"owner:{user_id}"


@dataclass(frozen=True)
class MissedDay:
    """A report date whose digest never reached a recipient who gets it (no row, or a row that did not go)."""

    report_date: dt.date
    recipient: str
    digest: str
    status: str | None  # the row's status, or None when no run got as far as the recipient


class DeliveryLedger:
    """`briefing_deliveries` on one warehouse target."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._p = placeholder(target)

    def ensure_table(self) -> None:
        """Create the table, or bring one made by an earlier release (keyed on date and recipient) to this one."""
        with connect(self.target) as conn:
            cur = conn.cursor()
            cur.execute(f"create schema if not exists {MARTS_SCHEMA}")
            cur.execute(
                "select count(*) from information_schema.columns "
                f"where table_schema = '{MARTS_SCHEMA}' and table_name = 'briefing_deliveries' and column_name = 'digest'"
            )
            [(has_digest,)] = cur.fetchall()
            cur.execute(
                "select count(*) from information_schema.tables "
                f"where table_schema = '{MARTS_SCHEMA}' and table_name = 'briefing_deliveries'"
            )
            [(exists,)] = cur.fetchall()
            if exists and not has_digest:
                # The key grows a column, which neither engine alters in place: copy the rows into the new
                # layout in one transaction (every earlier row was the one briefing everyone got: `team`).
                cur.execute(f"alter table {TABLE} rename to briefing_deliveries_v1")
                cur.execute(_DDL)
                cur.execute(
                    f"insert into {TABLE} (report_date, recipient, content_hash, status, message_sid, error_code, "
                    "error_message, attempts, updated_at, twilio_status, previous_sids, summary_id, digest, kind) "
                    "select report_date, recipient, content_hash, status, message_sid, error_code, error_message, "
                    f"attempts, updated_at, twilio_status, previous_sids, summary_id, '{TEAM}', 'session' "
                    f"from {MARTS_SCHEMA}.briefing_deliveries_v1"
                )
                cur.execute(f"drop table {MARTS_SCHEMA}.briefing_deliveries_v1")
            else:
                cur.execute(_DDL)
            conn.commit()

    @contextmanager
    def claim_warehouse(self) -> Iterator[None]:
        """On DuckDB, the whole warehouse for this process's delivery (re-entrant); `DeliveryBusy` if taken.

        On PostgreSQL nothing: recipients are claimed one by one with `claim`.
        """
        if self.target != "duckdb":
            yield
            return
        with _file_claim(duckdb_path()):
            yield

    @contextmanager
    def claim(self, report_date: dt.date, recipient: str, digest: str = TEAM) -> Iterator[None]:
        """Exclusive ownership of (report_date, recipient, digest) until the block ends.

        PostgreSQL: waits up to CLAIM_WAIT_SECONDS for a delivery that holds it,
        then raises `DeliveryBusy`. DuckDB: the warehouse claim (`claim_warehouse`).
        """
        if self.target == "duckdb":
            with self.claim_warehouse():
                yield
            return
        import psycopg2.errors

        with connect(self.target) as conn:
            cur = conn.cursor()
            try:  # psycopg2 opened a transaction: `set local` and the lock both end with it
                cur.execute(f"set local lock_timeout = '{CLAIM_WAIT_SECONDS}s'")
                cur.execute("select pg_advisory_xact_lock(%s)", [_lock_key(report_date, recipient, digest)])
            except psycopg2.errors.LockNotAvailable:
                raise DeliveryBusy(
                    f"another delivery for {report_date} to {recipient} has been running for over {CLAIM_WAIT_SECONDS}s"
                ) from None
            try:
                yield
            finally:
                conn.rollback()

    def get(self, report_date: dt.date, recipient: str, digest: str = TEAM) -> LedgerEntry | None:
        rows = self._entries(
            f"report_date = {self._p} and recipient = {self._p} and digest = {self._p}",
            [report_date, recipient, digest],
        )
        return rows[0] if rows else None

    def entries(self, since: dt.date) -> list[LedgerEntry]:
        """Every row from `since` on, oldest date first."""
        return self._entries(f"report_date >= {self._p} order by report_date, recipient, digest", [since])

    def find_sid(self, sid: str) -> LedgerEntry | None:
        """The row whose briefing Twilio message `sid` carried (any of its parts)."""
        p = self._p
        rows = self._entries(
            f"message_sid = {p} or concat(' ', part_sids, ' ') like {p} order by updated_at desc", [sid, f"% {sid} %"]
        )
        return rows[0] if rows else None

    def _entries(self, where: str, params: list[Any]) -> list[LedgerEntry]:
        with connect(self.target) as conn:
            cur = conn.cursor()
            cur.execute(f"select {_COLUMNS} from {TABLE} where {where}", params)
            rows = cur.fetchall()
        return [
            LedgerEntry(
                *row[:9],
                previous_sids=tuple((row[9] or "").split()),
                updated_at=float(row[10]),
                summary_id=row[11],
                digest=row[12],
                kind=row[13],
                part_sids=tuple((row[14] or "").split()),
            )
            for row in rows
        ]

    def known_sids(self, recipient: str) -> set[str]:
        """Every message SID ever recorded for `recipient`, whatever the date: none of them is a new attempt."""
        with connect(self.target) as conn:
            cur = conn.cursor()
            cur.execute(
                f"select message_sid, previous_sids, part_sids from {TABLE} where recipient = {self._p}", [recipient]
            )
            rows = cur.fetchall()
        return {sid for row in rows for field in row for sid in (field or "").split() if sid}

    def start_attempt(
        self,
        report_date: dt.date,
        recipient: str,
        content_hash: str,
        summary_id: str | None = None,
        *,
        digest: str = TEAM,
        kind: DeliveryKind = "session",
    ) -> None:
        """Record `pending` (and one more attempt) before anything is sent; the last SIDs join `previous_sids`."""
        p = self._p
        self._execute(
            f"""
            insert into {TABLE} as d
                (report_date, recipient, digest, content_hash, status, message_sid, error_code, error_message, attempts,
                 updated_at, summary_id, kind)
            values ({p}, {p}, {p}, {p}, 'pending', null, null, null, 1, now(), {p}, {p})
            on conflict (report_date, recipient, digest) do update set
                content_hash = excluded.content_hash,
                summary_id = excluded.summary_id,
                kind = excluded.kind,
                status = 'pending',
                previous_sids = nullif(concat_ws(' ', d.previous_sids, d.part_sids,
                                                 case when d.part_sids is null then d.message_sid end), ''),
                message_sid = null,
                part_sids = null,
                twilio_status = null,
                error_code = null,
                error_message = null,
                attempts = d.attempts + 1,
                updated_at = now()
            """,
            [report_date, recipient, digest, content_hash, summary_id, kind],
        )

    def add_part(self, report_date: dt.date, recipient: str, sid: str, digest: str = TEAM) -> None:
        """Remember a part Twilio accepted, at once: a run killed before the next part resends only the rest."""
        p = self._p
        self._execute(
            f"update {TABLE} set part_sids = concat_ws(' ', part_sids, {p}), message_sid = coalesce(message_sid, {p}), "
            f"updated_at = now() where report_date = {p} and recipient = {p} and digest = {p}",
            [sid, sid, report_date, recipient, digest],
        )

    def skip(self, report_date: dt.date, recipient: str, digest: str, reason: str) -> None:
        """Record that the recipient had nothing to report: no message, and no missed day either."""
        p = self._p
        self._execute(
            f"""
            insert into {TABLE} as d
                (report_date, recipient, digest, content_hash, status, error_message, attempts, updated_at)
            values ({p}, {p}, {p}, '', 'skipped', {p}, 0, now())
            on conflict (report_date, recipient, digest) do update set
                status = 'skipped', error_message = excluded.error_message, updated_at = now()
                where d.status in ('skipped', 'failed')
            """,
            [report_date, recipient, digest, reason],
        )

    def finish(
        self,
        report_date: dt.date,
        recipient: str,
        status: LedgerStatus,
        *,
        message_sid: str | None = None,
        error_code: int | None = None,
        error_message: str | None = None,
        content_hash: str | None = None,
        twilio_status: str | None = None,
        digest: str = TEAM,
        kind: DeliveryKind | None = None,
    ) -> None:
        """Record the outcome of the attempt (or of a reconciliation, or of a later look at Twilio) on a row."""
        p = self._p
        self._execute(
            f"""
            update {TABLE} set
                status = {p},
                message_sid = coalesce({p}, message_sid),
                error_code = {p},
                error_message = {p},
                content_hash = coalesce({p}, content_hash),
                twilio_status = {p},
                kind = coalesce({p}, kind),
                updated_at = now()
            where report_date = {p} and recipient = {p} and digest = {p}
            """,
            [
                status,
                message_sid,
                error_code,
                error_message,
                content_hash,
                twilio_status,
                kind,
                report_date,
                recipient,
                digest,
            ],
        )

    def note_twilio_status(self, report_date: dt.date, recipient: str, twilio_status: str, digest: str = TEAM) -> None:
        """Remember what Twilio now says of the row's message, changing nothing else."""
        p = self._p
        self._execute(
            f"update {TABLE} set twilio_status = {p}, updated_at = now() "
            f"where report_date = {p} and recipient = {p} and digest = {p}",
            [twilio_status, report_date, recipient, digest],
        )

    def record_status(
        self, sid: str, status: str, error_code: int | None = None, error_message: str | None = None
    ) -> LedgerEntry | None:
        """Apply what Twilio's status callback says of message `sid`; the row it belongs to, or None.

        Idempotent and order-proof: callbacks may come twice or out of order, so
        a status only moves forwards, and a failure of any part fails the row
        (the next run sends that briefing again).
        """
        entry = self.find_sid(sid)
        if entry is None:
            return None
        if status in FINAL_FAILURES:
            if entry.status == "accepted":
                self.finish(
                    entry.report_date,
                    entry.recipient,
                    "failed",
                    error_code=error_code,
                    error_message=error_message,
                    twilio_status=status,
                    digest=entry.digest,
                )
            return entry
        current = entry.twilio_status
        if current in FINAL_FAILURES or STATUS_ORDER.get(status, -1) <= STATUS_ORDER.get(current or "", -1):
            return entry
        if entry.part_sids and sid != entry.part_sids[-1] and len(entry.part_sids) > 1:
            # A briefing in parts has reached the person when its last part has.
            return entry
        self.note_twilio_status(entry.report_date, entry.recipient, status, entry.digest)
        return entry

    def record_session(self, report_date: dt.date, recipient: str, digest: str, sids: list[str]) -> None:
        """The full text followed the template after the person replied: the row now stands for those messages.

        Idempotent (a journal applied twice changes nothing the second time).
        """
        entry = self.get(report_date, recipient, digest)
        if entry is None or entry.part_sids == tuple(sids):
            return
        p = self._p
        self._execute(
            f"""
            update {TABLE} set
                kind = 'session',
                status = 'accepted',
                previous_sids = nullif(concat_ws(' ', previous_sids, part_sids,
                                                 case when part_sids is null then message_sid end), ''),
                part_sids = {p},
                message_sid = {p},
                twilio_status = null,
                error_code = null,
                error_message = null,
                updated_at = now()
            where report_date = {p} and recipient = {p} and digest = {p}
            """,
            [" ".join(sids), sids[0], report_date, recipient, digest],
        )

    def missed_days(
        self, until: dt.date, *, since: dt.date | None = None, expected: set[str] | None = None
    ) -> list[MissedDay]:
        """The report dates up to `until` whose digest never reached someone who gets it.

        Someone gets a digest from the first date the ledger has a row for them
        (within MISSED_LOOKBACK_DAYS); every later date needs a row that went
        (`accepted`) or that says there was nothing to send (`skipped`).
        `expected` narrows the people to those still configured (their addresses).
        """
        since = since or until - dt.timedelta(days=MISSED_LOOKBACK_DAYS - 1)
        try:
            rows = self.entries(since)
        except Exception:  # no ledger yet: nothing was ever due
            return []
        return missed_in([(e.report_date, e.recipient, e.digest, e.status) for e in rows], until, expected)

    def _execute(self, sql: str, params: list[Any] | None = None) -> None:
        with connect(self.target) as conn:
            conn.cursor().execute(sql, params or [])
            conn.commit()


def missed_in(
    rows: list[tuple[Any, str, str, str]], until: dt.date, expected: set[str] | None = None
) -> list[MissedDay]:
    """The missed days among ledger rows (report_date, recipient, digest, status): see `missed_days`."""
    by_key: dict[tuple[str, str], dict[dt.date, str]] = {}
    for day, recipient, digest, status in rows:
        day = as_date(day)
        if day <= until:
            by_key.setdefault((recipient, digest), {})[day] = status
    missed = []
    for (recipient, digest), days in sorted(by_key.items()):
        if expected is not None and recipient not in expected:
            continue
        day = min(days)
        while day <= until:
            status = days.get(day)
            if status not in ("accepted", "skipped"):
                missed.append(MissedDay(day, recipient, digest, status))
            day += dt.timedelta(days=1)
    return missed


def _lock_key(report_date: dt.date, recipient: str, digest: str = TEAM) -> int:
    """A signed 64-bit advisory-lock key for one report date, recipient and digest, the same in every process."""
    key = f"crm-intelligence:briefing:{report_date.isoformat()}:{recipient}"
    if digest != TEAM:  # the team digest keeps the key earlier releases used
        key += f":{digest}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)


_held_files: dict[Path, tuple[int, int]] = {}  # lock file -> (descriptor, depth), for re-entrant claims
_held_guard = threading.Lock()


@contextmanager
def _file_claim(warehouse: Path) -> Iterator[None]:
    """An exclusive, non-blocking `flock` on `<warehouse>.delivery.lock`, re-entrant within the process."""
    import fcntl

    path = warehouse.with_name(warehouse.name + ".delivery.lock")
    with _held_guard:
        if path in _held_files:
            fd, depth = _held_files[path]
            _held_files[path] = (fd, depth + 1)
        else:
            if not path.parent.is_dir():  # no warehouse folder: connecting fails later with a clear message
                fd = -1
            else:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    raise DeliveryBusy(
                        f"another delivery is running on the DuckDB warehouse {warehouse.name}; "
                        "nothing was sent by this run"
                    ) from None
            _held_files[path] = (fd, 1)
    try:
        yield
    finally:
        with _held_guard:
            fd, depth = _held_files[path]
            if depth > 1:
                _held_files[path] = (fd, depth - 1)
            else:
                del _held_files[path]
                if fd >= 0:
                    os.close(fd)  # closing the descriptor releases the flock
