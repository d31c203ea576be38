"""Each deal owner's digest, and the manager's per-owner roll-up, as facts.

The team briefing says how many open deals are past their closing date and names the largest; nobody
learns whose the others are. Here the same flags (`insights.deal_flags`: one definition of overdue, quiet,
pushed, shrunk, moved back and due soon for everyone) become:

- one digest per owner (`owner_digest`, `owner_digests`): the owner's open pipeline, the deals due soon,
  every deal of theirs that needs attention, once, with every rule that fired and why, the deals they won
  and lost on the day, and where they stand among the owners over 30 days. Only exceptions are listed, and
  an owner with nothing to report (no open deal at the end of the day, nothing won or lost on it) gets
  no digest at all: a daily message that says nothing teaches people to ignore it.
- for the team briefing (`team_facts`, called by `insights.facts.build`): the owners holding the most
  pipeline that needs attention, and the largest deals that need it, with their owner and the rules.

These are `Fact`s like the team's, so the prompt, the review, the audit and the message work on them
unchanged: every number is formatted here with `insights.facts`' helpers, and deals, owners and stages are
entity slots (`{deal1}`, `{owner1}`, `{stage1}`) shown to the model as placeholders, their CRM names put
back only in the message. Lists run largest amount first and stop at a few deals ("and 3 more worth 40K"),
so a message stays within WhatsApp's limit whatever the pipeline; `values` record, for each deal listed,
its id, the rules that fired and their numbers, plus the count and amount of the rest.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any
from zoneinfo import ZoneInfo

from insights.deal_flags import (
    AT_RISK_RULES,
    DUE_SOON,
    DUE_SOON_DAYS,
    MOVED_BACK,
    OVERDUE,
    PUSHED,
    QUIET,
    QUIET_CEILING_DAYS,
    SHRUNK,
    STANDING_DAYS,
    ClosedDeal,
    DealFlags,
    Flag,
    FlaggedDeal,
    OwnerDay,
    flag_deals,
)
from insights.facts import (
    DayFacts,
    EntityKind,
    EntityRef,
    Fact,
    Money,
    _currency_facts,
    _Deals,
    _Labels,
    _verb,
    count_of,
    fmt_count,
    fmt_date,
    fmt_day,
    home_currency,
)
from warehouse import Target

# How many deals a fact lists before "and N more worth X": the at-risk list carries a reason per deal, so
# it stops sooner; a message must stay within WhatsApp's 1,600 characters with 40-character names.
LISTED = 8
AT_RISK_LISTED = 5
# The team briefing's roll-up: owners with the most pipeline needing attention, and the largest such deals.
OWNERS_LISTED = 3
TOP_AT_RISK = 3


class _Slots:
    """The entity slots of one fact ({deal1}, {stage1}, {owner1} ...), on the digest's per-run labels."""

    def __init__(self, labels: _Labels) -> None:
        self.labels = labels
        self.entities: dict[str, EntityRef] = {}

    def __call__(self, kind: EntityKind, entity_id: Any) -> str:
        ref = self.labels.ref(kind, entity_id)
        for slot, known in self.entities.items():
            if known == ref:
                return "{" + slot + "}"
        slot = f"{kind}{sum(1 for k in self.entities.values() if k.kind == kind) + 1}"
        self.entities[slot] = ref
        return "{" + slot + "}"

    def stage(self, stage: str | None) -> str:
        return self("stage", stage) if stage else "an unknown stage"


def _when(d: dt.date, day: dt.date) -> str:
    """A date near the report day without its year ('Thu 12 Nov'), a far one with it."""
    return fmt_day(d) if abs((day - d).days) < 180 else fmt_date(d)


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{fmt_count(n)}{suffix}"


def _json(values: dict[str, Any]) -> dict[str, Any]:
    """A flag's values as the facts store them (JSON: dates as ISO strings)."""
    return {k: v.isoformat() if isinstance(v, dt.date) else v for k, v in values.items()}


