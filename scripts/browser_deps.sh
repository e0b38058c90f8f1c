#!/usr/bin/env bash
# Install what tests/test_browser.py needs: a system Chromium (Debian's `chromium` package).
#
#   bash scripts/browser_deps.sh
#
# Playwright's Python package comes with the test extras (pyproject.toml); its own browser
# download is not used: the test launches the system chromium through `executable_path`.
# Does nothing when a chromium executable is already on PATH. Installing needs root and apt-get;
# otherwise it says what to install and exits 0, and the browser test then skips
# (or fails when SAIR_REQUIRE_BROWSER=1).
set -euo pipefail

for exe in chromium chromium-browser; do
    if command -v "$exe" >/dev/null 2>&1; then
        echo "browser_deps: found $(command -v "$exe")"
        exit 0
    fi
done

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "browser_deps: no chromium on PATH; install Debian's 'chromium' package (as root: apt-get install -y chromium)" >&2
    exit 0
fi

echo "browser_deps: installing chromium"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q chromium
echo "browser_deps: $(chromium --version 2>/dev/null || echo 'chromium installed')"
