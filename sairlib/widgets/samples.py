"""Hand-built trajectories of every mode and status, drawn by the world renderer and written by
the exact Analyzer: material to try the explorer and the reviewer without running the pipeline.

    from sairlib.widgets.samples import sample_trajectories
    ts = sample_trajectories(seed=0)          # direct, reflection, multistep, discarded, error
    TrajectoryExplorer(ts).widget

Direct draws the task's witness (``G E``); Self-Reflection first draws the witness without one
object, reflects and redraws (``G E R G E``); Multi-step draws that same flawed try, then follows
the Analyzer's plan one object per step (``G E (S G E)+``); a discarded sample keeps its failed
try and a reason; an error sample records a backend failure. Every text is the Analyzer's.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..interfaces import X2IInput
from ..modes import MODES
from ..trajectory import Trajectory, TrajectorySegment
from ..world import WorldAnalyzer, make_tasks, render
from ..world.grammar import say_op
from ..world.ops import apply
from ..world.scene import Scene
from ..world.tasks import start_scene


def _flawed(x: X2IInput, image_size: int) -> np.ndarray:
    """The witness without its last object (an empty canvas for one-object scenes)."""
    target: Scene = x.target.target
    return render(target.with_objects(target.objects[:-1]), image_size)


def _base(x: X2IInput, status: str, seed: int) -> dict[str, Any]:
    meta = {k: x.meta[k] for k in ("family", "category", "group", "complexity", "split") if k in x.meta}
    return {"id": x.id, "instruction": x.instruction, "input_images": list(x.images), "meta": meta,
            "status": status, "provenance": {"generator": "world-renderer", "analyzer": "world", "seed": seed,
                                             "source": "sairlib.widgets.samples"}}


def direct(x: X2IInput, a: WorldAnalyzer, image_size: int = 64, seed: int = 0) -> Trajectory:
    g = render(x.target.target, image_size)
    s = a.assess(x, g)
    return Trajectory(**_base(x, "kept", seed), mode="direct", scores=dict(s.scores), passed=s.passed,
                      segments=[TrajectorySegment("G", image=g), TrajectorySegment("E", text=a.evaluation_text(s, "done"))],
                      decisions=[{"stage": "direct", "decision": "pass", "why": "all dimensions at threshold"}])


def reflection(x: X2IInput, a: WorldAnalyzer, image_size: int = 64, seed: int = 0) -> Trajectory:
    g1 = _flawed(x, image_size)
    s1 = a.assess(x, g1)
    g2 = render(x.target.target, image_size)
    s2 = a.assess(x, g2)
    segs = [TrajectorySegment("G", image=g1), TrajectorySegment("E", text=a.evaluation_text(s1, "reflect")),
            TrajectorySegment("R", text=a.reflect(x, g1)), TrajectorySegment("G", image=g2),
            TrajectorySegment("E", text=a.evaluation_text(s2, "done"))]
    return Trajectory(**_base(x, "kept", seed), mode="reflection", segments=segs, scores=dict(s2.scores),
                      passed=s2.passed, rounds=1,
                      decisions=[{"stage": "direct", "decision": "fail", "why": "; ".join(s1.reasons)},
                                 {"stage": "reflect1", "decision": "pass", "why": "all dimensions at threshold"}])


def multistep(x: X2IInput, a: WorldAnalyzer, image_size: int = 64, seed: int = 0) -> Trajectory:
    g1 = _flawed(x, image_size)
    s1 = a.assess(x, g1)
    segs = [TrajectorySegment("G", image=g1), TrajectorySegment("E", text=a.evaluation_text(s1, "plan"))]
    decisions = [{"stage": "direct", "decision": "fail", "why": "; ".join(s1.reasons)},
                 {"stage": "diagnose", "decision": "complex", "why": "no knowledge error"}]
    inputs = [Scene.from_dict(d) for d in x.meta.get("inputs", [])]
    scene = start_scene(x)
    ops = a.plan(x)
    for i, op in enumerate(ops):
        scene = apply(scene, op, inputs)
        segs += [TrajectorySegment("S", text=say_op(op)), TrajectorySegment("G", image=render(scene, image_size))]
        decisions.append({"stage": f"step{i + 1}", "decision": "done", "why": f"1 attempt(s): {say_op(op)}"})
        if i < len(ops) - 1:
            segs.append(TrajectorySegment("E", text=a.step_text(True)))
    final = a.assess(x, render(scene, image_size))
    segs.append(TrajectorySegment("E", text=a.evaluation_text(final, "done")))
    decisions.append({"stage": "verify", "decision": "pass" if final.passed else "fail", "why": "; ".join(final.reasons)})
    return Trajectory(**_base(x, "kept", seed), mode="multistep", segments=segs, scores=dict(final.scores),
                      passed=final.passed, decisions=decisions)


def discarded(x: X2IInput, a: WorldAnalyzer, image_size: int = 64, seed: int = 0,
              reason: str = "lacks knowledge") -> Trajectory:
    g1 = _flawed(x, image_size)
    s1 = a.assess(x, g1)
    return Trajectory(**_base(x, "discarded", seed), mode=None, scores=dict(s1.scores), passed=False,
                      segments=[TrajectorySegment("G", image=g1), TrajectorySegment("E", text=a.evaluation_text(s1, "stop"))],
                      decisions=[{"stage": "direct", "decision": "fail", "why": "; ".join(s1.reasons)},
                                 {"stage": "diagnose", "decision": "knowledge", "why": reason}],
                      discard_reason=reason)


def errored(x: X2IInput, seed: int = 0, error: str = "generator: timed out after 3 attempts") -> Trajectory:
    return Trajectory(**_base(x, "error", seed), mode=None, errors=[error],
                      decisions=[{"stage": "backend", "decision": "error", "why": error}])


def sample_trajectories(seed: int = 0, per_mode: int = 2, image_size: int = 64,
                        analyzer: WorldAnalyzer | None = None) -> list[Trajectory]:
    """``per_mode`` trajectories of each mode (t2i, edit and compose tasks), one discarded, one error.

    Deterministic for a seed; the multi-step and reflection ones use tasks with at least two
    objects so that their flawed first try really fails.
    """
    if not isinstance(per_mode, int) or per_mode < 1:
        raise ValueError(f"per_mode: must be a positive integer, got {per_mode!r}")
    a = analyzer or WorldAnalyzer()
    by_family: dict[str, list[X2IInput]] = {}
    for x in make_tasks(30 * per_mode + 30, "train", seed=seed):
        if len(x.target.target.objects) >= 2:
            by_family.setdefault(x.meta["family"], []).append(x)
    pool = [x for group in zip(*by_family.values()) for x in group]  # families interleaved
    need = len(MODES) * per_mode + 2
    if len(pool) < need:
        raise ValueError(f"seed {seed}: only {len(pool)} multi-object tasks drawn, need {need}")
    out: list[Trajectory] = []
    builders = {"direct": direct, "reflection": reflection, "multistep": multistep}
    for k in range(per_mode):
        for j, mode in enumerate(MODES):
            out.append(builders[mode](pool[k * len(MODES) + j], a, image_size, seed))
    out.append(discarded(pool[need - 2], a, image_size, seed))
    out.append(errored(pool[need - 1], seed))
    return out
