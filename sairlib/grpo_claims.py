"""The paper's GRPO claims, checked on evaluation summaries (notebook 04).

The paper (its "w/o complexity penalty" ablation): after GRPO the score is at least the SFT model's
while the images per request fall by at least 30% (2.45 -> 1.56); without the intra-group
complexity penalty the images stay at least 1.4 times those of the full run (2.73 against 1.56).

    from sairlib.sft_eval import balanced
    claims = paper_claims(summaries["sft"], summaries["grpo"], summaries.get("no_penalty"))
    even = paper_claims(*(balanced(summaries[k]) for k in ("sft", "grpo", "no_penalty")))

Each argument is anything with ``score``, ``pass_rate`` and ``avg_images`` (a
:func:`sairlib.solve.summarise` summary, or its :func:`sairlib.sft_eval.balanced` view).
"""
from __future__ import annotations

from typing import Any, Mapping

IMAGES_DROP = 0.30       # at least this much fewer images per request after GRPO
NO_PENALTY_RATIO = 1.4   # without the penalty, at least this many times the full run's images


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def paper_claims(before: Mapping[str, Any], after: Mapping[str, Any],
                 no_penalty: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The numbers behind the claims and whether each holds: ``score_at_least_as_high``,
    ``images_at_least_30pct_lower`` and, with the no-penalty run, ``no_penalty_at_least_1_4x_images``."""
    b, a = before, after
    claims: dict[str, Any] = {
        "score_before": b["score"], "score_after": a["score"], "pass_before": b["pass_rate"],
        "pass_after": a["pass_rate"], "images_before": b["avg_images"], "images_after": a["avg_images"],
        "images_drop": 1 - _ratio(a["avg_images"], b["avg_images"]),
        "score_at_least_as_high": bool(a["score"] >= b["score"]),
        "images_at_least_30pct_lower": bool(b["avg_images"] and a["avg_images"] <= (1 - IMAGES_DROP) * b["avg_images"])}
    if no_penalty is not None:
        n = no_penalty
        claims.update({"score_no_penalty": n["score"], "pass_no_penalty": n["pass_rate"],
                       "images_no_penalty": n["avg_images"],
                       "no_penalty_images_ratio": _ratio(n["avg_images"], a["avg_images"]),
                       "no_penalty_at_least_1_4x_images": bool(n["avg_images"] >= NO_PENALTY_RATIO * a["avg_images"])})
    return claims


__all__ = ["IMAGES_DROP", "NO_PENALTY_RATIO", "paper_claims"]
