"""Deliveries that overlap: a scheduled run and a manual one, or a rerun of a day already sent.

Each delivery is `python -m insights.deliver` in its own process, as cron or a
person would start it, against a private copy of the built warehouse; messages
go to the Twilio emulator, whose message list is what the recipients got.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import time
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import SANDBOX_ORG, SANDBOX_TODAY
from tests.support.api import api_under_load, serve
from tests.test_api import sql
from tests.twilio_emulator import TwilioEmulator
from warehouse import Target, connect

ANA, BEN = "+15550000001", "+15550000002"
PAIRS = 10


def start_delivery(ws: Any, target: Target, day: dt.date) -> subprocess.Popen[str]:
    return ws.start("python", "-m", "insights.deliver", "--target", target, "--date", day.isoformat())


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=300)
    return process.returncode, stderr


def last_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]


def report_days(target: Target, count: int) -> list[dt.date]:
    """The latest `count` days of the marts: each pair of runs gets a day of its own."""
    with connect(target, read_only=True) as conn:
        cur = conn.cursor()
        cur.execute("select distinct kpi_date from analytics.kpi_daily order by kpi_date desc limit " + str(count))
        return [row[0] for row in cur.fetchall()]


@pytest.fixture
def deliveries(warehouse: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The private warehouse, Ollama unreachable (the standard briefing, in a second), Twilio emulated."""
    monkeypatch.delenv("DESTINATION__POSTGRES__CREDENTIALS", raising=False)
    monkeypatch.setenv("DUCKDB_PATH", warehouse.env["DUCKDB_PATH"])
    monkeypatch.setenv("DATABASE_URL", warehouse.env["DATABASE_URL"])
    warehouse.env["OLLAMA_BASE_URL"] = "http://127.0.0.1:9"
    with TwilioEmulator() as twilio:
        warehouse.env.update(twilio.env(ANA, BEN))
        for number in (ANA, BEN):  # both wrote to the sender this morning: the briefing goes as full text
            twilio.inbound(number, "good morning")
        yield warehouse, twilio


def briefings(twilio: TwilioEmulator) -> list[dict[str, Any]]:
    """The briefings sent, one per recipient and day: a briefing in parts counts once (by its first part)."""
    return [m for m in twilio.messages if not re.match(r"\(([2-9]|\d\d+)/\d+\) ", m["body"])]


@pytest.mark.postgres
def test_two_deliveries_started_together_send_one_message_per_recipient_on_postgres(deliveries: Any) -> None:
    """GIVEN two deliveries started together for the same date and two recipients, on PostgreSQL
    WHEN this happens for 10 different dates
    THEN each recipient gets exactly one message per date, both runs exit 0, and between them
    the two last lines account for each recipient once as sent and once as already sent."""
    ws, twilio = deliveries
    days = report_days("postgres", PAIRS)
    assert len(days) == PAIRS

    for day in days:
        first, second = start_delivery(ws, "postgres", day), start_delivery(ws, "postgres", day)
        results = [finish(first), finish(second)]

        assert [code for code, _ in results] == [0, 0], [stderr[-2000:] for _, stderr in results]
        lines = " | ".join(last_line(stderr) for _, stderr in results)
        sent = sum(int(n) for n in _counts(lines, "sent to"))
        already = sum(int(n) for n in _counts(lines, "already sent to"))
        assert (sent, already) == (2, 2), lines

    per_recipient_and_day: dict[tuple[str, str], int] = {}
    sent = briefings(twilio)
    for message in sent:
        key = (message["to"], message["body"].splitlines()[0])
        per_recipient_and_day[key] = per_recipient_and_day.get(key, 0) + 1
    duplicates = sum(count - 1 for count in per_recipient_and_day.values())
    print(
        f"{PAIRS} pairs, {len(sent)} briefings for {2 * PAIRS} due, {duplicates} duplicates"
    )  # the figure in docs/performance.md
    assert len(sent) == 2 * PAIRS
    assert duplicates == 0 and len(per_recipient_and_day) == 2 * PAIRS


def test_on_duckdb_the_second_delivery_says_another_one_is_running(deliveries: Any) -> None:
    """GIVEN Twilio slow to answer, so a delivery on the DuckDB file takes a few seconds
    WHEN a second delivery for the same date starts while the first is sending
    THEN the second stops with one line saying another delivery is running (exit 1, not a lock error),
    and each recipient gets one message."""
    ws, twilio = deliveries
    [day] = report_days("duckdb", 1)
    twilio.delay_next(3.0, count=2)

    first = start_delivery(ws, "duckdb", day)
    _wait_for_create_request(twilio)
    second = start_delivery(ws, "duckdb", day)
    (code_1, err_1), (code_2, err_2) = finish(first), finish(second)

    assert code_1 == 0, err_1[-2000:]
    assert code_2 == 1
    assert "another delivery is running" in last_line(err_2)
    assert "lock" not in last_line(err_2).lower()
    assert sorted(m["to"] for m in briefings(twilio)) == [f"whatsapp:{ANA}", f"whatsapp:{BEN}"]


