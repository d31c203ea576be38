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

Every call opens and closes its own connection: DuckDB allows one writer per
file, and the pipeline or dbt may need the file between two sends.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

from warehouse import MARTS_SCHEMA, Target, connect, placeholder

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
    primary key (report_date, recipient)
)
"""
_COLUMNS = (
    "report_date, recipient, content_hash, status, message_sid, error_code, error_message, attempts, "
    "twilio_status, previous_sids, extract(epoch from updated_at)"
)


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


class DeliveryLedger:
    """`briefing_deliveries` on one warehouse target."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._p = placeholder(target)

    def ensure_table(self) -> None:
        self._execute(f"create schema if not exists {MARTS_SCHEMA}")
        self._execute(_DDL)

    def get(self, report_date: dt.date, recipient: str) -> LedgerEntry | None:
        p = self._p
        with connect(self.target) as conn:
            cur = conn.cursor()
            cur.execute(f"select {_COLUMNS} from {TABLE} where report_date = {p} and recipient = {p}",
                        [report_date, recipient])
            row = cur.fetchone()
        if row is None:
            return None
        return LedgerEntry(*row[:9], previous_sids=tuple((row[9] or "").split()), updated_at=float(row[10]))

    def known_sids(self, recipient: str) -> set[str]:
        """Every message SID ever recorded for `recipient`, whatever the date: none of them is a new attempt."""
        with connect(self.target) as conn:
            cur = conn.cursor()
            cur.execute(f"select message_sid, previous_sids from {TABLE} where recipient = {self._p}", [recipient])
            rows = cur.fetchall()
        return {sid for current, previous in rows for sid in [current, *(previous or "").split()] if sid}

    def start_attempt(self, report_date: dt.date, recipient: str, content_hash: str) -> None:
        """Record `pending` (and one more attempt) before anything is sent; the last SID joins `previous_sids`."""
        p = self._p
        self._execute(
            f"""
            insert into {TABLE} as d
                (report_date, recipient, content_hash, status, message_sid, error_code, error_message, attempts,
                 updated_at)
            values ({p}, {p}, {p}, 'pending', null, null, null, 1, now())
            on conflict (report_date, recipient) do update set
                content_hash = excluded.content_hash,
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
            [report_date, recipient, content_hash],
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
