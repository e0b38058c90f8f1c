"""Scene specs: objects on a square grid of cells, one object per cell.

A scene is data, validated on construction; rendering lives in ``render.py``.

    >>> from sairlib.world.scene import Obj, Scene
    >>> s = Scene((Obj("circle", "red", "big", 0, 1),), grid=4)
    >>> s.at(0, 1).colour
    'red'

An object may carry an inner part (a small shape of another colour drawn inside a big one):
that makes a two-part "character" sprite, the world's stand-in for a person or animal.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Iterable

from .palette import check_colour, check_shape, check_size


# Shapes that can carry an inner part: the small inner shape fits entirely inside them.
CHARACTER_BODIES: tuple[str, ...] = ("circle", "square")


class SceneError(ValueError):
    """An invalid scene spec; the message names the offending field."""


@dataclass(frozen=True, order=True)
class Part:
    """The inner part of a character: a small shape of one colour."""

    shape: str
    colour: str

    def __post_init__(self) -> None:
        try:
            check_shape(self.shape, "inner.shape")
            check_colour(self.colour, "inner.colour")
        except ValueError as e:
            raise SceneError(str(e)) from None


@dataclass(frozen=True, order=True)
class Obj:
    """One object: shape, colour, size, and its grid cell (row, col), optionally an inner part."""

    shape: str
    colour: str
    size: str
    row: int
    col: int
    inner: Part | None = None

    def __post_init__(self) -> None:
        try:
            check_shape(self.shape)
            check_colour(self.colour)
            check_size(self.size)
        except ValueError as e:
            raise SceneError(str(e)) from None
        for name in ("row", "col"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise SceneError(f"{name}: must be a non-negative integer, got {v!r}")
        if self.inner is not None:
            if not isinstance(self.inner, Part):
                raise SceneError(f"inner: must be a Part, got {type(self.inner).__name__}")
            if self.size != "big" or self.shape not in CHARACTER_BODIES:
                raise SceneError(f"inner: only a big {' or '.join(CHARACTER_BODIES)} can carry an inner part")
            if self.inner.colour == self.colour:
                raise SceneError("inner.colour: must differ from the object's colour")

    @property
    def cell(self) -> tuple[int, int]:
        return (self.row, self.col)

    @property
    def is_character(self) -> bool:
        return self.inner is not None

    def looks(self) -> tuple:
        """Everything about the object except where it is."""
        return (self.shape, self.colour, self.size, self.inner)

    def moved(self, row: int, col: int) -> "Obj":
        return dataclasses.replace(self, row=row, col=col)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"shape": self.shape, "colour": self.colour, "size": self.size,
                             "row": self.row, "col": self.col}
        if self.inner is not None:
            d["inner"] = {"shape": self.inner.shape, "colour": self.inner.colour}
        return d

    @staticmethod
    def from_dict(d: dict[str, Any], where: str = "object") -> "Obj":
        if not isinstance(d, dict):
            raise SceneError(f"{where}: must be a mapping, got {type(d).__name__}")
        missing = [k for k in ("shape", "colour", "size", "row", "col") if k not in d]
        if missing:
            raise SceneError(f"{where}: missing field {missing[0]!r}")
        extra = set(d) - {"shape", "colour", "size", "row", "col", "inner"}
        if extra:
            raise SceneError(f"{where}: unknown field {sorted(extra)[0]!r}")
        inner = d.get("inner")
        try:
            part = None if inner is None else Part(inner["shape"], inner["colour"])
            return Obj(d["shape"], d["colour"], d["size"], d["row"], d["col"], part)
        except SceneError as e:
            raise SceneError(f"{where}.{e}") from None
        except (KeyError, TypeError):
            raise SceneError(f"{where}.inner: must be a mapping with 'shape' and 'colour'") from None


@dataclass(frozen=True)
class Scene:
    """Objects on a ``grid`` x ``grid`` board; at most one object per cell."""

    objects: tuple[Obj, ...] = field(default_factory=tuple)
    grid: int = 4

    def __post_init__(self) -> None:
        if not isinstance(self.grid, int) or isinstance(self.grid, bool) or not 1 <= self.grid <= 16:
            raise SceneError(f"grid: must be an integer in 1..16, got {self.grid!r}")
        objs = tuple(self.objects)
        # Reading order (row-major), the order descriptions list objects in and images are tokenised in.
        object.__setattr__(self, "objects", tuple(sorted(objs, key=lambda o: (o.row, o.col) if isinstance(o, Obj) else (-1, -1))))
        seen: set[tuple[int, int]] = set()
        for i, o in enumerate(objs):
            if not isinstance(o, Obj):
                raise SceneError(f"objects[{i}]: must be an Obj, got {type(o).__name__}")
            if o.row >= self.grid or o.col >= self.grid:
                raise SceneError(f"objects[{i}].row/col: cell {o.cell} is outside the {self.grid}x{self.grid} grid")
            if o.cell in seen:
                raise SceneError(f"objects[{i}]: two objects in cell {o.cell}")
            seen.add(o.cell)

    def at(self, row: int, col: int) -> Obj | None:
        for o in self.objects:
            if o.cell == (row, col):
                return o
        return None

    def free_cells(self) -> list[tuple[int, int]]:
        used = {o.cell for o in self.objects}
        return [(r, c) for r in range(self.grid) for c in range(self.grid) if (r, c) not in used]

    def with_objects(self, objects: Iterable[Obj]) -> "Scene":
        return Scene(tuple(objects), self.grid)

    def to_dict(self) -> dict[str, Any]:
        return {"grid": self.grid, "objects": [o.to_dict() for o in self.objects]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "Scene":
        if not isinstance(d, dict):
            raise SceneError(f"scene: must be a mapping, got {type(d).__name__}")
        extra = set(d) - {"grid", "objects"}
        if extra:
            raise SceneError(f"scene: unknown field {sorted(extra)[0]!r}")
        objs = d.get("objects", [])
        if not isinstance(objs, list):
            raise SceneError("objects: must be a list")
        return Scene(tuple(Obj.from_dict(o, f"objects[{i}]") for i, o in enumerate(objs)), d.get("grid", 4))
