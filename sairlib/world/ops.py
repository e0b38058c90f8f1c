"""Edit operations: the verbs of requests, reflections' fixes and plan steps.

Each operation can be applied to a scene symbolically (the world's ideal generator does this)
and turned into the constraints that its result must satisfy (the task generators do this).

    >>> from sairlib.world.scene import Obj, Scene
    >>> from sairlib.world.spec import Desc
    >>> s = Scene((Obj("circle", "red", "big", 0, 0),))
    >>> apply(s, Recolour(Desc("circle", "red"), Colour("blue"))).objects[0].colour
    'blue'
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence, Union

from .facts import colour_of, mix
from .palette import DIRECTIONS, OPPOSITE
from .scene import Obj, Scene, SceneError
from .spec import At, Constraint, Count, Desc, Keep, Rel, holds


class OpError(ValueError):
    """An operation that cannot be applied to a scene (the message says why)."""


# ------------------------------------------------------------------ operands
@dataclass(frozen=True)
class Cell:
    row: int
    col: int


@dataclass(frozen=True)
class ImageRef:
    """The subject (single object) of input image ``k`` (1-based); ``character`` if it has an inner part."""

    k: int
    character: bool


Target = Union[Desc, ImageRef]


@dataclass(frozen=True)
class RelTo:
    rel: str
    target: Target


Where = Union[Cell, RelTo]


@dataclass(frozen=True)
class Colour:
    name: str

    @property
    def knowledge(self) -> bool:
        return False

    def resolve(self) -> str:
        return self.name


@dataclass(frozen=True)
class FactColour:
    thing: str

    @property
    def knowledge(self) -> bool:
        return True

    def resolve(self) -> str:
        return colour_of(self.thing)


@dataclass(frozen=True)
class MixColour:
    a: str
    b: str

    @property
    def knowledge(self) -> bool:
        return True

    def resolve(self) -> str:
        return mix(self.a, self.b)


ColourRef = Union[Colour, FactColour, MixColour]


# ------------------------------------------------------------------ operations
@dataclass(frozen=True)
class Draw:
    """Start a fresh canvas holding one object (the first step of a text-to-image plan)."""

    desc: Desc
    where: Cell


@dataclass(frozen=True)
class Add:
    desc: Desc
    where: Where


@dataclass(frozen=True)
class Remove:
    desc: Desc
    every: bool = False


@dataclass(frozen=True)
class Recolour:
    desc: Desc
    colour: ColourRef
    every: bool = False


@dataclass(frozen=True)
class Resize:
    desc: Desc
    size: str


@dataclass(frozen=True)
class Move:
    desc: Desc
    to: Union[Cell, str]  # a cell, or a direction: left/right/up/down (one cell)


@dataclass(frozen=True)
class SetCount:
    desc: Desc
    n: int


@dataclass(frozen=True)
class Place:
    """Put the subject of an input image onto the canvas."""

    subject: ImageRef
    where: Where


@dataclass(frozen=True)
class Redraw:
    """Redraw one cell cleanly: a malformed object is drawn properly, noise on an empty cell is erased."""

    where: Cell


Op = Union[Draw, Add, Remove, Recolour, Resize, Move, SetCount, Place, Redraw]


# ------------------------------------------------------------------ helpers
def resolve_target(t: Target, inputs: Sequence[Scene]) -> Desc:
    """A target as a description: image references become the full look of that image's subject."""
    if isinstance(t, Desc):
        return t
    return Desc.of(subject_of(t, inputs))


def subject_of(ref: ImageRef, inputs: Sequence[Scene]) -> Obj:
    if not 1 <= ref.k <= len(inputs):
        raise OpError(f"image {ref.k}: the request has {len(inputs)} input image(s)")
    objs = inputs[ref.k - 1].objects
    if len(objs) != 1:
        raise OpError(f"image {ref.k}: holds {len(objs)} objects, not one subject")
    if objs[0].is_character != ref.character:
        raise OpError(f"image {ref.k}: its subject is {'a character' if objs[0].is_character else 'an object'}")
    return objs[0]


