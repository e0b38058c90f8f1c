"""Pretraining data of the base unified model: world tasks as token sequences, by a task mix.

The mix (weights, normalised) is over seven kinds of example:

- ``t2i``          request -> target image (one pass);
- ``edit``         request + input image -> edited image (all KRIS-style edits, knowledge only
                   from the facts the base model is allowed to know);
- ``compose``      request + input images -> composed image;
- ``single_edit``  one explicit single-object step (a plan step) + current image -> next image;
- ``describe``     image -> its scene description (understanding);
- ``evaluate``     request + candidate image -> the Analyzer's evaluation text (understanding;
                   loss only on the text, never on a wrong image);
- ``compare``      spot the difference: an image with no request (keep everything) + a candidate
                   (the same image or a one-error version) -> the Analyzer's evaluation text, whose
                   only possible errors are objects changed, gone or extra against the input
                   (consistency; loss only on the text). The skill an edit's evaluation needs to
                   catch a kept object drawn in the wrong colour, taught on its own.

Labels are -100 on the prompt (and on the candidate image of ``evaluate`` and ``compare``).

    examples = pretrain_examples(layout, codec, analyzer, n=20000, mix=MIX, seed=0)
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from .blas import one_blas_thread
from .interfaces import X2IInput
from .sequence import Layout, Segment
from .world import facts
from .world.analyzer import WorldAnalyzer
from .world.corpus import PERTURBATION_KINDS, draw_candidate
from .world.grammar import say_op, say_scene
from .world.ops import Draw, Op, apply
from .world.render import render
from .world.scene import Scene
from .world.spec import TaskSpec
from .world.tasks import WorldConfig, make_tasks, start_scene

KINDS: tuple[str, ...] = ("t2i", "edit", "compose", "single_edit", "describe", "evaluate", "compare")
CANDIDATES: tuple[str, ...] = PERTURBATION_KINDS  # what an ``evaluate`` or ``compare`` example may judge
IGNORE = -100


def _check_weights(weights: dict[str, float], known: Sequence[str], field: str) -> None:
    """Weights by name: every name known, every weight a non-negative number (errors name the field)."""
    unknown = set(weights) - set(known)
    if unknown:
        raise ValueError(f"{field}.{sorted(unknown)[0]}: unknown kind (known: {', '.join(known)})")
    for k, v in weights.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
            raise ValueError(f"{field}.{k}: must be a non-negative number, got {v!r}")


def check_mix(mix: dict[str, float]) -> dict[str, float]:
    """Validate and normalise a task mix; unknown kinds and non-positive totals are errors."""
    _check_weights(mix, KINDS, "mix")
    total = float(sum(mix.values()))
    if total <= 0:
        raise ValueError("mix: weights sum to zero")
    return {k: float(mix.get(k, 0)) / total for k in KINDS}


def check_candidates(weights: dict[str, float] | None) -> dict[str, float] | None:
    """Validate the weights of the candidates' kinds (``evaluate``, ``compare``); None (or all equal): uniform."""
    if weights is None:
        return None
    _check_weights(weights, CANDIDATES, "candidates")
    full = {k: float(weights.get(k, 1.0)) for k in CANDIDATES}
    if full["target"] <= 0:
        raise ValueError("candidates.target: must be positive (every task has a target to fall back on)")
    return None if len(set(full.values())) == 1 else full


def allowed_for_base(t: X2IInput) -> bool:
    """The base model never sees held-out facts (so 'lacks knowledge' happens for real)."""
    return not set(t.meta.get("facts", [])) & facts.HELD_OUT


class _Encoder:
    """Encodes scenes to codes once (scenes repeat a lot across examples)."""

    def __init__(self, codec: Any, image_size: int):
        self.codec, self.size, self.cache = codec, image_size, {}

    def scene(self, s: Scene) -> list[int]:
        key = s.to_json()
        if key not in self.cache:
            self.cache[key] = self.codec.encode(render(s, self.size)).tolist()
        return self.cache[key]

    def image(self, im: np.ndarray) -> list[int]:
        return self.codec.encode(im).tolist()


def _example(layout: Layout, prompt: list[int], completion: list[int], kind: str, complexity: int,
             masked_prefix: int = 0) -> dict[str, Any]:
    labels = [IGNORE] * (len(prompt) + masked_prefix) + completion[masked_prefix:]
    return {"input_ids": prompt + completion, "labels": labels, "kind": kind, "complexity": int(complexity)}


