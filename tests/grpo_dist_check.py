"""Penalised rewards and advantages of one GRPO batch, computed on however many processes run this.

    torchrun --nproc_per_node 2 tests/grpo_dist_check.py out.json    # CPU, gloo
    python tests/grpo_dist_check.py out.json                         # one process

Three requests, four completions each (12 rows). With two processes each holds 6 rows, so the
second request's group is split between them. Two batches:

- ``hand``: completions written from the world's own images and texts (a perfect direct answer,
  a perfect two-image reflection, a wrong answer, a malformed one), so that the complexity
  penalty has real ties to break; scored by ``SairGRPOTrainer._calculate_rewards``;
- ``sampled``: completions sampled by the rollout function from a tiny random policy (each row
  seeded by its global index), scored and turned into advantages by TRL's
  ``_generate_and_score_completions``.

Rank 0 writes the gathered results as JSON; ``tests/test_grpo.py`` compares them with a run on
one process.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sairlib.grpo import build_trainer  # noqa: E402
from sairlib.policy import Policy  # noqa: E402
from sairlib.rewards import RewardContext  # noqa: E402
from sairlib.sequence import Segment  # noqa: E402
from sairlib.world import WorldAnalyzer, WorldConfig, make_tasks  # noqa: E402
from sairlib.world.render import render  # noqa: E402
from sairlib.world.scene import Scene  # noqa: E402
from sairlib.world_setup import build_tokenizers  # noqa: E402

GROUP = 4
GRPO = {"steps": 1, "num_generations": GROUP, "prompts_per_step": 3, "max_new_tokens": 60, "lr": 1.0e-3}
REWARD = {"alpha": [1.0, 0.2, 0.5], "epsilon": 0.05}


def build() -> tuple[Policy, list, RewardContext]:
    """Tiny, deterministic objects: tokenizers, a random policy, three text-to-image requests."""
    torch.set_num_threads(1)
    codec, tok, _ = build_tokenizers(WorldConfig(), 16, 256, 20, 10, 0)  # 256 codes: targets round-trip exactly
    policy = Policy.create(tok, codec, {"hidden": 32, "layers": 2, "heads": 4}, seed=0)
    tasks = make_tasks(3, "train", 0, family="t2i")
    ctx = RewardContext({t.id: t for t in tasks}, WorldAnalyzer(), policy.layout, policy.codec, REWARD)
    return policy, tasks, ctx


def hand_batch(policy: Policy, tasks: list, analyzer: WorldAnalyzer) -> list[tuple[str, list[int]]]:
    """12 (task id, completion ids) rows, groups of 4 in task order; the rows' order differs per group."""
    lay, codec = policy.layout, policy.codec
    rows = []
    for k, x in enumerate(tasks):
        good = render(x.target.target, 64)
        bad = render(Scene((), 4), 64)
        g = lambda im: Segment("G", codes=codec.encode(im))
        e = lambda im, d: Segment("E", text=analyzer.evaluation_text(analyzer.assess(x, im), d))
        direct = [g(good), e(good, "done")]
        reflection = [g(bad), e(bad, "reflect"), Segment("R", text=analyzer.reflect(x, bad)), g(good), e(good, "done")]
        wrong = [g(bad), e(bad, "done")]
        malformed = [g(good), g(good), e(good, "done")]
        group = [direct, reflection, wrong, malformed]
        group = group[k:] + group[:k]  # rotate, so the best answers sit at different rows in each group
        rows += [(x.id, lay.segments(segs)) for segs in group]
    return rows


def run(out_path: str | None) -> dict:
    policy, tasks, ctx = build()
    with tempfile.TemporaryDirectory() as d:
        trainer = build_trainer(policy, tasks, ctx, GRPO, seed=0, output_dir=d)
        acc = trainer.accelerator
        rank, world = acc.process_index, acc.num_processes
        per = 3 * GROUP // world

        rows = hand_batch(policy, tasks, ctx.analyzer)[rank * per:(rank + 1) * per]
        inputs = [{"prompt": t, "task_id": t} for t, _ in rows]
        ids = [c for _, c in rows]
        texts = policy.tokenizer.batch_decode(ids, skip_special_tokens=True)
        hand = trainer._calculate_rewards(inputs, [t for t, _ in rows], texts, ids)

        trainer.model.train()
        order = [t.id for t in tasks for _ in range(GROUP)][rank * per:(rank + 1) * per]
        out = trainer._generate_and_score_completions([{"prompt": t, "task_id": t} for t in order])
        adv = acc.gather(out["advantages"])
        n_mask = acc.gather(out["tool_mask"].sum(1).float())
        result = {"world": world, "hand": hand.tolist(), "sampled_advantages": adv.tolist(),
                  "sampled_unmasked_tokens": n_mask.tolist(), "reward_names": list(trainer.reward_func_names)}
    if rank == 0 and out_path:
        Path(out_path).write_text(json.dumps(result))
    if world > 1:
        torch.distributed.barrier()
    return result


if __name__ == "__main__":
    run(sys.argv[1] if len(sys.argv) > 1 else None)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    os._exit(0)
