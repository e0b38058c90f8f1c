"""Committed notebooks carry no outputs and exactly one ``parameters`` cell.

    python -m pytest -q tests/test_notebooks_clean.py

Clear a notebook with
``jupyter nbconvert --clear-output --inplace notebooks/NN_name.ipynb``.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
FIXTURES = sorted((REPO_ROOT / "tests" / "fixtures" / "notebooks").rglob("*.ipynb"))
ALL = NOTEBOOKS + FIXTURES


def _id(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


@pytest.mark.parametrize("path", ALL, ids=[_id(p) for p in ALL])
def test_notebook_is_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not [i for i, c in enumerate(code) if c.get("outputs")], "clear the outputs"
    assert not [i for i, c in enumerate(code) if c.get("execution_count")], "clear execution counts"
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"needs exactly one cell tagged 'parameters', found {len(tagged)}"
    assert tagged[0].cell_type == "code"
    assert nb.metadata.get("kernelspec", {}).get("language") == "python"


def test_notebooks_folder():
    if not NOTEBOOKS:
        pytest.skip("no notebooks in notebooks/ yet")
    chain = [p for p in NOTEBOOKS if p.name[:2].isdigit() and p.name[2] == "_"]
    assert chain == NOTEBOOKS, "notebooks are named NN_name.ipynb"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[_id(p) for p in NOTEBOOKS])
def test_notebook_declares_runner_paths(path):
    from sairlib.params import notebook_parameters

    declared = notebook_parameters(path)
    assert {"run_dir", "stage_dir"} <= set(declared), "the runner passes run_dir and stage_dir"
