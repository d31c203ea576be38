"""The few charts a sales manager reads at a glance, each defined once as a Vega-Lite spec filled from mart rows.

    python -m insights.charts [--date YYYY-MM-DD] --out DIR [--target duckdb|postgres]

One definition serves every place a chart appears: the WhatsApp briefing carries
the day's main chart as a PNG (`render_png`, through the API's signed link,
`insights.chart_links`), and a dashboard embeds the same spec with vega-embed.
So a number in a picture is always the number the marts hold, drawn the same way
on a phone and in a browser.

    open_pipeline       open and weighted pipeline over the 90 days ending the report day (kpi_daily)
    won_by_week         won amount per ISO week, the last 13 weeks up to the report day (kpi_daily)
    pipeline_by_stage   open pipeline by stage, as of the last sync (pipeline_by_stage)
    owner_standings     each owner's won amount in the month to date (owner_performance_daily)

`open_pipeline` is the main chart, the one WhatsApp carries. It reads only days up
to the report day, so the chart of a past day never changes once that day is
complete. `pipeline_by_stage` is the current state (the mart has no history), and
says so in its subtitle.

The rows are the marts' rows, JSON-safe (Decimal -> float, date -> ISO string), and
each spec carries them inline as `data.values`: a spec is complete on its own and
rendering it fetches nothing (`render_png` refuses any external URL). An empty
mart gives a chart that says there is nothing to show yet rather than an error.

Styling is for a phone: 600 px wide at twice the scale, large type, amounts in
compact form (1.2M, 845k) with the home currency in the axis title, no grid but
a few faint horizontal lines. The sizes are exact: `autosize: fit` with the
padding inside, so a PNG is `width * scale` pixels wide.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from insights.facts import _query, default_report_date, fmt_date, home_currency, org_timezone
from warehouse import (
    MARTS_SCHEMA,
    TARGETS,
    ConfigError,
    Target,
    as_date,
    connect,
    database_errors,
    error_reason,
    placeholder,
    read_the_demo_warehouse_if_it_is_the_only_one,
)

CHART_NAMES: tuple[str, ...] = ("open_pipeline", "won_by_week", "pipeline_by_stage", "owner_standings")
MAIN_CHART = "open_pipeline"
CHART_TITLES: dict[str, str] = {
    "open_pipeline": "Open pipeline",
    "won_by_week": "Won by week",
    "pipeline_by_stage": "Open pipeline by stage",
    "owner_standings": "Won this month, by owner",
}

PIPELINE_DAYS = 90  # the main chart's span, ending on the report day
WON_WEEKS = 13  # a quarter of weeks, the last one possibly not complete
TOP_OWNERS = 10  # more bars than this no longer read at a glance on a phone

WIDTH = 600  # the whole picture, padding included (autosize fit): about a phone screen's width at scale 2
HEIGHT = 360
EMPTY_HEIGHT = 200  # a chart with nothing to show: room for its title and one line
BAR_STEP = 44  # height per bar of a horizontal bar chart, which grows with its rows
DEFAULT_SCALE = 2.0  # a 1200 px PNG: sharp on a phone's high-density screen

VEGA_LITE_SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"
INK, MUTED, FAINT = "#1f2933", "#616e7c", "#e4e7eb"
BLUE, LIGHT_BLUE, GREEN = "#1f5fbf", "#9fbfee", "#2e7d32"
# d3-format's SI prefixes say k and G; the briefing writes 9,850, 84.5K and 1.24B (insights.facts.fmt_amount),
# and a figure must read the same in the message, the picture and the page.
COMPACT = (
    "(abs({value}) < 10000 ? format({value}, ',.0f') : replace(replace(format({value}, '.3~s'), 'G', 'B'), 'k', 'K'))"
)
AXIS_COMPACT = "datum.value == 0 ? '0' : replace(replace(datum.label, 'G', 'B'), 'k', 'K')"
# A horizontal bar's label sits after its end: the amount axis reaches this far past the longest bar to hold it.
LABEL_ROOM = 1.45

Row = dict[str, Any]


# --------------------------------------------------------------------------- the rows, from the marts


def chart_rows(conn: Any, target: Target, day: dt.date) -> dict[str, list[Row]]:
    """The mart rows each chart shows for `day`, by chart name (a DB-API connection of either driver)."""
    return {name: _READERS[name](conn, target, day) for name in CHART_NAMES}


def _open_pipeline_rows(conn: Any, target: Target, day: dt.date) -> list[Row]:
    """One row per day of the 90 ending on `day`: the open amount and its weighted amount that evening."""
    p = placeholder(target)
    found = _query(
        conn,
        f"select kpi_date, metric, value from {MARTS_SCHEMA}.kpi_daily "
        f"where metric in ('open_pipeline_amount', 'open_pipeline_weighted_amount') and kpi_date between {p} and {p}",
        (day - dt.timedelta(days=PIPELINE_DAYS - 1), day),
    )
    by_day: dict[dt.date, Row] = {}
    for kpi_date, metric, value in found:
        when = as_date(kpi_date)
        by_day.setdefault(when, {"day": when.isoformat()})[metric] = _number(value)
    return [{"open_pipeline_amount": None, "open_pipeline_weighted_amount": None, **by_day[d]} for d in sorted(by_day)]


def _won_by_week_rows(conn: Any, target: Target, day: dt.date) -> list[Row]:
    """One row per ISO week (from its Monday) of the last 13 up to `day`; the week of `day` is complete only when
    `day` is its Sunday. Weeks before the first record have no row."""
    p = placeholder(target)
    first = _monday(day) - dt.timedelta(weeks=WON_WEEKS - 1)
    found = _query(
        conn,
        f"select kpi_date, metric, value from {MARTS_SCHEMA}.kpi_daily "
        f"where metric in ('deals_won', 'deals_won_amount') and kpi_date between {p} and {p}",
        (first, day),
    )
    weeks: dict[dt.date, Row] = {}
    for kpi_date, metric, value in found:
        start = _monday(as_date(kpi_date))
        week = weeks.setdefault(
            start,
            {
                "week_start": start.isoformat(),
                "won_amount": 0.0,
                "deals_won": 0,
                "complete": start + dt.timedelta(days=6) <= day,
            },
        )
        if metric == "deals_won":
            week["deals_won"] += int(value or 0)
        else:
            week["won_amount"] += float(value or 0)
    return [weeks[w] for w in sorted(weeks)]


def _pipeline_by_stage_rows(conn: Any, target: Target, day: dt.date) -> list[Row]:
    """The stages deals can be open in (and any other still holding open deals), in pipeline order.

    The mart is the state at the last sync, whatever `day`: it keeps no history.
    """
    found = _query(
        conn,
        f"select pipeline, stage, stage_order, open_deals, open_amount, weighted_amount "
        f"from {MARTS_SCHEMA}.pipeline_by_stage where open_deals > 0 or forecast_type = 'Open'",
    )
    rows = [
        {
            "pipeline": pipeline,
            "stage": stage,
            "stage_order": None if order is None else int(order),
            "open_deals": int(deals or 0),
            "open_amount": float(amount or 0),
            "weighted_amount": float(weighted or 0),
        }
        for pipeline, stage, order, deals, amount, weighted in found
    ]
    # Sorted here rather than in SQL: the two drivers collate text differently, the chart must not.
    rows.sort(key=lambda r: (r["pipeline"] or "", r["stage_order"] is None, r["stage_order"] or 0, r["stage"]))
    return rows


def _owner_standings_rows(conn: Any, target: Target, day: dt.date) -> list[Row]:
    """The owners who won something in the month to date, most won first, at most 10 (as the briefing's
    standings: each win counts for the owner who had the deal when it was won)."""
    p = placeholder(target)
    found = _query(
        conn,
        f"select owner_id, max(owner_name), sum(deals_won), sum(deals_won_amount) "
        f"from {MARTS_SCHEMA}.owner_performance_daily "
        f"where activity_date between {p} and {p} and owner_id is not null "
        f"group by owner_id having sum(deals_won) > 0",
        (day.replace(day=1), day),
    )
    rows = [
        {
            "owner_id": str(owner_id),
            "owner_name": name or str(owner_id),
            "won_amount": float(amount or 0),
            "deals_won": int(won or 0),
        }
        for owner_id, name, won, amount in found
    ]
    rows.sort(key=lambda r: (-r["won_amount"], -r["deals_won"], r["owner_id"]))
    return rows[:TOP_OWNERS]


_READERS: dict[str, Callable[[Any, Target, dt.date], list[Row]]] = {
    "open_pipeline": _open_pipeline_rows,
    "won_by_week": _won_by_week_rows,
    "pipeline_by_stage": _pipeline_by_stage_rows,
    "owner_standings": _owner_standings_rows,
}


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _monday(day: dt.date) -> dt.date:
    return day - dt.timedelta(days=day.weekday())


# --------------------------------------------------------------------------- the specs


def chart_spec(name: str, rows: list[Row], *, currency: str, day: dt.date | None = None) -> dict[str, Any]:
    """The Vega-Lite spec of chart `name`, with `rows` inlined as its `data.values`.

    `currency` is the home currency's code (the unit of every amount); `day`, when given, is named in the
    subtitle. No rows: the chart says there is nothing to show yet.
    """
    if name not in _SPECS:
        raise ValueError(f"unknown chart {name!r}; the charts are {', '.join(CHART_NAMES)}")
    build, nothing = _SPECS[name]
    subtitle, body = build([dict(r) for r in rows], currency, day)
    spec: dict[str, Any] = {
        "$schema": VEGA_LITE_SCHEMA,
        "title": {"text": CHART_TITLES[name], "subtitle": subtitle},
        "width": WIDTH,
        "height": body.pop("height", HEIGHT) if rows else EMPTY_HEIGHT,
        "autosize": {"type": "fit", "contains": "padding"},
        "padding": 16,
        "background": "white",
        "config": copy.deepcopy(_CONFIG),
        "data": {"values": [dict(r) for r in rows]},
    }
    if rows:
        spec.update(body)
    else:
        spec.update(_nothing_yet(nothing))
    return spec


def day_specs(conn: Any, target: Target, day: dt.date) -> dict[str, dict[str, Any]]:
    """Every chart's spec for `day`, by name, in CHART_NAMES order."""
    currency = home_currency(conn)
    return {
        name: chart_spec(name, rows, currency=currency, day=day) for name, rows in chart_rows(conn, target, day).items()
    }