def reason(flag: Flag, deal: FlaggedDeal, slot: _Slots, money: Money, day: dt.date, brief: bool = False) -> str:
    """Why a rule fired on a deal, in words, with its numbers: 'past its closing date (Thu 12 Nov)'.

    `brief` is the team briefing's shorter form, which lists deals of several owners in one line.
    """
    v = flag.values
    if flag.rule == OVERDUE:
        when = _when(v["closing_date"], day)
        return f"overdue since {when}" if brief else f"past its closing date ({when})"
    if flag.rule == QUIET:
        if v["more_than_ceiling"]:
            return f"no change for more than {QUIET_CEILING_DAYS} days"
        quiet = f"no change for {v['days_quiet']} days"
        if brief:
            return quiet
        if v["usual_is_default"]:  # too few visits of the stage to know its usual: the team's default
            return f"{quiet} (flagged after {v['usual_days']})"
        return f"{quiet} where {slot.stage(deal.stage)} deals usually move within {v['usual_days']}"
    if flag.rule == PUSHED:
        if v["times"] == 1 or brief:
            return f"closing date pushed back {count_of(v['days'], 'day')}"
        return f"closing date pushed back {fmt_count(v['times'])} times ({fmt_count(v['days'])} days in all)"
    if flag.rule == SHRUNK:
        return f"amount down from {money(v['from_amount'])} to {money(v['to_amount'])}"
    if flag.rule == MOVED_BACK:
        if brief:
            return f"moved back to {slot.stage(v['to_stage'])}"
        return (
            f"moved back from {slot.stage(v['from_stage'])} to {slot.stage(v['to_stage'])} on {_when(v['date'], day)}"
        )
    if flag.rule == DUE_SOON:
        return f"closing {_when(v['closing_date'], day)}"
    raise ValueError(f"unknown rule {flag.rule!r}")


def _amount(deal: FlaggedDeal | ClosedDeal, money: Money) -> str:
    return money(deal.amount) if deal.amount is not None else "no amount"


def _deal_record(deal: FlaggedDeal, flags: Iterable[Flag]) -> dict[str, Any]:
    """What `values` keep of a listed deal: its id and amount, and each rule that fired with its numbers."""
    flags = list(flags)
    return {
        "deal_id": deal.deal_id,
        "owner_id": deal.owner_id,
        "amount": deal.amount,
        "stage": deal.stage,
        "rules": [f.rule for f in flags],
        "flags": {f.rule: _json(f.values) for f in flags},
    }


def _listed(
    items: Sequence[Any], limit: int, worth: Callable[[Any], float], money: Money
) -> tuple[list[Any], str, dict[str, Any]]:
    """The first `limit` items, the tail of the sentence for the rest ('; and 3 more worth 40K'), and its values."""
    shown, rest = list(items[:limit]), items[limit:]
    more_amount = sum(worth(i) for i in rest)
    tail = f"; and {fmt_count(len(rest))} more worth {money(more_amount)}" if rest else ""
    return shown, tail, {"more_count": len(rest), "more_amount": more_amount}


# --------------------------------------------------------------------------- the team briefing


def team_facts(flags: DealFlags, labels: _Labels, money: Money) -> Iterator[Fact]:
    """The manager's roll-up for the team briefing: `owners_at_risk` and `top_at_risk`."""
    at_risk = flags.at_risk()
    if not at_risk:
        return
    day = flags.day
    by_owner: dict[str, list[FlaggedDeal]] = {}
    for deal in at_risk:
        if deal.owner_id is not None:
            by_owner.setdefault(deal.owner_id, []).append(deal)
    ranked = sorted(by_owner.items(), key=lambda kv: (-sum(d.worth for d in kv[1]), -len(kv[1]), kv[0]))
    if ranked:
        slot = _Slots(labels)
        shown, rest = ranked[:OWNERS_LISTED], ranked[OWNERS_LISTED:]
        parts, owners = [], []
        for owner_id, deals in shown:
            mine = flags.owners[owner_id]
            risky = sum(d.worth for d in deals)
            parts.append(
                f"{slot('owner', owner_id)} {fmt_count(len(deals))} of {fmt_count(mine.open_count)} "
                f"({money(risky)} of {money(mine.open_amount)})"
            )
            owners.append(
                {
                    "owner_id": owner_id,
                    "at_risk_count": len(deals),
                    "at_risk_amount": risky,
                    "open_count": mine.open_count,
                    "open_amount": mine.open_amount,
                }
            )
        more_deals = [d for _, deals in rest for d in deals]
        tail = (
            f"; {count_of(len(rest), 'more owner')} {_verb(len(rest), 'has', 'have')} "
            f"{fmt_count(len(more_deals))} ({money(sum(d.worth for d in more_deals))})"
            if rest
            else ""
        )
        ownerless = [d for d in at_risk if d.owner_id is None]
        if ownerless:
            tail += f"; {fmt_count(len(ownerless))} without an owner ({money(sum(d.worth for d in ownerless))})"
        yield Fact(
            "owners_at_risk",
            "Deals needing attention by owner",
            "info",
            66,
            f"Open deals needing attention, by owner: {'; '.join(parts)}{tail}.",
            {
                "owners": owners,
                "more_owners": len(rest),
                "more_count": len(more_deals),
                "more_amount": sum(d.worth for d in more_deals),
                "without_owner_count": len(ownerless),
                "count": len(at_risk),
                "amount": sum(d.worth for d in at_risk),
            },
            slot.entities,
        )
    slot = _Slots(labels)
    parts = []
    for deal in at_risk[:TOP_AT_RISK]:
        owner = f", owner {slot('owner', deal.owner_id)}" if deal.owner_id is not None else ", no owner"
        reasons = ", ".join(reason(f, deal, slot, money, day, brief=True) for f in deal.risk_flags)
        parts.append(f"{slot('deal', deal.deal_id)} ({_amount(deal, money)}{owner}): {reasons}")
    yield Fact(
        "top_at_risk",
        "Largest deals needing attention",
        "warn",
        70,
        f"Largest {_verb(len(parts), 'deal', 'deals')} needing attention: {'; '.join(parts)}.",
        {
            "deals": [_deal_record(d, d.risk_flags) for d in at_risk[:TOP_AT_RISK]],
            "count": len(at_risk),
            "amount": sum(d.worth for d in at_risk),
        },
        slot.entities,
    )


