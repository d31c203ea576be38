#!/usr/bin/env bash
# The test suite starts its own PostgreSQL server from the stock binaries.
# Install them (Debian/Ubuntu) when they are missing, unless TEST_DATABASE_URL points at a server.
set -euo pipefail
[ -n "${TEST_DATABASE_URL:-}" ] && exit 0
if command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    exit 0
fi
echo "installing PostgreSQL server binaries (apt-get install postgresql) ..." >&2
sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
$sudo_cmd apt-get update -qq
$sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