def chart_png(
    conn: Any, target: Target, day: dt.date, name: str = MAIN_CHART, *, scale: float = DEFAULT_SCALE
) -> bytes:
    """One chart of `day` as PNG, reading only the rows it shows."""
    if name not in _READERS:
        raise ValueError(f"unknown chart {name!r}; the charts are {', '.join(CHART_NAMES)}")
    spec = chart_spec(name, _READERS[name](conn, target, day), currency=home_currency(conn), day=day)
    return render_png(spec, scale=scale)


def _amount_title(currency: str) -> str:
    return f"Amount ({currency})" if currency else "Amount"


def _open_pipeline(rows: list[Row], currency: str, day: dt.date | None) -> tuple[str, dict[str, Any]]:
    subtitle = f"The {PIPELINE_DAYS} days to {fmt_date(day)}" if day else f"The last {PIPELINE_DAYS} days"
    last = rows[-1]["day"] if rows else None
    labels = {"open_pipeline_amount": "Open pipeline", "open_pipeline_weighted_amount": "Weighted pipeline"}
    series = {
        "field": "series",
        "type": "nominal",
        "scale": {"domain": list(labels.values()), "range": [BLUE, LIGHT_BLUE]},
        "legend": {"orient": "top", "direction": "horizontal", "title": None},
    }
    x = {
        "field": "day",
        "type": "temporal",
        "scale": {"type": "utc"},
        "axis": {"title": None, "format": "%-d %b", "tickCount": 6, "labelFlush": True},
    }
    y = {
        "field": "amount",
        "type": "quantitative",
        "scale": {"zero": True},
        "axis": {"title": _amount_title(currency), "format": "~s", "labelExpr": AXIS_COMPACT, "tickCount": 5},
    }
    label_names = " : ".join(f"datum.metric == '{k}' ? '{v}'" for k, v in labels.items()) + " : datum.metric"
    # The day's own values, written at the end of each line (the field is a date once Vega-Lite parsed it).
    last_day = {"filter": f"utcFormat(datum.day, '%Y-%m-%d') == {json.dumps(last)}"}
    return subtitle, {
        "transform": [
            {"fold": list(labels), "as": ["metric", "amount"]},
            {"calculate": label_names, "as": "series"},
            {"calculate": COMPACT.format(value="datum.amount"), "as": "amount_label"},
        ],
        "layer": [
            {
                "mark": {"type": "line", "strokeWidth": 3},
                "encoding": {"x": x, "y": y, "color": series},
            },
            {
                "transform": [last_day],
                "mark": {"type": "point", "filled": True, "size": 70},
                "encoding": {"x": x, "y": y, "color": {**series, "legend": None}},
            },
            {
                "transform": [last_day],
                "mark": {"type": "text", "align": "right", "dx": -8, "dy": -14, "fontSize": 16, "fontWeight": "bold"},
                "encoding": {"x": x, "y": y, "text": {"field": "amount_label"}, "color": {**series, "legend": None}},
            },
        ],
    }


