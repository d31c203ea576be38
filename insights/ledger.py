"""The WhatsApp delivery ledger, `analytics.briefing_deliveries`: one row per report date and recipient.

Twilio's Messages API has no idempotency key, so the ledger is what makes a
rerun safe. The row is written `pending` before the POST and updated with the
outcome after it: `accepted` (Twilio returned a message SID; never sent again
for that date), `failed` (Twilio definitely refused or was never reached; the
next run retries) or `unknown` (the request may have created a message; the
next run looks for it in Twilio's message list before sending anything).
A row still `pending` on the next run means the process died mid-send, which
is as ambiguous as `unknown`.

Every call opens and closes its own connection: DuckDB allows one writer per
file, and the pipeline or dbt may need the file between two sends.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

from pipelines.warehouse import MARTS_SCHEMA, Target, connect, placeholder

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
    primary key (report_date, recipient)
)
"""


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
            cur.execute(
                f"""
                select report_date, recipient, content_hash, status, message_sid, error_code, error_message,
                       attempts, extract(epoch from updated_at)
                from {TABLE}
                where report_date = {p} and recipient = {p}
                """,
                [report_date, recipient],
            )
            row = cur.fetchone()
        if row is None:
            return None
        return LedgerEntry(*row[:8], updated_at=float(row[8]))

    def known_sids(self, recipient: str) -> set[str]:
        """Every message SID recorded for `recipient`, whatever the date: none of them is a new attempt."""
        with connect(self.target) as conn:
            cur = conn.cursor()
            cur.execute(
                f"select message_sid from {TABLE} where recipient = {self._p} and message_sid is not null",
                [recipient],
            )
            return {sid for (sid,) in cur.fetchall()}

    def start_attempt(self, report_date: dt.date, recipient: str, content_hash: str) -> None:
        """Record `pending` (and one more attempt) before anything is sent."""
        p = self._p
        self._execute(
            f"""
            insert into {TABLE} as d
                (report_date, recipient, content_hash, status, message_sid, error_code, error_message, attempts, updated_at)
            values ({p}, {p}, {p}, 'pending', null, null, null, 1, now())
            on conflict (report_date, recipient) do update set
                content_hash = excluded.content_hash,
                status = 'pending',
                message_sid = null,
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
    ) -> None:
        """Record the outcome of the attempt (or of a reconciliation) on an existing row."""
        p = self._p
        self._execute(
            f"""
            update {TABLE} set
                status = {p},
                message_sid = {p},
                error_code = {p},
                error_message = {p},
                content_hash = coalesce({p}, content_hash),
                updated_at = now()
            where report_date = {p} and recipient = {p}
            """,
            [status, message_sid, error_code, error_message, content_hash, report_date, recipient],
        )

    def _execute(self, sql: str, params: list[Any] | None = None) -> None:
        with connect(self.target) as conn:
            conn.cursor().execute(sql, params or [])
            conn.commit()
