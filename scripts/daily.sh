#!/usr/bin/env bash
# The daily job: extract -> dbt build -> briefing. The same three steps as .github/workflows/daily.yml.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-duckdb}
BIN=.venv/bin
# An existing .env file (ZOHO_CLIENT_ID=..., DATABASE_URL=..., TWILIO_...) is read when present.
if [ -f .env ]; then set -a; . ./.env; set +a; fi
if [ "$target" = postgres ] && [ -n "${DATABASE_URL:-}${DESTINATION__POSTGRES__CREDENTIALS:-}" ]; then
    # dbt's postgres target reads libpq variables: derive them from the URL the pipeline uses,
    # so both always point at the same database.
    pg_env=$("$BIN/python" -m warehouse pg-env)
    eval "$pg_env"
fi
"$BIN/python" -m pipelines.zoho --destination "$target"
"$BIN/dbt" build --target "$target"
"$BIN/python" -m insights.deliver --target "$target" ${DELIVER_ARGS:-}
