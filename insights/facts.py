"""The day's facts, computed in code from the marts: every number the briefing may show.

The model never computes or writes a number. It only picks facts by id (see
`insights.llm`), and every figure in the message is one of the strings formatted
here. Entities (deals, owners, stages) appear in a fact as opaque placeholders
(`[D1]`, `[U1]`): their names are CRM free text, which could carry an
injected instruction, so they are looked up separately (`entity_names`) and put
back only into the final message, never into the prompt.

Day metrics come from `analytics.kpi_daily`; entity facts (overdue deals, the
biggest win, ...) use the same definition of "open at the end of day d" as
kpi_daily: created on or before d and still open, or closed after d.
Deals due soon, overdue and quiet (stale), the owners holding the deals that
need attention and the largest of those deals are read from
`insights.deal_flags`, the rules the owners' digests (`insights.owner_facts`)
use too, so a deal is overdue in the team briefing exactly when it is in its
owner's digest. `pipeline_by_stage` describes the current state of the
pipeline and `data_quality_issues` the CRM records that break a sanity rule.

Money is in the org's home currency (the unit of kpi_daily's amounts, the
`amount` of the deals mart). When some deals are in another currency, every
amount is shown with the home currency's code, so nobody reads yen as dollars.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

from warehouse import MARTS_SCHEMA, ConfigError, Target, as_date, error_reason, placeholder

if TYPE_CHECKING:
    from insights.deal_flags import DealFlags

Severity = Literal["good", "info", "warn"]
EntityKind = Literal["deal", "owner", "stage"]

# Deals without any change for this many days count as stale (quiet), in a stage with too little history to
# know how long its deals usually sit (insights.deal_flags).
STALE_DAYS = 30
# "Closing soon" looks this many days past the report date.
CLOSING_WINDOW_DAYS = 7
# A pipeline move of this share (in percent) or more is worth a warning.
PIPELINE_DROP_WARN_PCT = 5.0


class FactsError(ConfigError):
    """The marts cannot answer for the requested day (missing tables or no KPIs for that date)."""


@dataclass(frozen=True)
class EntityRef:
    """A deal, owner or stage a fact talks about: its warehouse id and its per-run placeholder."""

    kind: EntityKind
    id: str
    label: str  # "D1", "U2", "S1": what the prompt shows instead of the name

    @property
    def placeholder(self) -> str:
        return f"[{self.label}]"


@dataclass(frozen=True)
class Fact:
    """One statement about the day, with every number already formatted.

    `text` is a sentence whose entity slots (`{deal}`, `{owner}`, `{stage}`) are
    filled with placeholders for the prompt and with names for the message.
    """

    id: str
    title: str
    severity: Severity
    priority: int  # 0..100, most important first; used for ordering and trimming
    text: str
    values: dict[str, Any] = field(default_factory=dict)
    entities: dict[str, EntityRef] = field(default_factory=dict)

    def render(self, name_of: Callable[[EntityRef], str]) -> str:
        return self.text.format(**{slot: name_of(ref) for slot, ref in self.entities.items()})

    def prompt_text(self) -> str:
        return self.render(lambda ref: ref.placeholder)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["prompt_text"] = self.prompt_text()
        return data


@dataclass(frozen=True)
class DayFacts:
    """All the facts of one report date, most important first."""

    report_date: dt.date
    facts: tuple[Fact, ...]

    @property
    def ids(self) -> list[str]:
        return [f.id for f in self.facts]

    def get(self, fact_id: str) -> Fact:
        for fact in self.facts:
            if fact.id == fact_id:
                return fact
        raise KeyError(fact_id)

    def entities(self) -> list[EntityRef]:
        seen: dict[tuple[str, str], EntityRef] = {}
        for fact in self.facts:
            for ref in fact.entities.values():
                seen.setdefault((ref.kind, ref.id), ref)
        return list(seen.values())

    def top(self, limit: int) -> DayFacts:
        """The `limit` most important facts (what the prompt keeps when it must shrink)."""
        return DayFacts(self.report_date, self.facts[:limit])

    def as_json(self) -> dict[str, Any]:
        return {"report_date": self.report_date.isoformat(), "facts": [f.as_json() for f in self.facts]}


# --------------------------------------------------------------------------- formatting


def _exact(x: float | Decimal) -> Decimal:
    """A float as the decimal a reader sees (its shortest repr), not its binary value: 0.145 stays 0.145."""
    return x if isinstance(x, Decimal) else Decimal(repr(float(x)))


def half_up(x: float | Decimal, places: int = 0) -> Decimal:
    """`x` rounded as people round, halves away from zero (1/8 -> 13%, not Python's banker's 12%)."""
    return _exact(x).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def fmt_count(n: int) -> str:
    return f"{n:,}"


def count_of(n: int, noun: str, plural: str | None = None) -> str:
    """'1 deal', '3 deals': the sentences are read by people, so they agree in number."""
    return f"{fmt_count(n)} {noun if n == 1 else plural or noun + 's'}"


def _verb(n: int, singular: str, plural: str) -> str:
    return singular if n == 1 else plural


def fmt_amount(x: float) -> str:
    """Amounts at three significant digits: 9,850 / 84.5K / 845K / 1.24M / 12.4M / 1.24B."""
    value = abs(x)
    sign = "-" if x < 0 and half_up(value) != 0 else ""
    if value < 10_000:
        return f"{sign}{half_up(value):,}"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale * 0.9995 or unit == "K":
            scaled = value / scale
            digits = 2 if scaled < 10 else 1 if scaled < 100 else 0
            text = f"{half_up(scaled, digits)}"
            return f"{sign}{text.rstrip('0').rstrip('.') if digits else text}{unit}"
    raise AssertionError("unreachable")


def fmt_ratio(r: float) -> str:
    """A rate as a whole percentage: 0.4167 -> 42%, 0.125 -> 13%."""
    return f"{half_up(_exact(r) * 100)}%"


def fmt_pct(p: float) -> str:
    """A percentage given in percent, whole: 12.5 -> 13%."""
    return f"{half_up(p)}%"


def fmt_change_pct(p: float) -> str:
    """A signed change with one decimal: +1.0%, -0.3%."""
    rounded = half_up(p, 1)
    if rounded == 0:
        return "+0.0%"  # not "-0.0%"
    return f"{'+' if rounded > 0 else ''}{rounded}%"


def fmt_number(x: float) -> str:
    """An average or other non-integer count: one decimal, none when whole."""
    return f"{half_up(x, 1):,}".removesuffix(".0")


def fmt_date(d: dt.date) -> str:
    return f"{d:%a} {d.day} {d:%b %Y}"


def fmt_day(d: dt.date) -> str:
    """A date within the briefing's fortnight, without the year: 'Fri 27 Nov'."""
    return f"{d:%a} {d.day} {d:%b}"


