#!/usr/bin/env bash
# The whole day on the embedded default, against the local sandbox org:
#   sandbox org -> dlt -> DuckDB -> dbt build -> briefing -> WhatsApp message printed as a dry run.
# Needs no account. Uses its own DuckDB file (demo.duckdb), rebuilt from scratch on every run.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export DUCKDB_PATH="${DEMO_DUCKDB_PATH:-demo.duckdb}"
export DLT_DATA_DIR="${DLT_DATA_DIR:-$PWD/.dlt/pipelines/demo}"
export RUNTIME__DLTHUB_TELEMETRY=false DBT_SEND_ANONYMOUS_USAGE_STATS=false
rm -f "$DUCKDB_PATH" "$DUCKDB_PATH.wal"
rm -rf "$DLT_DATA_DIR"

work=$(mktemp -d)
sandbox_pid=""
cleanup() { [ -n "$sandbox_pid" ] && kill "$sandbox_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

step() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }
now() { echo "$EPOCHREALTIME"; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
declare -A took

step "Starting the sandbox Zoho org (5,000 leads, 2,000 deals)"
"$BIN/python" -m sandbox serve --seed 7 --leads 5000 --deals 2000 --port 0 >"$work/env" 2>"$work/sandbox.log" &
sandbox_pid=$!
for _ in $(seq 1 120); do
    grep -q ZOHO_REFRESH_TOKEN "$work/env" 2>/dev/null && break
    kill -0 "$sandbox_pid" 2>/dev/null || { cat "$work/sandbox.log" >&2; exit 1; }
    sleep 0.25
done
grep -q ZOHO_REFRESH_TOKEN "$work/env" || { echo "error: the sandbox did not start" >&2; cat "$work/sandbox.log" >&2; exit 1; }
# shellcheck disable=SC1091
source "$work/env"
echo "sandbox org at $ZOHO_ACCOUNTS_URL (timezone $CRM_TIMEZONE)" >&2

step "Extracting Leads and Deals into $DUCKDB_PATH (schema zoho_raw)"
t=$(now); "$BIN/python" -m pipelines.zoho --destination duckdb; took[extract]=$(since "$t")

step "Building and testing the marts (dbt build)"
# One line per model and test as it finishes (dbt's own), without the START lines; pipefail keeps dbt's status.
t=$(now); "$BIN/dbt" build --target duckdb 2>&1 | awk '/Running with dbt|Registered adapter|Found [0-9]|Concurrency| [0-9]+ of [0-9]+ (OK|PASS|ERROR|FAIL|WARN|SKIP)|Completed|Done\.|Error|error/ { print; fflush() }'
took[dbt]=$(since "$t")

step "KPIs from analytics.kpi_daily (the last complete day, the one the briefing covers)"
"$BIN/python" - <<'PY'
import datetime as dt

from insights.facts import default_report_date, org_timezone
from warehouse import connect

with connect("duckdb", read_only=True) as conn:
    day = default_report_date(conn, "duckdb", dt.datetime.now(org_timezone()).date())
    rows = conn.execute(
        "select metric, value, unit from analytics.kpi_daily where kpi_date = ? order by metric", [day]
    ).fetchall()
print(f"  {day:%a %d %b %Y}")
for metric, value, unit in rows:  # unit: count, ratio, or the home currency's code for money
    if value is None:
        shown = "-"
    elif unit == "ratio":
        shown = f"{value:.1%}"
    elif unit == "count":
        shown = f"{value:,.0f}"
    else:
        shown = f"{value:,.2f} {unit}"
    print(f"  {metric:<32} {shown:>20}")
PY

step "Writing the briefing (Ollama at ${OLLAMA_BASE_URL:-http://localhost:11434} if reachable) — dry run, nothing is sent"
t=$(now); "$BIN/python" -m insights.deliver --target duckdb --dry-run; took[briefing]=$(since "$t")

step "Done"
printf '  extract %ss | dbt build %ss | briefing %ss\n' "${took[extract]}" "${took[dbt]}" "${took[briefing]}"
# make api, docs and mf read demo.duckdb by themselves while it is the only warehouse; otherwise name it.
on=""
if [ -e warehouse.duckdb ] || [ "$DUCKDB_PATH" != demo.duckdb ]; then on="DUCKDB_PATH=$DUCKDB_PATH "; fi
cat <<EOT

Query the marts:
  .venv/bin/python -c "import duckdb; print(duckdb.connect('$DUCKDB_PATH', read_only=True).sql('select * from analytics.kpi_daily order by kpi_date desc limit 20'))"
  tables: analytics.deals, analytics.leads, analytics.pipeline_by_stage, analytics.kpi_daily, analytics.kpi_anomalies, analytics.ai_summaries
Start the metrics API on this warehouse, then open the dashboard at http://127.0.0.1:8000/dashboard (API docs: /docs):
  ${on}make api
Draw the day's charts as PNG:
  ${on}.venv/bin/python -m insights.charts --out charts
The marts' documentation, and the metrics at any grain (MetricFlow), on this warehouse:
  ${on}make docs && .venv/bin/dbt docs serve
  ${on}make mf ARGS="query --metrics win_rate --group-by metric_time__month"
Run the day for your own org: see README.md, "Connect your Zoho org".
EOT