CHUNK = 2048  # examples per independently seeded chunk: results do not depend on the worker count


def pretrain_examples(layout: Layout, codec: Any, analyzer: WorldAnalyzer, n: int, mix: dict[str, float],
                      seed: int, cfg: WorldConfig = WorldConfig(), workers: int = 1,
                      candidates: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """``n`` training examples drawn by the mix from training-split tasks.

    Built in chunks of ``CHUNK`` examples, each seeded from (seed, chunk index), on ``workers``
    processes; the result is the same for any number of workers. ``candidates`` weighs the kinds
    of image an ``evaluate`` or ``compare`` example judges (``CANDIDATES``; missing kinds weigh 1;
    None: uniform).
    """
    check_mix(mix)
    cand = check_candidates(candidates)
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n: must be a non-negative integer, got {n!r}")
    jobs = [(layout, codec, analyzer, min(CHUNK, n - i * CHUNK), mix, seed * 100_003 + i, cfg, cand)
            for i in range((n + CHUNK - 1) // CHUNK)]
    with one_blas_thread():  # exact products on small matrices: threads only cost time (sairlib.blas)
        if workers > 1 and len(jobs) > 1:
            import multiprocessing as mp

            with mp.get_context("fork").Pool(min(workers, len(jobs))) as pool:
                parts = pool.starmap(_chunk, jobs)
        else:
            parts = [_chunk(*j) for j in jobs]
    out = [e for p in parts for e in p]
    order = np.random.default_rng(seed).permutation(len(out))
    return [out[i] for i in order]


def _chunk(layout: Layout, codec: Any, analyzer: WorldAnalyzer, n: int, mix: dict[str, float], seed: int,
           cfg: WorldConfig, candidates: dict[str, float] | None = None) -> list[dict[str, Any]]:
    weights = check_mix(mix)
    rng = np.random.default_rng(seed)
    # Only the kinds in the mix are drawn: a kind at weight 0 leaves the others' draws as they were.
    active = [k for k in KINDS if weights[k] > 0]
    counts = rng.multinomial(n, [weights[k] for k in active])
    enc = _Encoder(codec, cfg.image_size)
    out: list[dict[str, Any]] = []
    need = {k: 0 for k in KINDS} | dict(zip(active, (int(c) for c in counts)))
    pools = {fam: _task_stream(fam, seed + i, cfg, need[fam]) for i, fam in enumerate(("t2i", "edit", "compose"))}
    mixed = _task_stream(None, seed + 7, cfg, need["single_edit"] + need["describe"] + need["evaluate"]
                         + need["compare"])
    for kind, k in zip(active, counts):
        for _ in range(int(k)):
            if kind in pools:
                t = next(pools[kind])
                prompt = layout.prompt(t.instruction, [enc.image(im) for im in t.images])
                comp = layout.segments([Segment("G", codes=enc.scene(t.target.target))])
                out.append(_example(layout, prompt, comp, kind, t.complexity))
            elif kind == "single_edit":
                out.append(_single_edit(layout, enc, analyzer, next(mixed), rng))
            elif kind == "describe":
                s = _any_scene(next(mixed), rng)
                prompt = layout.prompt("", [enc.scene(s)])
                out.append(_example(layout, prompt, layout.segments([Segment("D", text=say_scene(s))]), kind,
                                    len(s.objects)))
            elif kind == "evaluate":
                out.append(_evaluate(layout, enc, analyzer, next(mixed), rng, cfg.image_size, candidates)[0])
            else:
                keep = keep_task(_any_scene(next(mixed), rng), cfg.image_size)
                out.append(_evaluate(layout, enc, analyzer, keep, rng, cfg.image_size, candidates, kind="compare")[0])
    return out


def _any_scene(t: X2IInput, rng: np.random.Generator) -> Scene:
    """One of a task's scenes, uniformly: an input image's or the target's."""
    scenes = [Scene.from_dict(d) for d in t.meta["inputs"]] + [t.target.target]
    return scenes[int(rng.integers(len(scenes)))]


def keep_task(scene: Scene, image_size: int = 64) -> X2IInput:
    """The request to change nothing: ``scene`` as the input image, no text, every object kept.

    Judged by the Analyzer like any edit: a candidate passes when it shows the same objects in the
    same cells, and each difference is an error (an object changed or gone, an object extra)."""
    spec = TaskSpec((), tuple(scene.objects), scene)
    d = scene.to_dict()
    meta = {"family": "edit", "category": "keep", "complexity": len(scene.objects), "inputs": [d], "target_scene": d}
    key = hashlib.sha256(scene.to_json().encode()).hexdigest()[:12]
    return X2IInput(f"keep-{key}", "", (render(scene, image_size),), meta, spec)


def _task_stream(family: str | None, seed: int, cfg: WorldConfig, n: int) -> Iterator[X2IInput]:
    """Training tasks the base model may see, generated in chunks about the size needed."""
    s = seed * 1000
    chunk = max(8, min(4096, int(n * 1.15) + 8))
    while True:
        for t in make_tasks(chunk, "train", s, family=family, cfg=cfg, distinct=False):
            if allowed_for_base(t):
                yield t
        s += 1


@dataclass(frozen=True)
class PlanStep:
    """One step of a task's plan as a request of its own: the step, the scenes around it, and the
    scenes shown with it (the current canvas unless the step starts a fresh one, plus composition
    subjects)."""

    index: int
    op: Op
    before: Scene
    after: Scene
    shown: tuple[Scene, ...]


def random_plan_step(t: X2IInput, analyzer: WorldAnalyzer, rng: np.random.Generator) -> PlanStep | None:
    """A uniformly chosen step of the Analyzer's plan for ``t`` (None when the plan is empty)."""
    steps = analyzer.plan(t)
    if not steps:
        return None
    inputs = [Scene.from_dict(d) for d in t.meta["inputs"]]
    i = int(rng.integers(len(steps)))
    scene = start_scene(t)
    for op in steps[:i]:
        scene = apply(scene, op, inputs)
    op = steps[i]
    shown = [] if isinstance(op, Draw) else [scene]
    if t.meta["family"] == "compose":
        shown += [s for s in inputs if len(s.objects) == 1]
    return PlanStep(i, op, scene, apply(scene, op, inputs), tuple(shown))


def _single_edit(layout: Layout, enc: _Encoder, analyzer: WorldAnalyzer, t: X2IInput,
                 rng: np.random.Generator) -> dict[str, Any]:
    """One plan step of a task, as a request of its own: step text + current image -> next image."""
    step = random_plan_step(t, analyzer, rng)
    if step is None:
        inputs = [Scene.from_dict(d) for d in t.meta["inputs"]]
        return _example(layout, layout.prompt(t.instruction, [enc.scene(s) for s in inputs]),
                        layout.segments([Segment("G", codes=enc.scene(t.target.target))]), "single_edit", 1)
    prompt = layout.prompt(say_op(step.op), [enc.scene(s) for s in step.shown])
    return _example(layout, prompt, layout.segments([Segment("G", codes=enc.scene(step.after))]), "single_edit", 1)


def _evaluate(layout: Layout, enc: _Encoder, analyzer: WorldAnalyzer, t: X2IInput, rng: np.random.Generator,
              image_size: int, candidates: dict[str, float] | None = None,
              kind: str = "evaluate") -> tuple[dict[str, Any], str]:
    # By default the candidate is drawn as the capability profile draws it: uniformly over the target
    # and its one-error versions, so the share of passing candidates the model learns from is the one
    # it is tested on (boosting the target to ~44% taught a prior of "done" that the profile punished).
    # ``candidates`` weighs the kinds instead (hard negatives), among those this task has.
    drawn, img = draw_candidate(t, rng, image_size, candidates)
    codes = enc.image(img)
    seen = enc.codec.decode(np.asarray(codes))  # judge what the model will actually see
    a = analyzer.assess(t, seen)
    text = analyzer.evaluation_text(a, "done" if a.passed else "reflect")
    prompt = layout.prompt(t.instruction, [enc.image(im) for im in t.images])
    image = layout.segment(Segment("G", codes=codes))
    comp = image + layout.segments([Segment("E", text=text)])
    return _example(layout, prompt, comp, kind, t.complexity, masked_prefix=len(image)), drawn


def evaluation_example(layout: Layout, codec: Any, analyzer: WorldAnalyzer, task: X2IInput, rng: np.random.Generator,
                       image_size: int = 64, kind: str = "evaluate") -> tuple[dict[str, Any], str]:
    """One ``evaluate`` (or, for a :func:`keep_task`, ``compare``) example of ``task``, drawn as the
    pretraining data draws it, with the kind of candidate judged (one of ``CANDIDATES``)."""
    return _evaluate(layout, _Encoder(codec, image_size), analyzer, task, rng, image_size, kind=kind)
