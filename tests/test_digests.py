"""The owners' digests and the manager's roll-up: every flag and figure equals a recomputation from the marts.

GIVEN a private copy of the sandbox warehouse (the `warehouse` fixture, DuckDB and PostgreSQL) whose
deal_daily_states give every rule a case. The sandbox org is synced once, so its history holds stage moves
(from Zoho's Stage History) but no deal whose closing date, amount or stage changed back and forth; those
evenings are written straight into the mart here, which is cheaper than syncing the org on several days
(tests/test_history_marts.py) and enough for code that only reads the mart:

- a deal whose closing date was pushed twice in the 30 days before the report day, once before them, and
  again after the report day (which a digest of that day must not know);
- a deal whose amount was cut within the 30 days (and more before them), and one whose amount moved by a
  rounding blip;
- a deal that went one stage forward and back within the 30 days;
- a deal whose closing date is 1 Jan 1900 (the marts' implausible date): never overdue.

Each test recomputes what it checks in plain Python from a simple select of deal_daily_states.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from insights import deal_flags, facts, owner_facts
from insights.deal_flags import (
    AT_RISK_RULES,
    CHANGE_WINDOW_DAYS,
    DUE_SOON_DAYS,
    QUIET_CEILING_DAYS,
    QUIET_DEFAULT_DAYS,
    QUIET_FLOOR_DAYS,
    SHRINK_MIN_AMOUNT,
    SHRINK_MIN_PCT,
    USUAL_HISTORY_DAYS,
    USUAL_MIN_VISITS,
    USUAL_PERCENTILE,
)
from insights.facts import fmt_amount
from insights.policy import attention_ids

DAY = dt.date(2026, 11, 20)  # the sandbox org's "today", the briefing tests' report date
TARGETS = ["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)]


def ago(days: int) -> dt.date:
    return DAY - dt.timedelta(days=days)


def sql_date(d: dt.date) -> str:
    return f"date '{d.isoformat()}'"


@dataclass
class Warehouse:
    ws: Any
    target: str

    def connect(self) -> Any:
        if self.target == "duckdb":
            import duckdb

            return duckdb.connect(str(self.ws.duckdb_path))
        import psycopg2

        return psycopg2.connect(self.ws.env["DATABASE_URL"])

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        conn = self.connect()
        try:
            cur = conn.cursor()
            cur.execute(sql)
            rows = cur.fetchall() if cur.description else []
            conn.commit()
            return rows
        finally:
            conn.close()

    def run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        conn = self.connect()
        try:
            return fn(conn, self.target, *args, **kwargs)
        finally:
            conn.close()


@dataclass
class Cases:
    pushed: str
    shrunk: str
    blip: str
    moved_back: str
    bad_date: str


@pytest.fixture(params=TARGETS)
def edited(request: pytest.FixtureRequest, warehouse: Any) -> Iterator[tuple[Warehouse, Cases]]:
    """The sandbox warehouse with the histories described in the module docstring written into it."""
    wh = Warehouse(warehouse, request.param)
    today = wh.query(f"""
        select s.deal_id, s.pipeline, s.stage_order, s.amount, s.closing_date from analytics.deal_daily_states s
        join analytics.deals d on d.deal_id = s.deal_id
        where s.calendar_date = {sql_date(DAY)} and s.amount >= 1000 and s.closing_date > {sql_date(DAY + dt.timedelta(days=DUE_SOON_DAYS))}
          and s.created_date < {sql_date(ago(40))}
        order by s.deal_id""")
    stages = {
        (p, int(o)): s
        for p, s, o in wh.query(
            "select distinct pipeline, stage, stage_order from analytics.deal_daily_states where stage_order is not null"
        )
    }
    pushed, shrunk, blip, bad_date = (row[0] for row in today[:4])
    back = next(r for r in today[4:] if (r[1], int(r[2]) + 1) in stages)
    amounts = {r[0]: float(r[3]) for r in today}
    closing = {r[0]: r[4] for r in today}

    def update(deal: str, sets: str, since: dt.date | None, until: dt.date | None) -> None:
        where = [f"deal_id = '{deal}'"]
        if since:
            where.append(f"calendar_date >= {sql_date(since)}")
        if until:
            where.append(f"calendar_date <= {sql_date(until)}")
        wh.query(f"update analytics.deal_daily_states set {sets} where {' and '.join(where)}")

    c = closing[pushed]
    update(pushed, f"closing_date = {sql_date(c - dt.timedelta(days=50))}", None, ago(31))  # a push on D-30: too old
    update(pushed, f"closing_date = {sql_date(c - dt.timedelta(days=35))}", ago(30), ago(16))  # +15 on D-15
    update(pushed, f"closing_date = {sql_date(c - dt.timedelta(days=20))}", ago(15), ago(6))  # +20 on D-5
    update(
        pushed, f"closing_date = {sql_date(c + dt.timedelta(days=100))}", DAY + dt.timedelta(days=1), None
    )  # after D
    a = amounts[shrunk]
    update(shrunk, f"amount = {a * 3}", None, ago(31))  # the cut on D-30 is too old to count
    update(shrunk, f"amount = {a * 1.5}", ago(20), ago(6))  # cut from 1.5a to a on D-5
    update(blip, f"amount = {amounts[blip] + SHRINK_MIN_AMOUNT / 2}", ago(20), ago(6))
    pipeline, order = back[1], int(back[2])
    update(back[0], f"stage = '{stages[(pipeline, order + 1)]}', stage_order = {order + 1}", ago(12), ago(8))
    update(bad_date, "closing_date = date '1900-01-01'", None, None)
    yield wh, Cases(pushed=pushed, shrunk=shrunk, blip=blip, moved_back=back[0], bad_date=bad_date)


# --------------------------------------------------------------------------- the recomputation


@dataclass
class Expected:
    due_soon: set[str]
    overdue: set[str]
    quiet: set[str]
    pushed: dict[str, tuple[int, int]]  # deal -> (times, days)
    shrunk: dict[str, tuple[float, float]]  # deal -> (from, to)
    moved_back: dict[str, tuple[str, str, dt.date]]  # deal -> (from stage, to stage, day)
    amount: dict[str, float]
    owner: dict[str, str]


def recompute(wh: Warehouse) -> Expected:
    """The rules of insights.deal_flags worked out deal by deal from the rows of deal_daily_states up to DAY."""
    rows = wh.query(f"""
        select deal_id, calendar_date, owner_id, pipeline, stage, stage_order, amount, probability, closing_date,
               created_date
        from analytics.deal_daily_states
        where calendar_date <= {sql_date(DAY)} and calendar_date >= {sql_date(ago(QUIET_CEILING_DAYS + 1))}""")
    live = {r[0] for r in wh.query("select deal_id from analytics.deals")}
    [(first_day,)] = wh.query("select min(kpi_date) from analytics.kpi_daily")
    visits: dict[tuple[str, str], list[int]] = defaultdict(list)
    for pipeline, stage, days, left in wh.query("""
            select pipeline, stage, days_in_stage, left_date from analytics.deal_stage_durations
            where left_date is not null and days_in_stage is not null"""):
        if ago(USUAL_HISTORY_DAYS) < left <= DAY:
            visits[(pipeline, stage)].append(int(days))

    def usual(pipeline: str, stage: str) -> int:
        found = sorted(visits.get((pipeline, stage), []))
        if len(found) < USUAL_MIN_VISITS:
            return QUIET_DEFAULT_DAYS
        percentile = found[math.ceil(USUAL_PERCENTILE * len(found)) - 1]  # percentile_disc
        return min(QUIET_CEILING_DAYS, max(QUIET_FLOOR_DAYS, percentile))

    def plausible(d: dt.date | None) -> bool:
        return d is not None and first_day <= d <= DAY.replace(year=DAY.year + 5)

    by_deal: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for row in rows:
        by_deal[row[0]].append(row)
    out = Expected(set(), set(), set(), {}, {}, {}, {}, {})
    for deal, history in by_deal.items():
        history.sort(key=lambda r: r[1])
        now = history[-1]
        if now[1] != DAY or deal not in live:
            continue
        _, _, owner, pipeline, stage, _, amount, _, closing, created = now
        out.amount[deal], out.owner[deal] = float(amount or 0), owner
        if closing and DAY < closing <= DAY + dt.timedelta(days=DUE_SOON_DAYS):
            out.due_soon.add(deal)
        if closing and first_day <= closing <= DAY:
            out.overdue.add(deal)
        state = lambda r: (r[3], r[4], r[6], r[7], r[8])  # noqa: E731 pipeline, stage, amount, probability, closing
        changes = [cur[1] for prev, cur in zip(history, history[1:]) if state(prev) != state(cur)]
        changes += [created] if created >= ago(QUIET_CEILING_DAYS) else []
        quiet_days = (DAY - max(changes)).days if changes else QUIET_CEILING_DAYS + 1
        if quiet_days > usual(pipeline, stage):
            out.quiet.add(deal)
        window = [r for r in history if r[1] >= ago(CHANGE_WINDOW_DAYS)]
        pairs = list(zip(window, window[1:]))
        pushes = [
            (cur[8] - prev[8]).days
            for prev, cur in pairs
            if plausible(prev[8]) and plausible(cur[8]) and cur[8] > prev[8]
        ]
        if pushes:
            out.pushed[deal] = (len(pushes), sum(pushes))
        highest = max((float(r[6]) for r in window if r[6] is not None), default=None)
        if amount is not None and highest is not None:
            drop = highest - float(amount)
            if drop >= SHRINK_MIN_AMOUNT and drop / highest * 100 >= SHRINK_MIN_PCT:
                out.shrunk[deal] = (highest, float(amount))
        backs = [
            (prev[4], cur[4], cur[1])
            for prev, cur in pairs
            if prev[3] == cur[3] and prev[5] is not None and cur[5] is not None and cur[5] < prev[5]
        ]
        if backs:
            out.moved_back[deal] = backs[-1]
    return out


def rule_set(flags: deal_flags.DealFlags, rule: str) -> set[str]:
    return {d.deal_id for d in flags.with_rule(rule)}


# --------------------------------------------------------------------------- the flags


def test_the_flags_equal_a_recomputation_from_the_daily_states(edited: tuple[Warehouse, Cases]) -> None:
    """GIVEN the warehouse with a push, a cut, a blip, a step back and a 1900 closing date written into its history
    WHEN the deals open at the end of the report day are flagged
    THEN each rule's deals and numbers equal those worked out in Python from deal_daily_states up to that day:
    the push on D-30 and the one after D do not count, the blip does not fire, the 1900 date is not overdue."""
    wh, cases = edited

    flags = wh.run(deal_flags.flag_deals, DAY)
    expected = recompute(wh)

    assert {d.deal_id for d in flags.deals} == set(expected.amount)
    assert rule_set(flags, "due_soon") == expected.due_soon
    assert rule_set(flags, "overdue") == expected.overdue
    assert rule_set(flags, "quiet") == expected.quiet
    pushed = {
        d.deal_id: (d.flag("pushed").values["times"], d.flag("pushed").values["days"])
        for d in flags.with_rule("pushed")
    }
    assert pushed == expected.pushed
    shrunk = {
        d.deal_id: (d.flag("shrunk").values["from_amount"], d.flag("shrunk").values["to_amount"])
        for d in flags.with_rule("shrunk")
    }
    assert shrunk.keys() == expected.shrunk.keys()
    assert all(shrunk[k] == pytest.approx(expected.shrunk[k]) for k in shrunk)
    back = {
        d.deal_id: (
            d.flag("moved_back").values["from_stage"],
            d.flag("moved_back").values["to_stage"],
            d.flag("moved_back").values["date"],
        )
        for d in flags.with_rule("moved_back")
    }
    assert back == expected.moved_back

    # The cases written into the history fired as meant, and only those.
    assert pushed == {cases.pushed: (2, 35)}
    assert set(shrunk) == {cases.shrunk} and shrunk[cases.shrunk][0] == pytest.approx(1.5 * shrunk[cases.shrunk][1])
    assert set(back) == {cases.moved_back} and back[cases.moved_back][2] == ago(7)
    assert cases.bad_date not in rule_set(flags, "overdue") | rule_set(flags, "due_soon")
    assert expected.overdue and expected.quiet and expected.due_soon, "the sandbox day has every other case"
    # "Open at the end of the day" is the deals mart's definition, as in facts._Deals.open.
    [(open_deals,)] = wh.query(f"""select count(*) from analytics.deals where created_date <= {sql_date(DAY)}
                                   and (status = 'open' or closed_date > {sql_date(DAY)})""")
    assert len(flags.deals) == open_deals


def test_one_owners_flags_are_that_owners_share_of_the_teams(edited: tuple[Warehouse, Cases]) -> None:
    """GIVEN the edited warehouse
    WHEN the flags are read for one owner at a time
    THEN each owner's deals and flags are exactly the team's for that owner, and so is the owner's day."""
    wh, _ = edited
    team = wh.run(deal_flags.flag_deals, DAY)

    for owner_id, day in team.owners.items():
        mine = wh.run(deal_flags.flag_deals, DAY, owner_id=owner_id)
        assert mine.deals == tuple(team.of_owner(owner_id))
        assert mine.owners[owner_id] == day


