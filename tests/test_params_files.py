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


def test_gpu_yaml_base_model_is_the_measured_one():
    """The README's H200 profile of gpu.yaml's base model holds only while gpu.yaml's stage-00 inputs
    are those of the run it reports (outputs/reference/h200_base_model_packed/run_gpu.json)."""
    import json

    from sairlib.params import RESERVED, notebook_parameters, resolve_params

    declared = notebook_parameters(ROOT / "notebooks" / "00_world.ipynb")
    stage00 = lambda p: {k: v for k, v in p.items() if k in declared and k not in RESERVED}  # noqa: E731
    measured = json.loads((ROOT / "outputs/reference/h200_base_model_packed/run_gpu.json").read_text())
    assert stage00(resolve_params(ROOT / "params" / "gpu.yaml")) == stage00(measured["params"])