def _won_by_week(rows: list[Row], currency: str, day: dt.date | None) -> tuple[str, dict[str, Any]]:
    partial = [r for r in rows if not r["complete"]]
    subtitle = "Weeks starting Monday"
    if partial and day:
        subtitle += f"; lighter: the week so far, to {fmt_date(day)}"
    elif day:
        subtitle += f", to {fmt_date(day)}"
    x = {
        "field": "week_start",
        "type": "ordinal",
        "sort": None,
        "axis": {
            "title": None,
            "labelAngle": -45,
            "labelExpr": "utcFormat(toDate(datum.value), '%-d %b')",
        },
    }
    y = {
        "field": "won_amount",
        "type": "quantitative",
        "axis": {"title": _amount_title(currency), "format": "~s", "labelExpr": AXIS_COMPACT, "tickCount": 5},
    }
    return subtitle, {
        "transform": [{"calculate": COMPACT.format(value="datum.won_amount"), "as": "amount_label"}],
        "layer": [
            {
                "mark": {"type": "bar", "color": GREEN, "cornerRadiusTopLeft": 3, "cornerRadiusTopRight": 3},
                "encoding": {
                    "x": x,
                    "y": y,
                    "opacity": {"condition": {"test": "datum.complete", "value": 1}, "value": 0.4},
                },
            },
            {
                "mark": {"type": "text", "dy": -8, "fontSize": 12, "color": INK},
                "encoding": {"x": x, "y": y, "text": {"field": "amount_label"}},
            },
        ],
    }


