"""Every committed parameter file fits the notebooks (names, nesting and types)."""
from pathlib import Path

import pytest

from sairlib.params import load_params

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", sorted((ROOT / "params").rglob("*.yaml")), ids=lambda p: p.name)
def test_params_file_validates(path):
    assert load_params(path, NOTEBOOKS)
