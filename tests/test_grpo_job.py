"""GRPO as a job: the job file, one process in the kernel, and two CPU ranks under ``torchrun``.

    python -m pytest -q tests/test_grpo_job.py

The two-rank run takes the same first step as one process: the rollouts are seeded by their
global row, so both sample the same completions, get the same penalised rewards (gathered before
the penalty) and the same loss; the updates agree up to float summation order.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import grpo_dist_check as dist  # noqa: E402
from state_dicts import distance  # noqa: E402
from sairlib.grpo_job import GRPOJob, grpo_command, launch_grpo, launch_grpo_all  # noqa: E402
from sairlib.policy import Policy  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
GRPO = {"steps": 1, "num_generations": 4, "prompts_per_step": 2, "max_new_tokens": 60, "lr": 1.0e-2,
        "logging_steps": 1, "train_tasks": 2}


def job(tmp_path: Path, base: Path, name: str) -> GRPOJob:
    return GRPOJob(base_dir=str(base), model_dir=str(tmp_path / name / "model"), output_dir=str(tmp_path / name / "ckpt"),
                   grpo=GRPO, reward=dist.REWARD, world={}, task_seed=0, seed=0)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    policy, _, _ = dist.build()
    return policy.save(tmp_path_factory.mktemp("grpo_job") / "base")


def test_job_file_round_trip_and_bad_files_name_the_path(tmp_path, base, cpu_ranks):
    j = job(tmp_path, base, "a")
    path = tmp_path / "launch.json"
    path.write_text(j.to_json())
    assert GRPOJob.load(path) == j
    path.write_text(json.dumps({**json.loads(j.to_json()), "stray": 1}))
    with pytest.raises(ValueError, match="launch.json: not a GRPO job"):
        GRPOJob.load(path)
    with pytest.raises(ValueError, match="prompts_per_step"):
        GRPOJob(**{**json.loads(j.to_json()), "grpo": {**GRPO, "prompts_per_step": 0}})
    with pytest.raises(ValueError, match="grpo.train_tasks"):
        GRPOJob(**{**json.loads(j.to_json()), "grpo": {**GRPO, "train_tasks": 0}})
    cmd = grpo_command(path, 2)
    assert cmd[-2:] == ["sairlib.grpo_launch", str(path)]


@pytest.mark.slow
def test_two_gloo_ranks_take_the_same_step_as_one_process(tmp_path, base, cpu_ranks):
    one = launch_grpo(job(tmp_path, base, "one"), processes=1, subprocess_=True)  # one CPU process
    two = launch_grpo(job(tmp_path, base, "two"), processes=2)  # torchrun, one gloo group
    a, b = ([h for h in r.history if "loss" in h] for r in (one, two))
    assert len(a) == len(b) == 1
    for key in ("reward", "raw/composite", "raw/outcome", "raw/format", "penalty/factor_mean", "images/mean",
                "mode/direct", "mode/multistep"):
        assert b[0][key] == pytest.approx(a[0][key], rel=1e-6, abs=1e-9), key
    assert b[0]["loss"] == pytest.approx(a[0]["loss"], rel=1e-4, abs=1e-6)
    start = Policy.load(base).model.state_dict()
    x, y = (Policy.load(r.model_dir).model.state_dict() for r in (one, two))
    moved, apart = distance(x, start), distance(x, y)
    # AdamW's first step moves every weight by about +-lr whatever its gradient's size, so weights
    # whose gradient is near zero flip with float noise: 7.4% of the distance moved between two
    # one-process runs (in this process vs launched; losses equal, grad norms 4e-4 apart). A wrong
    # batch or a missing all-reduce moves the runs apart by about the whole distance.
    assert moved > 0 and apart < 0.1 * moved
    assert json.loads((Path(two.model_dir).parent / "ckpt" / "history.json").read_text()) == two.history


@pytest.mark.slow
def test_the_twin_without_penalty_beside_the_main_run_logs_what_it_logs_alone(tmp_path, base):
    """Notebook 04 on one GPU: the run and its no-penalty twin at once, each a one-process launch."""
    def pair(tag: str) -> dict[str, GRPOJob]:
        twin = job(tmp_path, base, f"np_{tag}")
        twin.reward = {**twin.reward, "penalty": False}
        return {"grpo": job(tmp_path, base, f"g_{tag}"), "no_penalty": twin}

    alone = launch_grpo_all(pair("alone"), concurrent=False)
    together = launch_grpo_all(pair("together"), concurrent=True)
    for name in ("grpo", "no_penalty"):
        a, b = ([h for h in r[name].history if "loss" in h] for r in (alone, together))
        for key in ("reward", "raw/composite", "penalty/factor_mean", "images/mean"):
            assert b[0][key] == pytest.approx(a[0][key], rel=1e-6, abs=1e-9), (name, key)
        assert (together[name].model_dir / "config.json").is_file()
    ran = {n: json.loads((Path(together[n].model_dir).parent / "ckpt" / "launch.json").read_text()) for n in together}
    assert ran["grpo"]["reward"]["penalty"] is True and ran["no_penalty"]["reward"]["penalty"] is False
    assert [h for h in alone["no_penalty"].history if "loss" in h][0]["penalty/factor_mean"] == 1.0
