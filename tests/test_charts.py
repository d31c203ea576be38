"""The day's charts: `python -m insights.charts` draws each from the marts, and each shows exactly the marts' rows.

The command runs as a user runs it, on the session's built warehouse (the sandbox org loaded by the pipeline and
built by `dbt build`). What each chart shows is checked against rows the test reads with its own SQL, and each PNG
is opened with the standard library: its signature and its size from the IHDR chunk.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
import zlib
from pathlib import Path
from typing import Any

import duckdb
import pytest

from insights.charts import CHART_NAMES, MAIN_CHART, chart_rows, chart_spec, day_specs, render_png, render_svg
from insights.facts import count_of, fmt_amount
from tests.conftest import SANDBOX_TODAY
from tests.support.workspace import Workspace
from warehouse import as_date, connect

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SCALE = 2
# The spec sizes the whole picture, padding included (autosize "fit", contains "padding"), so a PNG is
# width * scale by height * scale pixels; Vega rounds its canvas to whole pixels, hence a pixel or two of slack.
SIZE_TOLERANCE_PX = 2
# The day before the sandbox org's own today: complete in the built marts, with wins in its month and its week.
REPORT_DAY = dt.date.fromisoformat(SANDBOX_TODAY) - dt.timedelta(days=1)


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a PNG that opens: every chunk's CRC holds and the image data inflates to exactly one
    filter byte plus a row of pixels per line, as a viewer decoding it would find (8-bit colour, no interlace)."""
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    chunks, at = {}, 8
    while at < len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        assert zlib.crc32(kind + body) == int.from_bytes(data[at + 8 + length : at + 12 + length], "big"), kind
        chunks[kind] = chunks.get(kind, b"") + body
        at += 12 + length
    header = chunks[b"IHDR"]
    width, height = int.from_bytes(header[0:4], "big"), int.from_bytes(header[4:8], "big")
    bit_depth, colour_type, interlace = header[8], header[9], header[12]
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    assert (bit_depth, interlace) == (8, 0) and b"IEND" in chunks
    assert len(zlib.decompress(chunks[b"IDAT"])) == height * (1 + width * channels)
    return width, height


def expected_rows(path: Path, day: dt.date) -> dict[str, list[dict[str, Any]]]:
    """What each chart must show, read with SQL of the test's own (not the module's queries)."""
    monday = day - dt.timedelta(days=day.weekday())
    with duckdb.connect(str(path), read_only=True) as conn:

        def rows(sql: str, *params: Any) -> list[tuple[Any, ...]]:
            return conn.execute(sql, list(params)).fetchall()

        pipeline = rows(
            """
            select kpi_date,
                   max(case when metric = 'open_pipeline_amount' then value end),
                   max(case when metric = 'open_pipeline_weighted_amount' then value end)
            from analytics.kpi_daily where kpi_date between ? and ? group by kpi_date order by kpi_date""",
            day - dt.timedelta(days=89),
            day,
        )
        weeks = rows(
            """
            select date_trunc('week', kpi_date) as week,
                   sum(case when metric = 'deals_won_amount' then value end),
                   sum(case when metric = 'deals_won' then value end)
            from analytics.kpi_daily where kpi_date between ? and ? group by week order by week""",
            monday - dt.timedelta(weeks=12),
            day,
        )
        stages = rows(
            """
            select pipeline, stage, stage_order, open_deals, open_amount, weighted_amount
            from analytics.pipeline_by_stage where open_deals > 0 or forecast_type = 'Open'
            order by pipeline, stage_order nulls last, stage"""
        )
        owners = rows(
            """
            select owner_id, max(owner_name), sum(deals_won_amount), sum(deals_won)
            from analytics.owner_performance_daily
            where activity_date between ? and ? and owner_id is not null
            group by owner_id having sum(deals_won) > 0 order by 3 desc, 4 desc, owner_id limit 10""",
            day.replace(day=1),
            day,
        )
    return {
        "open_pipeline": [
            {"day": d.isoformat(), "open_pipeline_amount": float(a), "open_pipeline_weighted_amount": float(w)}
            for d, a, w in pipeline
        ],
        "won_by_week": [
            {
                "week_start": as_date(w).isoformat(),
                "won_amount": float(a),
                "deals_won": int(n),
                "complete": as_date(w) + dt.timedelta(days=6) <= day,
            }
            for w, a, n in weeks
        ],
        "pipeline_by_stage": [
            {
                "pipeline": p,
                "stage": s,
                "stage_order": o,
                "open_deals": n,
                "open_amount": float(a),
                "weighted_amount": float(w),
            }
            for p, s, o, n, a, w in stages
        ],
        "owner_standings": [
            {"owner_id": i, "owner_name": name, "won_amount": float(a), "deals_won": int(n)} for i, name, a, n in owners
        ],
    }


