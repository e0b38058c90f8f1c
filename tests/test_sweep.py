"""Tests for the sweep (several runs of the chain at once over GPU slots), through its command line.

    python -m pytest -q tests/test_sweep.py

The runs use the one-stage fixture chain ``tests/fixtures/notebooks/sweep/``, which records the
``CUDA_VISIBLE_DEVICES`` its kernel saw; no GPU is needed, since the variable is only passed on.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from sairlib.sweep import plan_runs, slots

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO_ROOT / "tests" / "fixtures" / "notebooks" / "sweep"


def sweep(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "sairlib.sweep", "--notebooks", str(NOTEBOOKS),
           "--outputs", str(tmp_path / "outputs"), "--name", "s", *args]
    return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def params(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return str(path)


def test_runs_share_the_gpus_one_each_and_a_failure_is_recorded(tmp_path):
    a = params(tmp_path, "a", "seed: 1\ndelay_s: 1.0\n")
    b = params(tmp_path, "b", "seed: 2\ndelay_s: 1.0\n")
    bad = params(tmp_path, "bad", "seed: 3\nfail: true\n")
    proc = sweep(tmp_path, "--gpus", "3,5", a, b, bad)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "2 of 3 runs ok; failed: bad" in proc.stdout
    record = json.loads((tmp_path / "outputs" / "sweeps" / "s" / "sweep.json").read_text())
    runs = {r["run_id"]: r for r in record["runs"]}
    assert {k: r["status"] for k, r in runs.items()} == {"a": "ok", "b": "ok", "bad": "failed"}
    assert runs["bad"]["exit_code"] == 1 and record["finished_at"]
    # a and b ran at once, one on each GPU; bad waited for a free one
    assert {runs["a"]["device"], runs["b"]["device"]} == {"3", "5"}
    assert max(runs["a"]["started_at"], runs["b"]["started_at"]) <= min(runs["a"]["finished_at"],
                                                                         runs["b"]["finished_at"])
    assert runs["bad"]["started_at"] >= min(runs["a"]["finished_at"], runs["b"]["finished_at"])
    for name in ("a", "b"):
        metrics = json.loads((tmp_path / "outputs" / name / "00_env" / "metrics.json").read_text())
        assert metrics["cuda_visible_devices"] == runs[name]["device"]
        assert metrics["seed"] == {"a": 1, "b": 2}[name]
    assert "asked to fail" in (tmp_path / "outputs" / "sweeps" / "s" / "bad.log").read_text()

    # the same sweep again resumes: finished runs are skipped stage by stage
    proc = sweep(tmp_path, "--cpu-jobs", "2", a, b)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = (tmp_path / "outputs" / "sweeps" / "s" / "a.log").read_text()
    assert "[00_env] skipped: complete with these inputs" in log
    metrics = json.loads((tmp_path / "outputs" / "a" / "00_env" / "metrics.json").read_text())
    assert metrics["cuda_visible_devices"] in ("3", "5")  # from the first sweep, not run again


def test_bad_command_lines_exit_2_naming_the_problem(tmp_path):
    a = params(tmp_path, "a", "seed: 1\n")
    (tmp_path / "other").mkdir()
    twin = params(tmp_path / "other", "a", "seed: 2\n")
    proc = sweep(tmp_path, a, twin)
    assert proc.returncode == 2 and "same run id 'a'" in proc.stderr
    proc = sweep(tmp_path, a, str(tmp_path / "missing.yaml"))
    assert proc.returncode == 2 and "missing.yaml: no such parameter file" in proc.stderr
    proc = sweep(tmp_path, "--gpus", "0,x", a)
    assert proc.returncode == 2 and "--gpus" in proc.stderr
    assert not (tmp_path / "outputs").exists()


def test_a_killed_sweep_stops_its_runs_and_records_them(tmp_path):
    slow = params(tmp_path, "slow", "seed: 1\ndelay_s: 120.0\n")
    cmd = [sys.executable, "-m", "sairlib.sweep", "--notebooks", str(NOTEBOOKS),
           "--outputs", str(tmp_path / "outputs"), "--name", "s", slow]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    record = tmp_path / "outputs" / "sweeps" / "s" / "sweep.json"
    for _ in range(600):  # the run has started once sweep.json says so
        if record.is_file() and json.loads(record.read_text())["runs"][0]["status"] == "running":
            break
        time.sleep(0.1)
    proc.terminate()
    assert proc.wait(timeout=60) == 143
    run = json.loads(record.read_text())["runs"][0]
    assert run["status"] == "stopped" and run["finished_at"]
    assert not (tmp_path / "outputs" / "slow" / "00_env" / "metrics.json").exists()


def test_slots_and_plan():
    assert slots("0,1", 2, 1) == ["0", "0", "1", "1"]
    assert slots(None, 1, 3) == ["cpu", "cpu", "cpu"]
    assert [r.run_id for r in plan_runs([Path(__file__)])] == ["test_sweep"]
