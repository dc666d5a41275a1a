#!/usr/bin/env bash
# Best effort, for tests/test_report_browser.py (which skips without it): Debian's Chromium.
# Installs only as root on a machine with apt-get (CI); elsewhere it says so and goes on.
command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "make: installing Debian's chromium for the report's browser test" >&2
    { apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }; } >/dev/null 2>&1 \
        || echo "make: could not install chromium; the browser test will be skipped" >&2
else
    echo "make: chromium not found; the report's browser test will be skipped" >&2
fi
exit 0
