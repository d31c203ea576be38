"""How often kpi_anomalies calls a day unusual on a history with nothing unusual in it: its false-positive rate.

    python -m benchmarks.anomalies [--duckdb demo.duckdb]

Reads a built DuckDB warehouse (by default the one `make demo` leaves) and prints, per metric and per kind of
judgement (day, week), how many days or weeks were judged and how many were flagged. The sandbox org's history
is drawn from steady weekday rates, so every flag on it is a false alarm.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import duckdb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duckdb", type=Path, default=Path("demo.duckdb"), help="a built DuckDB warehouse")
    args = parser.parse_args(argv)
    if not args.duckdb.exists():
        parser.error(f"{args.duckdb} does not exist: run `make demo` first")
    with duckdb.connect(str(args.duckdb), read_only=True) as conn:
        rows = conn.execute(
            "select metric, period, count(*), count(*) filter (where is_anomaly), min(kpi_date), max(kpi_date) "
            "from analytics.kpi_anomalies group by metric, period order by metric, period"
        ).fetchall()
    print(f"{'metric':<22} {'period':<6} {'judged':>6} {'flagged':>7} {'rate':>6}  days judged")
    judged = flagged = 0
    for metric, period, n, f, first, last in rows:
        judged, flagged = judged + n, flagged + f
        print(f"{metric:<22} {period:<6} {n:>6} {f:>7} {f / n:>6.1%}  {first} .. {last}")
    print(f"{'all':<29} {judged:>6} {flagged:>7} {flagged / max(judged, 1):>6.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