def _pipeline_by_stage(rows: list[Row], currency: str, day: dt.date | None) -> tuple[str, dict[str, Any]]:
    pipelines = {r["pipeline"] for r in rows}
    label = "datum.stage" if len(pipelines) <= 1 else "datum.stage + ' (' + (datum.pipeline || 'no pipeline') + ')'"
    y = {"field": "label", "type": "nominal", "sort": None, "axis": {"title": None, "labelLimit": 220}}
    x_axis = {"title": _amount_title(currency), "format": "~s", "labelExpr": AXIS_COMPACT, "tickCount": 4}
    x_scale = _room_for_labels(r["open_amount"] for r in rows)
    return "At the last sync; dark: weighted by each stage's probability", {
        "height": max(2, len(rows)) * BAR_STEP,
        "transform": [
            {"calculate": label, "as": "label"},
            {
                "calculate": COMPACT.format(value="datum.open_amount")
                + " + ' · ' + datum.open_deals + (datum.open_deals == 1 ? ' deal' : ' deals')",
                "as": "amount_label",
            },
        ],
        "encoding": {"y": y},
        "layer": [
            {
                "mark": {"type": "bar", "color": LIGHT_BLUE, "cornerRadiusEnd": 3},
                "encoding": {"x": {"field": "open_amount", "type": "quantitative", "axis": x_axis, "scale": x_scale}},
            },
            {
                "mark": {"type": "bar", "color": BLUE, "cornerRadiusEnd": 3, "height": {"band": 0.45}},
                "encoding": {"x": {"field": "weighted_amount", "type": "quantitative"}},
            },
            {
                "mark": {"type": "text", "align": "left", "dx": 6, "fontSize": 13, "color": INK},
                "encoding": {"x": {"field": "open_amount", "type": "quantitative"}, "text": {"field": "amount_label"}},
            },
        ],
        "resolve": {"scale": {"x": "shared"}},
    }


def _owner_standings(rows: list[Row], currency: str, day: dt.date | None) -> tuple[str, dict[str, Any]]:
    subtitle = f"Month to date, to {fmt_date(day)}" if day else "Month to date"
    y = {"field": "owner_name", "type": "nominal", "sort": None, "axis": {"title": None, "labelLimit": 200}}
    x = {
        "field": "won_amount",
        "type": "quantitative",
        "axis": {"title": _amount_title(currency), "format": "~s", "labelExpr": AXIS_COMPACT, "tickCount": 4},
        "scale": _room_for_labels(r["won_amount"] for r in rows),
    }
    return subtitle, {
        "height": max(2, len(rows)) * BAR_STEP,
        "transform": [
            {
                "calculate": COMPACT.format(value="datum.won_amount")
                + " + ' · ' + datum.deals_won + (datum.deals_won == 1 ? ' win' : ' wins')",
                "as": "amount_label",
            }
        ],
        "encoding": {"y": y},
        "layer": [
            {"mark": {"type": "bar", "color": GREEN, "cornerRadiusEnd": 3}, "encoding": {"x": x}},
            {
                "mark": {"type": "text", "align": "left", "dx": 6, "fontSize": 13, "color": INK},
                "encoding": {"x": {"field": "won_amount", "type": "quantitative"}, "text": {"field": "amount_label"}},
            },
        ],
    }