# --------------------------------------------------------------------------- the team briefing


def test_the_team_briefing_says_overdue_and_quiet_as_one_set(edited: tuple[Warehouse, Cases]) -> None:
    """GIVEN the edited warehouse
    WHEN the team briefing's facts are built
    THEN the overdue fact counts the overdue deals and how many of them are quiet too, the stale fact the quiet
    deals not already overdue, and together they make the union of the two flagged sets; the deals due soon,
    the roll-up by owner and the largest deals needing attention agree with the flags."""
    wh, _ = edited

    day = wh.run(facts.build, DAY)
    expected = recompute(wh)

    overdue, quiet = expected.overdue, expected.quiet
    worth = lambda deals: sum(expected.amount[d] for d in deals)  # noqa: E731
    fact = day.get("overdue_deals")
    assert fact.values["count"] == len(overdue) and fact.values["also_quiet"] == len(overdue & quiet)
    assert fact.values["amount"] == pytest.approx(worth(overdue))
    assert fact.prompt_text().startswith(f"{len(overdue)} open deals worth {fmt_amount(worth(overdue))} are past")
    assert f"{len(overdue & quiet)} of them also without a change" in fact.prompt_text()
    stale = day.get("stale_deals")
    assert stale.values["count"] == len(quiet - overdue)
    assert stale.values["amount"] == pytest.approx(worth(quiet - overdue))
    assert stale.values["overdue_or_quiet_count"] == len(overdue | quiet)
    assert stale.values["overdue_or_quiet_amount"] == pytest.approx(worth(overdue | quiet))
    assert (
        f"overdue, quiet or both: {len(overdue | quiet)} open deals worth {fmt_amount(worth(overdue | quiet))}"
        in stale.prompt_text()
    )
    assert day.get("closing_soon").values["count"] == len(expected.due_soon)

    at_risk = overdue | quiet | set(expected.pushed) | set(expected.shrunk) | set(expected.moved_back)
    top = day.get("top_at_risk")
    largest = sorted(at_risk, key=lambda d: (-expected.amount[d], d))[:3]
    assert [d["deal_id"] for d in top.values["deals"]] == largest
    assert [r.id for r in top.entities.values() if r.kind == "deal"] == largest
    assert top.values["count"] == len(at_risk)
    by_owner = day.get("owners_at_risk")
    listed = by_owner.values["owners"]
    per_owner: dict[str, list[str]] = defaultdict(list)
    for deal in at_risk:
        per_owner[expected.owner[deal]].append(deal)
    for row in listed:
        assert row["at_risk_count"] == len(per_owner[row["owner_id"]])
        assert row["at_risk_amount"] == pytest.approx(worth(per_owner[row["owner_id"]]))
        assert row["open_count"] == sum(1 for o in expected.owner.values() if o == row["owner_id"])
    shown = (
        sum(r["at_risk_count"] for r in listed) + by_owner.values["more_count"] + by_owner.values["without_owner_count"]
    )
    assert shown == by_owner.values["count"] == len(at_risk)
    assert [r["at_risk_amount"] for r in listed] == sorted((r["at_risk_amount"] for r in listed), reverse=True)
    assert {"overdue_deals", "stale_deals", "top_at_risk"} <= set(attention_ids(day))


