"""What a request asks for, as checkable constraints, and how a percept is scored against them.

A task's hidden spec is a list of constraints plus the objects that must stay as they were.
Checking a spec against what the Analyzer perceives gives, per dimension, the checks that
passed and the errors (structured, so that the grammar can say them and parse them back):

- instruction: ``Count``, ``Rel`` and ``At`` constraints that do not need world knowledge;
- knowledge:   the same kinds of constraint, flagged ``knowledge=True`` (their target comes from
  the fact table, e.g. "the colour of grass");
- consistency: every ``Keep`` object is still there unchanged, and nothing unexplained appears;
- quality:     every occupied cell holds a cleanly drawn object (no malformed shapes, no noise).

A dimension's score is 5 when every check passes, else ``1 + floor(4 * passed / total)``
(at most 4): one failed check always costs at least one point.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Union

from .palette import DIMENSIONS, check_colour, check_shape, check_size
from .perceive import Percept, Seen
from .scene import Obj, Part, Scene, SceneError


@dataclass(frozen=True, order=True)
class Desc:
    """A description that a set of objects may match; unset fields match anything."""

    shape: str | None = None
    colour: str | None = None
    size: str | None = None
    inner: Part | None = None
    cell: tuple[int, int] | None = None  # only in definite references: "the red circle at row 1 column 2"

    def __post_init__(self) -> None:
        try:
            if self.shape is not None:
                check_shape(self.shape)
            if self.colour is not None:
                check_colour(self.colour)
            if self.size is not None:
                check_size(self.size)
        except ValueError as e:
            raise SceneError(str(e)) from None

    def matches(self, o: Obj | Seen) -> bool:
        return ((self.shape is None or o.shape == self.shape)
                and (self.colour is None or o.colour == self.colour)
                and (self.size is None or o.size == self.size)
                and (self.inner is None or o.inner == self.inner)
                and (self.cell is None or o.cell == self.cell))

    @staticmethod
    def of(o: Obj | Seen) -> "Desc":
        """The full description of an object (everything but its position)."""
        return Desc(o.shape, o.colour, o.size, o.inner)


def unique_desc(o: Obj, scene: Scene, locate: bool = True) -> Desc | None:
    """The shortest description that picks out ``o`` alone in ``scene``.

    With ``locate`` the last resort names its cell ("the red circle at row 1 column 2");
    without it, ``None`` when only the position would tell ``o`` apart.
    """
    for d in (Desc(o.shape), Desc(o.shape, o.colour), Desc(o.shape, o.colour, o.size), Desc.of(o)):
        if sum(d.matches(p) for p in scene.objects) == 1:
            return d
    return Desc(o.shape, o.colour, o.size, o.inner, o.cell) if locate else None


@dataclass(frozen=True)
class Count:
    """Exactly ``n`` objects match ``desc``."""

    desc: Desc
    n: int
    knowledge: bool = False


@dataclass(frozen=True)
class Rel:
    """Some object matching ``a`` is ``rel`` (left/right/above/below) of some object matching ``b``."""

    a: Desc
    rel: str
    b: Desc
    knowledge: bool = False


@dataclass(frozen=True)
class At:
    """An object matching ``desc`` is in cell (row, col)."""

    desc: Desc
    row: int
    col: int
    knowledge: bool = False


@dataclass(frozen=True)
class Keep:
    """``obj`` is still in its cell, unchanged (consistency with the input image)."""

    obj: Obj


Constraint = Union[Count, Rel, At]


def holds(rel: str, a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Grid relation between two cells (row, col): strict order along the relation's axis."""
    if rel == "left":
        return a[1] < b[1]
    if rel == "right":
        return a[1] > b[1]
    if rel == "above":
        return a[0] < b[0]
    if rel == "below":
        return a[0] > b[0]
    raise SceneError(f"rel: unknown relation {rel!r}")


# ---------------------------------------------------------------- errors (what went wrong)
@dataclass(frozen=True)
class CountError:
    desc: Desc
    want: int
    found: int
    knowledge: bool = False


@dataclass(frozen=True)
class RelError:
    a: Desc
    rel: str
    b: Desc
    knowledge: bool = False


@dataclass(frozen=True)
class AtError:
    desc: Desc
    row: int
    col: int
    knowledge: bool = False


@dataclass(frozen=True)
class ChangedError:
    obj: Obj  # the object that should have stayed


@dataclass(frozen=True)
class ExtraError:
    obj: Obj  # an object nobody asked for


@dataclass(frozen=True)
class MalformedError:
    row: int
    col: int


@dataclass(frozen=True)
class NoiseError:
    row: int
    col: int


Error = Union[CountError, RelError, AtError, ChangedError, ExtraError, MalformedError, NoiseError]


def dimension_of(err: Error) -> str:
    """The dimension an error counts against."""
    if isinstance(err, (CountError, RelError, AtError)):
        return "knowledge" if err.knowledge else "instruction"
    if isinstance(err, (ChangedError, ExtraError)):
        return "consistency"
    return "quality"


