"""Where a plan draws: the canvas its first step applies to, and which steps start afresh.

One rule for the escalation pipeline (which draws the steps) and the step-wise reward (which
judges them)::

    canvas = start_canvas(x)        # the input scene for edits and scene composition, else None
    fresh_step("draw a big red circle at row 1 column 1")   # True: starts an empty canvas
"""
from __future__ import annotations

import numpy as np

from .interfaces import X2IInput


def start_canvas(x: X2IInput) -> np.ndarray | None:
    """The image a plan starts from: the input scene for edits and scene composition, else none
    (a request from outside the world starts from its first input image, if any)."""
    inputs = x.meta.get("inputs")
    if inputs is None:
        return x.images[0] if x.images else None
    fam = x.meta.get("family")
    if x.images and (fam == "edit" or (fam == "compose" and len(inputs[0].get("objects", [])) != 1)):
        return x.images[0]
    return None


def fresh_step(step: str) -> bool:
    """Does this plan step start a fresh canvas (a ``draw`` step) rather than edit the current one?"""
    return step.split(" ", 1)[0] == "draw"
