"""``benchmarks/train_loop.py --quick``: collation, bare steps and ``train_lm`` on CPU, a sane JSON."""
import json
import math
from pathlib import Path

import pytest

from benchmark_scripts import load

TOP = ("device", "params_M", "hidden", "layers", "heads", "batch", "vocab", "workers", "torch", "transformers",
       "quick", "data", "step", "mfu", "trainer", "checks")


def bench():
    """The script as a module, loaded once."""
    return load("train_loop")


@pytest.fixture(scope="module")
def run(tmp_path_factory, one_thread):
    """The quick run, shortened to 4 trainer steps (2 logged losses) at 0 and 2 loader workers."""
    import sairlib.training as training

    before = training.loader_workers
    out = tmp_path_factory.mktemp("bench") / "train_loop.json"
    returned = bench().main(["--quick", "--steps", "4", "--workers", "2", "--out", str(out)])
    assert training.loader_workers is before  # the patch is undone
    return returned, json.loads(out.read_text())


def test_json_has_the_sections_and_matches_the_return_value(run):
    returned, r = run
    for k in TOP:
        assert k in r, k
    assert r["quick"] is True and r["device"].startswith("cpu")
    assert r["params_M"] == pytest.approx(returned["params_M"])
    assert r["trainer"]["steps"] == 4 and r["workers"] == 2  # explicit options win over --quick's sizes
    assert [s["name"] for s in r["step"]["settings"]] == ["padded_sdpa", "packed_sdpa", "packed_flex"]


def test_data_section_counts_padding(run):
    _, r = run
    d = r["data"]
    assert 0 <= d["padding_fraction"] < 1
    assert 0 < d["real_tokens_per_batch"] <= d["padded_tokens_per_batch"]
    assert d["padding_fraction"] == pytest.approx(1 - d["real_tokens_per_batch"] / d["padded_tokens_per_batch"])
    assert d["collate_ms"] > 0 and d["collate_packed_ms"] > 0
    assert d["length_min"] <= d["length_mean"] <= d["length_max"]


def test_packed_first_loss_equals_padded_and_throughput_is_positive(run):
    _, r = run
    padded, packed, flex = r["step"]["settings"]
    for s in (padded, packed):
        assert math.isfinite(s["first_loss"]) and s["ms_per_step"] > 0 and s["tok_s"] > 0, s["name"]
    assert packed["rows"] == 1 and padded["rows"] == r["batch"]
    assert packed["first_loss_rel_diff"] < 1e-5  # float32 on CPU: the same mean over the same targets
    assert packed["first_loss"] == pytest.approx(padded["first_loss"], rel=1e-5)
    assert "skipped" in flex or flex["first_loss_rel_diff"] < 1e-3  # FlexAttention has no CPU backward
    assert r["checks"]["packed_sdpa_first_loss_within_1e-3"] is True


def test_mfu_section_times_train_lm_padded_and_packed_on_the_same_examples(run):
    _, r = run
    m = r["mfu"]
    assert [x["name"] for x in m["runs"]] == ["padded", "packed_compiled"]
    padded, packed = m["runs"]
    on_gpu = m["trainer_device"] == "cuda"  # the Trainer trains on a GPU wherever there is one
    assert padded["hparams"] == {} and packed["hparams"] == {"packing": True, **({"compile": True} if on_gpu else {})}
    assert m["examples"] == m["steps"] * r["batch"] and padded["tokens"] == packed["tokens"] > 0
    for x in (padded, packed):
        assert x["steps"] == 6 and x["timed_steps"] == 4 and 0 < x["steady_seconds"] < x["seconds"]
        assert 0 < x["mfu"] < 1 and x["tok_s"] == pytest.approx(
            x["tokens_per_step"] * x["timed_steps"] / x["steady_seconds"])
        assert x["mfu"] == pytest.approx(6 * r["params_M"] * 1e6 * x["tok_s"] / (m["matmul_tflops"] * 1e12))
        assert len(x["losses"]) == 3
    assert padded["attention"] == "sdpa" and packed["attention"] == ("flex_attention" if on_gpu else "sdpa")
    if not on_gpu:  # float32: the same updates; bf16 and other kernels on a GPU: recorded, not checked
        assert packed["losses"] == pytest.approx(padded["losses"], rel=1e-3)
        assert r["checks"]["mfu_packed_losses_within_1e-3_on_cpu"] is True
    else:
        assert r["checks"]["mfu_packed_losses_within_1e-3_on_cpu"] is None
    assert m["speedup"] == pytest.approx(packed["tok_s"] / padded["tok_s"])


def test_trainer_losses_are_bitwise_equal_across_worker_counts(run):
    _, r = run
    t = r["trainer"]
    assert [x["workers"] for x in t["runs"]] == [0, 2]
    a, b = (x["losses"] for x in t["runs"])
    assert len(a) == 2
    if t["device"] == "cpu":  # the Trainer trains on a GPU wherever there is one, even with --device cpu
        assert a == b and t["losses_bitwise_equal"] is True and t["losses_max_rel_diff"] == 0
        assert r["checks"]["trainer_losses_bitwise_equal_on_cpu"] is True
    else:  # GPU kernels are not bitwise reproducible: the difference is recorded, the check not made
        assert r["checks"]["trainer_losses_bitwise_equal_on_cpu"] is None and math.isfinite(t["losses_max_rel_diff"])
    assert all(x["ms_per_step"] > 0 for x in t["runs"])


def test_quick_writes_its_own_file_and_sections_are_checked():
    b = bench()
    assert Path(b.parse_args(["--quick"]).out).name == "train_loop_quick.json"
    assert Path(b.parse_args([]).out).name == "train_loop.json"
    assert b.parse_args(["--quick"]).device == "cpu"
    with pytest.raises(SystemExit):
        b.parse_args(["--sections", "data,nope"])
    with pytest.raises(SystemExit):
        b.parse_args(["--step-lengths", "300,100"])
    with pytest.raises(SystemExit):
        b.parse_args(["--mfu-steps", "10", "--mfu-skip", "10"])
