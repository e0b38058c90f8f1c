"""The mini benchmarks in the shapes world: fixed held-out sets, adaptive answers, the real rules.

One call evaluates a policy on mini-GenEval (text-to-image, six tags), mini-KRIS (edits,
Factual / Conceptual / Procedural) and mini-OmniContext (composition, six task types). Every
request is answered ``samples`` times by ``sairlib.solve.solve`` (the policy picks its mode; the
final image is scored) and each benchmark also reports the average number of images per
request and the mode mix::

    from sairlib.evaluation.world_bench import run_world_benchmarks
    res = run_world_benchmarks(policy, WorldAnalyzer(), WorldConfig(), n_per_tag=8, samples=2, seed=0)
    res["headline"]   # {"geneval": 0-1, "kris": 0-100, "omni": 0-10, "avg_images": ...}

Held-out sets (``held_out_tasks``) are drawn per category with their own seed (``task_seed``),
independent of the sampling seed, so every configuration and seed is scored on the same
requests. They come from the eval split (disjoint from every training task). Some GenEval
tags have almost no distinct requests in the world ("draw a circle ." is one of only four
single-object prompts, none of which hashes to the eval split): for those the set is topped
up with training-split requests, and ``held_out_prompts`` says how many per tag are truly
held out.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any, Sequence

import numpy as np

from ..interfaces import X2IInput
from ..solve import Attempt, solve, summarise
from ..world.tasks import FAMILIES, WorldConfig, make_task
from . import geneval, mini_geneval, mini_kris, mini_omni

BENCHMARKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "geneval": ("t2i", geneval.TAGS),
    "kris": ("edit", FAMILIES["edit"]),
    "omni": ("compose", FAMILIES["compose"]),
}
PATIENCE = 200  # draws without a new distinct request before a category counts as exhausted


def world_config(cfg: WorldConfig | dict[str, Any] | None) -> WorldConfig:
    """A ``WorldConfig`` from itself, a dict of its fields (the ``world`` parameter) or None."""
    if cfg is None:
        return WorldConfig()
    if isinstance(cfg, WorldConfig):
        return cfg
    if isinstance(cfg, dict):
        unknown = set(cfg) - set(asdict(WorldConfig()))
        if unknown:
            raise ValueError(f"cfg.{sorted(unknown)[0]}: unknown world setting")
        return WorldConfig(**cfg)
    raise ValueError(f"cfg: must be a WorldConfig or a dict, got {type(cfg).__name__}")


def held_out_tasks(family: str, categories: Sequence[str], n: int, seed: int,
                   cfg: WorldConfig = WorldConfig()) -> tuple[list[X2IInput], dict[str, int]]:
    """``n`` distinct requests per category, eval split first; (tasks, held-out count per category).

    A category whose request space runs out (``PATIENCE`` draws without a new request) is
    topped up with training-split requests, and may end with fewer than ``n``.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n_per_tag: must be a positive integer, got {n!r}")
    tasks: list[X2IInput] = []
    held: dict[str, int] = {}
    for ci, cat in enumerate(categories):
        rng = np.random.default_rng([seed, ci])
        found: dict[str, dict[str, X2IInput]] = {"eval": {}, "train": {}}
        seen: set[str] = set()
        stale = 0
        while len(found["eval"]) < n and stale < PATIENCE:
            t = make_task(family, cat, rng, cfg)
            if t.id in seen:
                stale += 1
                continue
            seen.add(t.id)
            stale = 0
            if t.meta["split"] == "eval" or len(found["train"]) < n:
                found[t.meta["split"]][t.id] = t
        chosen = list(found["eval"].values())
        held[cat] = len(chosen)
        tasks += chosen + list(found["train"].values())[:n - len(chosen)]
    return tasks, held


