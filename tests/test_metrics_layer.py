"""Metrics defined once: MetricFlow answers what the marts answer, on both warehouses.

GIVEN the sandbox org loaded by the pipeline and built by `dbt build` on DuckDB and on PostgreSQL (a private
copy of the suite's built warehouse) and the semantic models and metrics of models/semantic/, WHEN a user runs
`dbt parse` and the README's `mf query --metrics win_rate,deals_won,deals_lost --group-by metric_time__month`
(the real CLI in a subprocess, its answer written with --csv), then asks for every KPI by month and by day,
THEN each period has exactly one row, and its figures are kpi_daily's: counts and amounts summed over the
period's days, the open pipeline and win_rate_30d of its last day, and win_rate = its deals won / (won + lost)
- not the average of the daily rates, from which it differs in some month of this org.

The same user asking for amounts in mf's table (not --csv) with `--decimals 2` reads them in fixed point, as
kpi_daily has them, not as `1.1785e+07`; and beside any metric, `period_is_partial` marks the month (or week)
that holds the day of the last sync, the one period whose figures can still change.

mf reads the semantic manifest from `target/` of the dbt project it runs in. The repository's own `target/`
belongs to whoever runs dbt there, so the test gives mf a project folder of its own (a copy of
dbt_project.yml) and has `dbt parse` write the manifest into it. The manifest names each table with the
database it was parsed against, so it is parsed for the private copy the test reads; and mf connects with the
profile's default target, which DBT_TARGET names (profiles.example.yml reads it).
"""

from __future__ import annotations

import csv
import datetime as dt
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from tests.support.workspace import Workspace
from tests.test_marts import TARGETS, TOLERANCE, UNITS, query
from warehouse import PROJECT_ROOT

# The metrics kpi_daily and the semantic layer share, by kind: a flow sums over the days of a period, a
# balance (and the rolling win_rate_30d) is the value of the period's last day, win_rate is the ratio of the
# period's sums.
FLOWS = [
    "deals_won",
    "deals_lost",
    "deals_won_amount",
    "deals_lost_amount",
    "deals_created",
    "deals_created_amount",
    "leads_created",
    "leads_converted",
]
BALANCES = ["open_pipeline_count", "open_pipeline_amount", "open_pipeline_weighted_amount", "win_rate_30d"]
METRICS = ["win_rate", *FLOWS, *BALANCES, "deals_closed"]
README_QUERY = [
    "win_rate",
    "deals_won",
    "deals_lost",
]  # the README's `mf query --metrics win_rate,deals_won,deals_lost`
TOLERANCES = {**{metric: TOLERANCE[unit] for metric, unit in UNITS.items()}, "deals_closed": 0}

Figures = dict[dt.date, dict[str, float | None]]