def _the(scene: Scene, desc: Desc) -> Obj:
    found = [o for o in scene.objects if desc.matches(o)]
    if len(found) != 1:
        raise OpError(f"{len(found)} objects match {desc}, need exactly one")
    return found[0]


def _free_cell(scene: Scene, where: Where, inputs: Sequence[Scene], avoid: Sequence[tuple[int, int]] = ()) -> tuple[int, int]:
    free = [c for c in scene.free_cells() if c not in avoid]
    if isinstance(where, Cell):
        cell = (where.row, where.col)
        if not (0 <= where.row < scene.grid and 0 <= where.col < scene.grid):
            raise OpError(f"cell {cell}: outside the grid")
        if cell not in scene.free_cells():
            raise OpError(f"cell {cell}: already occupied")
        return cell
    ref = resolve_target(where.target, inputs)
    anchors = [o.cell for o in scene.objects if ref.matches(o)]
    if not anchors:
        raise OpError(f"no object matches {ref} to place relative to")
    ok = [c for c in free if any(holds(where.rel, c, a) for a in anchors)]
    if not ok:
        raise OpError(f"no free cell {where.rel} of {ref}")
    # Prefer the cell nearest the anchor, then row-major order: deterministic.
    a = anchors[0]
    return min(ok, key=lambda c: (abs(c[0] - a[0]) + abs(c[1] - a[1]), c))


def _obj(desc: Desc, cell: tuple[int, int]) -> Obj:
    if desc.shape is None or desc.colour is None or desc.size is None:
        raise OpError(f"{desc}: a new object needs shape, colour and size")
    return Obj(desc.shape, desc.colour, desc.size, cell[0], cell[1], desc.inner)


def _replace(scene: Scene, old: Obj, new: Obj) -> Scene:
    return scene.with_objects([new if o is old else o for o in scene.objects])


def apply(scene: Scene, op: Op, inputs: Sequence[Scene] = ()) -> Scene:
    """Apply one operation to a scene symbolically; ``OpError`` when it cannot be done."""
    try:
        return _apply(scene, op, inputs)
    except SceneError as e:
        raise OpError(str(e)) from None


def _apply(scene: Scene, op: Op, inputs: Sequence[Scene]) -> Scene:
    if isinstance(op, Draw):
        return Scene((_obj(op.desc, (op.where.row, op.where.col)),), scene.grid)
    if isinstance(op, Redraw):
        return scene  # symbolic scenes are always clean
    if isinstance(op, Add):
        return scene.with_objects(scene.objects + (_obj(op.desc, _free_cell(scene, op.where, inputs)),))
    if isinstance(op, Place):
        subj = subject_of(op.subject, inputs)
        cell = _free_cell(scene, op.where, inputs)
        return scene.with_objects(scene.objects + (subj.moved(*cell),))
    if isinstance(op, Remove):
        keep = [o for o in scene.objects if not op.desc.matches(o)]
        if len(keep) == len(scene.objects):
            raise OpError(f"nothing matches {op.desc} to remove")
        if not op.every and len(scene.objects) - len(keep) != 1:
            raise OpError(f"several objects match {op.desc}")
        return scene.with_objects(keep)
    if isinstance(op, Recolour):
        colour = op.colour.resolve()
        targets = [o for o in scene.objects if op.desc.matches(o)] if op.every else [_the(scene, op.desc)]
        if not targets:
            raise OpError(f"nothing matches {op.desc} to recolour")
        objs = list(scene.objects)
        for t in targets:
            inner = t.inner if t.inner is None or t.inner.colour != colour else None
            objs[objs.index(t)] = dataclasses.replace(t, colour=colour, inner=inner)
        return scene.with_objects(objs)
    if isinstance(op, Resize):
        t = _the(scene, op.desc)
        if t.is_character:
            raise OpError("a character cannot be resized")
        return _replace(scene, t, dataclasses.replace(t, size=op.size))
    if isinstance(op, Move):
        t = _the(scene, op.desc)
        if isinstance(op.to, str):
            dr, dc = DIRECTIONS[op.to]
            cell = (t.row + dr, t.col + dc)
            if not (0 <= cell[0] < scene.grid and 0 <= cell[1] < scene.grid):
                raise OpError(f"cannot move {op.to}: the object is at the edge")
            if scene.at(*cell) is not None:
                raise OpError(f"cannot move {op.to}: cell {cell} is occupied")
        else:
            cell = _free_cell(scene, op.to, inputs)
        return _replace(scene, t, t.moved(*cell))
    if isinstance(op, SetCount):
        match = [o for o in scene.objects if op.desc.matches(o)]
        if op.n < len(match):
            drop = set(id(o) for o in match[op.n:])
            return scene.with_objects([o for o in scene.objects if id(o) not in drop])
        if op.n > len(match):
            if not match:
                raise OpError(f"no {op.desc} to copy")
            proto, objs = match[0], list(scene.objects)
            free = scene.free_cells()
            if len(free) < op.n - len(match):
                raise OpError("not enough free cells")
            objs += [proto.moved(*free[i]) for i in range(op.n - len(match))]
            return scene.with_objects(objs)
        raise OpError(f"there are already {op.n}")
    raise TypeError(f"op: unsupported operation {type(op).__name__}")


