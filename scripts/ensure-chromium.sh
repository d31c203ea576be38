#!/usr/bin/env bash
# The dashboard's tests drive Debian's headless Chromium (chromium-headless-shell) through Playwright, rather than
# the browser `playwright install` downloads from a host CI may not reach. Install the package when it is missing
# (unless CHROMIUM names another binary): from the package lists the machine has, and only when that fails after
# an `apt-get update`.
set -euo pipefail
chromium=${CHROMIUM:-/usr/bin/chromium-headless-shell}
[ -x "$chromium" ] && exit 0
if [ -n "${CHROMIUM:-}" ]; then
    echo "error: CHROMIUM=$chromium is not an executable file" >&2
    exit 1
fi
echo "installing headless Chromium (apt-get install chromium-headless-shell) ..." >&2
sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
install_chromium() {
    $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium-headless-shell >/dev/null
}
if ! install_chromium 2>/dev/null; then
    $sudo_cmd apt-get update -qq
    install_chromium
fi
