"""Reference trajectories of world tasks, written by the exact Analyzer and drawn by the renderer.

Each mode's answer built the way the escalation pipeline builds it, but with ideal images, so
masking, SFT and their tests have well-formed trajectories of every mode without running the
pipeline:

    from sairlib.reference_trajectories import reference_trajectory
    x = make_tasks(1, "train", seed=0, family="t2i")[0]
    t = reference_trajectory(x, "reflection", WorldAnalyzer(), np.random.default_rng(0), rounds=2)
    t.kinds   # 'GERGERGE'

- ``direct``: ``G`` the target, ``E`` its evaluation (decision ``done``);
- ``reflection``: ``rounds`` wrong drafts (one object recoloured, missing or moved), each
  evaluated (``reflect``) and reflected on, then the target and its evaluation;
- ``multistep``: a wrong direct try evaluated with decision ``plan``, then the Analyzer's plan
  executed one step at a time (``S G E``; step checks, and the final check against the request).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .interfaces import X2IInput
from .modes import MODES
from .trajectory import Trajectory, TrajectorySegment
from .world.corpus import perturbations
from .world.grammar import say_op
from .world.ops import apply
from .world.render import blank, render
from .world.scene import Scene
from .world.tasks import start_scene


def _failed_drafts(x: X2IInput, analyzer: Any, rng: np.random.Generator, n: int, size: int) -> list[np.ndarray]:
    """``n`` images that fail the request, cycled as needed: perturbations of its target (one object
    recoloured, missing or moved), else an unedited input image or an empty canvas."""
    cands = [im for kind, im in perturbations(x, rng, size) if kind in ("wrong_colour", "missing", "moved")]
    cands += [np.asarray(im) for im in x.images] + [blank(size)]
    wrong = [im for im in cands if not analyzer.assess(x, im).passed]
    if not wrong:
        raise ValueError(f"task {x.id}: no failing draft to reflect on")
    return [wrong[i % len(wrong)] for i in range(n)]


def reference_trajectory(x: X2IInput, mode: str, analyzer: Any, rng: np.random.Generator, rounds: int = 1,
                         image_size: int = 64) -> Trajectory:
    """A kept ``mode`` trajectory for world task ``x`` (``rounds``: reflection rounds, 1..3)."""
    if mode not in MODES:
        raise ValueError(f"mode: must be one of {MODES}, got {mode!r}")
    G = lambda im: TrajectorySegment("G", image=im)
    T = lambda kind, text: TrajectorySegment(kind, text=text)
    target = render(x.target.target, image_size)
    final = analyzer.assess(x, target)
    segs: list[TrajectorySegment] = []
    if mode == "reflection":
        for im in _failed_drafts(x, analyzer, rng, rounds, image_size):
            segs += [G(im), T("E", analyzer.evaluation_text(analyzer.assess(x, im), "reflect")),
                     T("R", analyzer.reflect(x, im))]
    if mode == "multistep":
        [im] = _failed_drafts(x, analyzer, rng, 1, image_size)
        segs += [G(im), T("E", analyzer.evaluation_text(analyzer.assess(x, im), "plan"))]
        inputs = [Scene.from_dict(d) for d in x.meta.get("inputs", [])]
        scene, steps = start_scene(x), analyzer.plan(x)
        if not steps:
            raise ValueError(f"task {x.id}: an empty plan (the start canvas already satisfies the request)")
        for i, op in enumerate(steps):
            scene = apply(scene, op, inputs)
            segs += [T("S", say_op(op)), G(render(scene, image_size))]
            if i < len(steps) - 1:
                segs.append(T("E", analyzer.step_text(True)))
        target = render(scene, image_size)
        final = analyzer.assess(x, target)
    else:
        segs.append(G(target))
    segs.append(T("E", analyzer.evaluation_text(final, "done")))
    meta = {k: x.meta[k] for k in ("family", "category", "group", "complexity", "split") if k in x.meta}
    return Trajectory(id=x.id, instruction=x.instruction, segments=segs, mode=mode, input_images=list(x.images),
                      meta=meta, scores=dict(final.scores), passed=final.passed,
                      rounds=rounds if mode == "reflection" else 0)
