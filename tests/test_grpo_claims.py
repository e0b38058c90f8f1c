"""The paper's GRPO claims on hand-made summaries (sairlib.grpo_claims)."""
import math

import pytest

from sairlib.grpo_claims import paper_claims


def _s(score, images, pass_rate=0.5):
    return {"score": score, "avg_images": images, "pass_rate": pass_rate}


def test_claims_hold_exactly_at_their_thresholds():
    c = paper_claims(_s(0.80, 2.0), _s(0.80, 1.4), _s(0.79, 1.96))  # 30% fewer images, 1.4x without the penalty
    assert c["score_at_least_as_high"] and c["images_at_least_30pct_lower"]
    assert c["images_drop"] == pytest.approx(0.3) and c["no_penalty_images_ratio"] == pytest.approx(1.4)
    assert c["no_penalty_at_least_1_4x_images"]


def test_claims_fail_just_past_their_thresholds():
    c = paper_claims(_s(0.80, 2.0), _s(0.7999, 1.41), _s(0.8, 1.97))
    assert not c["score_at_least_as_high"] and not c["images_at_least_30pct_lower"]
    assert not c["no_penalty_at_least_1_4x_images"]


def test_without_the_twin_only_the_first_two_claims_are_made():
    c = paper_claims(_s(0.5, 1.0), _s(0.6, 0.5))
    assert "no_penalty_images_ratio" not in c and c["images_drop"] == pytest.approx(0.5)
    empty = paper_claims(_s(0.5, 0.0), _s(0.5, 0.0), _s(0.5, 0.0))  # no images at all: ratios undefined
    assert math.isnan(empty["images_drop"]) and math.isnan(empty["no_penalty_images_ratio"])
    assert not empty["images_at_least_30pct_lower"]