# --------------------------------------------------------------------------- the owners' digests


def test_each_owner_digest_names_only_that_owners_deals_and_adds_up(edited: tuple[Warehouse, Cases]) -> None:
    """GIVEN the edited warehouse
    WHEN every owner's digest is built (all at once, and one owner at a time)
    THEN both ways give the same facts; every deal a digest names belongs to its owner in the deals mart; every
    deal of the owner that needs attention is counted once with every rule that fired on it; and the figures
    add up: the at-risk, due-soon, won and lost amounts equal the listed deals' plus the rest's."""
    wh, cases = edited

    digests = wh.run(owner_facts.owner_digests, DAY)
    flags = wh.run(deal_flags.flag_deals, DAY)
    owners = dict(wh.query("select deal_id, owner_id from analytics.deals"))

    assert digests and set(digests) == {o for o, d in flags.owners.items() if d.has_news}
    named = 0
    for owner_id, digest in digests.items():
        assert wh.run(owner_facts.owner_digest, DAY, owner_id) == digest
        deals = [r.id for r in digest.entities() if r.kind == "deal"]
        named += len(deals)
        assert all(owners[d] == owner_id for d in deals), owner_id
        mine = flags.of_owner(owner_id)
        pipeline = digest.get("my_pipeline")
        assert pipeline.values["count"] == len(mine)
        assert pipeline.values["amount"] == pytest.approx(sum(d.worth for d in mine))
        for fact in digest.facts:
            if "deals" in fact.values and "more_amount" in fact.values:
                listed = fact.values["deals"]
                assert fact.values["count"] == len(listed) + fact.values["more_count"], fact.id
                assert fact.values["amount"] == pytest.approx(
                    sum(d["amount"] or 0 for d in listed) + fact.values["more_amount"]
                )
                text = fact.prompt_text()
                if fact.values["amount"]:  # a deal without an amount is said so, not "won for 0"
                    assert fmt_amount(fact.values["amount"]) in text.split(":")[0], text
                for record, slot in zip(listed, [s for s in fact.entities if s.startswith("deal")]):
                    assert fact.entities[slot].id == record["deal_id"]
                    if len(listed) > 1 and record["amount"] is not None:
                        assert f"{{{slot}}} ({fmt_amount(record['amount'])}" in fact.text, (slot, fact.text)
                if fact.values["more_count"]:
                    assert text.endswith(
                        f"and {fact.values['more_count']} more worth {fmt_amount(fact.values['more_amount'])}."
                    )
        risky = [d for d in mine if d.at_risk]
        if risky:
            fact = digest.get("my_at_risk")
            assert fact.values["count"] == len(risky) and fact.severity == "warn"
            listed = fact.values["deals"]
            assert [d["deal_id"] for d in listed] == [d.deal_id for d in risky[: len(listed)]]
            assert len({d["deal_id"] for d in listed}) == len(listed)
            for record, deal in zip(listed, risky):
                assert record["rules"] == [r for r in deal.rules if r in AT_RISK_RULES]
        else:
            assert "my_at_risk" not in digest.ids
        due = [d for d in mine if d.has("due_soon")]
        assert (digest.get("my_due_soon").values["count"] if due else 0) == len(due)

    assert named, "the digests name deals"
    # The edited deals reached their owners' digests, each with its rule in words.
    for deal, words in (
        (cases.pushed, "closing date pushed back 2 times (35 days in all)"),
        (cases.shrunk, "amount down from"),
        (cases.moved_back, "moved back from"),
    ):
        owner_id = owners[deal]
        fact = digests[owner_id].get("my_at_risk")
        if deal in [d["deal_id"] for d in fact.values["deals"]]:
            assert words in fact.prompt_text(), fact.prompt_text()
    # Every owner's at-risk deals together are the team's.
    assert sum(d.get("my_at_risk").values["count"] for d in digests.values() if "my_at_risk" in d.ids) == len(
        flags.at_risk()
    )