def movement(delta: float, base: float | None, money: Callable[[float], str] = fmt_amount) -> str:
    """'up 12.3K (+1.0%)', 'down 4,000 (-0.3%)' or 'unchanged': direction words come from the data."""
    if half_up(delta) == 0:
        return "unchanged"
    word = "up" if delta > 0 else "down"
    pct = f" ({fmt_change_pct(delta / base * 100)})" if base else ""
    return f"{word} {money(abs(delta))}{pct}"


# --------------------------------------------------------------------------- reading the marts


def org_timezone() -> ZoneInfo:
    """The org's timezone (CRM_TIMEZONE, default UTC): the marts cut days in it."""
    name = os.environ.get("CRM_TIMEZONE", "").strip() or "UTC"
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"CRM_TIMEZONE: unknown time zone {name!r}") from exc


def _query(conn: Any, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    cur = conn.cursor()
    try:
        cur.execute(sql, tuple(params))
        return list(cur.fetchall())
    except Exception as exc:  # both drivers: a missing mart is the usual cause
        text = error_reason(exc)
        if "does not exist" in text or "not found" in text.lower():
            raise FactsError(f"the marts are missing ({text}); run `dbt build` first") from exc
        raise
    finally:
        cur.close()


def default_report_date(conn: Any, target: Target, today: dt.date) -> dt.date:
    """The last complete day before the org's today: yesterday in the org's time, after a sync this morning.

    `today` is the machine's date read in the org's time zone (CRM_TIMEZONE). The org's today is that, or the
    last day of kpi_daily when it is later: the marts end on the day of the last sync as the org dates it, in
    the zone they were built in, so when the org's clock runs ahead of the machine's (its records carry times
    after our now) or the zone runs ahead of the one this process was given, the org's yesterday is still
    the day before that, not the machine's yesterday. kpi_daily marks the day of the last sync as
    incomplete (`is_complete`), so a briefing after a sync that failed last night reports on the last day
    the data covers in full, not on a half day. When the marts hold no complete day (a brand-new org), the
    latest kpi_date is used.
    """
    p = placeholder(target)
    [(complete_before_today, complete, latest)] = _query(
        conn,
        f"select max(case when kpi_date < {p} and is_complete then kpi_date end), "
        f"max(case when is_complete then kpi_date end), max(kpi_date) from {MARTS_SCHEMA}.kpi_daily",
        (today,),
    )
    if latest is None:
        raise FactsError(f"{MARTS_SCHEMA}.kpi_daily is empty; load the CRM and run `dbt build` first")
    org_is_ahead = as_date(latest) > today
    return as_date((complete if org_is_ahead else complete_before_today) or latest)


def home_currency(conn: Any) -> str:
    """ISO code of the org's home currency: the unit kpi_daily gives its amounts."""
    found = _query(conn, f"select min(unit) from {MARTS_SCHEMA}.kpi_daily where metric = 'open_pipeline_amount'")
    return str(found[0][0]) if found and found[0][0] else ""


@dataclass(frozen=True)
class Money:
    """How the facts write an amount: the home currency's code follows it once the org has deals in other
    currencies (then every total was converted, and the reader must know into what)."""

    currency: str
    foreign_deals: int = 0

    @property
    def labelled(self) -> bool:
        return bool(self.currency) and self.foreign_deals > 0

    def __call__(self, x: float) -> str:
        return f"{fmt_amount(x)} {self.currency}" if self.labelled else fmt_amount(x)

    def original(self, amount: Any, currency: Any) -> str:
        """' (50M JPY)' after a converted amount, when the deal is in another currency; '' otherwise."""
        if amount is None or not currency or currency == self.currency:
            return ""
        return f" ({fmt_amount(float(amount))} {currency})"


class _Labels:
    """Per-run placeholders: the first deal mentioned is D1, the first owner U1, ..."""

    PREFIX = {"deal": "D", "owner": "U", "stage": "S"}

    def __init__(self) -> None:
        self._refs: dict[tuple[str, str], EntityRef] = {}

    def ref(self, kind: EntityKind, entity_id: Any) -> EntityRef:
        key = (kind, str(entity_id))
        if key not in self._refs:
            n = sum(1 for k in self._refs if k[0] == kind) + 1
            self._refs[key] = EntityRef(kind, str(entity_id), f"{self.PREFIX[kind]}{n}")
        return self._refs[key]


class _Kpis:
    """analytics.kpi_daily around the report date: the day itself and the 30 days (or the month) before."""

    def __init__(self, conn: Any, target: Target, day: dt.date) -> None:
        p = placeholder(target)
        self.day = day
        self.month_start = day.replace(day=1)
        first = min(self.ago(29), self.month_start)
        rows = _query(
            conn,
            f"select kpi_date, metric, value from {MARTS_SCHEMA}.kpi_daily where kpi_date between {p} and {p}",
            (first, day),
        )
        self._values = {(as_date(k), m): None if v is None else float(v) for k, m, v in rows}
        if not any(k == day for k, _ in self._values):
            [(lo, hi)] = _query(conn, f"select min(kpi_date), max(kpi_date) from {MARTS_SCHEMA}.kpi_daily")
            span = f"it holds {lo} to {hi}" if lo else "it is empty"
            raise FactsError(f"no KPIs for {day} in {MARTS_SCHEMA}.kpi_daily ({span})")

    def ago(self, days: int) -> dt.date:
        return self.day - dt.timedelta(days=days)

    def value(self, metric: str, days_ago: int = 0) -> float | None:
        """The metric on the report date (or `days_ago` before); None when undefined or out of range."""
        return self._values.get((self.ago(days_ago), metric))

    def amount(self, metric: str) -> float:
        return self.value(metric) or 0.0

    def count(self, metric: str) -> int:
        return int(self.value(metric) or 0)

    def total(self, metric: str, since: dt.date, until: dt.date | None = None) -> float:
        until = until or self.day
        return sum(v or 0.0 for (day, m), v in self._values.items() if m == metric and since <= day <= until)


class _Deals:
    """Questions to analytics.deals about the report date.

    "Open" means open at the end of that day, as kpi_daily defines it, so the
    counts here agree with the open pipeline even for a past date.
    """

    def __init__(self, conn: Any, target: Target, day: dt.date) -> None:
        self.conn, self.p, self.day = conn, placeholder(target), day
        self.open = f"created_date <= {self.p} and (status = 'open' or closed_date > {self.p})"

    def foreign_currency_deals(self) -> tuple[int, list[str]]:
        """How many deals open at the end of the day or closed on it are in another currency, and which."""
        rows = _query(
            self.conn,
            f"select currency_code, count(*) from {MARTS_SCHEMA}.deals "
            f"where currency_code <> home_currency_code and (({self.open}) or closed_date = {self.p}) "
            f"group by currency_code order by currency_code",
            (self.day, self.day, self.day),
        )
        return sum(int(n) for _, n in rows), [str(code) for code, _ in rows]

    def largest_with_currency(
        self, where: str, *params: Any
    ) -> tuple[Any, Any, float, dt.date | None, Any, Any] | None:
        """(deal_id, owner_id, amount, closing_date) of the largest matching deal (home currency), its amount
        in its own currency and that currency's code."""
        found = _query(
            self.conn,
            f"select deal_id, owner_id, coalesce(amount, 0), closing_date, amount_in_currency, currency_code "
            f"from {MARTS_SCHEMA}.deals where {where} order by amount desc nulls last, deal_id limit 1",
            params,
        )
        if not found:
            return None
        deal_id, owner_id, amount, closing, original, currency = found[0]
        return deal_id, owner_id, float(amount), as_date(closing) if closing else None, original, currency

    def best_owner(self, since: dt.date) -> tuple[Any, int, float] | None:
        """(owner_id, deals won, amount won) of the owner who won the most since `since`."""
        found = _query(
            self.conn,
            f"select owner_id, count(*), coalesce(sum(amount), 0) from {MARTS_SCHEMA}.deals "
            f"where status = 'won' and closed_date between {self.p} and {self.p} "
            f"group by owner_id order by 3 desc, owner_id limit 1",
            (since, self.day),
        )
        return (found[0][0], int(found[0][1]), float(found[0][2])) if found else None


def build(
    conn: Any, target: Target, report_date: dt.date, timezone: ZoneInfo | None = None, flags: DealFlags | None = None
) -> DayFacts:
    """Compute the facts of `report_date` from the marts, most important first.

    `flags` are `insights.deal_flags.flag_deals(conn, target, report_date)` when the caller has them already
    (the owners' digests read the same: `owner_facts.owner_digests(..., flags=...)`), read here otherwise.
    `timezone` is accepted for callers that pass the org's: the marts' days are already cut in it, and no fact
    needs it any more (quiet deals are read from deal_daily_states' evenings, not from modified_at).
    """
    # anomalies, deal_flags and owner_facts read the marts with this module's helpers: imported here, not at the top.
    from insights.anomalies import anomaly_facts
    from insights.deal_flags import flag_deals
    from insights.owner_facts import team_facts

    kpis = _Kpis(conn, target, report_date)
    deals = _Deals(conn, target, report_date)
    if flags is None:
        flags = flag_deals(conn, target, report_date)
    elif flags.day != report_date or flags.owner_id is not None:
        raise ValueError(
            f"flags of {flags.day} (owner {flags.owner_id}) cannot make the team briefing of {report_date}"
        )
    labels = _Labels()
    foreign, codes = deals.foreign_currency_deals()
    money = Money(home_currency(conn), foreign)
    facts = [
        *_currency_facts(money, codes),
        *_pipeline_facts(kpis, money),
        *_lead_facts(kpis),
        *_outcome_facts(kpis, money),
        *anomaly_facts(conn, target, report_date, money),
        *_open_deal_facts(flags, labels, money),
        *team_facts(flags, labels, money),
        *_top_facts(deals, labels, money),
        *_stage_facts(conn, labels, money),
        *_owner_standing_facts(conn, target, report_date, labels, money),
        *_data_quality_facts(conn),
    ]
    facts.sort(key=lambda f: (-f.priority, f.id))
    return DayFacts(report_date, tuple(facts))


def _currency_facts(money: Money, codes: list[str]) -> Iterator[Fact]:
    """Which currency the amounts are in; said loudly once deals in other currencies were converted."""
    if not money.currency:
        return
    converted = (
        f"; {count_of(money.foreign_deals, 'deal')} in {', '.join(codes)} {_verb(money.foreign_deals, 'is', 'are')} "
        f"converted at {_verb(money.foreign_deals, 'its', 'their')} own exchange rate"
        if money.labelled
        else ""
    )
    yield Fact(
        "currency",
        "Currency",
        "info",
        62 if money.labelled else 10,
        f"Amounts are in {money.currency}, the CRM's home currency{converted}.",
        {"currency": money.currency, "foreign_currency_deals": money.foreign_deals, "foreign_currencies": codes},
    )


# The rules of data_quality_issues, as a sales leader would name the fix.
_RULE_WORDS = {
    "negative_amount": "a negative amount",
    "no_usable_exchange_rate": "no exchange rate",
    "probability_outside_0_to_100": "a probability outside 0-100%",
    "closing_date_before_creation": "a closing date before the deal was created",
    "closing_date_implausible": "an implausible closing date",
    "stage_in_no_pipeline": "a stage in no pipeline",
    "owner_not_a_user": "an owner who is not a CRM user",
}


def _data_quality_facts(conn: Any) -> Iterator[Fact]:
    """How many CRM records break a sanity rule (the marts keep their bad values out of the totals)."""
    rows = _query(
        conn,
        f"select rule, count(distinct {_record_key()}) from {MARTS_SCHEMA}.data_quality_issues group by rule order by 2 desc, rule",
    )
    if not rows:
        return
    [(records,)] = _query(conn, f"select count(distinct {_record_key()}) from {MARTS_SCHEMA}.data_quality_issues")
    records = int(records)
    parts = ", ".join(f"{fmt_count(int(n))} with {_RULE_WORDS.get(rule, rule.replace('_', ' '))}" for rule, n in rows)
    yield Fact(
        "data_quality",
        "CRM records to fix",
        "warn",
        57,
        f"{count_of(records, 'CRM record')} {_verb(records, 'needs', 'need')} fixing ({parts}); "
        f"{_verb(records, 'its', 'their')} bad values are kept out of the totals.",
        {"records": records, "by_rule": {rule: int(n) for rule, n in rows}},
    )


def _owner_standing_facts(conn: Any, target: Target, day: dt.date, labels: _Labels, money: Money) -> Iterator[Fact]:
    """The owners' standings in the month to date: won amount, deals won and their open pipeline that evening.

    Read from owner_performance_daily, so each win counts for the owner who had the deal when it was won.
    """
    p = placeholder(target)
    rows = _query(
        conn,
        f"select owner_id, sum(deals_won), sum(deals_won_amount), "
        f"sum(case when activity_date = {p} then open_pipeline_amount else 0 end) "
        f"from {MARTS_SCHEMA}.owner_performance_daily where activity_date between {p} and {p} and owner_id is not null "
        f"group by owner_id having sum(deals_won) > 0 order by 3 desc, 2 desc, owner_id limit 3",
        (day, day.replace(day=1), day),
    )
    if not rows:
        return
    slots = {f"owner{n}": labels.ref("owner", owner_id) for n, (owner_id, *_) in enumerate(rows, 1)}
    parts = [
        f"{{owner{n}}} {money(float(amount))} ({count_of(int(won), 'win')}, {money(float(pipeline))} open)"
        for n, (_, won, amount, pipeline) in enumerate(rows, 1)
    ]
    yield Fact(
        "owner_standings",
        "Owners this month",
        "info",
        44,
        f"Month to date, by amount won: {'; '.join(parts)}.",
        {
            "owners": [
                {"won": int(won), "won_amount": float(amount), "open_pipeline_amount": float(pipeline)}
                for _, won, amount, pipeline in rows
            ],
            "month_start": day.replace(day=1).isoformat(),
        },
        slots,
    )


def _record_key() -> str:
    return "module || ':' || record_id"


def _pipeline_facts(k: _Kpis, money: Money) -> Iterator[Fact]:
    amount, count = k.amount("open_pipeline_amount"), k.count("open_pipeline_count")
    weighted = k.amount("open_pipeline_weighted_amount")
    yield Fact(
        "open_pipeline",
        "Open pipeline",
        "info",
        74,
        f"Open pipeline is {money(amount)} across {count_of(count, 'deal')} (weighted {money(weighted)}).",
        {"amount": amount, "count": count, "weighted_amount": weighted},
    )
    for fact_id, days, since in (
        ("pipeline_change_1d", 1, "since the day before"),
        ("pipeline_change_7d", 7, "over the last 7 days"),
    ):
        before = k.value("open_pipeline_amount", days)
        if before is None:
            continue
        delta = amount - before
        pct = delta / before * 100 if before else None
        dropping = pct is not None and pct <= -PIPELINE_DROP_WARN_PCT
        yield Fact(
            fact_id,
            f"Pipeline change ({'day' if days == 1 else 'week'})",
            "warn" if dropping else "info",
            min(95, 45 + int(abs(pct or 0) * 4)) - (0 if days == 1 else 5),
            f"Open pipeline is {movement(delta, before, money)} {since} "
            + (f"(from {money(before)})." if half_up(delta) else f"({money(before)})."),
            {"amount": amount, "previous_amount": before, "change": delta, "change_pct": pct, "days": days},
        )


def _lead_trend_words(change_pct: float) -> str:
    """'up 12% on', 'down 3% on', or 'level with' when the change rounds to no whole percent: "up 0%" read
    as a rise in the message, and a model comment echoed it."""
    if half_up(abs(change_pct)) == 0:
        return "level with"
    return f"{'up' if change_pct > 0 else 'down'} {fmt_pct(abs(change_pct))} on"


def _lead_facts(k: _Kpis) -> Iterator[Fact]:
    leads = k.count("leads_created")
    avg7 = k.total("leads_created", k.ago(7), k.ago(1)) / 7
    yield Fact(
        "new_leads",
        "New leads",
        "good" if leads > avg7 else "info",
        60 if leads else 35,
        f"{count_of(leads, 'new lead') if leads else 'No new lead'} came in "
        f"(the 7 days before averaged {fmt_number(avg7)} a day).",
        {"count": leads, "previous_7d_daily_average": round(avg7, 1)},
    )
    week, prev_week = int(k.total("leads_created", k.ago(6))), int(k.total("leads_created", k.ago(13), k.ago(7)))
    if prev_week:
        change = (week - prev_week) / prev_week * 100
        yield Fact(
            "lead_trend_7d",
            "Lead trend",
            "warn" if change <= -20 else "info",
            40 + min(30, int(abs(change) / 2)),
            f"{count_of(week, 'lead')} in the last 7 days, {_lead_trend_words(change)} the 7 days before "
            f"({fmt_count(prev_week)}).",
            {"count_7d": week, "previous_7d": prev_week, "change_pct": change},
        )
    converted, converted_30d = k.count("leads_converted"), int(k.total("leads_converted", k.ago(29)))
    yield Fact(
        "leads_converted",
        "Conversions",
        "good" if converted else "info",
        55 if converted else 25,
        f"{count_of(converted, 'lead') if converted else 'No lead'} converted "
        f"({fmt_count(converted_30d)} in the last 30 days).",
        {"count": converted, "count_30d": converted_30d},
    )


def _outcome_facts(k: _Kpis, money: Money) -> Iterator[Fact]:
    created, created_amount = k.count("deals_created"), k.amount("deals_created_amount")
    yield Fact(
        "new_deals",
        "New deals",
        "info",
        50 if created else 25,
        f"{count_of(created, 'new deal')} created, worth {money(created_amount)}."
        if created
        else "No new deal created.",
        {"count": created, "amount": created_amount},
    )
    won, won_amount = k.count("deals_won"), k.amount("deals_won_amount")
    won_mtd, won_mtd_amount = int(k.total("deals_won", k.month_start)), k.total("deals_won_amount", k.month_start)
    month_to_date = f"(month to date: {fmt_count(won_mtd)} for {money(won_mtd_amount)})"
    yield Fact(
        "deals_won",
        "Deals won",
        "good" if won else "info",
        85 if won else 45,
        f"{count_of(won, 'deal')} won for {money(won_amount)} {month_to_date}."
        if won
        else f"No deal won {month_to_date}.",
        {"count": won, "amount": won_amount, "count_mtd": won_mtd, "amount_mtd": won_mtd_amount},
    )
    lost, lost_amount = k.count("deals_lost"), k.amount("deals_lost_amount")
    # Losses lead only when they outweigh the wins and matter against the pipeline's size.
    heavy = lost > 0 and lost_amount > won_amount and lost_amount >= 0.01 * k.amount("open_pipeline_amount")
    yield Fact(
        "deals_lost",
        "Deals lost",
        "warn" if heavy else "info",
        73 if heavy else 55 if lost else 20,
        f"{count_of(lost, 'deal')} lost, worth {money(lost_amount)}." if lost else "No deal lost.",
        {"count": lost, "amount": lost_amount},
    )
    rate, rate_30d = k.value("win_rate"), k.value("win_rate_30d")
    closed_30d = int(k.total("deals_won", k.ago(29)) + k.total("deals_lost", k.ago(29)))
    if rate is None and rate_30d is None:
        return
    day_part = (
        f"The win rate was {fmt_ratio(rate)} ({fmt_count(won)} won of {fmt_count(won + lost)} closed)"
        if rate is not None
        else "No deal closed"
    )
    month_part = (
        f"the 30-day win rate is {fmt_ratio(rate_30d)} over {count_of(closed_30d, 'closed deal')}"
        if rate_30d is not None
        else "no deal closed in the last 30 days"
    )
    low = rate is not None and rate_30d is not None and rate < rate_30d - 0.15
    yield Fact(
        "win_rate",
        "Win rate",
        "warn" if low else "info",
        50,
        f"{day_part}; {month_part}.",
        {"win_rate": rate, "win_rate_30d": rate_30d, "closed_30d": closed_30d},
    )


def _open_deal_facts(flags: DealFlags, labels: _Labels, money: Money) -> Iterator[Fact]:
    """Deals due soon, overdue and quiet, by the rules of `insights.deal_flags` (the owners' digests read the
    same flags, so a deal overdue in an owner's digest is overdue here): overdue and quiet deals overlap, so
    the stale fact counts only the quiet deals not already overdue and says what both come to."""
    d = flags.day
    due = flags.with_rule("due_soon")
    if due:
        # Dates, not "in 3 days": the window counts from the report date, which is not the day it is read.
        n, amount, largest = len(due), sum(x.worth for x in due), due[0]
        window_end = d + dt.timedelta(days=CLOSING_WINDOW_DAYS)
        closing = largest.closing_date or window_end
        yield Fact(
            "closing_soon",
            "Closing soon",
            "info",
            65,
            f"{count_of(n, 'open deal')} worth {money(amount)} {_verb(n, 'is', 'are')} due to close by "
            f"{fmt_day(window_end)}; {_verb(n, 'it', 'the largest')} is {{deal}} ({money(largest.worth)}, "
            f"owner {{owner}}, closing {fmt_day(closing)}).",
            {
                "count": n,
                "amount": amount,
                "window_end": window_end.isoformat(),
                "largest_amount": largest.worth,
                "largest_closing_date": closing.isoformat(),
                "largest_due_in_days": (closing - d).days,
            },
            {"deal": labels.ref("deal", largest.deal_id), "owner": labels.ref("owner", largest.owner_id)},
        )
    overdue = flags.with_rule("overdue")
    quiet = flags.with_rule("quiet")
    both = [x for x in overdue if x.has("quiet")]
    if overdue:
        n, amount, largest = len(overdue), sum(x.worth for x in overdue), overdue[0]
        also = (
            f", {'also' if n == 1 else fmt_count(len(both)) + ' of them also'} without a change for longer than usual"
            if both
            else ""
        )
        yield Fact(
            "overdue_deals",
            "Overdue deals",
            "warn",
            72,
            f"{count_of(n, 'open deal')} worth {money(amount)} {_verb(n, 'is', 'are')} past "
            f"{_verb(n, 'its', 'their')} closing date{also}; {_verb(n, 'it', 'the largest')} is {{deal}} "
            f"({money(largest.worth)}, owner {{owner}}).",
            {
                "count": n,
                "amount": amount,
                "largest_amount": largest.worth,
                "also_quiet": len(both),
                "also_quiet_amount": sum(x.worth for x in both),
            },
            {"deal": labels.ref("deal", largest.deal_id), "owner": labels.ref("owner", largest.owner_id)},
        )
    quiet_only = [x for x in quiet if not x.has("overdue")]
    if quiet_only:
        n, amount = len(quiet_only), sum(x.worth for x in quiet_only)
        union, union_amount = len(overdue) + n, sum(x.worth for x in overdue) + amount
        together = (
            f"; overdue, quiet or both: {count_of(union, 'open deal')} worth {money(union_amount)}" if overdue else ""
        )
        yield Fact(
            "stale_deals",
            "Stale deals",
            "warn",
            58,
            f"{count_of(n, 'open deal')} worth {money(amount)}{' not yet overdue' if overdue else ''} "
            f"{_verb(n, 'has', 'have')} had no change for longer than {_verb(n, 'its', 'their')} stage usually "
            f"takes{together}.",
            {
                "count": n,
                "amount": amount,
                "overdue_or_quiet_count": union,
                "overdue_or_quiet_amount": union_amount,
                "also_overdue": len(both),
                "days": STALE_DAYS,
            },
        )


def _top_facts(deals: _Deals, labels: _Labels, money: Money) -> Iterator[Fact]:
    for fact_id, status, title, severity, priority in (
        ("top_deal_won", "won", "Biggest win", "good", 80),
        ("top_deal_lost", "lost", "Biggest loss", "info", 52),
    ):
        largest = deals.largest_with_currency(f"status = '{status}' and closed_date = {deals.p}", deals.day)
        if largest:
            deal_id, owner_id, amount, _, original, currency = largest
            yield Fact(
                fact_id,
                title,
                severity,
                priority,  # type: ignore[arg-type]
                f"{title} of the day: {{deal}} for {money(amount)}{money.original(original, currency)} "
                f"(owner {{owner}}).",
                {
                    "amount": amount,
                    "currency": money.currency,
                    "amount_in_currency": None if original is None else float(original),
                    "deal_currency": currency,
                },
                {"deal": labels.ref("deal", deal_id), "owner": labels.ref("owner", owner_id)},
            )
    best = deals.best_owner(deals.day - dt.timedelta(days=29))
    if best:
        owner_id, n, amount = best
        yield Fact(
            "top_owner_30d",
            "Top seller",
            "good",
            42,
            f"{{owner}} leads the last 30 days with {count_of(n, 'deal')} won for {money(amount)}.",
            {"count": n, "amount": amount},
            {"owner": labels.ref("owner", owner_id)},
        )


def _stage_facts(conn: Any, labels: _Labels, money: Money) -> Iterator[Fact]:
    """The stage holding the most open pipeline now (pipeline_by_stage is the current state)."""
    stages = _query(
        conn,
        f"select stage, open_deals, open_amount from {MARTS_SCHEMA}.pipeline_by_stage "
        f"where open_deals > 0 order by open_amount desc, stage",
    )
    if not stages:
        return
    stage, n, amount = stages[0]
    total = sum(float(row[2] or 0) for row in stages)
    share = float(amount or 0) / total if total else 0.0
    yield Fact(
        "largest_stage",
        "Largest stage",
        "info",
        40,
        f"The stage {{stage}} holds the most open pipeline: {money(float(amount or 0))} across "
        f"{count_of(int(n), 'deal')} ({fmt_ratio(share)} of the open amount).",
        {"open_amount": float(amount or 0), "open_deals": int(n), "share": share},
        {"stage": labels.ref("stage", stage)},
    )


def entity_names(conn: Any, target: Target, refs: Iterable[EntityRef]) -> dict[tuple[str, str], str]:
    """The raw CRM names of the entities the facts mention, keyed by (kind, id); unsanitised."""
    p = placeholder(target)
    refs = list(refs)
    names: dict[tuple[str, str], str] = {}
    for kind, column_id, column_name in (("deal", "deal_id", "deal_name"), ("owner", "owner_id", "owner_name")):
        ids = sorted({r.id for r in refs if r.kind == kind})
        if ids:
            marks = ", ".join([p] * len(ids))
            for entity_id, name in _query(
                conn,
                f"select distinct {column_id}, {column_name} from {MARTS_SCHEMA}.deals where {column_id} in ({marks})",
                ids,
            ):
                names[(kind, str(entity_id))] = name or ""
    for ref in refs:
        if ref.kind == "stage":  # a stage is identified by its name
            names[("stage", ref.id)] = ref.id
    return names
