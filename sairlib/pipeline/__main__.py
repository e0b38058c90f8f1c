"""Run the escalation pipeline from a shell (the same code as notebook 01).

    python -m sairlib.pipeline --out outputs/manual/01_pipeline --tasks 500 --seed 0 \\
        --direct world --redraw world --capacity 2 [--policy outputs/run/00_world/base]

Resumable: the same command again skips finished trajectories and ends with the same dataset.
``--delay`` (seconds per draw batch) slows the generators down, to try killing and resuming.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

from ..metrics import to_json
from ..world import WorldAnalyzer, WorldConfig, make_tasks
from .build import build_trajectories
from .escalation import ADMISSIONS, Backends, EscalationConfig
from .generators import make_generator
from .spec import CACHES
from .summary import summarise_trajectories


class _Slow:
    def __init__(self, inner, delay: float):
        self.inner, self.delay, self.name = inner, delay, inner.name

    def draw(self, requests):
        time.sleep(self.delay)
        return self.inner.draw(requests)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sairlib.pipeline", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output folder (trajectories.jsonl, images/, dataset/)")
    p.add_argument("--tasks", type=int, default=200, help="training requests to escalate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--direct", default="world", choices=("policy", "world"))
    p.add_argument("--redraw", default="world", choices=("policy", "world"))
    p.add_argument("--capacity", type=int, default=0, help="world generator capacity (0: no limit)")
    p.add_argument("--policy", default=None, help="saved base model folder (for the policy generator)")
    p.add_argument("--max-rounds", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=512)
    p.add_argument("--max-batch", type=int, default=256)
    p.add_argument("--cache", default="auto", choices=CACHES,
                   help="the policy generator's decoding (compiled: fixed-shape steps, CUDA graphs on CUDA)")
    p.add_argument("--admission", default="complex_first", choices=ADMISSIONS,
                   help="order in which tasks enter (results do not depend on it)")
    p.add_argument("--delay", type=float, default=0.0, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    policy = None
    if "policy" in (a.direct, a.redraw):
        if not a.policy:
            p.error("--policy: needed when a generator is 'policy'")
        from ..policy import Policy, best_device

        policy = Policy.load(a.policy, device=best_device())
    gens = [make_generator(n, policy, capacity=a.capacity or None, batch_size=a.max_batch, cache=a.cache)
            for n in (a.direct, a.redraw)]
    if a.delay:
        gens = [_Slow(g, a.delay) for g in gens]
    b = Backends(WorldAnalyzer(), direct=gens[0], redraw=gens[1], config=EscalationConfig(max_rounds=a.max_rounds),
                 max_batch=a.max_batch)
    tasks = make_tasks(a.tasks, "train", a.seed + 101, cfg=WorldConfig())
    t0 = time.perf_counter()
    ts = build_trajectories(tasks, b, a.out, a.seed, concurrency=a.concurrency, progress=False,
                            provenance={"direct": gens[0].name, "redraw": gens[1].name, "seed": a.seed},
                            admission=a.admission)
    wall = time.perf_counter() - t0
    s = summarise_trajectories(ts)
    print(to_json({"wall_s": round(wall, 2), **{k: s[k] for k in ("n_tasks", "kept", "discarded", "errors", "modes")}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
