"""benchmarks/pretrain_data.py on a small run (two chunks, so two workers fork): every worker count builds the same examples, and the JSON says so."""
import json

from benchmark_scripts import load


def test_worker_counts_build_the_same_examples(tmp_path):
    out = tmp_path / "pretrain_data.json"
    r = load("pretrain_data").main(["--examples", "2100", "--workers", "1,2", "--fit-tasks", "200", "--out", str(out)])
    assert [x["workers"] for x in r["runs"]] == [1, 2] and r["same_examples"]
    assert all(x["examples_per_s"] > 0 for x in r["runs"])
    assert json.loads(out.read_text())["runs"][1]["sha256"] == r["runs"][0]["sha256"]
