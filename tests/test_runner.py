"""Tests for the notebook runner, through its command line.

    python -m pytest -q tests/test_runner.py

Each test builds a small project (``notebooks/`` copied from
``tests/fixtures/notebooks/<chain>/``) in a temporary folder and runs
``python -m sairlib.run`` on it in a subprocess.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "notebooks"
PARAMS = "seed: 7\nalpha: 2.5\nbeta: 3\nmodel: {hidden: 4}\n"


def make_project(tmp_path: Path, chain: str, params: str = PARAMS, git: bool = False) -> Path:
    project = tmp_path / "project"
    shutil.copytree(FIXTURES / chain, project / "notebooks")
    if git and shutil.which("git"):
        quiet = {"cwd": project, "check": True, "capture_output": True}
        subprocess.run(["git", "init", "-q"], **quiet)
        subprocess.run(["git", "add", "."], **quiet)
        ident = ["-c", "user.name=sair", "-c", "user.email=sair@example.invalid"]
        subprocess.run(
            ["git", *ident, "-c", "commit.gpgsign=false", "commit", "-qm", "fixtures"], **quiet
        )
    (tmp_path / "run.yaml").write_text(params)
    return project


def edit_code(notebook: Path, old: str, new: str) -> None:
    """Replace text in the notebook's cells' source."""
    nb = json.loads(notebook.read_text())
    for cell in nb["cells"]:
        source = "".join(cell["source"])
        cell["source"] = source.replace(old, new)
    notebook.write_text(json.dumps(nb, indent=1))


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "sairlib.run",
        "--params", str(tmp_path / "run.yaml"),
        "--notebooks", str(tmp_path / "project" / "notebooks"),
        "--outputs", str(tmp_path / "outputs"),
        *args,
    ]  # fmt: skip
    return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def statuses(tmp_path: Path) -> dict[str, str]:
    info = json.loads((tmp_path / "outputs" / "run" / "run.json").read_text())
    return {s["name"]: s["status"] for s in info["stages"]}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    tmp_path = tmp_path_factory.mktemp("chain")
    make_project(tmp_path, "chain", git=True)
    return tmp_path, run(tmp_path)


def test_first_run_writes_results(first_run):
    tmp_path, proc = first_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = tmp_path / "outputs" / "run"
    assert statuses(tmp_path) == {"00_first": "complete", "01_second": "complete"}
    first = json.loads((run_dir / "00_first" / "metrics.json").read_text())
    assert first["alpha"] == 2.5 and first["hidden"] == 4
    block = first["run"]
    assert block["status"] == "complete" and block["stage"] == "00_first"
    assert block["params"] == {"seed": 7, "alpha": 2.5, "model": {"hidden": 4}}
    assert block["seed"] == 7 and len(block["params_hash"]) == 64
    prov = block["provenance"]
    if shutil.which("git"):
        assert len(prov["git_sha"]) == 40 and prov["git_dirty"] is False
    assert prov["versions"]["papermill"] and "torch" in prov["versions"]
    assert prov["device"]["type"] in ("cpu", "cuda")
    second = json.loads((run_dir / "01_second" / "metrics.json").read_text())
    assert second["product"] == 2.5 * 4 * 3  # read 00_first's file through run_dir
    for stage in ("00_first", "01_second"):
        assert (run_dir / stage / f"{stage}.html").stat().st_size > 1000
        executed = json.loads((run_dir / stage / f"{stage}.ipynb").read_text())
        assert any(c.get("execution_count") for c in executed["cells"])
    assert "[00_first] running" in proc.stdout and "[01_second] complete" in proc.stdout
    # the kernel's peak memory: a Python kernel holds tens of MB at least, and far less than 4 GiB
    info = json.loads((run_dir / "run.json").read_text())
    for s in info["stages"]:
        assert 20 < s["peak_mb"] < 4096, s
    assert block["peak_mb"] == info["stages"][0]["peak_mb"]
    assert "peak memory" in proc.stdout


def test_index_escapes_metrics(first_run):
    tmp_path, _ = first_run
    index = (tmp_path / "outputs" / "run" / "index.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in index and "<script>" not in index
    assert 'href="00_first/00_first.html"' in index and 'href="01_second/01_second.ipynb"' in index
    assert "run.yaml" in index and "complete" in index
    assert "curve" not in index  # only scalar metrics are listed


def test_resume_reruns_only_what_changed(first_run, tmp_path):
    src, _ = first_run
    shutil.copytree(src / "project", tmp_path / "project")
    shutil.copytree(src / "outputs", tmp_path / "outputs")
    (tmp_path / "run.yaml").write_text(PARAMS)

    proc = run(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert statuses(tmp_path) == {"00_first": "skipped (resumed)", "01_second": "skipped (resumed)"}
    assert "running" not in proc.stdout

    (tmp_path / "run.yaml").write_text(PARAMS.replace("beta: 3", "beta: 4"))
    proc = run(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert statuses(tmp_path) == {"00_first": "skipped (resumed)", "01_second": "complete"}

    (tmp_path / "run.yaml").write_text(PARAMS.replace("beta: 3", "beta: 4").replace("2.5", "0.5"))
    proc = run(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert statuses(tmp_path) == {"00_first": "complete", "01_second": "complete"}
    second = json.loads((tmp_path / "outputs" / "run" / "01_second" / "metrics.json").read_text())
    assert second["product"] == 0.5 * 4 * 4


def test_reuse_links_unchanged_stages_and_never_writes_to_the_base(first_run, tmp_path):
    src, _ = first_run
    shutil.copytree(src / "project", tmp_path / "project")
    shutil.copytree(src / "outputs", tmp_path / "outputs")
    base = tmp_path / "outputs" / "run"
    base_first = json.loads((base / "00_first" / "metrics.json").read_text())
    base_second = json.loads((base / "01_second" / "metrics.json").read_text())
    (tmp_path / "run.yaml").write_text(PARAMS.replace("beta: 3", "beta: 4"))

    proc = run(tmp_path, "--run-id", "branch", "--reuse", "run")
    assert proc.returncode == 0, proc.stderr
    branch = tmp_path / "outputs" / "branch"
    assert (branch / "00_first").is_symlink() and not (branch / "01_second").is_symlink()
    assert (branch / "00_first").resolve() == (base / "00_first").resolve()
    assert "[00_first] linked to run/00_first" in proc.stdout
    info = json.loads((branch / "run.json").read_text())
    assert {s["name"]: s["status"] for s in info["stages"]} == {
        "00_first": "skipped (resumed)", "01_second": "complete"}
    assert json.loads((branch / "01_second" / "metrics.json").read_text())["product"] == 2.5 * 4 * 4
    assert json.loads((base / "01_second" / "metrics.json").read_text()) == base_second

    proc = run(tmp_path, "--run-id", "branch", "--reuse", "run", "--only", "00", "--force")
    assert proc.returncode == 0, proc.stderr
    assert (branch / "00_first").is_dir() and not (branch / "00_first").is_symlink()
    assert json.loads((base / "00_first" / "metrics.json").read_text()) == base_first

    proc = run(tmp_path, "--run-id", "other", "--reuse", "missing")
    assert proc.returncode == 2 and "--reuse missing" in proc.stderr
    assert not (tmp_path / "outputs" / "other").exists()


def test_failing_stage_stops_the_chain(tmp_path):
    make_project(tmp_path, "failing", params="seed: 1\n")
    proc = run(tmp_path)
    assert proc.returncode == 1
    msg = "stage 00_boom failed in cell 3 (execution count 4): ValueError: boom <here>"
    assert msg in proc.stderr
    stage_dir = tmp_path / "outputs" / "run" / "00_boom"
    assert str(stage_dir / "00_boom.ipynb") in proc.stderr
    failed = json.loads((stage_dir / "failed.json").read_text())
    assert (
        failed["cell"] == 3
        and failed["ename"] == "ValueError"
        and failed["evalue"] == "boom <here>"
    )
    assert any("boom" in line for line in failed["traceback"])
    assert (stage_dir / "00_boom.html").exists() and not (stage_dir / "metrics.json").exists()
    assert not (tmp_path / "outputs" / "run" / "01_never").exists()
    assert statuses(tmp_path) == {"00_boom": "failed", "01_never": "not run"}
    index = (tmp_path / "outputs" / "run" / "index.html").read_text()
    assert "boom &lt;here&gt;" in index

    edit_code(
        tmp_path / "project" / "notebooks" / "00_boom.ipynb",
        'raise ValueError("boom <here>")',
        "pass",
    )
    proc = run(tmp_path, "--only", "00")
    assert proc.returncode == 0, proc.stderr
    assert statuses(tmp_path) == {"00_boom": "complete", "01_never": "not run"}
    assert not (stage_dir / "failed.json").exists()


def test_missing_metrics_fails_the_stage(tmp_path):
    make_project(tmp_path, "failing", params="")
    edit_code(
        tmp_path / "project" / "notebooks" / "01_never.ipynb",
        "save_metrics(stage_dir, {'ran': True})",
        "pass",
    )
    proc = run(tmp_path, "--only", "01")
    assert proc.returncode == 1
    assert "stage 01_never failed: MissingMetrics" in proc.stderr
    assert statuses(tmp_path) == {"00_boom": "not run", "01_never": "failed"}
    assert (tmp_path / "outputs" / "run" / "01_never" / "failed.json").exists()


def test_parameter_error_exits_2(tmp_path):
    make_project(tmp_path, "chain", params="seed: 1\nbetta: 2\n")
    proc = run(tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr  # one line, no traceback
    assert "run.yaml" in proc.stderr and "'betta'" in proc.stderr and "'beta'" in proc.stderr
    assert not (tmp_path / "outputs").exists()


def test_unknown_only_selection_exits_2(tmp_path):
    make_project(tmp_path, "chain")
    proc = run(tmp_path, "--only", "07")
    assert proc.returncode == 2 and "--only" in proc.stderr