def touched(scene: Scene, op: Op) -> list[Obj]:
    """The objects of ``scene`` that ``op`` changes (everything else must be kept)."""
    if isinstance(op, Draw):
        return list(scene.objects)
    if isinstance(op, (Add, Place, Redraw)):
        return []
    return [o for o in scene.objects if op.desc.matches(o)]


def constraints(before: Scene, op: Op, after: Scene, inputs: Sequence[Scene] = ()) -> list[Constraint]:
    """What the result of ``op`` must satisfy, given the scenes before and after it."""
    if isinstance(op, Draw):
        return [At(op.desc, op.where.row, op.where.col)]
    if isinstance(op, Redraw):
        return []
    if isinstance(op, (Add, Place)):
        desc = op.desc if isinstance(op, Add) else Desc.of(subject_of(op.subject, inputs))
        n = sum(desc.matches(o) for o in before.objects) + 1
        out: list[Constraint] = [Count(desc, n)]
        if isinstance(op.where, Cell):
            out.append(At(desc, op.where.row, op.where.col))
        else:
            out.append(Rel(desc, op.where.rel, resolve_target(op.where.target, inputs)))
        return out
    if isinstance(op, Remove):
        return [Count(op.desc, 0)]
    if isinstance(op, SetCount):
        return [Count(op.desc, op.n)]
    out = []
    moved = {id(o) for o in touched(before, op)}
    for o in before.objects:
        if id(o) not in moved:
            continue
        if isinstance(op, Recolour):
            colour = op.colour.resolve()
            inner = o.inner if o.inner is None or o.inner.colour != colour else None
            out.append(At(Desc(o.shape, colour, o.size, inner), o.row, o.col, knowledge=op.colour.knowledge))
        elif isinstance(op, Resize):
            out.append(At(Desc(o.shape, o.colour, op.size, o.inner), o.row, o.col))
        elif isinstance(op, Move):
            if isinstance(op.to, str):
                cell = (o.row + DIRECTIONS[op.to][0], o.col + DIRECTIONS[op.to][1])
                out.append(At(Desc.of(o), *cell))
            elif isinstance(op.to, Cell):
                out.append(At(Desc.of(o), op.to.row, op.to.col))
            else:
                out.append(Rel(Desc.of(o), op.to.rel, resolve_target(op.to.target, inputs)))
            out.append(Count(Desc.of(o), sum(Desc.of(o).matches(a) for a in after.objects)))
    return out


__all__ = [
    "OpError", "Cell", "ImageRef", "RelTo", "Colour", "FactColour", "MixColour", "Draw", "Add", "Remove",
    "Recolour", "Resize", "Move", "SetCount", "Place", "Redraw", "Op", "apply", "constraints", "touched",
    "resolve_target", "subject_of", "OPPOSITE", "Keep",
]
