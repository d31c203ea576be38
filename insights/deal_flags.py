"""Which open deals need a look on a report day, and why: the rules behind every digest.

For a report day D (a date in the org's time zone, as `insights.facts.build` takes it) `flag_deals` returns
every deal open at the end of D with the rules that fire on it, each with the numbers that made it fire, and
per owner the deals won and lost on D, the open deals at the end of D and the owner's standing over the 30
days ending D. The team briefing (`insights.facts`) and each owner's digest (`insights.owner_facts`) read
the same result, so "overdue" or "quiet" means one thing whoever reads it.

Open at the end of D: a live deal (in `analytics.deals`) with a row of `analytics.deal_daily_states` on D,
i.e. open that evening as kpi_daily counts it, less the deals deleted since (nobody can act on them, and
they have no name to show): the set of `facts._Deals.open` (created on or before D and still open, or
closed after D; the tests check they agree). Its stage, amount, probability, closing date and owner are
those of that evening, never today's: a past day's digest is what could have been said that morning, and
no rule reads a row after D. Closes on D come from the deals mart (its owner and amount), as the team
briefing's biggest win and loss do.

The rules (ids are stable: facts' `values` and the tests name them):

- ``due_soon``: closing date in (D, D + 7] (``DUE_SOON_DAYS``, the team briefing's closing window).
- ``overdue``: closing date on or before D. A closing date the marts' ``closing_date_implausible`` rule calls
  a typo (``PlausibleClosingDates``: before the org's first record, e.g. 1 Jan 1900) is not a deadline that
  passed: it never counts, and `data_quality_issues` reports it instead.
- ``quiet``: no change of state (pipeline, stage, amount, probability or closing date, as deal_daily_states
  records them evening by evening; or the deal's creation) for longer than deals usually stay in its stage.
  The usual is the 75th percentile of ``days_in_stage`` over the stage's visits that ended in the 365 days
  ending D (``deal_stage_durations``), when there are at least 5 of them: a stage where deals take
  months is not a stage where a quiet week is news, and per-stage thresholds are what reps trust (Pipedrive's
  rotting, Gong's "stalled in stage"). With fewer visits the team's default ``facts.STALE_DAYS`` (30 days)
  stands, as the team briefing always said. Never below 7 days (a stage crossed in a day or two would
  otherwise flag every deal after a weekend), never above 60: two months without a single change is worth a
  look in any stage, and that ceiling bounds how far back the rule reads (61 evenings).
- ``pushed``: the closing date moved later within the 30 days ending D (``CHANGE_WINDOW_DAYS``): how many
  times and by how many days in all. A move from or to an implausible date (the same rule: before the first
  record, or more than `implausible_years_ahead` years after the last sync) is a correction, not a push.
- ``shrunk``: the amount fell within the 30 days ending D, from the highest amount the deal had in them to its
  amount at D, by at least 10% (``SHRINK_MIN_PCT``) and at least 100 in the home currency
  (``SHRINK_MIN_AMOUNT``), so a re-rounded amount or a small exchange-rate move does not fire.
- ``moved_back``: the stage went back (a lower stage_order in the same pipeline) within the 30 days ending D:
  from which stage to which, on which day, and how many times.

A change on day c is the difference between the evening of c - 1 (or the last evening before it the deal was
open) and the evening of c. Why 30 days for pushes, shrinks and moves back: they are news for a few weeks,
after which the deal's state speaks for itself (it is quiet, or overdue); and the look-back bounds the work.
(The quiet rule compares each evening with D's rather than with the one before, which needs no sort: a deal
reopened in exactly the state it closed from counts as unchanged across the days it was closed.)

At a million deals (330k open on a day) the reads are: the day's rows; for quiet, the 61 evenings before D
of the deals open at D, aggregated to one date per deal (a filter and a hash aggregate, no sort); for the
moves, the 31 evenings of only the deals that changed in them, through one window function; the stage
durations of one year; the first and last days of kpi_daily; and the day's closes and the owners' 30 days of wins.
Six queries whoever asks: pass `owner_id` to read one owner's deals only (one digest), or read everyone's
once and split (`DealFlags.of_owner`; `facts.build` and `owner_facts.owner_digests` take the result, so a
morning that sends the team briefing and twenty digests reads the flags once).

Every query runs unchanged on DuckDB and PostgreSQL: parameters are cast, dates are computed here, and only
standard SQL is used (``is distinct from``, ``lag``, ``percentile_disc ... within group``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import yaml

from insights.facts import CLOSING_WINDOW_DAYS, STALE_DAYS, _query
from warehouse import MARTS_SCHEMA, PROJECT_ROOT, Target, as_date, placeholder

DUE_SOON = "due_soon"
OVERDUE = "overdue"
QUIET = "quiet"
PUSHED = "pushed"
SHRUNK = "shrunk"
MOVED_BACK = "moved_back"
# Every rule, in the order a reader is told about them.
RULES = (OVERDUE, QUIET, PUSHED, SHRUNK, MOVED_BACK, DUE_SOON)
# The rules that make a deal need attention ("at risk"); a deal merely due soon is news, not a risk.
AT_RISK_RULES = (OVERDUE, QUIET, PUSHED, SHRUNK, MOVED_BACK)

DUE_SOON_DAYS = CLOSING_WINDOW_DAYS
CHANGE_WINDOW_DAYS = 30
QUIET_DEFAULT_DAYS = STALE_DAYS
QUIET_FLOOR_DAYS = 7
QUIET_CEILING_DAYS = 60
USUAL_PERCENTILE = 0.75
USUAL_MIN_VISITS = 5
USUAL_HISTORY_DAYS = 365
SHRINK_MIN_PCT = 10.0
SHRINK_MIN_AMOUNT = 100.0
STANDING_DAYS = 30


@dataclass(frozen=True)
class Flag:
    """A rule that fired on a deal, with the numbers that made it fire (dates as `datetime.date`)."""

    rule: str
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FlaggedDeal:
    """A deal open at the end of the report day, as it stood that evening, and the rules that fire on it."""

    deal_id: str
    owner_id: str | None
    pipeline: str | None
    stage: str | None
    amount: float | None  # home currency; None when missing or breaking a data-quality rule
    closing_date: dt.date | None
    created_date: dt.date | None
    flags: tuple[Flag, ...] = ()

    @property
    def worth(self) -> float:
        """The amount as the totals count it (a missing amount counts 0, as in kpi_daily)."""
        return self.amount or 0.0

    @property
    def rules(self) -> tuple[str, ...]:
        return tuple(f.rule for f in self.flags)

    def flag(self, rule: str) -> Flag | None:
        return next((f for f in self.flags if f.rule == rule), None)

    def has(self, *rules: str) -> bool:
        return any(f.rule in rules for f in self.flags)

    @property
    def at_risk(self) -> bool:
        return self.has(*AT_RISK_RULES)

    @property
    def risk_flags(self) -> tuple[Flag, ...]:
        return tuple(f for f in self.flags if f.rule in AT_RISK_RULES)


@dataclass(frozen=True)
class ClosedDeal:
    """A deal won or lost on the report day (deals mart: its owner and amount as of the last sync)."""

    deal_id: str
    owner_id: str | None
    status: str  # "won" or "lost"
    amount: float | None

    @property
    def worth(self) -> float:
        return self.amount or 0.0


@dataclass(frozen=True)
class Standing:
    """An owner's place among the owners with a win over the days `since`..`until`, by amount won."""

    rank: int  # 1 + the owners who won more
    owners: int  # owners with at least one win in the period
    won: int
    won_amount: float
    since: dt.date
    until: dt.date


