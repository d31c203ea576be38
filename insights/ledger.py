"""The WhatsApp delivery ledger, `analytics.briefing_deliveries`: one row per report date and recipient.

Twilio's Messages API has no idempotency key, so the ledger is what makes a
rerun safe. The row is written `pending` before the POST and updated with the
outcome after it: `accepted` (Twilio returned a message SID; never sent again
for that date), `failed` (Twilio definitely refused, was never reached, or
failed the message after accepting it; the next run retries) or `unknown` (the
request may have created a message; the next run looks for it in Twilio's
message list before sending anything). A row still `pending` on the next run
means the process died mid-send, which is as ambiguous as `unknown`.

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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

from warehouse import MARTS_SCHEMA, Target, connect, duckdb_path, placeholder

TABLE = f"{MARTS_SCHEMA}.briefing_deliveries"

LedgerStatus = Literal["pending", "accepted", "failed", "unknown"]

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
    primary key (report_date, recipient)
)
"""
_COLUMNS = (
    "report_date, recipient, content_hash, status, message_sid, error_code, error_message, attempts, "
    "twilio_status, previous_sids, extract(epoch from updated_at), summary_id"
)
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


class DeliveryLedger:
    """`briefing_deliveries` on one warehouse target."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._p = placeholder(target)

    def ensure_table(self) -> None:
        self._execute(f"create schema if not exists {MARTS_SCHEMA}")
        self._execute(_DDL)

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
    def claim(self, report_date: dt.date, recipient: str) -> Iterator[None]:
        """Exclusive ownership of (report_date, recipient) until the block ends.

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
                cur.execute("select pg_advisory_xact_lock(%s)", [_lock_key(report_date, recipient)])
            except psycopg2.errors.LockNotAvailable:
                raise DeliveryBusy(
                    f"another delivery for {report_date} to {recipient} has been running for over "
                    f"{CLAIM_WAIT_SECONDS}s"
                ) from None
            try:
                yield
            finally:
                conn.rollback()

    def get(self, report_date: dt.date, recipient: str) -> LedgerEntry | None:
        p = self._p
        with connect(self.target) as conn:
            cur = conn.cursor()
            cur.execute(f"select {_COLUMNS} from {TABLE} where report_date = {p} and recipient = {p}",
                        [report_date, recipient])
            row = cur.fetchone()
        if row is None:
            return None
        return LedgerEntry(*row[:9], previous_sids=tuple((row[9] or "").split()), updated_at=float(row[10]),
                           summary_id=row[11])

    def known_sids(self, recipient: str) -> set[str]:
        """Every message SID ever recorded for `recipient`, whatever the date: none of them is a new attempt."""
        with connect(self.target) as conn:
            cur = conn.cursor()
            cur.execute(f"select message_sid, previous_sids from {TABLE} where recipient = {self._p}", [recipient])
            rows = cur.fetchall()
        return {sid for current, previous in rows for sid in [current, *(previous or "").split()] if sid}

    def start_attempt(
        self, report_date: dt.date, recipient: str, content_hash: str, summary_id: str | None = None
    ) -> None:
        """Record `pending` (and one more attempt) before anything is sent; the last SID joins `previous_sids`."""
        p = self._p
        self._execute(
            f"""
            insert into {TABLE} as d
                (report_date, recipient, content_hash, status, message_sid, error_code, error_message, attempts,
                 updated_at, summary_id)
            values ({p}, {p}, {p}, 'pending', null, null, null, 1, now(), {p})
            on conflict (report_date, recipient) do update set
                content_hash = excluded.content_hash,
                summary_id = excluded.summary_id,
                status = 'pending',
                previous_sids = case when d.message_sid is null then d.previous_sids
                                     else concat_ws(' ', d.previous_sids, d.message_sid) end,
                message_sid = null,
                twilio_status = null,
                error_code = null,
                error_message = null,
                attempts = d.attempts + 1,
                updated_at = now()
            """,
            [report_date, recipient, content_hash, summary_id],
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
    ) -> None:
        """Record the outcome of the attempt (or of a reconciliation, or of a later look at Twilio) on a row."""
        p = self._p
        self._execute(
            f"""
            update {TABLE} set
                status = {p},
                message_sid = {p},
                error_code = {p},
                error_message = {p},
                content_hash = coalesce({p}, content_hash),
                twilio_status = {p},
                updated_at = now()
            where report_date = {p} and recipient = {p}
            """,
            [status, message_sid, error_code, error_message, content_hash, twilio_status, report_date, recipient],
        )

    def note_twilio_status(self, report_date: dt.date, recipient: str, twilio_status: str) -> None:
        """Remember what Twilio now says of the row's message, changing nothing else."""
        p = self._p
        self._execute(
            f"update {TABLE} set twilio_status = {p}, updated_at = now() where report_date = {p} and recipient = {p}",
            [twilio_status, report_date, recipient],
        )

    def _execute(self, sql: str, params: list[Any] | None = None) -> None:
        with connect(self.target) as conn:
            conn.cursor().execute(sql, params or [])
            conn.commit()


def _lock_key(report_date: dt.date, recipient: str) -> int:
    """A signed 64-bit advisory-lock key for one report date and recipient, the same in every process."""
    digest = hashlib.sha256(f"crm-intelligence:briefing:{report_date.isoformat()}:{recipient}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


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
