"""The exact Analyzer of the shapes world.

It perceives an image, checks it against the task's hidden spec, and writes every text the
paper's Analyzer writes, in the world's grammar:

    >>> from sairlib.world.tasks import make_tasks
    >>> from sairlib.world.render import render
    >>> a = WorldAnalyzer()
    >>> x = make_tasks(1, "train", seed=0, family="t2i")[0]
    >>> a.assess(x, render(x.target.target)).scores
    {'instruction': 5, 'consistency': 5, 'quality': 5, 'knowledge': 5}

- ``assess``: four scores (1-5), reasons, pass/fail against per-dimension thresholds;
- ``evaluation_text``: the E segment (scores, errors, decision; the errors first with
  ``evaluation_order="reasons_first"``; with ``"seen_first"``, the objects seen before all of it);
- ``reflect``: the R segment (what is wrong, and a fix as operations that, applied to what is
  in the image, satisfy the request);
- ``diagnose``: "knowledge" if a knowledge constraint fails, else "complex";
- ``decompose``: a plan of single-object steps (S segments) that builds the target;
- ``judge_text``: 0..1 truth of an E, R or S segment (the step-wise reward).
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Hashable, Sequence

import numpy as np

from ..interfaces import DIMENSIONS, Assessment, X2IInput
from .grammar import (Evaluation, GrammarError, OpsRequest, Reflection, parse_evaluation, parse_op,
                      parse_reflection, say_error, say_evaluation, say_op, say_reflection, say_request,
                      check_evaluation_order)
from .ops import Add, Cell, Colour, Draw, ImageRef, Move, Op, OpError, Place, Recolour, Redraw, Remove, Resize, apply
from .perceive import Percept, perceive
from .scene import Obj, Scene
from .spec import (AtError, ChangedError, Check, CountError, Desc, Error, ExtraError, MalformedError, NoiseError,
                   RelError, TaskSpec, check, check_scene, unique_desc)

DEFAULT_THRESHOLDS: dict[str, int] = {"instruction": 5, "consistency": 5, "quality": 4, "knowledge": 5}


def _spec(x: X2IInput) -> TaskSpec:
    if not isinstance(x.target, TaskSpec):
        raise ValueError(f"task {x.id}: the world Analyzer needs a world task (target is {type(x.target).__name__})")
    return x.target


def _inputs(x: X2IInput) -> list[Scene]:
    return [Scene.from_dict(d) for d in x.meta.get("inputs", [])]


def _n_errors(c: Check) -> int:
    """How far from satisfied: a count error weighs its shortfall or excess, any other error one."""
    return sum(abs(e.want - e.found) if isinstance(e, CountError) else 1 for e in c.errors)


@dataclass
class WorldAnalyzer:
    """Exact Analyzer: perception + spec checks + the grammar. Thresholds are per dimension (1-5)."""

    thresholds: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    grid: int = 4
    max_fix_ops: int = 12
    cache_size: int = 4096  # percepts remembered by image content (assess, reflect, diagnose see one image)
    evaluation_order: str = "scores_first"  # how evaluation texts are written (grammar.EVALUATION_ORDERS)
    _percepts: OrderedDict = field(default_factory=OrderedDict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for d in DIMENSIONS:
            if d not in self.thresholds:
                raise ValueError(f"thresholds: missing dimension {d!r}")
            v = self.thresholds[d]
            if not isinstance(v, int) or not 1 <= v <= 5:
                raise ValueError(f"thresholds.{d}: must be an integer in 1..5, got {v!r}")
        unknown = set(self.thresholds) - set(DIMENSIONS)
        if unknown:
            raise ValueError(f"thresholds: unknown dimension {sorted(unknown)[0]!r}")
        check_evaluation_order(self.evaluation_order, "evaluation_order")

    # ------------------------------------------------------------- scoring
    def perceive(self, image: np.ndarray) -> Percept:
        if self.cache_size <= 0:
            return perceive(image, self.grid)
        arr = np.ascontiguousarray(image)
        h = hashlib.blake2b(arr.tobytes(), digest_size=16)
        h.update(f"{arr.shape}{arr.dtype}".encode())
        key = h.digest()
        hit = self._percepts.get(key)
        if hit is None:
            hit = self._percepts[key] = perceive(image, self.grid)
            if len(self._percepts) > self.cache_size:
                self._percepts.popitem(last=False)
        else:
            self._percepts.move_to_end(key)
        return hit

    def check(self, x: X2IInput, image: np.ndarray) -> Check:
        return check(_spec(x), self.perceive(image))

    def _assessment(self, c: Check) -> Assessment:
        return Assessment(dict(c.scores), tuple(say_error(e) for e in c.errors), c.passed(self.thresholds), c)

    def assess(self, x: X2IInput, image: np.ndarray) -> Assessment:
        return self._assessment(self.check(x, image))

    def assess_many(self, xs: Sequence[X2IInput], images: Sequence[np.ndarray]) -> list[Assessment]:
        from .perceive import perceive_batch

        if len(xs) != len(images):
            raise ValueError(f"images: got {len(images)} for {len(xs)} tasks")
        if not len(xs):
            return []
        ps = perceive_batch(np.stack(list(images)), self.grid)
        return [self._assessment(check(_spec(x), p)) for x, p in zip(xs, ps)]

    def evaluation_text(self, assessment: Assessment, decision: str) -> str:
        detail = assessment.detail if isinstance(assessment.detail, Check) else None
        errs = detail.errors if detail is not None else ()
        seen = detail.seen if detail is not None else None
        return say_evaluation(Evaluation(dict(assessment.scores), tuple(errs), decision, seen=seen),
                              self.evaluation_order)

    def step_text(self, ok: bool, errors: Sequence[Error] = (), decision: str = "next") -> str:
        return say_evaluation(Evaluation(None, tuple(errors), decision, ok), self.evaluation_order)

    # ------------------------------------------------------------- reflection
    def fix_ops(self, x: X2IInput, percept: Percept) -> list[Op]:
        """Operations that turn what is in the image into an image satisfying the request."""
        spec, inputs = _spec(x), _inputs(x)
        ops: list[Op] = []
        dirty = {o.cell for o in percept.objects if not o.clean} | set(percept.artifacts)
        for cell in sorted(dirty):
            ops.append(Redraw(Cell(*cell)))
        scene = start = percept.scene()
        for _ in range(self.max_fix_ops):
            c = check_scene(spec, scene)
            errs = [e for e in c.errors if not isinstance(e, (MalformedError, NoiseError))]
            if not errs:
                break
            try:
                op = self._fix_one(errs[0], scene, spec, inputs)
            except OpError:  # e.g. no free cell on a crowded canvas: rebuild instead (below)
                op = None
            if op is None:
                break
            try:
                nxt = apply(scene, op, inputs)
            except OpError:
                break
            if _n_errors(check_scene(spec, nxt)) >= _n_errors(c):
                break
            ops.append(op)
            scene = nxt
        if not all(v == 5 for v in check_scene(spec, scene).scores.values()) and spec.target is not None:
            # Greedy repairs painted themselves into a corner: rebuild towards the witness instead.
            ops = ops[:len(dirty)] + _steps_between(start, spec.target, inputs, x.meta.get("family"))
        return ops

    def _fix_one(self, e: Error, scene: Scene, spec: TaskSpec, inputs: Sequence[Scene]) -> Op | None:
        target = spec.target or Scene((), scene.grid)
        if isinstance(e, ExtraError):
            return Remove(_unique(e.obj, scene))
        if isinstance(e, ChangedError):
            now = scene.at(*e.obj.cell)
            if now is not None:
                return _morph(now, Desc.of(e.obj), scene)
            return Add(Desc.of(e.obj), Cell(*e.obj.cell))
        if isinstance(e, AtError):
            now = scene.at(e.row, e.col)
            if now is not None:
                return _morph(now, e.desc, scene) if now.shape == e.desc.shape or e.desc.shape is None else Remove(_unique(now, scene))
            movable = [o for o in scene.objects if e.desc.matches(o)]
            if movable:
                return Move(_unique(movable[0], scene), Cell(e.row, e.col))
            return Add(_full(e.desc, target), Cell(e.row, e.col))
        if isinstance(e, CountError):
            if e.found > e.want:
                extra = [o for o in scene.objects if e.desc.matches(o)]
                return Remove(_unique(extra[-1], scene))
            return Add(_full(e.desc, target), Cell(*self._best_cell(scene, _full(e.desc, target), spec, inputs)))
        if isinstance(e, RelError):
            movers = [o for o in scene.objects if e.a.matches(o)]
            if not movers:
                return Add(_full(e.a, target), Cell(*self._best_cell(scene, _full(e.a, target), spec, inputs)))
            o = movers[0]
            rest = scene.with_objects([p for p in scene.objects if p is not o])
            cell = self._best_cell(rest, Desc.of(o), spec, inputs, exclude=[o.cell])
            return Move(_unique(o, scene), Cell(*cell))
        return None

    def _best_cell(self, scene: Scene, desc: Desc, spec: TaskSpec, inputs: Sequence[Scene],
                   exclude: Sequence[tuple[int, int]] = ()) -> tuple[int, int]:
        """The free cell where a new object of ``desc`` leaves the fewest errors (row-major ties)."""
        best, best_n = None, None
        for cell in scene.free_cells():
            if cell in exclude:
                continue
            try:
                trial = apply(scene, Add(desc, Cell(*cell)), inputs)
            except OpError:
                continue
            n = _n_errors(check_scene(spec, trial))
            if best_n is None or n < best_n:
                best, best_n = cell, n
        if best is None:
            raise OpError("no free cell")
        return best

    def reflection(self, x: X2IInput, image: np.ndarray) -> Reflection:
        p = self.perceive(image)
        c = check(_spec(x), p)
        return Reflection(c.errors, tuple(self.fix_ops(x, p)))

    def reflect(self, x: X2IInput, image: np.ndarray) -> str:
        return say_reflection(self.reflection(x, image))

    def fix_instruction(self, reflection: str) -> str:
        """The request a generator executes for a reflection: its fix operations, in order (empty if none)."""
        ops = parse_reflection(reflection).fix
        return say_request(OpsRequest(tuple(ops))) if ops else ""

    # ------------------------------------------------------------- diagnosis and plans
    def diagnose(self, x: X2IInput, image: np.ndarray) -> str:
        c = self.check(x, image)
        return "knowledge" if any(getattr(e, "knowledge", False) for e in c.errors) else "complex"

    def plan(self, x: X2IInput) -> list[Op]:
        """Single-object steps from the starting canvas to the target (the decomposition)."""
        from .tasks import start_scene

        spec = _spec(x)
        return _steps_between(start_scene(x), spec.target, _inputs(x), x.meta.get("family"))

    def decompose(self, x: X2IInput) -> list[str]:
        return [say_op(op) for op in self.plan(x)]

    # ------------------------------------------------------------- step-wise judgement
    def judge_text(self, kind: str, text: str, context: dict[str, Any]) -> float:
        """Truth of a text segment in 0..1.

        ``context``: ``task`` (X2IInput); for E and R, ``image`` (the image the text follows);
        for a step check E, also ``step`` (the step's text) and ``before`` (image before the step);
        for S, ``image`` (the latest image before the step, or None at the start of a plan).
        """
        x = context["task"]
        try:
            if kind == "E":
                return self._judge_eval(x, parse_evaluation(text, self.grid), context)
            if kind == "R":
                return self._judge_reflection(x, parse_reflection(text), context["image"])
            if kind == "S":
                return self._judge_step(x, parse_op(text), context.get("image"))
        except GrammarError:
            return 0.0
        raise ValueError(f"kind: must be 'E', 'R' or 'S', got {kind!r}")

    def _judge_eval(self, x: X2IInput, ev: Evaluation, ctx: dict[str, Any]) -> float:
        if ev.scores is None:  # a step check: is "step done"/"step failed" true?
            ok = self.step_done(x, ctx.get("step", ""), ctx.get("before"), ctx["image"])
            return float(ev.step_ok == ok)
        c = self.check(x, ctx["image"])
        parts = [float(ev.scores[d] == c.scores[d]) for d in DIMENSIONS]
        parts.append(_jaccard(ev.errors, c.errors))
        if ev.seen is not None:  # a scene seen ("seen_first"): its objects, as a set, against the percept's
            parts.append(_jaccard(ev.seen.objects, c.seen.objects if c.seen is not None else ()))
        passed = c.passed(self.thresholds)
        parts.append(float((ev.decision == "done") == passed))
        return sum(parts) / len(parts)

    def _judge_reflection(self, x: X2IInput, r: Reflection, image: np.ndarray) -> float:
        p = self.perceive(image)
        c = check(_spec(x), p)
        analysis = _jaccard(r.errors, c.errors)
        before = len(c.errors)
        scene, inputs = p.scene(), _inputs(x)
        redrawn = {(op.where.row, op.where.col) for op in r.fix if isinstance(op, Redraw)}
        try:
            for op in r.fix:
                scene = apply(scene, op, inputs)
        except OpError:
            return 0.5 * analysis
        after_check = check_scene(_spec(x), scene)
        dirty = {o.cell for o in p.objects if not o.clean} | set(p.artifacts)
        after = len(after_check.errors) + len(dirty - redrawn)
        fix = 1.0 if before == 0 else max(0.0, (before - after) / before)
        return 0.5 * analysis + 0.5 * fix

    def _judge_step(self, x: X2IInput, op: Op, image: np.ndarray | None) -> float:
        spec, inputs = _spec(x), _inputs(x)
        scene = self.perceive(image).scene() if image is not None else Scene((), self.grid)
        try:
            nxt = apply(scene, op, inputs)
        except OpError:
            return 0.0
        if nxt == scene:
            return 0.0  # already done, or does nothing
        before, after = check_scene(spec, scene), check_scene(spec, nxt)
        keep_fail = lambda c: {e for e in c.errors if isinstance(e, ChangedError)}
        # Progress: a target object is now in place, and nothing the request keeps was broken.
        target = spec.target
        placed = lambda s: sum(1 for t in target.objects if s.at(*t.cell) == t) if target else 0
        if keep_fail(after) - keep_fail(before):
            return 0.0
        if placed(nxt) > placed(scene) or _n_errors(after) < _n_errors(before):
            return 1.0
        return 0.5

    def step_done(self, x: X2IInput, step: str, before: np.ndarray | None, after: np.ndarray) -> bool:
        """Did ``after`` carry out the plan step ``step`` on ``before`` (None: an empty canvas), cleanly?"""
        try:
            op = parse_op(step)
        except GrammarError:
            return False
        scene = self.perceive(before).scene() if before is not None else Scene((), self.grid)
        try:
            want = apply(scene, op, _inputs(x))
        except OpError:
            return False
        p = self.perceive(after)
        return p.scene() == want and all(o.clean for o in p.objects) and not p.artifacts


def _steps_between(start: Scene, target: Scene, inputs: Sequence[Scene], family: str | None) -> list[Op]:
    """Single-object operations turning ``start`` into ``target``: first change or clear what
    differs (recolour, resize, move, remove), then add what is missing, row-major."""
    steps: list[Op] = []
    scene = start
    for o in start.objects:
        t = target.at(*o.cell)
        if t is not None and t.looks() == o.looks():
            continue
        if t is not None and t.shape == o.shape and t.inner == o.inner and t.size == o.size:
            op: Op = Recolour(_unique(o, scene), Colour(t.colour))
        elif t is not None and t.shape == o.shape and t.colour == o.colour and not o.is_character and not t.is_character:
            op = Resize(_unique(o, scene), t.size)
        else:
            dest = [p for p in target.objects if p.looks() == o.looks() and scene.at(*p.cell) is None]
            op = Move(_unique(o, scene), Cell(*dest[0].cell)) if dest else Remove(_unique(o, scene))
        steps.append(op)
        scene = apply(scene, op, inputs)
    for t in target.objects:
        now = scene.at(*t.cell)
        if now is not None and now.looks() == t.looks():
            continue
        if now is not None:  # something else arrived here; clear it first
            op = Remove(_unique(now, scene))
            steps.append(op)
            scene = apply(scene, op, inputs)
        subj = [i + 1 for i, s in enumerate(inputs) if len(s.objects) == 1 and s.objects[0].looks() == t.looks()]
        if subj and family == "compose":
            op = Place(ImageRef(subj[0], t.is_character), Cell(*t.cell))
        elif not scene.objects and family == "t2i":
            op = Draw(Desc.of(t), Cell(*t.cell))
        else:
            op = Add(Desc.of(t), Cell(*t.cell))
        steps.append(op)
        scene = apply(scene, op, inputs)
    return steps


def _unique(o: Obj, scene: Scene) -> Desc:
    return unique_desc(o, scene, locate=True)


def _full(d: Desc, target: Scene) -> Desc:
    """Complete a partial description from the target scene (or sensible defaults)."""
    for t in target.objects:
        if d.matches(t):
            return Desc.of(t)
    return Desc(d.shape or "square", d.colour or "black", d.size or "big", d.inner)


def _morph(now: Obj, want: Desc, scene: Scene) -> Op:
    if want.colour and now.colour != want.colour and (want.size is None or now.size == want.size):
        return Recolour(_unique(now, scene), Colour(want.colour))
    if want.size and now.size != want.size and not now.is_character:
        return Resize(_unique(now, scene), want.size)
    return Remove(_unique(now, scene))


def _jaccard(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    sa, sb = set(a), set(b)
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


__all__ = ["WorldAnalyzer", "DEFAULT_THRESHOLDS"]
