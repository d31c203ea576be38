"""The days outside their usual range, as analytics.kpi_anomalies judged them, in words a sales leader reads.

The mart decides what is unusual and by how much (models/marts/kpi_anomalies.yml): this module only reads its
rows and says them, every figure from the row. The model never judges an anomaly; it may pick the fact like any
other. The sentence says "unusual", gives the usual range, how many earlier days or weeks it comes from, and
never a sigma.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from insights.facts import Fact, _query, fmt_count, fmt_day
from warehouse import MARTS_SCHEMA, Target, as_date, placeholder

TABLE = f"{MARTS_SCHEMA}.kpi_anomalies"

# What each judged metric is called in a sentence.
LABELS: dict[str, str] = {
    "leads_created": "New leads",
    "leads_converted": "Leads converted",
    "deals_created": "New deals",
    "deals_created_amount": "New deals' value",
    "deals_won": "Deals won",
    "deals_won_amount": "Amount won",
    "deals_lost": "Deals lost",
    "deals_lost_amount": "Amount lost",
}
# The metrics whose rise is bad news (the page's cards read this too); more of any other is good news.
LOWER_IS_BETTER = frozenset({"deals_lost", "deals_lost_amount"})


@dataclass(frozen=True)
class Anomaly:
    """One row of kpi_anomalies that is an anomaly."""

    kpi_date: dt.date
    metric: str
    period: str  # day | week
    window_start: dt.date
    value: float
    unit: str
    expected_low: float
    expected_high: float
    baseline_median: float
    baseline_days: int
    direction: str  # high | low

    @property
    def is_money(self) -> bool:
        return self.unit not in ("count", "ratio")

    @property
    def is_good_news(self) -> bool:
        return (self.direction == "high") == (self.metric not in LOWER_IS_BETTER)


def read_anomalies(conn: Any, target: Target, since: dt.date, until: dt.date) -> list[Anomaly]:
    """The anomalies judged on days `since`..`until`, latest first."""
    p = placeholder(target)
    rows = _query(
        conn,
        f"select kpi_date, metric, period, window_start, value, unit, expected_low, expected_high, baseline_median, "
        f"baseline_days, direction from {TABLE} where is_anomaly and kpi_date between {p} and {p} "
        f"order by kpi_date desc, metric",
        (since, until),
    )
    return [_anomaly(row) for row in rows]


def _anomaly(row: tuple[Any, ...]) -> Anomaly:
    day, metric, period, start, value, unit, low, high, median, points, direction = row
    return Anomaly(
        as_date(day), metric, period, as_date(start), float(value), unit, float(low), float(high), float(median),
        int(points), direction
    )  # fmt: skip


def usual_range(a: Anomaly, money: Callable[[float], str]) -> str:
    """'12-24': for a count, the whole numbers inside the range (a count of 24.6 cannot happen, 24 can)."""
    if a.is_money:
        return f"{money(a.expected_low)}–{money(a.expected_high)}"
    return f"{fmt_count(math.ceil(a.expected_low - 1e-9))}–{fmt_count(math.floor(a.expected_high + 1e-9))}"


def sentence(a: Anomaly, money: Callable[[float], str]) -> str:
    """'New leads on Tue 3 Dec: 168, above the usual Tuesday range of 12–24 (last 8 Tuesdays).'"""
    label = LABELS.get(a.metric, a.metric.replace("_", " ").capitalize())
    value = money(a.value) if a.is_money else fmt_count(round(a.value))
    side = "above" if a.direction == "high" else "below"
    if a.period == "week":
        when = f"in the week {fmt_day(a.window_start)}–{fmt_day(a.kpi_date)}"
        return (
            f"{label} {when}: {value}, {side} the usual weekly range of {usual_range(a, money)} "
            f"(last {a.baseline_days} weeks)."
        )
    weekday = f"{a.kpi_date:%A}"
    return (
        f"{label} on {fmt_day(a.kpi_date)}: {value}, {side} the usual {weekday} range of {usual_range(a, money)} "
        f"(last {a.baseline_days} {weekday}s)."
    )


def anomaly_facts(conn: Any, target: Target, day: dt.date, money: Callable[[float], str]) -> Iterator[Fact]:
    """One fact for each anomaly judged on the report day (a week's is judged on its Sunday)."""
    for a in read_anomalies(conn, target, day, day):
        yield Fact(
            f"anomaly_{a.metric}",
            "Unusual day" if a.period == "day" else "Unusual week",
            "good" if a.is_good_news else "warn",
            68,
            sentence(a, money),
            {
                "metric": a.metric,
                "period": a.period,
                "value": a.value,
                "expected_low": a.expected_low,
                "expected_high": a.expected_high,
                "baseline_median": a.baseline_median,
                "baseline_days": a.baseline_days,
                "direction": a.direction,
            },
        )