@dataclass(frozen=True)
class TaskSpec:
    """The hidden target of a task: constraints, objects to keep, and one scene satisfying it all."""

    constraints: tuple[Constraint, ...]
    keep: tuple[Obj, ...] = ()
    target: Scene | None = None

    def descs(self) -> list[Desc]:
        out: list[Desc] = []
        for c in self.constraints:
            if isinstance(c, Rel):
                out += [c.a, c.b]
            else:
                out.append(c.desc)
        return out


@dataclass(frozen=True)
class Check:
    """The result of scoring one percept against one spec."""

    scores: dict[str, int]
    errors: tuple[Error, ...]
    totals: dict[str, int] = field(default_factory=dict)
    percept: Percept | None = field(default=None, compare=False, repr=False)  # what was checked

    @property
    def seen(self) -> Scene | None:
        """The objects perceived, as a scene (what an evaluation written "seen_first" describes);
        built on demand, since most checks never write an evaluation."""
        return self.percept.scene() if self.percept is not None else None

    def passed(self, thresholds: dict[str, int]) -> bool:
        return all(self.scores[d] >= thresholds[d] for d in DIMENSIONS)


def score_from(passed: int, total: int) -> int:
    """5 when every check passes (or there is none), else 1 + floor(4 * passed / total), at most 4."""
    if total == 0 or passed == total:
        return 5
    return min(4, 1 + math.floor(4 * passed / total))


def _check_constraint(c: Constraint, objs: Iterable[Seen | Obj]) -> Error | None:
    objs = list(objs)
    if isinstance(c, Count):
        found = sum(c.desc.matches(o) for o in objs)
        return None if found == c.n else CountError(c.desc, c.n, found, c.knowledge)
    if isinstance(c, Rel):
        ok = any(holds(c.rel, a.cell, b.cell) for a in objs if c.a.matches(a) for b in objs if c.b.matches(b) and b is not a)
        return None if ok else RelError(c.a, c.rel, c.b, c.knowledge)
    if isinstance(c, At):
        ok = any(o.cell == (c.row, c.col) and c.desc.matches(o) for o in objs)
        return None if ok else AtError(c.desc, c.row, c.col, c.knowledge)
    raise TypeError(f"constraint: unsupported type {type(c).__name__}")


def check(spec: TaskSpec, percept: Percept) -> Check:
    """Score a percept against a spec on the four dimensions, with the errors found."""
    objs = percept.objects
    errors: list[Error] = []
    totals = {d: 0 for d in DIMENSIONS}
    fails = {d: 0 for d in DIMENSIONS}

    for c in spec.constraints:
        dim = "knowledge" if c.knowledge else "instruction"
        totals[dim] += 1
        err = _check_constraint(c, objs)
        if err is not None:
            fails[dim] += 1
            errors.append(err)

    descs = spec.descs()
    keep_cells = {k.cell: k for k in spec.keep}
    for k in spec.keep:
        totals["consistency"] += 1
        seen = percept.at(*k.cell)
        if seen is None or seen.looks() != k.looks():
            fails["consistency"] += 1
            errors.append(ChangedError(k))
    for o in objs:
        kept = o.cell in keep_cells and keep_cells[o.cell].looks() == o.looks()
        if not kept and not any(d.matches(o) for d in descs):
            totals["consistency"] += 1
            fails["consistency"] += 1
            errors.append(ExtraError(o.as_obj()))

    for o in objs:
        totals["quality"] += 1
        if not o.clean:
            fails["quality"] += 1
            errors.append(MalformedError(o.row, o.col))
    for r, c in percept.artifacts:
        totals["quality"] += 1
        fails["quality"] += 1
        errors.append(NoiseError(r, c))

    scores = {d: score_from(totals[d] - fails[d], totals[d]) for d in DIMENSIONS}
    return Check(scores, tuple(errors), totals, percept)


def check_scene(spec: TaskSpec, scene: Scene) -> Check:
    """Score a scene symbolically, as if drawn perfectly (no rendering)."""
    from .perceive import percept_of

    return check(spec, percept_of(scene))


def satisfied(spec: TaskSpec, scene: Scene) -> bool:
    """Whether a perfectly drawn scene would score 5 on every dimension."""
    return all(v == 5 for v in check_scene(spec, scene).scores.values())


def constraints_for_step(before: Scene, after: Scene) -> TaskSpec:
    """A spec that checks one step exactly: every object of ``after`` in place, nothing else."""
    return TaskSpec(tuple(At(Desc.of(o), o.row, o.col) for o in after.objects if before.at(*o.cell) != o)
                    + tuple(Count(Desc.of(o), sum(Desc.of(o).matches(p) for p in after.objects))
                            for o in before.objects if o not in after.objects),
                    tuple(o for o in before.objects if o in after.objects), after)