# --------------------------------------------------------------------------- one owner's digest


def _digest(flags: DealFlags, owner: OwnerDay, money: Money, codes: list[str]) -> DayFacts | None:
    if not owner.has_news:
        return None
    day, labels = flags.day, _Labels()
    deals = flags.of_owner(owner.owner_id)
    at_risk = [d for d in deals if d.at_risk]
    due = [d for d in deals if d.has(DUE_SOON)]
    facts: list[Fact] = list(_currency_facts(money, codes))

    risky = sum(d.worth for d in at_risk)
    if owner.open_count:
        needing = (
            f", {fmt_count(len(at_risk))} of them needing attention ({money(risky)})"
            if at_risk
            else ", none of them needing attention"
        )
        text = f"You have {count_of(owner.open_count, 'open deal')} worth {money(owner.open_amount)}{needing}."
    else:
        text = "You have no open deal."
    facts.append(
        Fact(
            "my_pipeline",
            "Your pipeline",
            "info",
            74,
            text,
            {
                "count": owner.open_count,
                "amount": owner.open_amount,
                "at_risk_count": len(at_risk),
                "at_risk_amount": risky,
            },
        )
    )

    if at_risk:
        slot = _Slots(labels)
        shown, tail, more = _listed(at_risk, AT_RISK_LISTED, lambda d: d.worth, money)
        parts = [
            f"{slot('deal', d.deal_id)} ({_amount(d, money)}, {slot.stage(d.stage)}): "
            + ", ".join(reason(f, d, slot, money, day) for f in d.risk_flags)
            for d in shown
        ]
        n = len(at_risk)
        facts.append(
            Fact(
                "my_at_risk",
                "Your deals needing attention",
                "warn",
                80,
                f"{count_of(n, 'open deal')} of yours worth {money(risky)} {_verb(n, 'needs', 'need')} attention: "
                f"{'; '.join(parts)}{tail}.",
                {
                    "count": n,
                    "amount": risky,
                    "deals": [_deal_record(d, d.risk_flags) for d in shown],
                    **more,
                    "rules": {rule: sum(1 for d in at_risk if d.has(rule)) for rule in AT_RISK_RULES},
                },
                slot.entities,
            )
        )

    if due:
        slot = _Slots(labels)
        shown, tail, more = _listed(due, LISTED, lambda d: d.worth, money)
        parts = [
            f"{slot('deal', d.deal_id)} ({_amount(d, money)}, {reason(d.flag(DUE_SOON), d, slot, money, day)})"
            for d in shown
        ]
        n, amount = len(due), sum(d.worth for d in due)
        window_end = day + dt.timedelta(days=DUE_SOON_DAYS)
        facts.append(
            Fact(
                "my_due_soon",
                "Your deals closing soon",
                "info",
                65,
                f"{count_of(n, 'open deal')} of yours worth {money(amount)} {_verb(n, 'is', 'are')} due to close by "
                f"{fmt_day(window_end)}: {', '.join(parts)}{tail}.",
                {
                    "count": n,
                    "amount": amount,
                    "window_end": window_end.isoformat(),
                    "deals": [_deal_record(d, [d.flag(DUE_SOON)]) for d in shown],
                    **more,
                },
                slot.entities,
            )
        )

    for fact_id, title, closed, verb, severity, priority in (
        ("my_won", "Your wins", owner.won, "won", "good", 85),
        ("my_lost", "Your losses", owner.lost, "lost", "info", 73),
    ):
        if not closed:
            continue
        slot = _Slots(labels)
        shown, tail, more = _listed(closed, LISTED, lambda d: d.worth, money)
        total = sum(d.worth for d in closed)
        if len(closed) == 1:
            listing = slot("deal", closed[0].deal_id)
        else:
            listing = ", ".join(f"{slot('deal', d.deal_id)} ({_amount(d, money)})" for d in shown) + tail
        # A deal without an amount in the CRM is not "won for 0".
        worth = (
            f"{'for' if verb == 'won' else 'worth'} {money(total)}"
            if any(d.amount is not None for d in closed)
            else "without an amount in the CRM"
        )
        facts.append(
            Fact(
                fact_id,
                title,
                severity,
                priority,  # type: ignore[arg-type]
                f"You {verb} {count_of(len(closed), 'deal')} {worth}: {listing}.",
                {
                    "count": len(closed),
                    "amount": total,
                    "deals": [{"deal_id": d.deal_id, "amount": d.amount} for d in shown],
                    **more,
                },
                slot.entities,
            )
        )

    standing = owner.standing
    if standing:
        facts.append(
            Fact(
                "my_standing",
                "Your standing",
                "good" if standing.rank == 1 else "info",
                44,
                f"Over the {STANDING_DAYS} days to {fmt_day(day)} you rank {_ordinal(standing.rank)} of "
                f"{count_of(standing.owners, 'owner')} with a win by amount won: "
                f"{count_of(standing.won, 'deal')} won for {money(standing.won_amount)}.",
                {
                    "rank": standing.rank,
                    "owners": standing.owners,
                    "won": standing.won,
                    "won_amount": standing.won_amount,
                    "since": standing.since.isoformat(),
                },
            )
        )

    facts.sort(key=lambda f: (-f.priority, f.id))
    return DayFacts(day, tuple(facts))


