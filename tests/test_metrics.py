"""Tests for sairlib.metrics and sairlib.provenance.

python -m pytest -q tests/test_metrics.py
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sairlib.metrics import load_metrics, save_metrics, write_json
from sairlib.provenance import provenance


def test_save_and_load_convert_numpy_and_torch(tmp_path):
    path = save_metrics(
        tmp_path / "stage",
        {
            "acc": np.float32(0.5),
            "n": np.int64(3),
            "ok": np.bool_(True),
            "loss": torch.tensor(1.25),
            "curve": np.arange(3),
            "name": "x",
        },
    )
    assert path == tmp_path / "stage" / "metrics.json"
    assert load_metrics(tmp_path / "stage") == {
        "acc": 0.5, "n": 3, "ok": True, "loss": 1.25, "curve": [0, 1, 2], "name": "x",
    }  # fmt: skip
    assert list((tmp_path / "stage").iterdir()) == [path]  # no temporary file left


def test_run_key_is_reserved(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        save_metrics(tmp_path, {"run": 1})


def test_failed_write_keeps_the_old_file(tmp_path):
    path = write_json(tmp_path / "a.json", {"v": 1})
    with pytest.raises(TypeError):
        write_json(path, {"v": object()})
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_provenance_fields():
    prov = provenance()
    assert set(prov) >= {"git_sha", "git_dirty", "source_digest", "python", "versions", "device", "timestamp_utc"}
    assert len(prov["source_digest"]) == 64
    assert prov["versions"]["torch"] == torch.__version__
    assert prov["device"]["type"] in ("cpu", "cuda")
    json.dumps(prov)


def test_source_digest_names_the_code_not_the_place(tmp_path):
    """Equal for a copy of the same files, different when one byte or one name changes."""
    import shutil

    from sairlib.provenance import source_digest

    for name in ("a", "b"):
        (tmp_path / name / "sairlib" / "sub").mkdir(parents=True)
        (tmp_path / name / "notebooks").mkdir()
        (tmp_path / name / "sairlib" / "x.py").write_text("X = 1\n")
        (tmp_path / name / "sairlib" / "sub" / "y.py").write_text("Y = 2\n")
        (tmp_path / name / "notebooks" / "00.ipynb").write_text("{}")
    a, b = tmp_path / "a", tmp_path / "b"
    assert source_digest(a) == source_digest(b)
    (b / "sairlib" / "x.py").write_text("X = 2\n")
    assert source_digest(a) != source_digest(b)
    shutil.copy(a / "sairlib" / "x.py", b / "sairlib" / "x.py")
    assert source_digest(a) == source_digest(b)
    (b / "sairlib" / "sub" / "y.py").rename(b / "sairlib" / "sub" / "z.py")
    assert source_digest(a) != source_digest(b)
    assert source_digest(tmp_path / "empty") is None
