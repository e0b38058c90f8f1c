#!/usr/bin/env bash
# Set up .venv in this checkout (needs only Python >= 3.10); safe to run again.
#
#   bash scripts/setup.sh
#
# PyTorch is installed first, so that the project's "torch>=2.11" is already
# satisfied when the rest is resolved:
#   * nothing, when .venv already imports torch;
#   * "$SAIR_TORCH_SPEC" when set (e.g. SAIR_TORCH_SPEC="torch==2.11.0");
#   * "torch>=2.11" (the CUDA build from PyPI) when `nvidia-smi -L` works;
#   * torch==2.13.0 otherwise (the CPU build on CPU-only machines).
# Then `pip install -e ".[test]"`. Both pip steps are skipped while the sha256 of
# pyproject.toml matches the stamp in .venv. Use $PYTHON to pick the interpreter.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
VPY="$VENV/bin/python"
STAMP="$VENV/.sair-setup-sha256"

if [ ! -x "$VPY" ]; then
    echo "setup: creating $VENV"
    "${PYTHON:-python3}" -m venv "$VENV"
fi

want="$("$VPY" -c 'import hashlib; print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest())')"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    exit 0
fi

if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
    if [ -n "${SAIR_TORCH_SPEC:-}" ]; then
        spec="$SAIR_TORCH_SPEC"
    elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        spec="torch>=2.11"
    else
        spec="torch==2.13.0"
    fi
    echo "setup: installing $spec"
    "$VPY" -m pip install -q "$spec"
fi

echo "setup: installing sairlib and its dependencies"
"$VPY" -m pip install -q -e ".[test]"
echo "$want" > "$STAMP"
echo "setup: done ($("$VPY" -c 'import torch; print("torch", torch.__version__)'))"
