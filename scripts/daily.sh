#!/usr/bin/env bash
# The daily job: check -> extract -> dbt build -> briefing. The same steps as .github/workflows/daily.yml.
# Exit status: 2 a setting is missing or wrong (nothing was done), 1 a step failed or another daily run is in
# progress on the same warehouse (this one did nothing), 0 done.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-duckdb}
BIN=.venv/bin
# An existing .env file (ZOHO_CLIENT_ID=..., DATABASE_URL=..., TWILIO_...) is read when present.
if [ -f .env ]; then set -a; . ./.env; set +a; fi

step() { printf '\n==> %s (%s)\n' "$1" "$(date +%H:%M:%S)" >&2; }
# Stop with the step's own exit status: 2 stays 2 (configuration), anything else is a failed run (1).
run() { local status=0; "$@" || status=$?; [ "$status" -eq 0 ] || exit $(( status == 2 ? 2 : 1 )); }

doctor_args=(--target "$target" --strict)
case " ${DELIVER_ARGS:-} " in *" --dry-run "*) doctor_args+=(--no-send) ;; esac

# One run at a time per warehouse: the script runs itself again under the job's lock (warehouse/job_lock.py),
# which stops a second run at once. The lock's holder is this script's parent in the run that does the work.
if [ "${CRM_DAILY_LOCK_HOLDER:-}" != "$PPID" ]; then
    status=0
    "$BIN/python" -m warehouse.job_lock --target "$target" -- bash scripts/daily.sh "$target" || status=$?
    if [ "$status" -eq 3 ]; then
        # No lock without a reachable warehouse: the checks say what to fix (exit 2).
        step "Checking the settings and connections"
        run "$BIN/python" -m insights.doctor "${doctor_args[@]}"
        echo "error: the daily job's lock could not be taken though the checks pass; nothing was done: run it again" >&2
        exit 1
    fi
    exit $(( status == 0 ? 0 : status == 2 ? 2 : 1 ))
fi

step "Checking the settings and connections"
run "$BIN/python" -m insights.doctor "${doctor_args[@]}"

if [ "$target" = postgres ] && [ -n "${DATABASE_URL:-}${DESTINATION__POSTGRES__CREDENTIALS:-}" ]; then
    # dbt's postgres target reads libpq variables: derive them from the URL the pipeline uses,
    # so both always point at the same database.
    pg_env=$("$BIN/python" -m warehouse pg-env)
    eval "$pg_env"
fi
step "Extracting Zoho CRM into zoho_raw"
run "$BIN/python" -m pipelines.zoho --destination "$target"
step "Building and testing the marts (dbt build)"
# Unit tests check the SQL against fixed inputs, not the day's data: they run with the test suite (make test).
run "$BIN/dbt" build --target "$target" --exclude-resource-type unit_test
if [ "$target" = postgres ]; then
    step "Locking the project's schemas down (row level security, no access for Supabase's API roles)"
    run "$BIN/python" -m warehouse.supabase lockdown
fi
step "Writing and sending the briefing"
# shellcheck disable=SC2086
run "$BIN/python" -m insights.deliver --target "$target" ${DELIVER_ARGS:-}
