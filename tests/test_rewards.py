"""Rewards: hand-computed cases for outcome, format, step, the composite and the complexity penalty."""
from __future__ import annotations

import numpy as np
import pytest

from sairlib.reference_trajectories import reference_trajectory
from sairlib.rewards import (REWARDS, RewardContext, Rollout, check_reward, complexity_penalty, composite,
                             format_reward, outcome_reward, penalty_factors, penalty_reach, read_rollout, reward_funcs, step_judgements,
                             step_reward)
from sairlib.policy import Policy
from sairlib.sequence import Parsed, Segment
from sairlib.world import WorldAnalyzer, WorldConfig, make_tasks
from sairlib.world.render import blank, render
from sairlib.world_setup import build_tokenizers

A = WorldAnalyzer()
TRIANGLE = make_tasks(1, "train", 0, family="t2i", categories=["single_object"])[0]  # "draw a triangle ."
FALSE_DONE = "instruction 5 consistency 5 quality 5 knowledge 5 . decision done"


@pytest.fixture(scope="module")
def policy() -> Policy:
    codec, tok, _ = build_tokenizers(WorldConfig(), 16, 64, 20, 10, 0)
    return Policy.create(tok, codec, {"hidden": 32, "layers": 1, "heads": 2})


def rollout(x, segs, ok=True, ended=True) -> Rollout:
    """A rollout from (kind, text-or-image) pairs (images given directly, not through a codec)."""
    parsed = [Segment("G", codes=()) if k == "G" else Segment(k, text=v) for k, v in segs]
    return Rollout(x, Parsed(parsed, ok=ok, ended=ended), [v for k, v in segs if k == "G"])


def from_trajectory(x, t) -> Rollout:
    return rollout(x, [(s.kind, s.image if s.kind == "G" else s.text) for s in t.segments])


# ---------------------------------------------------------------------------- outcome
def test_outcome_is_the_weighted_normalised_score_of_the_final_image():
    target = render(TRIANGLE.target.target, 64)
    # the blank canvas scores instruction 1, consistency 5, quality 5, knowledge 5 for "draw a triangle ."
    assert A.assess(TRIANGLE, blank(64)).scores == {"instruction": 1, "consistency": 5, "quality": 5, "knowledge": 5}
    r = rollout(TRIANGLE, [("G", target), ("E", "x"), ("R", "y"), ("G", blank(64)), ("E", "z")])
    assert outcome_reward(r, A) == pytest.approx((0 + 1 + 1 + 1) / 4)       # the FINAL image counts
    assert outcome_reward(r, A, {"instruction": 3.0, "quality": 1.0}) == pytest.approx((3 * 0 + 1 * 1) / 4)
    good = rollout(TRIANGLE, [("G", blank(64)), ("E", "x"), ("R", "y"), ("G", target), ("E", "z")])
    assert outcome_reward(good, A) == 1.0
    assert outcome_reward(rollout(TRIANGLE, [("E", "x")]), A) == 0.0            # no image at all


# ---------------------------------------------------------------------------- format
@pytest.mark.parametrize("kinds, want", [
    ("GE", 1.0), ("GERGE", 1.0), ("GERGERGERGE", 1.0), ("GESGE", 1.0), ("GESGESGESGE", 1.0),
    ("GERGERGERGERGE", 0.0),   # four reflection rounds: more than the grammar allows
    ("GEGE", 0.0), ("G", 0.0), ("EG", 0.0), ("GER", 0.0), ("GESGERGE", 0.0), ("GERGESGE", 0.0), ("", 0.0),
    ("GDE", 0.0),
])
def test_format_is_strict_mode_grammar(kinds, want):
    segs = [("G", blank(64)) if k == "G" else (k, "decision done") for k in kinds]
    assert format_reward(rollout(TRIANGLE, segs)) == want


def test_format_needs_a_clean_parse_and_an_end():
    segs = [("G", blank(64)), ("E", "decision done")]
    assert format_reward(rollout(TRIANGLE, segs)) == 1.0
    assert format_reward(rollout(TRIANGLE, segs, ok=False)) == 0.0
    assert format_reward(rollout(TRIANGLE, segs, ended=False)) == 0.0


def test_format_strict_grammar_also_parses_each_text():
    good = rollout(TRIANGLE, [("G", blank(64)), ("E", A.evaluation_text(A.assess(TRIANGLE, blank(64)), "done"))])
    words = rollout(TRIANGLE, [("G", blank(64)), ("E", "red red circle")])
    assert format_reward(words) == 1.0 and format_reward(words, strict_grammar=True) == 0.0
    assert format_reward(good, strict_grammar=True) == 1.0


