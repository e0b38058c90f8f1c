"""Every committed parameter file fits the notebooks (names, nesting and types)."""
from pathlib import Path

import pytest

from sairlib.params import load_params

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


# params/accelerate/ holds accelerate's own config files, not notebook parameters
FILES = sorted(p for p in (ROOT / "params").rglob("*.yaml") if "accelerate" not in p.relative_to(ROOT).parts)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT / "params")))
def test_params_file_validates(path):
    assert load_params(path, NOTEBOOKS)