def _room_for_labels(amounts: Iterable[float]) -> dict[str, Any]:
    """The amount scale of a horizontal bar chart, long enough for the label after the longest bar."""
    longest = max(amounts, default=0.0)
    return {"domain": [0, longest * LABEL_ROOM], "nice": False} if longest > 0 else {}


_SPECS: dict[str, tuple[Callable[[list[Row], str, dt.date | None], tuple[str, dict[str, Any]]], str]] = {
    "open_pipeline": (_open_pipeline, "No pipeline yet: no days in the marts up to this day"),
    "won_by_week": (_won_by_week, "No weeks yet: no days in the marts up to this day"),
    "pipeline_by_stage": (_pipeline_by_stage, "No open deals at the last sync"),
    "owner_standings": (_owner_standings, "No deals won yet this month"),
}


def _nothing_yet(message: str) -> dict[str, Any]:
    """A chart without rows: the message, where the marks would be (the rows stay the spec's, empty)."""
    return {
        "layer": [
            {
                "data": {"values": [{"message": message}]},
                "mark": {"type": "text", "fontSize": 18, "color": MUTED},
                "encoding": {"text": {"field": "message"}},
            }
        ],
    }


_CONFIG: dict[str, Any] = {
    "font": "DejaVu Sans, Liberation Sans, Arial, sans-serif",
    "view": {"stroke": None},
    "title": {
        "fontSize": 22,
        "subtitleFontSize": 15,
        "color": INK,
        "subtitleColor": MUTED,
        "anchor": "start",
        "offset": 12,
    },
    "axis": {
        "grid": False,
        "labelFontSize": 14,
        "titleFontSize": 14,
        "labelColor": MUTED,
        "titleColor": MUTED,
        "titleFontWeight": "normal",
        "domainColor": FAINT,
        "tickColor": FAINT,
    },
    "axisQuantitative": {"grid": True, "gridColor": FAINT, "domain": False, "ticks": False},
    "axisBand": {"ticks": False},
    "legend": {"labelFontSize": 14, "symbolStrokeWidth": 4, "symbolType": "stroke", "labelColor": INK},
}


# --------------------------------------------------------------------------- rendering


def render_png(spec: dict[str, Any], *, scale: float = DEFAULT_SCALE) -> bytes:
    """The spec as a PNG, `spec["width"] * scale` pixels wide. Fetches nothing: the data is inline."""
    import vl_convert

    return bytes(vl_convert.vegalite_to_png(spec, scale=scale, allowed_base_urls=[]))


def render_svg(spec: dict[str, Any]) -> str:
    """The spec as an SVG document (for a page that shows the chart without a script)."""
    import vl_convert

    return str(vl_convert.vegalite_to_svg(spec, allowed_base_urls=[]))


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) in pixels, read from the PNG's IHDR chunk; ValueError when `png` is not a PNG."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m insights.charts",
        description="Draw the day's charts from the marts as PNG files: DIR/<chart>.png, and beside each its "
        "Vega-Lite spec with the rows it shows (DIR/<chart>.vl.json). Charts: " + ", ".join(CHART_NAMES) + ".",
    )
    parser.add_argument(
        "--date",
        type=dt.date.fromisoformat,
        metavar="YYYY-MM-DD",
        help="the report day (default: the last complete day in the org's time, as the briefing uses)",
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="the folder to write to (created)")
    parser.add_argument("--target", choices=TARGETS, default="duckdb", help="the warehouse to read (default: duckdb)")
    parser.add_argument(
        "--scale", type=float, default=DEFAULT_SCALE, help=f"pixels per spec unit (default {DEFAULT_SCALE:g})"
    )
    args = parser.parse_args(argv)
    try:
        if args.target == "duckdb":
            read_the_demo_warehouse_if_it_is_the_only_one()
        with connect(args.target, read_only=True) as conn:
            day = args.date or default_report_date(conn, args.target, dt.datetime.now(org_timezone()).date())
            specs = day_specs(conn, args.target, day)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except database_errors() as exc:
        print(f"error: the {args.target} warehouse could not be read: {error_reason(exc)}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for name, spec in specs.items():
        png = render_png(spec, scale=args.scale)
        (args.out / f"{name}.png").write_bytes(png)
        (args.out / f"{name}.vl.json").write_text(json.dumps(spec, indent=1, ensure_ascii=False) + "\n")
        width, height = png_size(png)
        print(f"{args.out / f'{name}.png'}  {width}x{height} px  {len(png):,} bytes")
    print(f"rendered {len(specs)} charts for {fmt_date(day)} in {time.perf_counter() - started:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