def _money(conn: Any, target: Target, day: dt.date) -> tuple[Money, list[str]]:
    foreign, codes = _Deals(conn, target, day).foreign_currency_deals()
    return Money(home_currency(conn), foreign), codes


def owner_digest(conn: Any, target: Target, day: dt.date, owner_id: str, tz: ZoneInfo | None = None) -> DayFacts | None:
    """The facts of one owner's digest for `day`, or None when the owner has nothing to report.

    Reads only that owner's deals. `tz` is accepted as `facts.build` accepts it; the marts' days are already
    cut in the org's time zone, so the digest needs none.
    """
    flags = flag_deals(conn, target, day, owner_id=owner_id)
    owner = flags.owners.get(owner_id, OwnerDay(owner_id))
    if not owner.has_news:
        return None
    return _digest(flags, owner, *_money(conn, target, day))


def owner_digests(
    conn: Any, target: Target, day: dt.date, tz: ZoneInfo | None = None, flags: DealFlags | None = None
) -> dict[str, DayFacts]:
    """Every owner's digest for `day`, keyed by owner id (owners with nothing to report left out), from one
    read of the flags: the same queries for twenty owners as for one. Pass `flags` (the whole team's, of
    `day`) to share one read with `facts.build(..., flags=...)`."""
    if flags is None:
        flags = flag_deals(conn, target, day)
    elif flags.day != day or flags.owner_id is not None:
        raise ValueError(f"flags of {flags.day} (owner {flags.owner_id}) cannot make every owner's digest of {day}")
    money, codes = _money(conn, target, day)
    digests = {owner_id: _digest(flags, owner, money, codes) for owner_id, owner in flags.owners.items()}
    return {owner_id: digest for owner_id, digest in digests.items() if digest is not None}