@dataclass(frozen=True)
class OwnerDay:
    """One owner's report day: open deals at its end, closes on it, standing over the 30 days ending it."""

    owner_id: str
    open_count: int = 0
    open_amount: float = 0.0
    won: tuple[ClosedDeal, ...] = ()
    lost: tuple[ClosedDeal, ...] = ()
    standing: Standing | None = None

    @property
    def won_amount(self) -> float:
        return sum(d.worth for d in self.won)

    @property
    def lost_amount(self) -> float:
        return sum(d.worth for d in self.lost)

    @property
    def has_news(self) -> bool:
        """Something to report: an open deal at the end of the day, or a deal won or lost on it."""
        return bool(self.open_count or self.won or self.lost)


@dataclass(frozen=True)
class StageUsual:
    """How long deals usually stay in a stage before anything changes, and where that figure comes from."""

    days: int
    visits: int  # completed visits it was read from (fewer than USUAL_MIN_VISITS: the default applies)
    percentile_days: int | None  # the raw percentile before floor and ceiling; None without enough visits


@dataclass(frozen=True)
class DealFlags:
    """`flag_deals`' answer: every deal open at the end of `day`, largest amount first, and every owner."""

    day: dt.date
    deals: tuple[FlaggedDeal, ...]
    owners: dict[str, OwnerDay]
    usual: dict[tuple[str | None, str | None], StageUsual]
    owner_id: str | None = None  # set when only this owner's deals were read

    def with_rule(self, *rules: str) -> list[FlaggedDeal]:
        return [d for d in self.deals if d.has(*rules)]

    def at_risk(self) -> list[FlaggedDeal]:
        return [d for d in self.deals if d.at_risk]

    def of_owner(self, owner_id: str) -> list[FlaggedDeal]:
        return [d for d in self.deals if d.owner_id == owner_id]


