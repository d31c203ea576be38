"""Unusual days: analytics.kpi_anomalies flags a day outside its usual range, and the briefing says so with the
range as the mart gives it.

GIVEN the sandbox org the suite builds (a seed the rule's knobs were not chosen on), the mart equals the rule
worked out again in plain Python (tests/support/anomalies.py) on both warehouses. GIVEN a day on which the
sales team imports ten times the usual new leads, synced and built as the daily job does, that day is flagged
high and the briefing gives it with its range; the same org without the import leaves the day unflagged.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pytest

from sandbox import SandboxOrg, SandboxServer
from tests.conftest import SANDBOX_ORG, SANDBOX_TODAY
from tests.ollama_emulator import OllamaEmulator, Reply
from tests.support.anomalies import judge_all
from tests.support.crm import CrmUser
from tests.test_briefing import answer, printed_message
from tests.test_marts import query

TARGETS = ["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)]
COLUMNS = "kpi_date, metric, period, value, baseline_median, expected_low, expected_high, baseline_days, direction"
SPIKE_DAY = dt.date.fromisoformat(SANDBOX_TODAY)  # the day of the suite's sync, still running in the built marts


def mart_rows(workspace, target: str) -> dict[tuple[dt.date, str], tuple]:
    rows = query(workspace, target, f"select {COLUMNS} from analytics.kpi_anomalies")
    return {(r[0], r[1]): r for r in rows}


@pytest.mark.parametrize("target", TARGETS)
def test_the_mart_is_the_rule_worked_out_again(warehouse, target: str) -> None:
    """GIVEN the built sandbox warehouse
    WHEN kpi_anomalies is read
    THEN it holds a row for exactly the days (and weeks) the rule judges, and each row's value, median, usual
         range, number of earlier points and direction are the ones plain Python works out from kpi_daily."""
    kpi_daily = query(warehouse, target, "select kpi_date, metric, value, is_complete from analytics.kpi_daily")
    expected = {(j.kpi_date, j.metric): j for j in judge_all(kpi_daily)}
    found = mart_rows(warehouse, target)

    assert {j.period for j in expected.values()} == {"day", "week"}  # the org has both kinds of judgement
    assert found.keys() == expected.keys()
    for key, j in expected.items():
        _, _, period, value, median, low, high, points, direction = found[key]
        assert (period, points, direction) == (j.period, j.baseline_days, j.direction), key
        for got, want in (
            (value, j.value),
            (median, j.baseline_median),
            (low, j.expected_low),
            (high, j.expected_high),
        ):
            assert math.isclose(float(got), want, rel_tol=1e-6, abs_tol=1e-4), (key, got, want)
    latest_complete = max(d for d, _, _, complete in kpi_daily if complete)
    assert max(d for d, _ in found) <= latest_complete  # never the day still running


def _sync_a_day(warehouse, target: str, tmp_path: Path, extra_leads: int) -> None:
    """The org's day with `extra_leads` more leads imported through the API, then the next day's sync and build."""
    org = SandboxOrg(today=SPIKE_DAY, **SANDBOX_ORG)
    with SandboxServer(org, port=0) as server:
        warehouse.env.update(server.env())
        if extra_leads:
            CrmUser(server).create_leads(
                [
                    {"Last_Name": f"Import {n}", "Company": "Trade show", "Lead_Source": "Trade Show"}
                    for n in range(extra_leads)
                ]
            )
        org.advance()
        warehouse.run("python", "-m", "pipelines.zoho", "--destination", target)
    warehouse.run(
        "dbt", "run", "--target", target, "--select", "+kpi_anomalies", "--target-path", str(tmp_path / "target")
    )


def _usual_leads(warehouse, target: str) -> int:
    [(median,)] = query(
        warehouse,
        target,
        f"select baseline_median from analytics.kpi_anomalies where metric = 'leads_created' "
        f"and kpi_date = date '{SPIKE_DAY - dt.timedelta(days=7)}'",
    )
    return round(float(median))


@pytest.mark.parametrize("target", TARGETS)
def test_a_day_with_ten_times_the_usual_new_leads_is_flagged_and_briefed(warehouse, target: str, tmp_path) -> None:
    """GIVEN the sandbox org on a Friday whose new leads are judged day by day
    WHEN the sales team imports nine times the usual Friday's leads that day, and the next morning's sync and
         build run
    THEN kpi_anomalies flags the day's new leads high, above the usual range of the last Fridays
    AND the briefing of that day, whose model leads with that fact, says it with the range as the mart gives it."""
    usual = _usual_leads(warehouse, target)
    assert usual >= 5  # a count judged by the day

    _sync_a_day(warehouse, target, tmp_path, extra_leads=9 * usual)

    row = mart_rows(warehouse, target)[(SPIKE_DAY, "leads_created")]
    _, _, period, value, median, low, high, points, direction = row
    assert (period, direction) == ("day", "high")
    assert float(value) >= 10 * usual - 1 and float(value) > float(high)

    with OllamaEmulator() as ollama:
        for name in [k for k in warehouse.env if k.startswith(("TWILIO_", "RECIPIENT_", "OLLAMA_"))]:
            del warehouse.env[name]
        warehouse.env["OLLAMA_BASE_URL"] = ollama.url
        ollama.queue(Reply.json(answer("anomaly_leads_created", ("open_pipeline",))))
        result = warehouse.run(
            "python", "-m", "insights.deliver", "--target", target, "--dry-run", "--date", SPIKE_DAY.isoformat()
        )
    message = printed_message(result.stdout)
    usual_range = f"{math.ceil(float(low))}–{math.floor(float(high))}"
    assert (
        f"New leads on Fri 20 Nov: {int(value)}, above the usual Friday range of {usual_range} (last {points} Fridays)."
        in message
    ), message


def test_the_same_day_without_the_import_is_not_flagged(warehouse, tmp_path) -> None:
    """GIVEN the same org and day without the import
    WHEN the next morning's sync and build run
    THEN the day's new leads are judged and found usual."""
    _sync_a_day(warehouse, "duckdb", tmp_path, extra_leads=0)

    row = mart_rows(warehouse, "duckdb")[(SPIKE_DAY, "leads_created")]
    assert row[2] == "day" and row[8] is None
    assert float(row[5]) <= float(row[3]) <= float(row[6])
