"""Tests for sairlib.params: parameter files checked against parameters cells.

python -m pytest -q tests/test_params.py
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from sairlib.params import (
    UNKNOWN,
    ParamsError,
    load_params,
    notebook_parameters,
    stage_parameters,
)

CHAIN = Path(__file__).resolve().parent / "fixtures" / "notebooks" / "chain"
NOTEBOOKS = sorted(CHAIN.glob("[0-9][0-9]_*.ipynb"))
FIRST, SECOND = NOTEBOOKS


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ParamsError) as info:
        load_params(write(tmp_path, text), NOTEBOOKS)
    return str(info.value)


def test_notebook_parameters_reads_defaults():
    assert notebook_parameters(FIRST) == {
        "run_dir": "",
        "stage_dir": "",
        "seed": 0,
        "alpha": 1.5,
        "label": "first",
        "model": {"hidden": 8, "layers": 2},
        "use_cache": False,
    }


def test_valid_file_is_returned(tmp_path):
    text = "seed: 3\nalpha: 2  # an int where a float is expected\nmodel: {hidden: 4}\nbeta: 7\n"
    assert load_params(write(tmp_path, text), NOTEBOOKS) == {
        "seed": 3,
        "alpha": 2,
        "model": {"hidden": 4},
        "beta": 7,
    }


def test_extends_merges_over_the_base_key_by_key(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path, "seed: 1\nalpha: 2.0\nmodel: {hidden: 4, layers: 3}\n", "base.yaml")
    write(tmp_path, "extends: base.yaml\nalpha: 3.0\n", "middle.yaml")
    top = write(tmp_path, "extends: ../middle.yaml\nmodel: {layers: 5}\n", "sub/top.yaml")
    assert load_params(top, NOTEBOOKS) == {"seed": 1, "alpha": 3.0, "model": {"hidden": 4, "layers": 5}}


def test_extends_errors_name_the_file(tmp_path):
    write(tmp_path, "extends: b.yaml\n", "a.yaml")
    write(tmp_path, "extends: a.yaml\n", "b.yaml")
    with pytest.raises(ParamsError, match=r"a\.yaml: extends makes a cycle"):
        load_params(tmp_path / "a.yaml", NOTEBOOKS)
    assert "no parameter file" in error(tmp_path, "extends: missing.yaml\n")
    assert "extends must be the path" in error(tmp_path, "extends: [a.yaml]\n")
    write(tmp_path, "alpah: 1.0\n", "typo.yaml")  # the merged mapping is checked like any file
    assert "did you mean 'alpha'" in error(tmp_path, "extends: typo.yaml\n")


def test_empty_file_is_an_empty_mapping(tmp_path):
    assert load_params(write(tmp_path, "# nothing\n"), NOTEBOOKS) == {}


def test_unknown_key_names_file_and_suggests(tmp_path):
    msg = error(tmp_path, "seed: 1\nalpah: 2.0\n")
    assert "p.yaml" in msg and "'alpah'" in msg and "did you mean 'alpha'" in msg


def test_mistyped_value(tmp_path):
    msg = error(tmp_path, "beta: two\n")
    assert "beta must be int" in msg and "'two'" in msg
    assert "beta must be int" in error(tmp_path, "beta: 2.5\n")


def test_float_written_with_exponent_only_gets_a_hint(tmp_path):
    assert "write 1.0e-3" in error(tmp_path, "alpha: 1e-3\n")


def test_nested_unknown_key(tmp_path):
    msg = error(tmp_path, "model:\n  hiden: 4\n")
    assert "model.hiden" in msg and "did you mean 'hidden'" in msg


def test_nested_mistyped_value(tmp_path):
    assert "model.layers must be int" in error(tmp_path, "model: {layers: many}\n")


def test_bool_is_not_an_int_and_int_is_not_a_bool(tmp_path):
    assert "beta must be int" in error(tmp_path, "beta: true\n")
    assert "use_cache must be bool" in error(tmp_path, "use_cache: 1\n")
    assert "alpha must be float" in error(tmp_path, "alpha: yes\n")
    assert load_params(write(tmp_path, "use_cache: true\n"), NOTEBOOKS) == {"use_cache": True}


@pytest.mark.parametrize("name", ["run_dir", "stage_dir"])
def test_reserved_names(tmp_path, name):
    msg = error(tmp_path, f"{name}: /somewhere\n")
    assert repr(name) in msg and "runner" in msg


def test_malformed_yaml_names_file_and_line(tmp_path):
    msg = error(tmp_path, "seed: 1\nalpha: [1.0, 2.0\nbeta: 3\n")
    assert "p.yaml:" in msg and "invalid YAML" in msg
    line = int(msg.split("p.yaml:")[1].split(":")[0])
    assert line in (2, 3, 4)


def test_duplicate_key_is_an_error(tmp_path):
    msg = error(tmp_path, "seed: 1\nseed: 2\n")
    assert "p.yaml:2" in msg and "duplicate key 'seed'" in msg


def test_non_mapping_file(tmp_path):
    msg = error(tmp_path, "- seed\n- 1\n")
    assert "p.yaml" in msg and "must be a mapping" in msg


def test_missing_file_names_it(tmp_path):
    with pytest.raises(ParamsError, match="missing.yaml"):
        load_params(tmp_path / "missing.yaml", NOTEBOOKS)


def test_none_list_and_non_literal_defaults(tmp_path):
    cell = nbformat.v4.new_code_cell(
        'anything = None\nsizes = [1, 2]\nout = Path("x")\n', metadata={"tags": ["parameters"]}
    )
    nb = nbformat.v4.new_notebook(cells=[cell])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "language": "python",
        "display_name": "Python 3",
    }
    path = tmp_path / "00_extra.ipynb"
    nbformat.write(nb, path)
    assert notebook_parameters(path)["out"] is UNKNOWN
    ok = "anything: {a: [1]}\nsizes: [3]\nout: /tmp/x\n"
    assert load_params(write(tmp_path, ok), [path])["anything"] == {"a": [1]}
    with pytest.raises(ParamsError, match="sizes must be list"):
        load_params(write(tmp_path, "sizes: 3\n"), [path])


def test_stage_parameters_picks_the_notebooks_own(tmp_path):
    params = load_params(write(tmp_path, "seed: 1\nalpha: 2.0\nbeta: 3\n"), NOTEBOOKS)
    assert stage_parameters(params, FIRST) == {"seed": 1, "alpha": 2.0}
    assert stage_parameters(params, SECOND) == {"seed": 1, "beta": 3}
