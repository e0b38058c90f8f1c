"""The shapes world's closed vocabulary of attributes: colours, shapes, sizes, relations, numbers.

Everything the world can draw or say is named here once; the renderer, the perception code,
the grammar and the task generators all read these tables.

    >>> from sairlib.world.palette import COLOURS, SHAPES
    >>> COLOURS["red"], SHAPES[0]
    ((220, 40, 40), 'circle')
"""
from __future__ import annotations

# Flat RGB colours, far apart so that palette snapping is exact on rendered images.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (235, 215, 30),
    "green": (30, 160, 60),
    "blue": (40, 90, 225),
    "purple": (140, 50, 190),
    "black": (25, 25, 25),
}
BACKGROUND: tuple[int, int, int] = (236, 236, 236)

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
PLURAL: dict[str, str] = {s: s + "s" for s in SHAPES}
SINGULAR: dict[str, str] = {p: s for s, p in PLURAL.items()}

# Half extent of a shape as a fraction of the grid cell's side.
SIZES: dict[str, float] = {"small": 0.25, "big": 0.45}

RELATIONS: tuple[str, ...] = ("left", "right", "above", "below")
# How a relation is said: "the red circle is left of the blue square".
RELATION_WORDS: dict[str, tuple[str, ...]] = {
    "left": ("left", "of"),
    "right": ("right", "of"),
    "above": ("above",),
    "below": ("below",),
}
OPPOSITE: dict[str, str] = {"left": "right", "right": "left", "above": "below", "below": "above"}
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}

NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                                  "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen")
MAX_COUNT = 8

DIMENSIONS: tuple[str, ...] = ("instruction", "consistency", "quality", "knowledge")


def check_colour(name: str, field: str = "colour") -> str:
    """Return ``name`` if it is a world colour, else raise ``ValueError`` naming the field."""
    if name not in COLOURS:
        raise ValueError(f"{field}: unknown colour {name!r} (known: {', '.join(COLOURS)})")
    return name


def check_shape(name: str, field: str = "shape") -> str:
    """Return ``name`` if it is a world shape, else raise ``ValueError`` naming the field."""
    if name not in SHAPES:
        raise ValueError(f"{field}: unknown shape {name!r} (known: {', '.join(SHAPES)})")
    return name


def check_size(name: str, field: str = "size") -> str:
    """Return ``name`` if it is a world size, else raise ``ValueError`` naming the field."""
    if name not in SIZES:
        raise ValueError(f"{field}: unknown size {name!r} (known: {', '.join(SIZES)})")
    return name