def usual_for(
    usual: dict[tuple[str | None, str | None], StageUsual], pipeline: str | None, stage: str | None
) -> StageUsual:
    """The stage's usual, or the default when it has too little history (or the stage is unknown)."""
    return usual.get((pipeline, stage)) or StageUsual(QUIET_DEFAULT_DAYS, 0, None)


def _plus_years(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February, which the warehouses' dateadd takes to the 28th
        return day.replace(year=day.year + years, day=28)


def implausible_years_ahead() -> int:
    """dbt_project.yml's `implausible_years_ahead`: the one setting of the closing-date rule, read by the marts
    (int_deals_in_home_currency) and here, so the two cannot drift apart."""
    project = yaml.safe_load((PROJECT_ROOT / "dbt_project.yml").read_text(encoding="utf-8"))
    return int(project["vars"]["implausible_years_ahead"])


@dataclass(frozen=True)
class PlausibleClosingDates:
    """The closing dates the marts take for real deadlines: data_quality_issues' ``closing_date_implausible``
    rule, whose bounds are read from the marts rather than worked out again. A Closing_Date before the org's
    first record day (the first day of kpi_daily) or more than `implausible_years_ahead` years after the day of
    the last sync (its last day) is a typo (1 Jan 1900, 31 Dec 2999): never overdue, never half of a push."""

    earliest: dt.date | None  # None: the marts hold no day yet, and no date can be judged
    latest: dt.date | None

    def __contains__(self, day: dt.date | None) -> bool:
        if day is None or self.earliest is None or self.latest is None:
            return False
        return self.earliest <= day <= self.latest


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


# --------------------------------------------------------------------------- the reads


class _Reader:
    def __init__(self, conn: Any, target: Target, day: dt.date, owner_id: str | None) -> None:
        self.conn, self.p, self.day, self.owner_id = conn, placeholder(target), day, owner_id

    def date(self) -> str:
        return f"cast({self.p} as date)"

    def today(self) -> tuple[str, list[Any]]:
        """The CTE of the deals open at the end of the day, as they stood that evening."""
        owner = f" and s.owner_id = cast({self.p} as varchar)" if self.owner_id is not None else ""
        sql = (
            f"today as (select s.deal_id, s.owner_id, s.pipeline, s.stage, s.stage_order, s.amount, s.probability, "
            f"s.closing_date, s.created_date from {MARTS_SCHEMA}.deal_daily_states s "
            f"join {MARTS_SCHEMA}.deals d on d.deal_id = s.deal_id where s.calendar_date = {self.date()}{owner})"
        )
        return sql, [self.day] + ([self.owner_id] if self.owner_id is not None else [])

    def last_different(self) -> tuple[str, list[Any]]:
        """The CTE of each open deal's last evening, in the quiet look-back, whose state differs from D's."""
        differs = " or ".join(
            f"s.{c} is distinct from t.{c}" for c in ("pipeline", "stage", "amount", "probability", "closing_date")
        )
        sql = (
            f"last_different as (select s.deal_id, max(s.calendar_date) as last_different "
            f"from {MARTS_SCHEMA}.deal_daily_states s join today t on t.deal_id = s.deal_id "
            f"where s.calendar_date >= {self.date()} and s.calendar_date < {self.date()} and ({differs}) "
            f"group by s.deal_id)"
        )
        return sql, [self.day - dt.timedelta(days=QUIET_CEILING_DAYS + 1), self.day]

    def open_deals(self) -> list[tuple[Any, ...]]:
        today, today_params = self.today()
        last, last_params = self.last_different()
        return _query(
            self.conn,
            f"with {today}, {last} select t.deal_id, t.owner_id, t.pipeline, t.stage, t.amount, t.closing_date, "
            f"t.created_date, l.last_different from today t left join last_different l on l.deal_id = t.deal_id",
            [*today_params, *last_params],
        )

    def moves(self) -> list[tuple[Any, ...]]:
        """Every change of pipeline, stage, amount or closing date in the change window, with the state before it,
        of the deals open at D that changed in it (the others' rows are never windowed)."""
        today, today_params = self.today()
        since = self.day - dt.timedelta(days=CHANGE_WINDOW_DAYS)  # the evening before the window's first day
        columns = ("pipeline", "stage", "stage_order", "amount", "closing_date")
        differs = " or ".join(f"s.{c} is distinct from t.{c}" for c in columns)
        lags = ", ".join(f"lag(s.{c}) over w as prev_{c}" for c in ("calendar_date", *columns))
        moved = " or ".join(f"{c} is distinct from prev_{c}" for c in columns)
        return _query(
            self.conn,
            f"with {today}, "
            f"changed as (select distinct s.deal_id from {MARTS_SCHEMA}.deal_daily_states s "
            f"join today t on t.deal_id = s.deal_id "
            f"where s.calendar_date >= {self.date()} and s.calendar_date < {self.date()} and ({differs})), "
            f"steps as (select s.deal_id, s.calendar_date, {', '.join('s.' + c for c in columns)}, {lags} "
            f"from {MARTS_SCHEMA}.deal_daily_states s join changed c on c.deal_id = s.deal_id "
            f"where s.calendar_date >= {self.date()} and s.calendar_date <= {self.date()} "
            f"window w as (partition by s.deal_id order by s.calendar_date)) "
            f"select deal_id, calendar_date, {', '.join(columns)}, {', '.join('prev_' + c for c in columns)} "
            f"from steps where prev_calendar_date is not null and ({moved}) order by deal_id, calendar_date",
            [*today_params, since, self.day, since, self.day],
        )

    def stage_usual(self) -> list[tuple[Any, ...]]:
        return _query(
            self.conn,
            f"select pipeline, stage, count(*), percentile_disc({USUAL_PERCENTILE}) within group (order by days_in_stage) "
            f"from {MARTS_SCHEMA}.deal_stage_durations "
            f"where left_date is not null and days_in_stage is not null "
            f"and left_date > {self.date()} and left_date <= {self.date()} group by pipeline, stage",
            [self.day - dt.timedelta(days=USUAL_HISTORY_DAYS), self.day],
        )

    def plausible_closing_dates(self) -> PlausibleClosingDates:
        [(first, last)] = _query(self.conn, f"select min(kpi_date), max(kpi_date) from {MARTS_SCHEMA}.kpi_daily")
        if first is None or last is None:
            return PlausibleClosingDates(None, None)
        return PlausibleClosingDates(as_date(first), _plus_years(as_date(last), implausible_years_ahead()))

    def closes(self) -> list[tuple[Any, ...]]:
        owner = f" and owner_id = cast({self.p} as varchar)" if self.owner_id is not None else ""
        return _query(
            self.conn,
            f"select deal_id, owner_id, status, amount from {MARTS_SCHEMA}.deals "
            f"where status in ('won', 'lost') and closed_date = {self.date()}{owner}",
            [self.day] + ([self.owner_id] if self.owner_id is not None else []),
        )

    def standings(self) -> list[tuple[Any, ...]]:
        return _query(
            self.conn,
            f"select owner_id, sum(deals_won), coalesce(sum(deals_won_amount), 0) "
            f"from {MARTS_SCHEMA}.owner_performance_daily "
            f"where activity_date >= {self.date()} and activity_date <= {self.date()} and owner_id is not null "
            f"group by owner_id having sum(deals_won) > 0",
            [self.day - dt.timedelta(days=STANDING_DAYS - 1), self.day],
        )


# --------------------------------------------------------------------------- the rules


def _usual(rows: Iterable[tuple[Any, ...]]) -> dict[tuple[str | None, str | None], StageUsual]:
    usual = {}
    for pipeline, stage, visits, percentile in rows:
        visits = int(visits)
        enough = visits >= USUAL_MIN_VISITS and percentile is not None
        days = min(QUIET_CEILING_DAYS, max(QUIET_FLOOR_DAYS, int(percentile))) if enough else QUIET_DEFAULT_DAYS
        usual[(_str(pipeline), _str(stage))] = StageUsual(days, visits, int(percentile) if enough else None)
    return usual


def _quiet(day: dt.date, created: dt.date | None, last_different: dt.date | None, usual: StageUsual) -> Flag | None:
    """Quiet: the days since the state last changed (or the deal was created) exceed the stage's usual."""
    horizon = day - dt.timedelta(days=QUIET_CEILING_DAYS)  # the earliest change the look-back can see
    changes = [
        d for d in (created, last_different + dt.timedelta(days=1) if last_different else None) if d and d >= horizon
    ]
    last_change = max(changes) if changes else None
    days = (day - last_change).days if last_change else QUIET_CEILING_DAYS + 1
    if days <= usual.days:
        return None
    return Flag(
        QUIET,
        {
            "days_quiet": days,
            "more_than_ceiling": last_change is None,
            "last_change_date": last_change,
            "usual_days": usual.days,
            "usual_visits": usual.visits,
            "usual_is_default": usual.percentile_days is None,
        },
    )


class _Step(NamedTuple):
    """A change of a deal in the change window: its evening, the state then, and the state the evening before."""

    on: dt.date
    pipeline: Any
    stage: Any
    stage_order: Any
    amount: Any
    closing_date: dt.date | None
    prev_pipeline: Any
    prev_stage: Any
    prev_stage_order: Any
    prev_amount: Any
    prev_closing_date: dt.date | None


def _move_flags(amount: float | None, steps: list[_Step], plausible: PlausibleClosingDates) -> list[Flag]:
    """pushed, shrunk and moved_back from a deal's changes in the change window (oldest first)."""
    if not steps:
        return []

    flags: list[Flag] = []
    pushes = [
        s
        for s in steps
        if s.prev_closing_date in plausible and s.closing_date in plausible and s.prev_closing_date < s.closing_date
    ]
    if pushes:
        days = sum((s.closing_date - s.prev_closing_date).days for s in pushes)
        flags.append(
            Flag(
                PUSHED,
                {
                    "times": len(pushes),
                    "days": days,
                    "from_date": pushes[0].prev_closing_date,
                    "to_date": pushes[-1].closing_date,
                    "last_push_date": pushes[-1].on,
                },
            )
        )
    # The amounts the deal had over the window: before its first change, and after each.
    held = [float(a) for s in steps for a in (s.prev_amount, s.amount) if a is not None]
    if amount is not None and held:
        highest = max(held)
        drop = highest - amount
        if drop >= SHRINK_MIN_AMOUNT and drop / highest * 100 >= SHRINK_MIN_PCT:
            flags.append(
                Flag(
                    SHRUNK,
                    {"from_amount": highest, "to_amount": amount, "drop": drop, "drop_pct": drop / highest * 100},
                )
            )
    backs = [
        s
        for s in steps
        if s.stage_order is not None
        and s.prev_stage_order is not None
        and s.pipeline == s.prev_pipeline
        and int(s.stage_order) < int(s.prev_stage_order)
    ]
    if backs:
        last = backs[-1]
        flags.append(
            Flag(
                MOVED_BACK,
                {
                    "from_stage": _str(last.prev_stage),
                    "to_stage": _str(last.stage),
                    "date": last.on,
                    "times": len(backs),
                },
            )
        )
    return flags


def flag_deals(conn: Any, target: Target, day: dt.date, owner_id: str | None = None) -> DealFlags:
    """Every deal open at the end of `day` with the rules that fire on it, and every owner's day.

    With `owner_id`, only that owner's deals (owner as of that evening) and closes are read: the same
    answer as the whole team's `.of_owner(owner_id)`, for one digest. Without it, everyone's, at the same
    number of queries (six), for the team briefing or for all the digests at once.
    """
    read = _Reader(conn, target, day, owner_id)
    usual = _usual(read.stage_usual())
    plausible = read.plausible_closing_dates()
    steps: dict[str, list[_Step]] = {}
    for (
        deal_id,
        on,
        pipeline,
        stage,
        order,
        amount,
        closing,
        prev_pipeline,
        prev_stage,
        prev_order,
        prev_amount,
        prev_closing,
    ) in read.moves():
        steps.setdefault(str(deal_id), []).append(
            _Step(
                as_date(on),
                pipeline,
                stage,
                order,
                amount,
                as_date(closing) if closing else None,
                prev_pipeline,
                prev_stage,
                prev_order,
                prev_amount,
                as_date(prev_closing) if prev_closing else None,
            )
        )

    deals = []
    for deal_id, owner, pipeline, stage, amount, closing, created, last_different in read.open_deals():
        deal_id, pipeline, stage, amount = str(deal_id), _str(pipeline), _str(stage), _float(amount)
        closing, created = as_date(closing) if closing else None, as_date(created) if created else None
        flags: list[Flag] = []
        if closing is not None and closing <= day and closing in plausible:
            flags.append(Flag(OVERDUE, {"closing_date": closing, "days_overdue": (day - closing).days}))
        quiet = _quiet(
            day, created, as_date(last_different) if last_different else None, usual_for(usual, pipeline, stage)
        )
        if quiet:
            flags.append(quiet)
        flags += _move_flags(amount, steps.get(deal_id, []), plausible)
        if closing is not None and day < closing <= day + dt.timedelta(days=DUE_SOON_DAYS):
            flags.append(Flag(DUE_SOON, {"closing_date": closing, "days_left": (closing - day).days}))
        flags.sort(key=lambda f: RULES.index(f.rule))
        deals.append(FlaggedDeal(deal_id, _str(owner), pipeline, stage, amount, closing, created, tuple(flags)))
    deals.sort(key=lambda d: (d.amount is None, -(d.amount or 0.0), d.deal_id))

    return DealFlags(day, tuple(deals), _owners(read, day, deals), usual, owner_id)


def _owners(read: _Reader, day: dt.date, deals: list[FlaggedDeal]) -> dict[str, OwnerDay]:
    open_count: dict[str, int] = {}
    open_amount: dict[str, float] = {}
    for deal in deals:
        if deal.owner_id is not None:
            open_count[deal.owner_id] = open_count.get(deal.owner_id, 0) + 1
            open_amount[deal.owner_id] = open_amount.get(deal.owner_id, 0.0) + deal.worth
    closed: dict[str, list[ClosedDeal]] = {}
    for deal_id, owner, status, amount in read.closes():
        if owner is not None:
            closed.setdefault(str(owner), []).append(ClosedDeal(str(deal_id), str(owner), str(status), _float(amount)))
    for found in closed.values():
        found.sort(key=lambda d: (d.amount is None, -(d.amount or 0.0), d.deal_id))

    wins = sorted(((str(o), int(n), float(a)) for o, n, a in read.standings()), key=lambda r: (-r[2], -r[1], r[0]))
    since = day - dt.timedelta(days=STANDING_DAYS - 1)
    standing = {
        o: Standing(1 + sum(1 for _, _, other in wins if other > a), len(wins), n, a, since, day) for o, n, a in wins
    }

    ids = set(open_count) | set(closed) | ({read.owner_id} if read.owner_id is not None else set())
    return {
        o: OwnerDay(
            o,
            open_count.get(o, 0),
            open_amount.get(o, 0.0),
            tuple(d for d in closed.get(o, []) if d.status == "won"),
            tuple(d for d in closed.get(o, []) if d.status == "lost"),
            standing.get(o),
        )
        for o in sorted(ids)
    }
