"""``benchmarks/train.py --quick``: runs on CPU and writes a sane, self-consistent JSON."""
import json
import math

import pytest

from benchmark_scripts import load

REQUIRED = ("device", "params_M", "tok_s", "mfu", "baseline_tok_s", "baseline_mfu", "speedup", "matmul_tflops",
            "batch", "seq_len", "dtype", "compile", "torch", "transformers")


def load_benchmark():
    """The script as a module, loaded once."""
    return load("train")


@pytest.fixture(scope="module")
def result(tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("bench") / "train.json"
    returned = load_benchmark().main(["--quick", "--out", str(out)])
    written = json.loads(out.read_text())
    return returned, written


def test_json_has_the_fields_and_matches_the_return_value(result):
    returned, written = result
    for k in REQUIRED:
        assert k in written, k
    assert written["params_M"] == pytest.approx(returned["params_M"])
    assert written["quick"] is True
    assert written["compile"] is False and written["compile_skipped_reason"] == "CPU"
    assert written["dtype"] == "float32"
    assert written["device"].startswith("cpu")


def test_numbers_are_positive_and_mfu_follows_the_formula(result):
    _, r = result
    for k in ("params_M", "tok_s", "mfu", "baseline_tok_s", "baseline_mfu", "speedup", "matmul_tflops"):
        assert isinstance(r[k], (int, float)) and math.isfinite(r[k]) and r[k] > 0, k
    assert r["batch"] > 0 and r["seq_len"] > 0
    rate = r["matmul_tflops"] * 1e12
    assert r["mfu"] == pytest.approx(6 * r["params_M"] * 1e6 * r["tok_s"] / rate, rel=1e-9)
    assert r["baseline_mfu"] == pytest.approx(6 * r["params_M"] * 1e6 * r["baseline_tok_s"] / rate, rel=1e-9)
    assert r["speedup"] == pytest.approx(r["tok_s"] / r["baseline_tok_s"], rel=1e-9)
    assert r["mfu_non_embedding"] < r["mfu"]
    assert r["tokens"] > 0 and r["baseline_tokens"] > 0
    assert 0 <= r["baseline_pad_fraction"] < 1 and 0 < r["pack_fill"] <= 1


def test_packing_is_exact_in_float32(result):
    _, r = result
    assert r["exact_first_step_rel_diff"] < 1e-4
    assert r["exact_eager_packed_sdpa_rel_diff"] < 1e-4
    assert r["exact_eager_packed_flex_rel_diff"] < 1e-4  # forward only: flex has no CPU backward
    assert r["fallbacks"] == []


def test_pack_keeps_sequences_apart():
    """Labels never cross a sequence boundary, positions restart, the tail is its own document."""
    import numpy as np

    bench = load_benchmark()
    seqs = [np.array([5, 6, 7]), np.array([8, 9]), np.array([10, 11, 12, 13])]
    pending: list = []
    b = bench.pack(iter(seqs), 1, 8, 0, pending)
    assert pending == [] or len(pending) == 1
    assert b.input_ids[0].tolist() == [5, 6, 7, 8, 9, 0, 0, 0]
    assert b.labels[0].tolist() == [-100, 6, 7, -100, 9, -100, -100, -100]
    assert b.position_ids[0].tolist() == [0, 1, 2, 0, 1, 0, 1, 2]
    assert b.doc[0].tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    assert b.tokens == 5 and [len(s) for s in pending] == [4]
