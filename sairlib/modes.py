"""The three reasoning modes and the strict grammar of their segment orders.

After the request, a trajectory is a sequence of segments, each an image ``G`` or a text ``E``
(evaluation), ``R`` (reflection) or ``S`` (plan step). The three modes are exactly:

==============  ==============================  ====================
mode            segment kinds                   images
==============  ==============================  ====================
``direct``      ``G E``                         1
``reflection``  ``G E (R G E){1..max_rounds}``  1 + rounds
``multistep``   ``G E (S G E)+``                1 + steps
==============  ==============================  ====================

    >>> infer_mode("GERGE")
    'reflection'
    >>> infer_mode(["G", "E", "S", "G", "E", "S", "G", "E"])
    'multistep'
    >>> infer_mode("GEGE") is None
    True

This is the one home of the mode grammar: the pipeline checks its trajectories with it, masking
picks the loss subsequence by it, the format reward and the evaluation's mode mix read it.
"""
from __future__ import annotations

import re
from typing import Iterable

MODES: tuple[str, ...] = ("direct", "reflection", "multistep")
DEFAULT_MAX_ROUNDS = 3


def kinds_string(kinds: Iterable[str] | str) -> str:
    """``["G", "E"]`` or ``"GE"`` -> ``"GE"`` (each kind one letter of G, E, R, S, D)."""
    s = kinds if isinstance(kinds, str) else "".join(kinds)
    bad = set(s) - set("GERSD")
    if bad:
        raise ValueError(f"kinds: unknown segment kind {sorted(bad)[0]!r} (known: G, E, R, S, D)")
    return s


def infer_mode(kinds: Iterable[str] | str, max_rounds: int = DEFAULT_MAX_ROUNDS) -> str | None:
    """The mode whose grammar the segment kinds follow exactly, or None (no partial credit)."""
    if not isinstance(max_rounds, int) or max_rounds < 1:
        raise ValueError(f"max_rounds: must be a positive integer, got {max_rounds!r}")
    s = kinds_string(kinds)
    if s == "GE":
        return "direct"
    if re.fullmatch(f"GE(RGE){{1,{max_rounds}}}", s):
        return "reflection"
    if re.fullmatch("GE(SGE)+", s):
        return "multistep"
    return None


def n_images(kinds: Iterable[str] | str) -> int:
    """How many images the segments draw."""
    return kinds_string(kinds).count("G")