@pytest.mark.parametrize("target", ["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_rerun_of_a_day_already_sent_says_so_and_the_api_keeps_serving_the_sent_briefing(
    deliveries: Any, target: Target
) -> None:
    """GIVEN the day's briefing was sent to both recipients
    WHEN the delivery reruns for that day
    THEN its last line says it was already sent (nothing new was sent), it exits 0, no message goes out,
    and /api/summaries/latest still serves the briefing that was sent, marked delivered to both."""
    ws, twilio = deliveries
    [day] = report_days(target, 1)
    code, first = finish(start_delivery(ws, target, day))
    assert code == 0, first[-2000:]
    assert "sent to 2 of 2 recipients" in last_line(first)

    code, rerun = finish(start_delivery(ws, target, day))

    assert code == 0, rerun[-2000:]
    assert last_line(rerun).endswith("already sent to 2 of 2 recipients; nothing new was sent")
    assert len(briefings(twilio)) == 2
    with connect(target, read_only=True) as conn:
        cur = conn.cursor()
        cur.execute("select summary_id from analytics.ai_summaries order by created_at")
        sent_id, rerun_id = [row[0] for row in cur.fetchall()]
    with serve(ws.env, target) as api:
        latest = api.get("/api/summaries/latest").json()
    assert latest["summary_id"] == sent_id != rerun_id
    assert latest["delivery"]["status"] == "delivered"
    assert [r["status"] for r in latest["delivery"]["recipients"]] == ["accepted", "accepted"]


def _counts(lines: str, words: str) -> list[str]:
    """The numbers after `words` ("sent to 2"), not counting "already sent to 2" as "sent to"."""
    pattern = rf"(?<!already ){re.escape(words)} (\d+)" if words == "sent to" else rf"{re.escape(words)} (\d+)"
    return re.findall(pattern, lines)


def _wait_for_create_request(twilio: TwilioEmulator, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while twilio.create_requests() == 0:
        assert time.monotonic() < deadline, "the first delivery never reached Twilio"
        time.sleep(0.05)


# --------------------------------------------------------------------------- the API and the daily job

# Before the API served from memory, 1 in 3 extractions and dbt runs failed on its lock: 4 rounds (8 writers)
# would have shown it 24 times in 25. API_LOAD_ROUNDS=10 plays the "10 times out of 10" (as
# `python -m benchmarks.api_under_load` does), at about 40 s a round.
ROUNDS = int(os.environ.get("API_LOAD_ROUNDS", "4"))
CLIENTS = 4


@pytest.mark.slow
def test_the_api_under_load_never_makes_extraction_or_dbt_fail(warehouse: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """GIVEN the API over the DuckDB warehouse, with 4 clients asking for metrics without pause
    WHEN the CRM moves on a day and the extraction and `dbt build` run, 4 times over (API_LOAD_ROUNDS)
    THEN both succeed every time, every client request is answered 200, and the API ends up serving
    the new data."""
    from sandbox import SandboxOrg

    monkeypatch.setenv("DUCKDB_PATH", warehouse.env["DUCKDB_PATH"])
    org = SandboxOrg(today=dt.date.fromisoformat(SANDBOX_TODAY), **SANDBOX_ORG)  # the org the warehouse was built from

    run = api_under_load(warehouse, org, ROUNDS, CLIENTS)

    print(run.line())
    assert run.failures == []
    assert (run.extractions_ok, run.dbt_ok) == (ROUNDS, ROUNDS)
    assert len(run.answered) > ROUNDS * CLIENTS
    [(latest_complete,)] = sql(
        "duckdb",
        "select max(kpi_date) from analytics.kpi_daily where kpi_date < "
        f"'{dt.datetime.now(ZoneInfo(org.timezone)).date()}'",
    )
    assert run.final["as_of"] == latest_complete.isoformat()


def test_a_delivery_killed_in_the_middle_of_a_briefing_in_parts_sends_only_the_rest_when_run_again(
    deliveries: Any,
) -> None:
    """GIVEN a briefing long enough for two messages, and a delivery killed (kill -9) after Twilio created the
    first part but before its answer came back
    WHEN the delivery runs again
    THEN each recipient has each part exactly once: the first part is found in Twilio's message list and kept,
    only the second is sent to that recipient, and the other gets both."""
    ws, twilio = deliveries
    [day] = report_days("duckdb", 1)
    twilio.delay_next(30.0)  # the first create's answer: ANA's first part
    first = start_delivery(ws, "duckdb", day)
    _wait_for_create_request(twilio)
    first.kill()
    first.wait(timeout=30)
    assert len(twilio.messages) == 1 and twilio.messages[0]["body"].startswith("(1/2) ")

    code, rerun = finish(start_delivery(ws, "duckdb", day))

    assert code == 0, rerun[-2000:]
    bodies = sorted((m["to"], m["body"][:6]) for m in twilio.messages)
    assert bodies == sorted((f"whatsapp:{n}", f"({i}/2) ") for n in (ANA, BEN) for i in (1, 2)), bodies
