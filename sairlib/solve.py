"""Adaptive inference: the policy answers each request in whatever mode it chooses.

One call samples whole interleaved answers (``G E [R G E | S G E]*``) with the constrained
decoder, reads the segments back from the ids, infers the mode, and scores the final image
against the original request::

    attempts = solve(policy, analyzer, tasks, samples=2, seed=0)
    attempts[0].mode, attempts[0].n_images, attempts[0].assessment.scores

Evaluation (mini benchmarks), the SFT/GRPO notebooks and the analysis all go through here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .generation import Generation, generate
from .interfaces import Assessment, X2IInput
from .modes import infer_mode

DEFAULT_MAX_IMAGES = 6
DEFAULT_TEXT_TOKENS = 64  # budget per text segment


@dataclass
class Attempt:
    """One sampled answer to one request."""

    task: X2IInput
    generation: Generation
    mode: str | None          # None: the segments follow none of the three modes
    n_images: int
    final_image: np.ndarray | None
    assessment: Assessment | None  # of the final image against the original request

    @property
    def passed(self) -> bool:
        return self.assessment is not None and self.assessment.passed

    @property
    def kinds(self) -> str:
        return "".join(s.kind for s in self.generation.parsed.segments)


def default_budget(tokens_per_image: int, max_images: int = DEFAULT_MAX_IMAGES) -> int:
    """Tokens enough for ``max_images`` images, each followed by an evaluation and a reflection or step."""
    return max_images * (tokens_per_image + 2 + 2 * DEFAULT_TEXT_TOKENS)


def solve(policy: Any, analyzer: Any, tasks: Sequence[X2IInput], *, samples: int = 1, seed: int = 0,
          temperature: float = 1.0, top_k: int = 0, max_new_tokens: int | None = None,
          batch_size: int = 256, cache: str = "auto") -> list[Attempt]:
    """``samples`` adaptive answers per task (task-major order), scored by ``analyzer``."""
    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples: must be a positive integer, got {samples!r}")
    reps = [t for t in tasks for _ in range(samples)]
    budget = max_new_tokens or default_budget(policy.layout.tokens_per_image)
    prompts = [policy.prompt(t) for t in reps]
    gens = generate(policy.model, policy.layout, prompts, budget, temperature=temperature, top_k=top_k, seed=seed,
                    batch_size=batch_size, codec=policy.codec, cache=cache)
    finals = [g.images[-1] if g.images else None for g in gens]
    scored = [i for i, im in enumerate(finals) if im is not None]
    assessments: list[Assessment | None] = [None] * len(reps)
    if scored:
        for i, a in zip(scored, analyzer.assess_many([reps[i] for i in scored], [finals[i] for i in scored])):
            assessments[i] = a
    out = []
    for t, g, im, a in zip(reps, gens, finals, assessments):
        kinds = "".join(s.kind for s in g.parsed.segments)
        out.append(Attempt(t, g, infer_mode(kinds) if set(kinds) <= set("GERS") else None,
                           kinds.count("G"), im, a))
    return out


def summarise(attempts: Sequence[Attempt]) -> dict[str, Any]:
    """Pass rate, mean normalised score, average images and mode mix (overall and by complexity)."""
    from collections import Counter, defaultdict

    def block(xs: Sequence[Attempt]) -> dict[str, Any]:
        modes = Counter(a.mode or "invalid" for a in xs)
        n = max(len(xs), 1)
        return {"n": len(xs), "pass_rate": float(np.mean([a.passed for a in xs])) if xs else float("nan"),
                "score": float(np.mean([a.assessment.normalised() if a.assessment else 0.0 for a in xs]))
                if xs else float("nan"),
                "avg_images": float(np.mean([a.n_images for a in xs])) if xs else float("nan"),
                "mode_mix": {m: modes.get(m, 0) / n for m in ("direct", "reflection", "multistep", "invalid")}}

    by_c: dict[int, list[Attempt]] = defaultdict(list)
    by_f: dict[str, list[Attempt]] = defaultdict(list)
    for a in attempts:
        by_c[a.task.complexity].append(a)
        by_f[str(a.task.meta.get("family", ""))].append(a)
    return {**block(attempts), "by_complexity": {str(c): block(v) for c, v in sorted(by_c.items())},
            "by_family": {f: block(v) for f, v in sorted(by_f.items())}}
