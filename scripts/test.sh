#!/usr/bin/env bash
# Set up .venv if needed, then run the tests; arguments go to pytest.
#
#   bash scripts/test.sh
#   bash scripts/test.sh tests/test_params.py -k nested
#
# The tests run in SAIR_TEST_WORKERS processes (default 2, pytest-xdist; 0 runs them in this one),
# a test file to a process, so a file's shared fixtures are built once.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
bash "$ROOT/scripts/browser_deps.sh"   # Debian's chromium for tests/test_browser.py (root only; else it skips)
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest -q -n "${SAIR_TEST_WORKERS:-2}" --dist loadfile "$@"