def test_format_reads_ids_through_the_layout(policy):
    lay, codec = policy.layout, policy.codec
    ids = lay.segments([Segment("G", codes=list(range(16))), Segment("E", text="decision done")])
    r = read_rollout(TRIANGLE, ids, lay, codec)
    assert r.kinds == "GE" and r.mode == "direct" and format_reward(r) == 1.0
    assert np.array_equal(r.images[0], codec.decode(np.arange(16)))     # image codes read from the ids
    assert format_reward(read_rollout(TRIANGLE, ids[:-1], lay, codec)) == 0.0   # no <eos>
    assert format_reward(read_rollout(TRIANGLE, ids[:5] + ids[-1:], lay, codec)) == 0.0  # a cut image


# ---------------------------------------------------------------------------- step
def test_step_reward_hand_computed():
    b, target = blank(64), render(TRIANGLE.target.target, 64)
    true_eval = A.evaluation_text(A.assess(TRIANGLE, b), "reflect")
    # the false evaluation gets 3 of 4 scores right, no error right (Jaccard 0), the wrong decision: 3/6
    assert step_reward(rollout(TRIANGLE, [("G", b), ("E", FALSE_DONE)]), A) == pytest.approx(0.5)
    assert step_reward(rollout(TRIANGLE, [("G", b), ("E", true_eval)]), A) == 1.0
    r = rollout(TRIANGLE, [("G", b), ("E", FALSE_DONE), ("R", A.reflect(TRIANGLE, b)), ("G", target),
                           ("E", A.evaluation_text(A.assess(TRIANGLE, target), "done"))])
    assert [j.score for j in step_judgements(r, A)] == pytest.approx([0.5, 1.0, 1.0])
    assert step_reward(r, A) == pytest.approx(2.5 / 3)
    assert step_reward(rollout(TRIANGLE, [("G", b)]), A) == 0.0          # no text segment
    assert step_reward(rollout(TRIANGLE, [("E", true_eval), ("G", b)]), A) == 0.0  # an E before any image


def test_step_reward_judges_the_analyzers_own_trajectories_fully_true():
    """Every text the Analyzer wrote is true in the context it was written in: E after its image,
    R of its image, S on the canvas the plan has reached, step checks against the step's before."""
    rng = np.random.default_rng(0)
    seen = set()
    for fam in ("t2i", "edit", "compose"):
        for x in make_tasks(4, "train", 1, family=fam):
            for mode in ("direct", "reflection", "multistep"):
                try:
                    t = reference_trajectory(x, mode, A, rng, rounds=2)
                except ValueError:  # e.g. an empty plan
                    continue
                r = from_trajectory(x, t)
                assert [j.score for j in step_judgements(r, A)] == [1.0] * sum(k != "G" for k in t.kinds), (x.id, mode)
                seen.add((fam, mode))
    assert {m for _, m in seen} == {"direct", "reflection", "multistep"}


def test_step_reward_sees_a_wrong_plan_step():
    x = TRIANGLE
    t = reference_trajectory(x, "multistep", A, np.random.default_rng(0))
    segs = [(s.kind, s.image if s.kind == "G" else s.text) for s in t.segments]
    i = next(k for k, (kind, _) in enumerate(segs) if kind == "S")
    segs[i] = ("S", "remove the big red square")  # nothing to remove on an empty canvas
    js = step_judgements(rollout(x, segs), A)
    assert [j.kind for j in js] == [k for k, _ in segs if k != "G"]
    assert js[1].score == 0.0 and min(j.score for j in js if j.index != i) == 1.0


# ---------------------------------------------------------------------------- composite and penalty
def test_composite():
    assert composite({"outcome": 0.75, "format": 1.0, "step": 0.5}, {"outcome": 1.0, "format": 0.2, "step": 0.5}) \
        == pytest.approx(0.75 + 0.2 + 0.25)
    assert composite({"outcome": 0.75, "format": 1.0}, {"outcome": 1.0, "format": 0.2, "step": 0.0}) \
        == pytest.approx(0.95)