def test_an_owner_with_nothing_to_report_gets_no_digest(edited: tuple[Warehouse, Cases]) -> None:
    """GIVEN an owner with no deal open at the end of the day and none won or lost on it (an owner on a day
    before their first deal, and an id that owns nothing)
    WHEN their digest is asked for
    THEN there is none, and the digests of all owners leave them out."""
    wh, _ = edited
    [(first_day,)] = wh.query("select min(kpi_date) from analytics.kpi_daily")
    later = wh.query(f"""select owner_id from analytics.deals group by owner_id
                         having min(created_date) > {sql_date(first_day)} order by owner_id""")
    assert later, "the sandbox has owners whose first deal came after the org's first day"
    owner_id = later[0][0]

    assert wh.run(owner_facts.owner_digest, first_day, owner_id) is None
    assert owner_id not in wh.run(owner_facts.owner_digests, first_day)
    assert wh.run(owner_facts.owner_digest, DAY, "no-such-owner") is None


def test_an_owner_digest_shows_the_rules_in_words_and_fits_the_message(edited: tuple[Warehouse, Cases]) -> None:
    """GIVEN the edited warehouse
    WHEN every owner's digest is rendered with the standard plan
    THEN every number in the message is one of the digest's facts' (the audit passes), the deals that need
    attention are listed under Needs attention with an action that fits them, and the message fits WhatsApp."""
    from insights.audit import audit
    from insights.compose import MAX_LENGTH, compose, fallback_plan, whatsapp_length
    from insights.policy import ACTIONS, actions_for

    wh, _ = edited
    for digest in wh.run(owner_facts.owner_digests, DAY).values():
        names = wh.run(facts.entity_names, digest.entities())
        plan = fallback_plan(digest)
        message = compose(digest, plan, names, "Standard summary")

        assert audit(message, digest).ok, message.text
        assert whatsapp_length(message.text) <= MAX_LENGTH
        assert plan.headline.fact_id in ("my_won", "my_pipeline")
        if "my_at_risk" in digest.ids:
            assert "my_at_risk" in [p.fact_id for p in plan.risks]
            fact = digest.get("my_at_risk")
            assert actions_for(fact) and all(a in ACTIONS for a in actions_for(fact))
            assert fact.prompt_text().split(":")[0] in message.text.split("*Needs attention*", 1)[1]
