#!/bin/sh
# Install Debian's `chromium` package where the binary is missing (used by the browser test of
# the HTML report, tests/test_report_browser.py, run by `make test-browser`). Idempotent; uses
# apt-get only (Playwright's own browser download is never used).
set -eu
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-chromium: no apt-get here; install Chromium by hand" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
# apt and dpkg output goes to a log, shown only when the install fails.
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium; } >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "install-chromium: apt-get could not install chromium" >&2
    exit 1
fi
rm -f "$log"
command -v chromium >/dev/null 2>&1
