"""The marts say the same on both warehouses: DuckDB (the embedded default) and PostgreSQL (production).

The same sandbox org is loaded by `python -m pipelines.zoho` and built by `dbt build` on each (the session's
built warehouse); every mart of `analytics` is then read in full from both and compared row by row.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from typing import Any

import pytest

from tests.test_marts import query

pytestmark = pytest.mark.postgres

# When each warehouse was synced and built: seconds apart by construction, not a disagreement.
SYNC_TIME_COLUMNS = {"synced_at", "synced_through", "built_at", "as_of_synced_at", "loaded_at"}


def comparable(value: Any) -> Any:
    """One spelling per value: numbers to 9 significant digits, instants in UTC, dates as dates."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (Decimal, float, int)):
        number = float(value)
        return 0.0 if number == 0 else round(number, 8 - int(math.floor(math.log10(abs(number)))))
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)
    return value


def mart_rows(workspace: Any, target: str, table: str) -> tuple[list[str], list[tuple]]:
    columns = [
        name
        for (name,) in query(
            workspace,
            target,
            (
                "select column_name from information_schema.columns "
                f"where table_schema = 'analytics' and table_name = '{table}' order by column_name"
            ),
        )
    ]
    kept = [name for name in columns if name not in SYNC_TIME_COLUMNS]
    rows = query(workspace, target, f"select {', '.join(kept)} from analytics.{table}")
    return kept, sorted((tuple(comparable(v) for v in row) for row in rows), key=repr)


def test_every_mart_is_the_same_on_duckdb_and_postgres(built_warehouse: Any) -> None:
    """GIVEN one sandbox org loaded and built on DuckDB and on PostgreSQL
    WHEN every mart of `analytics` is read from both
    THEN both have the same marts, the same columns and the same rows (money and rates to 9 significant
         digits, instants compared in UTC), apart from when each was synced."""
    workspace = built_warehouse.workspace
    listed = "select table_name from information_schema.tables where table_schema = 'analytics'"
    marts = {name for (name,) in query(workspace, "duckdb", listed)}
    assert marts == {name for (name,) in query(workspace, "postgres", listed)}
    assert {"kpi_daily", "deal_daily_states", "deals", "leads", "data_quality_issues"} <= marts

    differing, compared = {}, {}
    for table in sorted(marts):
        duck_columns, duck_rows = mart_rows(workspace, "duckdb", table)
        pg_columns, pg_rows = mart_rows(workspace, "postgres", table)
        assert duck_columns == pg_columns, table
        compared[table] = len(duck_rows)
        if duck_rows != pg_rows:
            only_duck = [row for row in duck_rows if row not in set(pg_rows)][:3]
            only_pg = [row for row in pg_rows if row not in set(duck_rows)][:3]
            differing[table] = (len(duck_rows), len(pg_rows), duck_columns, only_duck, only_pg)

    assert not differing, differing
    assert all(compared[table] for table in ("kpi_daily", "deal_daily_states", "deals", "leads")), compared
