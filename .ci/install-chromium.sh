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
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium >/dev/null
command -v chromium >/dev/null 2>&1
