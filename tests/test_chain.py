"""The real notebook chain runs end to end through the runner with params/ci.yaml."""
import json
import subprocess
import sys
from pathlib import Path

from sairlib.world.corpus import COLOUR_SOURCES

ROOT = Path(__file__).resolve().parents[1]


def test_ci_chain_runs_and_records_metrics(tmp_path):
    r = subprocess.run([sys.executable, "-m", "sairlib.run", "--params", str(ROOT / "params" / "ci.yaml"),
                        "--outputs", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    run = tmp_path / "ci"
    m = json.loads((run / "00_world" / "metrics.json").read_text())
    assert m["run"]["status"] == "complete" and m["run"]["seed"] == 0
    assert m["tokenizer_fidelity"] >= 0.99
    cap = m["capability"]  # wrong colours by where the right colour can be read: each one counted once
    by_source = cap["evaluate_wrong_colour_by_source"]
    assert set(by_source) <= set(COLOUR_SOURCES)
    assert sum(v["n"] for v in by_source.values()) == cap["evaluate_verdict_by_kind"].get("wrong_colour", {"n": 0})["n"]
    assert (run / "00_world" / "00_world.html").stat().st_size > 10_000
    assert (run / "00_world" / "tokenizer" / "tokenizer_config.json").is_file()
    index = (run / "index.html").read_text()
    assert "00_world" in index
    stages = ["00_world", "01_pipeline", "02_masking", "03_sft", "04_grpo", "05_ablations", "06_analysis"]
    for stage in stages:
        m = json.loads((run / stage / "metrics.json").read_text())
        assert m["run"]["status"] == "complete", stage
        assert stage in index
    pipe = json.loads((run / "01_pipeline" / "metrics.json").read_text())
    assert pipe["kept"] > 0 and sum(pipe["modes"].values()) == pipe["kept"]
    assert (run / "01_pipeline" / "dataset" / "dataset_info.json").is_file()
    assert (run / "02_masking" / "sft_dataset").is_dir()
    assert (run / "03_sft" / "model" / "config.json").is_file()
    assert (run / "04_grpo" / "model" / "config.json").is_file()
    grpo = json.loads((run / "04_grpo" / "metrics.json").read_text())  # ci.yaml: balance "complexity" in 03 and 04
    assert grpo["eval_balance"] == "complexity"
    assert list(grpo["eval"]["sft"]["by_bucket"]) == ["1-2", "3-5", "6+"] and grpo["eval"]["sft"]["n"] == 4
    assert set(grpo["claims_balanced"]) == set(grpo["claims"])
    # a second GRPO seed on the same 00-03 (linked, not run again) and the same held-out requests
    (tmp_path / "seed_1.yaml").write_text(f"extends: {ROOT / 'params' / 'ci.yaml'}\ngrpo_seed: 1\n")
    r = subprocess.run([sys.executable, "-m", "sairlib.run", "--params", str(tmp_path / "seed_1.yaml"),
                        "--outputs", str(tmp_path), "--reuse", "ci", "--only", "04"], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    other = tmp_path / "seed_1"
    assert all((other / s).is_symlink() for s in stages[:4]) and not (other / "04_grpo").is_symlink()
    second = json.loads((other / "04_grpo" / "metrics.json").read_text())
    assert second["grpo_seed"] == 1 and grpo["grpo_seed"] == 0 and second["seed"] == 0
    assert second["eval"]["sft"] == grpo["eval"]["sft"]  # the evaluation does not follow the GRPO seed
