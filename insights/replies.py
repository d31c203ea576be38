"""What Twilio tells us after the run: each message's status, and people's replies.

Twilio POSTs to the API (`insights.api`, when PUBLIC_BASE_URL says where Twilio
can reach it): `/twilio/status` on every status change of a message the run
sent (sent, delivered, read, failed with a code), `/twilio/inbound` when
someone writes to the sender. Both are checked against `X-Twilio-Signature`
before anything is written (`signature_ok`).

- A status goes to the ledger row whose message it is (`DeliveryLedger.record_status`:
  it never moves backwards, and a late failure marks the row for resending).
- A reply from a recipient opens their 24-hour window, so the morning's
  template can be followed by the full briefing as free-form text: the API
  sends the person their latest digest(s) that went as the template, once
  (`answer_reply`). The ledger row then says `session` with the new SIDs, so a
  second reply finds nothing new to send. The team briefing's first part carries
  the day's chart, as it would have in the morning inside the window
  (`insights.chart_links`).

DuckDB lets one process write the file, and the daily job (extraction, dbt,
the delivery) must never meet a lock the API holds. So on DuckDB the API never
writes the warehouse: it appends each event to a journal beside it
(`<warehouse>.twilio-events.jsonl`: one JSON line, flushed to disk, under an
exclusive `flock`) and the next delivery applies the journal to the ledger
before it reads it (`apply_journal`), then empties it. Applying is idempotent,
so a delivery killed between applying and emptying loses nothing and doubles
nothing. Until then the API reads the journal beside its copy of the ledger,
so a second reply a minute later still finds the first one's answer. On
PostgreSQL, where writers do not block each other, the API writes the ledger
directly.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from twilio.request_validator import RequestValidator

from insights.ledger import TABLE as DELIVERIES_TABLE
from insights.ledger import TEAM, DeliveryLedger
from insights.settings import TwilioSettings
from insights.store import TABLE as SUMMARIES_TABLE
from warehouse import Target, as_date, connect, duckdb_path, placeholder

log = logging.getLogger(__name__)

JOURNAL_SUFFIX = ".twilio-events.jsonl"

Query = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


def signature_ok(
    auth_token: str, public_base_url: str, path: str, query: str, params: Mapping[str, str], signature: str
) -> bool:
    """Whether Twilio signed this request: twilio-python's own validator, over the URL Twilio was given.

    Behind a proxy or a tunnel the server sees another host and scheme than
    the one Twilio called, so the URL is rebuilt from PUBLIC_BASE_URL, never
    from the request's Host header.
    """
    url = f"{public_base_url.rstrip('/')}{path}" + (f"?{query}" if query else "")
    return bool(signature) and RequestValidator(auth_token).validate(url, dict(params), signature)


# --------------------------------------------------------------------------- the journal (DuckDB)


class Journal:
    """Events the API could not write to a DuckDB warehouse, in order, until a delivery applies them."""

    def __init__(self, warehouse: Path) -> None:
        self.path = warehouse.with_name(warehouse.name + JOURNAL_SUFFIX)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """The journal to this process alone (a few milliseconds: appends, or a delivery applying it)."""
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def append(self, event: dict[str, Any]) -> None:
        """Add one event; it is on disk when this returns. Call under `locked`."""
        line = json.dumps(event, sort_keys=True) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def events(self) -> list[dict[str, Any]]:
        """Every event not applied yet, oldest first (a line cut by a crash mid-write is skipped)."""
        if not self.path.exists():
            return []
        found = []
        for line in self.path.read_text().splitlines():
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("skipping an unreadable line of %s", self.path.name)
        return found

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def apply_journal(target: Target) -> int:
    """Apply the events the API journaled to the ledger, then empty the journal: how many there were.

    Called by the delivery while it holds the DuckDB warehouse; a no-op on PostgreSQL.
    """
    if target != "duckdb":
        return 0
    journal = Journal(duckdb_path())
    with journal.locked():
        events = journal.events()
        if events:
            ledger = DeliveryLedger(target)
            ledger.ensure_table()
            for event in events:
                _apply(ledger, event)
        journal.clear()
    return len(events)


def _apply(ledger: DeliveryLedger, event: Mapping[str, Any]) -> None:
    if event.get("event") == "status":
        ledger.record_status(event["sid"], event["status"], event.get("error_code"), event.get("error_message"))
    elif event.get("event") == "reply":
        ledger.record_session(
            dt.date.fromisoformat(event["report_date"]), event["recipient"], event["digest"], event["sids"]
        )


# --------------------------------------------------------------------------- status callbacks


def record_status(target: Target, params: Mapping[str, str]) -> None:
    """Keep what a status callback says of a message (MessageSid, MessageStatus, ErrorCode, ErrorMessage)."""
    sid = params.get("MessageSid") or params.get("SmsSid") or ""
    status = (params.get("MessageStatus") or params.get("SmsStatus") or "").lower()
    if not sid or not status:
        return
    code = params.get("ErrorCode")
    event = {
        "event": "status",
        "sid": sid,
        "status": status,
        "error_code": int(code) if code and code.isdigit() else None,
        "error_message": params.get("ErrorMessage") or None,
    }
    if target == "duckdb":
        journal = Journal(duckdb_path())
        with journal.locked():
            journal.append(event)
        return
    ledger = DeliveryLedger(target)
    ledger.ensure_table()
    _apply(ledger, event)


# --------------------------------------------------------------------------- replies


def answer_reply(target: Target, settings: TwilioSettings, sender: str, query: Query | None = None) -> list[str]:
    """Send `sender` (a recipient who just wrote, so inside the window) the full text of their latest
    digests that went as the template; the SIDs sent (none when there is nothing new).

    `query` reads the ledger and the stored briefings: the API's copy of a
    DuckDB warehouse (it never opens the file itself), the database directly
    on PostgreSQL.
    """
    from insights.whatsapp import (
        Part,
        create_message,
        recipient_address,
        split_parts,
        status_callback_url,
        twilio_client,
        whatsapp_address,
    )

    address = whatsapp_address(sender)
    if not any(recipient_address(r) == address for r in settings.recipients):
        log.info("a message from someone who is not a recipient; not answered")
        return []
    read = query or _direct_query(target)
    p = placeholder(target)
    rows = read(
        f"select d.report_date, d.digest, d.kind, d.status, s.message from {DELIVERIES_TABLE} d "
        f"join {SUMMARIES_TABLE} s on s.summary_id = d.summary_id "
        f"where d.recipient = {p} and d.status = 'accepted' order by d.report_date desc, d.digest",
        [address],
    )
    if not rows:
        return []
    latest = rows[0][0]
    due = [(digest, kind, message) for day, digest, kind, status, message in rows if day == latest]
    client = twilio_client(settings)
    sender_address = whatsapp_address(settings.from_number)
    callback = status_callback_url(settings)
    sent: list[str] = []
    report_date = as_date(latest)
    chart: str | None = None
    with _claimed(target, report_date, address):
        answered = _answered(target, report_date, address)
        for digest, kind, message in due:
            if kind != "template" or digest in answered:
                continue  # went as full text already, or answered by an earlier reply
            if digest == TEAM:
                from insights.chart_links import briefing_chart

                chart, said = briefing_chart(settings, report_date)
                log.info("answering a reply: %s", said)
            sids = []
            for i, text in enumerate(split_parts(message)):
                part = Part(text, media_url=chart if digest == TEAM and i == 0 else None)
                sid, _ = create_message(client, sender_address, address, part, callback)
                sids.append(sid)
            _record_reply(target, report_date, address, digest, sids)
            sent.extend(sids)
            log.info(
                "answered a reply from %s with the %s briefing for %s (%d part(s))",
                address,
                digest,
                report_date,
                len(sids),
            )
    return sent


@contextmanager
def _claimed(target: Target, report_date: dt.date, address: str) -> Iterator[None]:
    """One answer at a time per person: the journal's lock (DuckDB), the ledger's advisory lock (PostgreSQL)."""
    if target == "duckdb":
        with Journal(duckdb_path()).locked():
            yield
        return
    with DeliveryLedger(target).claim(report_date, address, "reply"):
        yield


def _answered(target: Target, report_date: dt.date, address: str) -> set[str]:
    """The digests of that day a reply was already answered with, as the ledger (and the journal) say now."""
    if target == "duckdb":
        answered = {
            e["digest"]
            for e in Journal(duckdb_path()).events()
            if e.get("event") == "reply" and e["recipient"] == address and e["report_date"] == report_date.isoformat()
        }
        return answered  # the copy the API read from may predate them; the journal does not
    ledger = DeliveryLedger(target)
    return {
        e.digest
        for e in ledger.entries(report_date)
        if e.recipient == address and e.report_date == report_date and e.kind == "session"
    }


def _record_reply(target: Target, report_date: dt.date, address: str, digest: str, sids: list[str]) -> None:
    event = {
        "event": "reply",
        "report_date": report_date.isoformat(),
        "recipient": address,
        "digest": digest,
        "sids": sids,
    }
    if target == "duckdb":
        Journal(duckdb_path()).append(event)  # the caller holds the journal's lock
    else:
        _apply(DeliveryLedger(target), event)


def _direct_query(target: Target) -> Query:
    def read(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with connect(target, read_only=True) as conn:
            cur = conn.cursor()
            cur.execute(sql, list(params))
            return list(cur.fetchall())

    return read
