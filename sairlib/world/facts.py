"""The world's knowledge: the colours of things, and colour mixing.

A request may name a colour indirectly ("make the circle the colour of grass"); getting it
right needs the fact, which is what the knowledge dimension scores. Facts are split into
``KNOWN`` (shown to the base model in pretraining) and ``HELD_OUT`` (never shown), so that the
"lacks knowledge" diagnosis of the paper's pipeline happens for real.
"""
from __future__ import annotations

from .palette import COLOURS

THINGS: dict[str, str] = {
    "grass": "green", "leaf": "green", "frog": "green",
    "sky": "blue", "sea": "blue",
    "banana": "yellow", "lemon": "yellow", "sun": "yellow",
    "tomato": "red", "cherry": "red", "blood": "red",
    "carrot": "orange", "pumpkin": "orange",
    "grape": "purple", "plum": "purple",
    "coal": "black", "night": "black", "crow": "black",
}
# Facts the base model never sees in pretraining (one per colour where possible).
HELD_OUT: frozenset[str] = frozenset({"frog", "sea", "sun", "blood", "pumpkin", "plum", "crow"})
KNOWN: frozenset[str] = frozenset(THINGS) - HELD_OUT

MIXES: dict[frozenset[str], str] = {
    frozenset({"red", "yellow"}): "orange",
    frozenset({"blue", "yellow"}): "green",
    frozenset({"red", "blue"}): "purple",
}

assert all(c in COLOURS for c in THINGS.values())


def colour_of(thing: str) -> str:
    """The colour of a thing in the fact table; ``ValueError`` names an unknown thing."""
    try:
        return THINGS[thing]
    except KeyError:
        raise ValueError(f"thing: no fact about {thing!r} (known: {', '.join(sorted(THINGS))})") from None


def mix(a: str, b: str) -> str:
    """The colour made by mixing two colours; ``ValueError`` if the world has no such rule."""
    try:
        return MIXES[frozenset({a, b})]
    except KeyError:
        raise ValueError(f"mix: no rule for mixing {a!r} and {b!r}") from None
