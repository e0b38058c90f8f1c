"""GRPO: parameters, rollouts with forced tokens masked, a tiny real run, and the penalty across processes."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sairlib.generation import LayoutConstraint
from sairlib.grpo import build_trainer, check_grpo, grpo_config, row_seed, train_grpo
from sairlib.rewards import alphas, check_reward, composite, penalty_factors

sys.path.insert(0, str(Path(__file__).parent))
import grpo_dist_check as dist  # noqa: E402
from state_dicts import distance  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_check_grpo_names_the_bad_key():
    assert check_grpo({})["num_generations"] == 4
    for bad, field in [({"stpes": 1}, "stpes"), ({"steps": 0}, "steps"), ({"lr": "fast"}, "lr"),
                       ({"num_generations": 1}, "num_generations"), ({"steps": 1.5}, "steps")]:
        with pytest.raises(ValueError, match=f"grpo.{field}"):
            check_grpo(bad)


def test_row_seeds_depend_on_step_and_row_only():
    assert row_seed(0, 3, 5) == row_seed(0, 3, 5)
    assert len({row_seed(0, s, r) for s in range(3) for r in range(8)}) == 24


def test_tiny_grpo_run_trains_and_masks_forced_tokens(tmp_path):
    policy, tasks, ctx = dist.build()
    before = {n: p.detach().clone() for n, p in policy.model.named_parameters()}
    grpo = {"steps": 2, "num_generations": 4, "prompts_per_step": 2, "max_new_tokens": 60, "lr": 1.0e-2}

    # the rollout's loss mask is exactly "not forced by the constraint", replayed independently here
    trainer = build_trainer(policy, tasks, ctx, grpo, seed=0, output_dir=str(tmp_path / "a"))
    trainer.model.train()
    out = trainer._generate_and_score_completions([{"prompt": t.id, "task_id": t.id} for t in tasks[:2] for _ in "abcd"])
    con = LayoutConstraint(policy.layout, policy.model.config.vocab_size, out["completion_ids"].device)
    forced = con.n_allowed[con.trace(out["completion_ids"], grpo["max_new_tokens"])] == 1
    real = out["completion_mask"].bool()
    assert forced[real].any() and (~forced[real]).any()
    assert torch.equal(out["tool_mask"].bool()[real], ~forced[real])

    # log-probs are those of the constrained policy: 0 on forced tokens, above the unconstrained ones elsewhere
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    mask = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    T = out["completion_ids"].shape[1]
    with torch.no_grad():
        logp, ent, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, T, compute_entropy=True)
        free = trainer.model(input_ids=ids, attention_mask=mask).logits[:, -T - 1:-1].log_softmax(-1)
    free = free.gather(-1, out["completion_ids"][..., None])[..., 0]
    assert torch.isfinite(logp).all() and torch.isfinite(ent).all()
    assert torch.equal(logp[forced & real], torch.zeros_like(logp[forced & real]))
    assert (logp[~forced & real] > free[~forced & real]).all() and (logp <= 1e-6).all()

    run = train_grpo(policy, tasks, ctx, grpo, seed=0, output_dir=str(tmp_path / "b"))
    steps = [h for h in run.history if "loss" in h]
    assert len(steps) == 2
    for h in steps:
        assert math.isfinite(h["loss"]) and math.isfinite(h["grad_norm"])
        for key in ("raw/outcome", "raw/format", "raw/step", "penalty/factor_mean", "penalty/penalised_frac",
                    "penalty/near_best", "penalty/mixed_groups", "images/mean", "mode/direct", "mode/reflection",
                    "mode/multistep", "mode/invalid", "format/failures", "rewards/outcome/mean"):
            assert key in h, key
        assert 0 < h["penalty/factor_mean"] <= 1
        assert h["format/failures"] == pytest.approx(h["mode/invalid"])
    changed = [n for n, p in policy.model.named_parameters() if not torch.equal(p.detach().cpu(), before[n].cpu())]
    assert len(changed) == len(before)


def test_micro_batches_take_the_same_step_as_one_batch(tmp_path):
    """``grad_accum`` splits a step's answers into micro-batches (less memory at once) without changing
    the step: the same requests and answers, and DAPO's loss normalised over the whole step."""
    grpo = {"steps": 1, "num_generations": 4, "prompts_per_step": 2, "max_new_tokens": 60, "lr": 1.0e-2,
            "logging_steps": 1}
    runs, weights = [], []
    for accum in (1, 2):
        policy, tasks, ctx = dist.build()
        start = {k: v.clone() for k, v in policy.model.state_dict().items()}
        run = train_grpo(policy, tasks, ctx, {**grpo, "grad_accum": accum}, seed=0, output_dir=str(tmp_path / f"a{accum}"))
        assert run.trainer.args.per_device_train_batch_size == 8 // accum
        assert run.trainer.args.generation_batch_size == 8
        runs.append([h for h in run.history if "loss" in h])
        weights.append(policy.model.state_dict())
    a, b = runs
    assert len(a) == len(b) == 1
    for key in ("reward", "raw/composite", "raw/outcome", "penalty/factor_mean", "images/mean", "mode/direct"):
        assert b[0][key] == pytest.approx(a[0][key], rel=1e-6, abs=1e-9), key
    assert b[0]["loss"] == pytest.approx(a[0]["loss"], rel=1e-4, abs=1e-6)
    moved, apart = distance(weights[0], start), distance(weights[0], weights[1])
    # as in tests/test_grpo_job.py: AdamW's first step flips near-zero gradients with float noise
    assert moved > 0 and apart < 0.1 * moved
    with pytest.raises(ValueError, match="grad_accum 3"):
        grpo_config({**grpo, "grad_accum": 3}, str(tmp_path / "c"), seed=0)