def test_penalty_hand_computed():
    # group 1: best 0.9; 0.88 is within 0.05 (1 image), 0.5 is not -> 0.9 * 1/3, 0.88 * 1/1, 0.5 unchanged
    # group 2: best 1.0; 0.96 and 0.95 (exactly eps) are near; fewest images among them 2 -> 1.0*2/4, .96*2/2, .95*2/3
    r = [0.9, 0.88, 0.5, 1.0, 0.96, 0.95]
    n = [3, 1, 1, 4, 2, 3]
    want = [0.3, 0.88, 0.5, 0.5, 0.96, 0.95 * 2 / 3]
    assert complexity_penalty(r, n, 3, 0.05) == pytest.approx(want)
    assert penalty_factors(r, n, 3, 0.05) == pytest.approx([1 / 3, 1, 1, 0.5, 1, 2 / 3])
    assert complexity_penalty(r, n, 3, 0.0) == pytest.approx([0.9, 0.88, 0.5, 1.0, 0.96, 0.95])  # best alone: N*=N_i
    # no image counts as one; a group of ties keeps the cheapest intact
    assert complexity_penalty([0.2, 0.2, 0.2], [0, 1, 2], 3, 0.0) == pytest.approx([0.2, 0.2, 0.1])


def test_penalty_reach_counts_near_best_answers_and_mixed_groups():
    # the groups of test_penalty_hand_computed: group 1 near {0.9 (3 images), 0.88 (1)} -> mixed;
    # group 2 near {1.0 (4), 0.96 (2), 0.95 (3)} -> mixed
    r, n = [0.9, 0.88, 0.5, 1.0, 0.96, 0.95], [3, 1, 1, 4, 2, 3]
    assert penalty_reach(r, n, 3, 0.05) == {"near_best": pytest.approx(5 / 6), "mixed_groups": 1.0}
    # epsilon 0: each best stands alone, nothing to penalise
    assert penalty_reach(r, n, 3, 0.0) == {"near_best": pytest.approx(2 / 6), "mixed_groups": 0.0}
    # ties with equal image counts are near but not mixed; no image counts as one
    assert penalty_reach([0.5, 0.5, 0.1, 0.7, 0.7, 0.7], [1, 1, 2, 0, 1, 1], 3, 0.0) \
        == {"near_best": pytest.approx(5 / 6), "mixed_groups": 0.0}
    with pytest.raises(ValueError, match="group_size"):
        penalty_reach([1, 1, 1], [1, 1, 1], 2, 0.1)


def test_penalty_rejects_bad_input():
    with pytest.raises(ValueError, match="group_size"):
        complexity_penalty([1, 1, 1], [1, 1, 1], 2, 0.1)
    with pytest.raises(ValueError, match="n_images"):
        complexity_penalty([1, 1], [1], 2, 0.1)
    with pytest.raises(ValueError, match="non-negative"):
        complexity_penalty([-1, 1], [1, 1], 2, 0.1)


# ---------------------------------------------------------------------------- parameters and registry
def test_check_reward_names_the_bad_key():
    assert check_reward({})["alpha"] == [1.0, 0.2, 0.5]
    for bad, field in [({"alpah": [1, 1, 1]}, "alpah"), ({"alpha": [1, 1]}, "alpha"), ({"alpha": [1, -1, 1]}, "alpha"),
                       ({"weights": {"beauty": 1.0}}, "weights"), ({"epsilon": -0.1}, "epsilon"),
                       ({"penalty": 1}, "penalty")]:
        with pytest.raises(ValueError, match=f"reward.{field}"):
            check_reward(bad)


def test_registry_wraps_rewards_for_trl(policy):
    lay, codec = policy.layout, policy.codec
    assert np.array_equal(codec.decode(codec.encode(blank(64))), blank(64))
    ctx = RewardContext({TRIANGLE.id: TRIANGLE}, A, lay, codec, {"alpha": [1.0, 1.0, 1.0]})
    ids = lay.segments([Segment("G", codes=codec.encode(blank(64))), Segment("E", text=FALSE_DONE)])
    funcs = reward_funcs(["outcome", "format", "step"], ctx)
    assert [f.__name__ for f in funcs] == ["outcome", "format", "step"] == list(REWARDS)
    got = [f(prompts=[TRIANGLE.id], completions=["?"], completion_ids=[ids], task_id=[TRIANGLE.id])[0] for f in funcs]
    assert got == pytest.approx([0.75, 1.0, 0.5])   # blank decoded image: the cases above
    with pytest.raises(ValueError, match="unknown reward"):
        reward_funcs(["beauty"], ctx)
    with pytest.raises(KeyError, match="task_id"):
        funcs[0](prompts=["nope"], completions=["?"], completion_ids=[ids], task_id=["nope"])