def rounded(value: Any) -> Any:
    """Sums of many amounts, added in another order, differ in the last bits of a float."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def test_the_charts_command_draws_each_chart_from_the_marts_rows(
    built_warehouse: Any, tmp_path: Path, record_property: Any
) -> None:
    """GIVEN the built warehouse and a complete day, with days after it in the marts
    WHEN `python -m insights.charts --date DAY --out DIR` runs
    THEN DIR holds a PNG per chart, each a real PNG of the spec's size at scale 2, each spec beside it shows
    exactly the marts' rows for that day (the main chart no day after it, so a past day's chart never changes),
    and the command printed each file with its size and how long the drawing took."""
    ws: Workspace = built_warehouse.workspace
    day = REPORT_DAY
    out = tmp_path / "charts"

    result = ws.run("python", "-m", "insights.charts", "--date", day.isoformat(), "--out", str(out), timeout=120)

    expected = expected_rows(ws.duckdb_path, day)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == len(CHART_NAMES) + 1, result.stdout
    assert re.fullmatch(r"rendered 4 charts for .+ in \d+\.\d\ds", lines[-1]), lines[-1]
    record_property("kept", f"python -m insights.charts: {lines[-1]} (a new process: vl-convert starts cold)")
    for name, line in zip(CHART_NAMES, lines):
        png = (out / f"{name}.png").read_bytes()
        spec = json.loads((out / f"{name}.vl.json").read_text())
        width, height = png_size(png)
        assert abs(width - spec["width"] * SCALE) <= SIZE_TOLERANCE_PX, (name, width, spec["width"])
        assert abs(height - spec["height"] * SCALE) <= SIZE_TOLERANCE_PX, (name, height, spec["height"])
        assert len(png) < 5 * 1024 * 1024  # WhatsApp's limit for an image
        assert line == f"{out / f'{name}.png'}  {width}x{height} px  {len(png):,} bytes"
        assert expected[name], f"the sandbox org has rows for {name}"
        assert rounded(spec["data"]["values"]) == rounded(expected[name]), name
    main = json.loads((out / f"{MAIN_CHART}.vl.json").read_text())["data"]["values"]
    assert main[-1]["day"] == day.isoformat() and len(main) == 90


def test_a_chart_with_nothing_to_show_says_so(tmp_path: Path) -> None:
    """GIVEN no rows for any chart (a new org, or a day before its first record)
    WHEN each chart is drawn
    THEN it is still a picture, of the usual width, saying there is nothing to show yet, with no rows in its data."""
    for name in CHART_NAMES:
        spec = chart_spec(name, [], currency="USD", day=dt.date(2026, 11, 20))

        width, _ = png_size(render_png(spec, scale=SCALE))

        assert spec["data"]["values"] == []
        assert abs(width - spec["width"] * SCALE) <= SIZE_TOLERANCE_PX
        [note] = spec["layer"]
        assert note["data"]["values"][0]["message"].startswith("No ")
        assert "<svg" in render_svg(spec)


def test_every_figure_a_chart_writes_reads_as_the_briefing_writes_it(built_warehouse: Any) -> None:
    """GIVEN the built warehouse and a complete day
    WHEN its charts are drawn
    THEN each amount written on a chart (a bar's label, the pipeline's last value) is the briefing's own
         spelling of the row's figure (9,850 / 84.5K / 1.24M), with its count of deals or wins beside it."""
    with duckdb.connect(str(built_warehouse.workspace.duckdb_path), read_only=True) as conn:
        rows, specs = chart_rows(conn, "duckdb", REPORT_DAY), day_specs(conn, "duckdb", REPORT_DAY)
    last_day = rows["open_pipeline"][-1]
    expected = {
        "open_pipeline": [
            fmt_amount(last_day["open_pipeline_amount"]),
            fmt_amount(last_day["open_pipeline_weighted_amount"]),
        ],
        "won_by_week": [fmt_amount(r["won_amount"]) for r in rows["won_by_week"]],
        "pipeline_by_stage": [
            f"{fmt_amount(r['open_amount'])} · {count_of(r['open_deals'], 'deal')}" for r in rows["pipeline_by_stage"]
        ],
        "owner_standings": [
            f"{fmt_amount(r['won_amount'])} · {count_of(r['deals_won'], 'win')}" for r in rows["owner_standings"]
        ],
    }

    for name in CHART_NAMES:
        written = [html.unescape(text) for text in re.findall(r"<text[^>]*>([^<]*)</text>", render_svg(specs[name]))]
        assert expected[name], f"the sandbox org has rows for {name}"
        for label in expected[name]:
            assert label in written, (name, label, written)


@pytest.mark.parametrize("unbuilt", [False, True], ids=["no warehouse", "marts not built"])
def test_without_a_built_warehouse_the_command_says_so_in_one_line(
    workspace: Workspace, tmp_path: Path, unbuilt: bool
) -> None:
    """GIVEN DUCKDB_PATH naming a file that does not exist, or a warehouse where `dbt build` never ran
    WHEN the charts command runs
    THEN it exits 2 (a setting or a step to fix) with one line that says what is missing, and writes nothing."""
    if unbuilt:
        duckdb.connect(str(workspace.duckdb_path)).close()

    result = workspace.run("python", "-m", "insights.charts", "--out", str(tmp_path / "out"), check=False)

    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and ("dbt build" in line or "no warehouse" in line), line
    assert not (tmp_path / "out").exists()


@pytest.mark.postgres
def test_the_charts_show_the_same_rows_on_postgresql_as_on_duckdb(
    built_warehouse: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN the same org built on DuckDB and on PostgreSQL
    WHEN the rows of every chart of a day are read from each
    THEN they are the same rows, in the same order."""
    ws: Workspace = built_warehouse.workspace
    day = REPORT_DAY
    monkeypatch.setenv("DUCKDB_PATH", str(ws.duckdb_path))
    monkeypatch.setenv("DATABASE_URL", ws.env["DATABASE_URL"])
    monkeypatch.delenv("DESTINATION__POSTGRES__CREDENTIALS", raising=False)

    found = {}
    for target in ("duckdb", "postgres"):
        with connect(target, read_only=True) as conn:
            found[target] = chart_rows(conn, target, day)

    assert all(found["duckdb"][name] for name in CHART_NAMES)
    assert rounded(found["postgres"]) == rounded(found["duckdb"])
