"""The core interfaces every stage speaks: requests, assessments, the Analyzer and the Generator.

The shapes world implements them exactly (``sairlib.world``); real VLM judges and image
generators implement the same protocols, so the pipeline, rewards and evaluation never know
which one they talk to.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

DIMENSIONS: tuple[str, ...] = ("instruction", "consistency", "quality", "knowledge")


@dataclass(frozen=True)
class X2IInput:
    """One any-to-image request.

    ``instruction`` is the request text, ``images`` its input images (0..n, RGB uint8), ``meta``
    what benchmarks and analyses group by (family, category, group, complexity, split, ...), and
    ``target`` the hidden spec a world Analyzer checks against (``None`` for real data).
    """

    id: str
    instruction: str
    images: tuple[np.ndarray, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    target: Any = None

    @property
    def complexity(self) -> int:
        return int(self.meta.get("complexity", 0))


@dataclass(frozen=True)
class Assessment:
    """An Analyzer's scores (1-5 per dimension) of one image against one request, with reasons."""

    scores: dict[str, int]
    reasons: tuple[str, ...]
    passed: bool
    detail: Any = None  # backend-specific (the world keeps its structured errors here)

    def normalised(self, weights: dict[str, float] | None = None) -> float:
        """Weighted mean score mapped from 1..5 to 0..1."""
        w = weights or {d: 1.0 for d in DIMENSIONS}
        total = sum(w.values())
        return sum(w[d] * (self.scores[d] - 1) / 4 for d in w) / total


@runtime_checkable
class Analyzer(Protocol):
    """Scores images and writes the evaluation, reflection, diagnosis and plan texts."""

    def assess(self, x: X2IInput, image: np.ndarray) -> Assessment: ...

    def evaluation_text(self, assessment: Assessment, decision: str) -> str: ...

    def reflect(self, x: X2IInput, image: np.ndarray) -> str: ...

    def diagnose(self, x: X2IInput, image: np.ndarray) -> str:
        """'complex' (worth planning) or 'knowledge' (the model lacks a fact: discard)."""
        ...

    def decompose(self, x: X2IInput) -> list[str]: ...

    def judge_text(self, kind: str, text: str, context: dict[str, Any]) -> float:
        """0..1: is an evaluation (E) true of its image, does a reflection (R) name real errors and
        fix them, is a step (S) a valid, not yet done part of the request."""
        ...


@runtime_checkable
class Generator(Protocol):
    """Draws an image for an instruction, given input images (editing) or none (text-to-image)."""

    def generate(self, instruction: str, images: Sequence[np.ndarray]) -> np.ndarray: ...
