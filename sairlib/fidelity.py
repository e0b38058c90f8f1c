"""Tokenizer fidelity: does the Analyzer judge decode(encode(image)) as it judges the image?

    from sairlib.fidelity import tokenizer_fidelity
    report = tokenizer_fidelity(codec, WorldAnalyzer(), make_tasks(500, "eval", seed=1))
    report["verdict_agreement"]   # fraction of images with the same pass/fail verdict

Each task contributes its target image and perturbed versions (wrong colour, missing object,
moved object, noise patch), so both verdicts are exercised. ``rendered_*`` counts only images
the world's renderer can produce (everything but the noise patch).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

import numpy as np

from .interfaces import X2IInput
from .world.analyzer import WorldAnalyzer
from .world.corpus import perturbations


def tokenizer_fidelity(codec: Any, analyzer: WorldAnalyzer, tasks: Sequence[X2IInput], seed: int = 0,
                       image_size: int = 64) -> dict[str, Any]:
    """Agreement of the Analyzer's verdicts (and exact scores) on images and their reconstructions."""
    rng = np.random.default_rng(seed)
    kinds, xs, images = [], [], []
    for t in tasks:
        for kind, img in perturbations(t, rng, image_size):
            kinds.append(kind)
            xs.append(t)
            images.append(img)
    if not images:
        raise ValueError("tasks: need at least one task")
    originals = np.stack(images)
    recon = codec.decode(codec.encode(originals))
    a = analyzer.assess_many(xs, list(originals))
    b = analyzer.assess_many(xs, list(recon))
    same_verdict = np.array([p.passed == q.passed for p, q in zip(a, b)])
    same_scores = np.array([p.scores == q.scores for p, q in zip(a, b)])
    pixel_exact = (recon == originals).reshape(len(originals), -1).all(1)
    rendered = np.array([k != "noise" for k in kinds])
    by_kind: dict[str, list[bool]] = defaultdict(list)
    for k, v in zip(kinds, same_verdict):
        by_kind[k].append(bool(v))
    return {
        "n_images": int(len(originals)),
        "n_tasks": int(len(tasks)),
        "verdict_agreement": float(same_verdict.mean()),
        "rendered_images": int(rendered.sum()),
        "rendered_verdict_agreement": float(same_verdict[rendered].mean()) if rendered.any() else float("nan"),
        "score_agreement": float(same_scores.mean()),
        "pixel_exact": float(pixel_exact.mean()),
        "passed_fraction": float(np.mean([p.passed for p in a])),
        "by_kind": {k: float(np.mean(v)) for k, v in sorted(by_kind.items())},
    }
