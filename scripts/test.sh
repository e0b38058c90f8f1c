#!/usr/bin/env bash
# Set up .venv if needed, then run the tests; arguments go to pytest.
#
#   bash scripts/test.sh
#   bash scripts/test.sh tests/test_params.py -k nested
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest -q "$@"