def _row(bench: str, a: Attempt, correct: float) -> dict[str, Any]:
    return {"benchmark": bench, "task": a.task.id, "category": a.task.meta["category"],
            "complexity": a.task.complexity, "mode": a.mode or "invalid", "n_images": a.n_images,
            "passed": bool(a.passed), "score": a.assessment.normalised() if a.assessment else 0.0,
            "correct": float(correct)}


def _usage(attempts: Sequence[Attempt]) -> dict[str, Any]:
    s = summarise(attempts)
    return {"avg_images": s["avg_images"], "mode_mix": s["mode_mix"], "pass_rate": s["pass_rate"]}


def run_world_benchmarks(policy: Any, analyzer: Any, cfg: WorldConfig | dict[str, Any] | None = None, *,
                         n_per_tag: int = 8, samples: int = 2, seed: int = 0, task_seed: int = 0,
                         benchmarks: Sequence[str] = tuple(BENCHMARKS), **solve_kwargs: Any) -> dict[str, Any]:
    """Evaluate ``policy`` on the mini benchmarks; JSON-ready results.

    ``n_per_tag`` requests per category (GenEval tag, KRIS category, OmniContext type), each
    answered ``samples`` times with sampling seed ``seed``; ``task_seed`` fixes the sets.
    Extra keyword arguments go to ``solve`` (temperature, top_k, max_new_tokens, batch_size).
    Returns per benchmark its scores, ``avg_images``, ``mode_mix`` and ``pass_rate``; overall
    ``avg_images`` and ``mode_mix``; ``headline`` (the table row); ``rows`` (one per sample).
    """
    cfg = world_config(cfg)
    unknown = [b for b in benchmarks if b not in BENCHMARKS]
    if unknown or not benchmarks:
        raise ValueError(f"benchmarks: unknown {unknown[0]!r}" if unknown else "benchmarks: empty")
    sets: dict[str, list[X2IInput]] = {}
    held: dict[str, dict[str, int]] = {}
    for b in benchmarks:
        family, cats = BENCHMARKS[b]
        sets[b], held[b] = held_out_tasks(family, cats, n_per_tag, task_seed, cfg)
    everything = [t for b in benchmarks for t in sets[b]]
    attempts = solve(policy, analyzer, everything, samples=samples, seed=seed, **solve_kwargs)
    out: dict[str, Any] = {"n_per_tag": n_per_tag, "samples": samples, "seed": seed, "task_seed": task_seed}
    rows: list[dict[str, Any]] = []
    start = 0
    for b in benchmarks:
        mine = attempts[start:start + len(sets[b]) * samples]
        start += len(mine)
        if b == "geneval":
            verdicts = [mini_geneval.judge(a.task, analyzer.perceive(a.final_image)
                                           if a.final_image is not None else None, cfg.image_size)[0]
                        for a in mine]
            res: dict[str, Any] = mini_geneval.score((a.task, ok) for a, ok in zip(mine, verdicts))
            rows += [_row(b, a, ok) for a, ok in zip(mine, verdicts)]
            prompts: dict[str, int] = {}
            for t in sets[b]:
                prompts[t.meta["category"]] = prompts.get(t.meta["category"], 0) + 1
            res["prompts"], res["held_out_prompts"] = prompts, held[b]
        elif b == "kris":
            res = mini_kris.score((a.task, a.assessment) for a in mine)
            for a in mine:
                _, s = mini_kris.sample(a.task, a.assessment)
                rows.append(_row(b, a, float(np.mean([(v - 1) / 4 for v in s.values()]))))
        else:
            res = mini_omni.score((a.task, a.assessment) for a in mine)
            for a in mine:
                pf, sc = mini_omni.judgements(a.assessment)
                rows.append(_row(b, a, float(np.sqrt(pf * sc)) / 10))
        out[b] = {**res, **_usage(mine)}
    out.update(_usage(attempts))
    out["headline"] = {**{b: out[b]["overall"] for b in benchmarks}, "avg_images": out["avg_images"]}
    out["rows"] = rows
    return out