def mf(workspace: Workspace, project: Path, profiles: Path, *args: str) -> subprocess.CompletedProcess:
    """`mf <args>` run as a user would, from the root of a dbt project whose target/ holds the manifest."""
    result = subprocess.run(
        [str(Path(sys.executable).with_name("mf")), *args],
        cwd=project,
        env={**workspace.env, "DBT_PROFILES_DIR": str(profiles)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (
        f"mf {' '.join(args)} exited {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )
    return result


def query_args(metrics: list[str], grain: str) -> list[str]:
    """`query --metrics <metrics> --group-by metric_time__<grain> --order metric_time__<grain>`."""
    by = f"metric_time__{grain}"
    return ["query", "--metrics", ",".join(metrics), "--group-by", by, "--order", by]


def mf_query(workspace: Workspace, project: Path, profiles: Path, metrics: list[str], grain: str) -> Figures:
    """`mf query --metrics <metrics> --group-by metric_time__<grain> --csv <file>`: {period: {metric: value}}."""
    out = project / f"{len(metrics)}-metrics-by-{grain}.csv"
    mf(workspace, project, profiles, *query_args(metrics, grain), "--csv", str(out))
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    periods = [dt.date.fromisoformat(row[f"metric_time__{grain}"][:10]) for row in rows]
    assert len(periods) == len(set(periods)), f"a {grain} appears more than once in MetricFlow's answer: {periods}"
    return {
        period: {metric: None if row[metric] == "" else float(row[metric]) for metric in metrics}
        for period, row in zip(periods, rows)
    }


def parsed_project(workspace: Workspace, target: str, tmp_path: Path) -> tuple[Path, Path]:
    """A dbt project folder of mf's own, its manifest parsed by `dbt parse` for the target, and the profiles
    folder; DBT_TARGET names the target (mf has no --target: it connects with the profile's default)."""
    project, profiles = tmp_path / "project", workspace.root / "dbt"
    project.mkdir()
    shutil.copy(PROJECT_ROOT / "dbt_project.yml", project / "dbt_project.yml")
    workspace.env["DBT_TARGET"] = target
    workspace.run("dbt", "parse", "--target", target, "--target-path", str(project / "target"))
    return project, profiles


def mf_table(
    workspace: Workspace, project: Path, profiles: Path, metrics: list[str], grain: str, *options: str
) -> dict[dt.date, dict[str, str]]:
    """`mf query ... --quiet` as printed in the terminal (mf's table, not --csv): {period: {metric: text}}."""
    printed = mf(workspace, project, profiles, *query_args(metrics, grain), "--quiet", *options).stdout
    lines = [line.split() for line in printed.strip().splitlines()]
    header, rows = lines[0], [line for line in lines[1:] if not set("".join(line)) <= {"-"}]
    assert header == [f"metric_time__{grain}", *metrics], printed
    return {dt.date.fromisoformat(row[0][:10]): dict(zip(metrics, row[1:])) for row in rows}


def kpi_daily_by_day(workspace: Workspace, target: str) -> Figures:
    rows = query(workspace, target, "select kpi_date, metric, value from analytics.kpi_daily")
    days: Figures = defaultdict(dict)
    for day, metric, value in rows:
        days[day][metric] = None if value is None else float(value)
    for figures in days.values():
        figures["deals_closed"] = figures["deals_won"] + figures["deals_lost"]
    return dict(days)


def by_month(days: Figures) -> Figures:
    """kpi_daily's days rolled up as the metrics define a month."""
    months: dict[dt.date, list[dt.date]] = defaultdict(list)
    for day in sorted(days):
        months[day.replace(day=1)].append(day)
    rolled: Figures = {}
    for month, month_days in months.items():
        figures: dict[str, float | None] = {m: sum(days[d][m] for d in month_days) for m in [*FLOWS, "deals_closed"]}
        figures.update({m: days[month_days[-1]][m] for m in BALANCES})
        figures["win_rate"] = figures["deals_won"] / figures["deals_closed"] if figures["deals_closed"] else None
        rolled[month] = figures
    return rolled


def differences(expected: Figures, actual: Figures) -> list[str]:
    found = [f"{period}: missing from MetricFlow's answer" for period in sorted(expected.keys() - actual.keys())]
    found += [f"{period}: not a period of kpi_daily" for period in sorted(actual.keys() - expected.keys())]
    for period in sorted(expected.keys() & actual.keys()):
        for metric in actual[period]:
            want, got = expected[period][metric], actual[period][metric]
            agrees = want == got if want is None or got is None else abs(want - got) <= TOLERANCES[metric]
            if not agrees:
                found.append(f"{period} {metric}: the marts say {want}, MetricFlow {got}")
    return found


@pytest.mark.parametrize("target", TARGETS)
def test_metricflow_answers_what_kpi_daily_says_month_by_month_and_day_by_day(
    warehouse: Workspace, target: str, tmp_path: Path
) -> None:
    # GIVEN the sandbox org built on the target, a dbt project folder of mf's own, and DBT_TARGET naming the
    # target (mf has no --target: it connects with the profile's default, which DBT_TARGET sets)
    # WHEN the user parses the project (dbt validates the semantic models and metrics as it writes the manifest)
    # and asks for the win rate by month, as the README shows, then for every KPI by month and by day
    project, profiles = parsed_project(warehouse, target, tmp_path)
    readme = mf_query(warehouse, project, profiles, README_QUERY, "month")
    monthly = mf_query(warehouse, project, profiles, METRICS, "month")
    daily = mf_query(warehouse, project, profiles, METRICS, "day")

    # THEN each month of the README's query is kpi_daily's month: won / (won + lost) of the month's sums
    days = kpi_daily_by_day(warehouse, target)
    months = by_month(days)
    assert len(months) >= 3 and any(m["deals_closed"] for m in months.values())  # the org has months to compare
    wrong = differences(months, readme)
    assert not wrong, f"{len(wrong)} figures of the README's query differ:\n" + "\n".join(wrong[:20])

    # AND so is every KPI of every month: sums over its days, the open pipeline and win_rate_30d of its last day
    wrong = differences(months, monthly)
    assert not wrong, f"{len(wrong)} monthly figures differ:\n" + "\n".join(wrong[:20])

    # AND every day of kpi_daily is MetricFlow's day, metric for metric
    wrong = differences(days, daily)
    assert not wrong, f"{len(wrong)} daily figures differ:\n" + "\n".join(wrong[:20])

    # AND a month's win_rate is not the average of its daily rates: some month of this org tells them apart
    daily_rates: dict[dt.date, list[float]] = defaultdict(list)
    for day, figures in days.items():
        if figures["win_rate"] is not None:
            daily_rates[day.replace(day=1)].append(figures["win_rate"])
    assert any(abs(sum(rates) / len(rates) - readme[month]["win_rate"]) > 1e-3 for month, rates in daily_rates.items())


@pytest.mark.parametrize("target", TARGETS)
def test_mf_prints_amounts_in_fixed_point_and_marks_the_period_in_progress(
    warehouse: Workspace, target: str, tmp_path: Path
) -> None:
    # GIVEN the sandbox org built on the target, whose open pipeline runs to millions, parsed for mf
    project, profiles = parsed_project(warehouse, target, tmp_path)
    days = kpi_daily_by_day(warehouse, target)
    months = by_month(days)
    [(last_day, last_day_complete)] = query(
        warehouse,
        target,
        "select kpi_date, bool_and(is_complete) from analytics.kpi_daily "
        "where kpi_date = (select max(kpi_date) from analytics.kpi_daily) group by kpi_date",
    )
    assert not last_day_complete and max(m["open_pipeline_amount"] for m in months.values()) >= 1e6

    # WHEN the user asks for amounts by month in mf's table with --decimals 2, with period_is_partial beside them,
    # and for period_is_partial alone by week
    amounts = ["deals_won_amount", "open_pipeline_amount"]
    monthly = mf_table(warehouse, project, profiles, [*amounts, "period_is_partial"], "month", "--decimals", "2")
    weekly = mf_table(warehouse, project, profiles, ["period_is_partial"], "week")

    # THEN every amount is printed in fixed point with two decimals and is kpi_daily's month
    assert monthly.keys() == months.keys()
    for month, printed in monthly.items():
        for metric in amounts:
            assert re.fullmatch(r"-?\d+\.\d{2}", printed[metric]), f"{month} {metric}: {printed[metric]}"
            assert float(printed[metric]) == pytest.approx(months[month][metric], abs=0.005), f"{month} {metric}"

    # AND the month and the week holding the day of the last sync are marked partial (1), every other one complete
    assert {month: printed["period_is_partial"] for month, printed in monthly.items()} == {
        month: "1" if month == last_day.replace(day=1) else "0" for month in months
    }
    week_of_last_day = last_day - dt.timedelta(days=last_day.weekday())
    assert {week for week, printed in weekly.items() if printed["period_is_partial"] == "1"} == {week_of_last_day}
    assert all(printed["period_is_partial"] in ("0", "1") for printed in weekly.values())
