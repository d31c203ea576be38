"""kpi_anomalies worked out again in plain Python, from kpi_daily's rows and the rule as documented.

Written from the rule's description (models/marts/kpi_anomalies.yml), not from its SQL, so that the mart and
this agree only when both follow the rule. The knobs are read from dbt_project.yml's vars, as dbt reads them.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

import yaml

from warehouse import PROJECT_ROOT

# Each judged flow with the count that says how many events make it up.
JUDGED = {
    "leads_created": "leads_created",
    "leads_converted": "leads_converted",
    "deals_created": "deals_created",
    "deals_created_amount": "deals_created",
    "deals_won": "deals_won",
    "deals_won_amount": "deals_won",
    "deals_lost": "deals_lost",
    "deals_lost_amount": "deals_lost",
}
WEEK = dt.timedelta(days=7)


def knobs() -> dict[str, float]:
    project = yaml.safe_load((PROJECT_ROOT / "dbt_project.yml").read_text())
    return {name: value for name, value in project["vars"].items() if name.startswith("anomaly_")}


@dataclass(frozen=True)
class Judgement:
    kpi_date: dt.date
    metric: str
    period: str
    value: float
    baseline_median: float
    expected_low: float
    expected_high: float
    baseline_days: int
    direction: str | None


def judge_all(kpi_daily: Iterable[tuple[dt.date, str, Decimal | float, bool]]) -> list[Judgement]:
    """Every judgement kpi_anomalies should hold, from (kpi_date, metric, value, is_complete) rows."""
    k = knobs()
    weeks = int(k["anomaly_baseline_weeks"])
    value: dict[tuple[str, dt.date], float] = {}
    complete: set[dt.date] = set()
    for day, metric, v, is_complete in kpi_daily:
        if metric not in JUDGED:
            continue
        value[(metric, day)] = float(v)
        if is_complete:
            complete.add(day)

    def monday(day: dt.date) -> dt.date:
        return day - dt.timedelta(days=day.weekday())

    full_weeks = {monday(d) for d in complete if all(monday(d) + dt.timedelta(days=i) in complete for i in range(7))}
    week_total = {
        (m, w): sum(value[(m, w + dt.timedelta(days=i))] for i in range(7)) for m in JUDGED for w in full_weeks
    }

    def earlier(points: dict[tuple[str, dt.date], float], metric: str, start: dt.date) -> list[float]:
        return [points[(metric, start - n * WEEK)] for n in range(1, weeks + 1) if (metric, start - n * WEEK) in points]

    daily = {(m, d): v for (m, d), v in value.items() if d in complete}
    judgements = []
    for metric, count_metric in JUDGED.items():
        is_count = metric == count_metric
        for day in sorted(d for (m, d) in daily if m == metric):
            usual_weeks = earlier(week_total, count_metric, monday(day))
            if len(usual_weeks) < k["anomaly_min_baseline_points"]:
                continue  # too little history to know the metric's usual size
            by_week = not is_count or statistics.median(usual_weeks) < 7 * k["anomaly_min_daily_count"]
            if by_week:
                if day.weekday() != 6 or (metric, monday(day)) not in week_total:
                    continue
                period, start, current, points = "week", monday(day), week_total[(metric, monday(day))], week_total
            else:
                period, start, current, points = "day", day, daily[(metric, day)], daily
            baseline = earlier(points, metric, start)
            if len(baseline) < k["anomaly_min_baseline_points"]:
                continue
            judgements.append(_judge(day, metric, period, current, baseline, is_count, k))
    return judgements


def _judge(
    day: dt.date, metric: str, period: str, current: float, baseline: list[float], is_count: bool, k: dict
) -> Judgement:
    median = statistics.median(baseline)
    mad = statistics.median(abs(v - median) for v in baseline)
    floor = k["anomaly_count_floor"] * math.sqrt(max(median, 1)) if is_count else k["anomaly_amount_floor"] * median
    spread = max(1.4826 * mad, floor)
    low, high = max(median - k["anomaly_band_width"] * spread, 0), median + k["anomaly_band_width"] * spread
    change = abs(current - median)
    matters = change >= k["anomaly_min_relative_change"] * median and (
        not is_count or change >= k["anomaly_min_count_change"]
    )
    direction = ("high" if current > high else "low" if current < low else None) if matters else None
    return Judgement(day, metric, period, current, median, low, high, len(baseline), direction)
