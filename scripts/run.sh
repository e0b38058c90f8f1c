#!/usr/bin/env bash
# Set up .venv if needed, then run the notebooks end to end (resuming a previous run).
#
#   bash scripts/run.sh [PARAMS_FILE] [runner args]
#   bash scripts/run.sh params/ci.yaml --only 00,01 --force
#
# PARAMS_FILE defaults to params/default.yaml; results go to outputs/<params stem>/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
params="params/default.yaml"
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
    params="$1"
    shift
    # a path given relative to the caller's folder
    if [ -f "$params" ]; then
        params="$(cd "$(dirname "$params")" && pwd)/$(basename "$params")"
    fi
fi

bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m sairlib.run --params "$params" "$@"