def expected_hand_rewards(policy, tasks, ctx) -> list[list[float]]:
    """The penalised reward rows of the hand batch, computed here without the trainer."""
    a = alphas(check_reward(dist.REWARD))
    rows = dist.hand_batch(policy, tasks, ctx.analyzer)
    comps = [{k: ctx.score(k, t, ids) for k in ("outcome", "format", "step")} for t, ids in rows]
    raw = [composite(c, a) for c in comps]
    f = penalty_factors(raw, [ctx.rollout(t, ids).n_images for t, ids in rows], dist.GROUP, dist.REWARD["epsilon"])
    return [[c[k] * fk for k in ("outcome", "format", "step")] for c, fk in zip(comps, f)], f


@pytest.mark.slow
def test_group_split_over_two_processes_gets_the_same_penalised_rewards(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    assert torchrun, "torchrun not found"
    out = tmp_path / "two.json"
    # both sides in child processes on CPU (CUDA hidden), so a GPU here changes nothing; the
    # caller's PYTHONPATH is kept (packages may come from it)
    path = os.pathsep.join([str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", "29517",
                           str(ROOT / "tests" / "grpo_dist_check.py"), str(out)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads(out.read_text())
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "grpo_dist_check.py"), str(tmp_path / "one.json")],
                          capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = json.loads((tmp_path / "one.json").read_text())
    assert two["world"] == 2 and one["world"] == 1

    policy, tasks, ctx = dist.build()
    want, factors = expected_hand_rewards(policy, tasks, ctx)
    # in every group the perfect direct answer (1 image) and the perfect reflection (2 images) tie at
    # 1 + 0.2 + 0.5: the reflection is halved. In group 2 (rows 4-7) the reflection sits on rank 0 and
    # the direct answer that sets N_img* on rank 1.
    assert factors.tolist() == [1, 0.5, 1, 1, 0.5, 1, 1, 1, 1, 1, 1, 0.5]
    assert one["hand"] == two["hand"]                                 # exactly, group 2 split 2 + 2 over ranks
    assert torch.tensor(one["hand"]) == pytest.approx(torch.tensor(want), abs=1e-6)
    assert two["sampled_advantages"] == pytest.approx(one["sampled_advantages"], abs=1e-6)
    assert two["sampled_unmasked_tokens"] == one["sampled_unmasked_tokens"]


def test_group_view_scores_a_sampled_group_as_training_does():
    import dataclasses

    from sairlib.grpo_view import group_html, sample_group

    policy, tasks, ctx = dist.build()
    view = sample_group(policy, ctx, tasks[0], n=4, max_new_tokens=60, seed=0)
    f = view.frame()
    assert len(f) == 4 and list(f["images"]) == [r.n_images for r in view.rollouts]
    assert f["penalised"].tolist() == pytest.approx((f["composite"] * f["penalty"]).tolist())
    # TRL's group advantage: (r - mean) / (unbiased std + 1e-4)
    r = f["penalised"].to_numpy()
    assert f["advantage"].tolist() == pytest.approx(((r - r.mean()) / (r.std(ddof=1) + 1e-4)).tolist(), abs=1e-5)
    again = sample_group(policy, ctx, tasks[0], n=4, max_new_tokens=60, seed=0)
    assert again.ids == view.ids                                  # seeded per row
    shown = group_html(dataclasses.replace(view, task=dataclasses.replace(tasks[0], instruction="a <script> & b")))
    assert "a &lt;script&gt; &amp; b" in shown and "<script>" not in shown
    with pytest.raises(KeyError, match="task"):
        sample_group(policy, ctx, dataclasses.replace(tasks[0], id="elsewhere"), n=2, max_new_tokens=20)
