"""Each person gets their own briefing: the manager the team's, each owner their own deals, nobody an empty one.

`python -m insights.deliver` runs as a user runs it, against a private copy of
the warehouse built from the sandbox CRM, with a recipients file, the Twilio
emulator (everyone wrote to the sender this morning, so the digests go as
full text) and no model (the standard summaries, in seconds).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.twilio_emulator import TwilioEmulator
from warehouse import Target, connect

MANAGER, BUSY, IDLE = "+15550000011", "+15550000012", "+15550000013"


def busy_and_idle_owners(target: Target) -> tuple[dt.date, str, str, dt.date, str]:
    """The last complete day and the CRM user with the most deals open at its end (id and email); and the latest
    complete day on which some other user had no open deal and closed nothing, with that user's id. Plain SQL
    over the deals mart, independent of the digests' own queries."""
    with connect(target, read_only=True) as conn:
        cur = conn.cursor()
        cur.execute("""
            with days as (select distinct kpi_date as d from analytics.kpi_daily where is_complete),
            per_owner as (
                select days.d, u.id as owner_id, u.email,
                       (select count(*) from analytics.deals x where x.owner_id = u.id and x.created_date <= days.d
                        and (x.status = 'open' or x.closed_date > days.d)) as open_deals,
                       (select count(*) from analytics.deals x where x.owner_id = u.id and x.closed_date = days.d)
                        as closed_deals
                from days cross join zoho_raw.users u
            )
            select d, owner_id, email, open_deals, closed_deals from per_owner order by d desc, open_deals desc, owner_id
        """)
        rows = [
            (r[0].date() if isinstance(r[0], dt.datetime) else r[0], str(r[1]), str(r[2]), r[3], r[4])
            for r in cur.fetchall()
        ]
    day, busy, email = rows[0][:3]
    idle = next(
        ((d, owner) for d, owner, _, open_deals, closed in rows if open_deals == 0 and closed == 0 and owner != busy),
        None,
    )
    assert idle is not None, "the sandbox org has no day with an owner who had nothing"
    return day, busy, email, *idle


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def team(request: pytest.FixtureRequest, warehouse: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    target: Target = request.param
    monkeypatch.delenv("DESTINATION__POSTGRES__CREDENTIALS", raising=False)
    for name in ("DUCKDB_PATH", "DATABASE_URL"):
        monkeypatch.setenv(name, warehouse.env[name])
    day, busy, busy_email, idle_day, idle = busy_and_idle_owners(target)
    (warehouse.root / "recipients.yml").write_text(
        "people:\n"
        f"  - {{name: Ana Manager, whatsapp: '{MANAGER}', role: manager}}\n"
        f"  - {{name: Ben Busy, whatsapp: '{BUSY}', role: owner, zoho_user: '{busy_email.upper()}'}}\n"
        f"  - {{name: Cho Idle, whatsapp: '{IDLE}', role: owner, zoho_user: '{idle}'}}\n"
    )
    with TwilioEmulator() as twilio:
        warehouse.env.update(twilio.env(), OLLAMA_BASE_URL="http://127.0.0.1:9")
        warehouse.env.pop("RECIPIENT_PHONE_NUMBER", None)
        for number in (MANAGER, BUSY, IDLE):
            twilio.inbound(number, "good morning")
        yield warehouse, twilio, target, day, busy, idle_day, idle


@pytest.mark.slow
def test_each_owner_gets_only_their_own_deals_and_an_idle_owner_gets_nothing(team: Any) -> None:
    """GIVEN a recipients file with a manager and two owners, one of whom had no open deal and closed nothing
    on an earlier day
    WHEN the last complete day is delivered, twice, and then that earlier day
    THEN the manager gets the team briefing and the busy owner a digest whose every deal is theirs, the second
    run sends nothing new, and on the earlier day the idle owner gets no message (the ledger records why)."""
    ws, twilio, target, day, busy, idle_day, idle = team
    deliver = ("python", "-m", "insights.deliver", "--target", target, "--date", day.isoformat())

    first = ws.run(*deliver, check=False, timeout=300)
    again = ws.run(*deliver, check=False, timeout=300)
    quiet_day = ws.run(
        "python", "-m", "insights.deliver", "--target", target, "--date", idle_day.isoformat(), check=False, timeout=300
    )

    assert first.returncode == 0, first.stderr[-3000:]
    assert again.returncode == 0 and "nothing new was sent" in again.stderr.splitlines()[-1], again.stderr[-2000:]
    assert (
        twilio.messages_to(MANAGER)[0]["body"]
        .split("\n")[0]
        .endswith(f"*Sales briefing \u00b7 {day:%a} {day.day} {day:%b %Y}*")
    )
    assert "*Your deals" in twilio.messages_to(BUSY)[0]["body"]
    assert quiet_day.returncode == 0, quiet_day.stderr[-3000:]
    assert f"[owner:{idle}]: nothing to report, no message" in quiet_day.stderr
    assert not any(f"{idle_day:%a} {idle_day.day} {idle_day:%b %Y}" in m["body"] for m in twilio.messages_to(IDLE))
    with connect(target, read_only=True) as conn:
        cur = conn.cursor()
        cur.execute(
            "select facts_json from analytics.ai_summaries where digest = %s order by created_at"
            % ("?" if target == "duckdb" else "%s"),
            [f"owner:{busy}"],
        )
        facts_json = cur.fetchall()[0][0]  # the first run's (each run stores the briefings it built)
        deal_ids = {
            ref["id"]
            for fact in json.loads(facts_json)["facts"]
            for ref in fact["entities"].values()
            if ref["kind"] == "deal"
        }
        cur.execute("select deal_id, owner_id from analytics.deals")
        owner_of = {str(deal): str(owner) for deal, owner in cur.fetchall()}
        cur.execute("select report_date, recipient, digest, status from analytics.briefing_deliveries")
        ledger = {(str(r[0])[:10], r[1], r[2]): r[3] for r in cur.fetchall()}
    assert deal_ids and {owner_of[d] for d in deal_ids} == {busy}
    assert ledger[(day.isoformat(), f"whatsapp:{MANAGER}", "team")] == "accepted"
    assert ledger[(day.isoformat(), f"whatsapp:{BUSY}", f"owner:{busy}")] == "accepted"
    assert ledger[(idle_day.isoformat(), f"whatsapp:{IDLE}", f"owner:{idle}")] == "skipped"


@pytest.mark.slow
def test_a_dry_run_in_json_lists_every_message_and_nothing_else_on_stdout(team: Any) -> None:
    """GIVEN the same team, and no time left for the model (BRIEFING_BUDGET_SECONDS=0)
    WHEN `insights.deliver --dry-run --json` runs
    THEN stdout is one JSON document: a message per recipient with their role, digest, the full text and its
    parts, and the template's single-line variables, each the standard summary because the budget ran out;
    the idle owner is listed as having nothing to report; progress went to stderr, and nothing was sent."""
    ws, twilio, target, day, busy, idle_day, idle = team
    ws.env["BRIEFING_BUDGET_SECONDS"] = "0"

    result = ws.run(
        "python",
        "-m",
        "insights.deliver",
        "--target",
        target,
        "--date",
        idle_day.isoformat(),
        "--dry-run",
        "--json",
        timeout=300,
    )

    document = json.loads(result.stdout)
    by_recipient = {m["recipient"]: m for m in document["messages"]}
    assert set(by_recipient) == {f"whatsapp:{MANAGER}", f"whatsapp:{BUSY}"}  # the idle owner had nothing that day
    assert (by_recipient[f"whatsapp:{MANAGER}"]["role"], by_recipient[f"whatsapp:{MANAGER}"]["digest"]) == (
        "manager",
        "team",
    )
    assert (by_recipient[f"whatsapp:{BUSY}"]["owner"], by_recipient[f"whatsapp:{BUSY}"]["digest"]) == (
        busy,
        f"owner:{busy}",
    )
    for message in document["messages"]:
        assert message["standard_summary"] and message["fallback_reason"].startswith("budget: ")
        assert message["session"]["parts"] and all(len(p) <= 1600 for p in message["session"]["parts"])
        assert all(
            "\n" not in v and "\t" not in v and "     " not in v for v in message["template"]["variables"].values()
        )
        if "*Needs attention*" in message["session"]["text"]:  # the template says so too, with a figure
            attention = message["template"]["variables"]["3"]
            assert not attention.startswith("nothing") and any(ch.isdigit() for ch in attention), attention
    assert document["nothing_to_report"] == [
        {"recipient": f"whatsapp:{IDLE}", "name": "Cho Idle", "digest": f"owner:{idle}"}
    ]
    assert "[facts]" in result.stderr and twilio.messages == []
