"""mini-GenEval: the world's text-to-image tasks of GenEval's six tags, judged by GenEval's rules.

A world task becomes a GenEval metadata record (``clauses``) and what the world's perception
sees in an image becomes detections (``detections``); ``sairlib.evaluation.geneval.judge`` then
decides, so the rules (an object counts when detected; counting fails with one too many; colour
and position judged on the required number of most confident detections; the relative-offset
position rule with its 0.1 size margin) have one home.

- class = shape, colour = the body's colour, box = the drawn shape's extent inside its grid cell
  (the renderer's own mask), confidence = the template IoU perception measured (ties: reading
  order). Every perceived object counts as detected, cleanly drawn or not; artifacts do not.
- a world relation "a left of b" becomes GenEval's clause "b right of a" when b is mentioned
  first (GenEval points a clause at an earlier one; the rule is symmetric).

GenEval's position rule is stricter than the world's grid relation (which only orders columns
or rows): an object one column left and two rows up is "left of" in the world but not in
GenEval, exactly as a detector-based judge would see it.

    item = clauses(task)
    ok, reasons = judge(task, WorldAnalyzer().perceive(image), image.shape[0])
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Iterable

import numpy as np

from ..interfaces import X2IInput
from ..world.palette import OPPOSITE
from ..world.perceive import Percept
from ..world.render import shape_mask
from ..world.spec import Count, Desc, Rel, TaskSpec
from . import geneval

REL_WORDS: dict[str, str] = {"left": "left of", "right": "right of", "above": "above", "below": "below"}


def _spec(task: X2IInput) -> TaskSpec:
    if not isinstance(task.target, TaskSpec):
        raise ValueError(f"task {task.id}: mini-GenEval needs a world task (target is {type(task.target).__name__})")
    return task.target


def clauses(task: X2IInput) -> dict[str, Any]:
    """The GenEval metadata record of a world text-to-image task of one of the six tags."""
    tag = task.meta.get("category")
    if task.meta.get("family") != "t2i" or tag not in geneval.TAGS:
        raise ValueError(f"task {task.id}: category must be a text-to-image GenEval tag {geneval.TAGS}, "
                         f"got {task.meta.get('family')}/{tag}")
    spec = _spec(task)
    include: list[dict[str, Any]] = []
    index: dict[Desc, int] = {}
    for c in spec.constraints:
        if isinstance(c, Count):
            if c.desc.shape is None or c.desc.size is not None or c.desc.inner is not None or c.desc.cell is not None:
                raise ValueError(f"task {task.id}: {c.desc} has no GenEval clause (class = shape, optional colour)")
            clause: dict[str, Any] = {"class": c.desc.shape, "count": c.n}
            if c.desc.colour is not None:
                clause["color"] = c.desc.colour
            index[c.desc] = len(include)
            include.append(clause)
    for c in spec.constraints:
        if isinstance(c, Rel):
            ia, ib = index[c.a], index[c.b]
            who, rel, ref = (ia, c.rel, ib) if ib < ia else (ib, OPPOSITE[c.rel], ia)
            if "position" in include[who]:
                raise ValueError(f"task {task.id}: more than one relation on one object")
            include[who]["position"] = [REL_WORDS[rel], ref]
        elif not isinstance(c, Count):
            raise ValueError(f"task {task.id}: constraint {type(c).__name__} has no GenEval clause")
    item: dict[str, Any] = {"tag": tag, "prompt": task.instruction, "include": include}
    if tag == "counting":
        item["exclude"] = [{"class": cl["class"], "count": cl["count"] + 1} for cl in include]
    return geneval.check(item, f"task {task.id}")


@lru_cache(maxsize=None)
def _extent(shape: str, size: str, cell: int) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(shape_mask(shape, size, cell))
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def detections(percept: Percept, image_size: int) -> dict[str, list[geneval.Detection]]:
    """Perceived objects as GenEval detections by class, most confident first."""
    cell = image_size // percept.grid
    found: dict[str, list[tuple[float, int, geneval.Detection]]] = {}
    for o in percept.objects:
        x0, y0, x1, y1 = _extent(o.shape, o.size, cell)
        box = (o.col * cell + x0, o.row * cell + y0, o.col * cell + x1, o.row * cell + y1)
        det = geneval.Detection(o.shape, tuple(float(v) for v in box), o.colour, float(o.iou))
        found.setdefault(o.shape, []).append((-det.score, o.row * percept.grid + o.col, det))
    return {cls: [d for *_, d in sorted(v, key=lambda t: t[:2])] for cls, v in found.items()}


def judge(task: X2IInput, percept: Percept | None, image_size: int) -> tuple[bool, list[str]]:
    """GenEval's verdict on one image (``None``: no image was drawn, which fails)."""
    if percept is None:
        return False, ["no image"]
    return geneval.judge(clauses(task), detections(percept, image_size))


def score(results: Iterable[tuple[X2IInput, bool]]) -> dict[str, float]:
    """Per-tag accuracy over all samples and the overall (unweighted mean of the tags present)."""
    return geneval.overall((t.meta["category"], ok) for t, ok in results)
