"""The mini benchmarks: world adapters on hand-made cases, held-out sets, and a whole evaluation of a
tiny random policy.

    .venv/bin/pytest -q tests/test_world_bench.py
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sairlib.evaluation import geneval, mini_geneval, mini_kris, mini_omni, world_bench
from sairlib.interfaces import Assessment
from sairlib.world import WorldAnalyzer, WorldConfig, make_task, render
from sairlib.world.scene import Obj, Scene

ANALYZER = WorldAnalyzer()


def t2i(category: str, seed: int = 0, **want):
    """A world text-to-image task of a category whose clauses satisfy ``want`` (drawn by seed)."""
    rng = np.random.default_rng(seed)
    for _ in range(500):
        t = make_task("t2i", category, rng)
        item = mini_geneval.clauses(t)
        if all(want[k](item) for k in want):
            return t
    raise AssertionError(f"no {category} task with {want}")


def judged(task, objects):
    img = render(Scene(tuple(objects), 4))
    return mini_geneval.judge(task, ANALYZER.perceive(img), img.shape[0])


# ---------------------------------------------------------------- mini-GenEval
def test_clauses_follow_geneval_metadata():
    c = mini_geneval.clauses(t2i("counting"))
    (inc,), (exc,) = c["include"], c["exclude"]
    assert exc == {"class": inc["class"], "count": inc["count"] + 1} and "color" not in inc
    c = mini_geneval.clauses(t2i("colors"))
    assert len(c["include"]) == 1 and "color" in c["include"][0] and "exclude" not in c
    c = mini_geneval.clauses(t2i("position"))
    first, second = c["include"]
    assert "position" not in first and second["position"][1] == 0
    assert second["position"][0] in geneval.RELATIONS
    with pytest.raises(ValueError, match="GenEval tag"):
        mini_geneval.clauses(make_task("t2i", "compositional", np.random.default_rng(0)))


def test_position_relation_is_turned_to_point_at_the_earlier_clause():
    t = t2i("position", want=lambda i: True)
    (rel,) = [c for c in t.target.constraints if hasattr(c, "rel")]
    item = mini_geneval.clauses(t)
    # the world says "A <rel> B" with A mentioned first; GenEval gets "B <opposite> A"
    assert item["include"][0]["class"] == rel.a.shape
    opposite = {"left": "right of", "right": "left of", "above": "below", "below": "above"}[rel.rel]
    assert item["include"][1]["position"] == [opposite, 0]


def test_witnesses_pass_and_detections_use_the_drawn_extent():
    tasks, _ = world_bench.held_out_tasks("t2i", geneval.TAGS, 2, 0)
    for t in tasks:
        ok, why = mini_geneval.judge(t, ANALYZER.perceive(render(t.target.target)), 64)
        assert ok, (t.instruction, why)
    det = mini_geneval.detections(ANALYZER.perceive(render(Scene((Obj("square", "red", "small", 1, 2),), 4))), 64)
    (d,) = det["square"]
    x0, y0, x1, y1 = d.box
    assert 32 <= x0 < x1 <= 48 and 16 <= y0 < y1 <= 32 and x1 - x0 == 8 and d.color == "red"
    assert mini_geneval.judge(t, None, 64) == (False, ["no image"])


def test_counting_fails_with_one_object_too_many():
    t = t2i("counting", want=lambda i: i["include"][0]["count"] == 2)
    shape = mini_geneval.clauses(t)["include"][0]["class"]
    two = [Obj(shape, "red", "big", 0, 0), Obj(shape, "blue", "small", 2, 3)]
    assert judged(t, two)[0]
    ok, why = judged(t, two + [Obj(shape, "green", "big", 3, 0)])
    assert not ok and "expected" in why[0]
    assert not judged(t, two[:1])[0]
    # the world analyzer agrees on the extra object
    assert not ANALYZER.assess(t, render(Scene(tuple(two + [Obj(shape, "green", "big", 3, 0)]), 4))).passed


def test_colour_is_judged_on_the_most_confident_detection_only():
    t = t2i("colors", want=lambda i: i["include"][0]["color"] != "blue")
    cl = mini_geneval.clauses(t)["include"][0]
    right, wrong = Obj(cl["class"], cl["color"], "big", 1, 1), Obj(cl["class"], "blue", "big", 0, 0)
    assert judged(t, [right])[0]
    # same confidence: reading order decides, and the blue one comes first
    assert not judged(t, [wrong, right])[0]


def test_position_uses_the_relative_offset_rule_not_the_grid_relation():
    t = t2i("position", want=lambda i: i["include"][1]["position"][0] == "right of")
    a, b = mini_geneval.clauses(t)["include"]
    first = lambda r, c: Obj(a["class"], a["color"], "big", r, c)  # noqa: E731
    second = lambda r, c: Obj(b["class"], b["color"], "big", r, c)  # noqa: E731
    assert judged(t, [first(1, 1), second(1, 2)])[0]      # same row: clearly right
    assert judged(t, [first(1, 1), second(2, 2)])[0]      # diagonal: each component past half
    # one column right, two rows down: the world's grid relation holds, GenEval's does not
    ok, why = judged(t, [first(0, 1), second(2, 2)])
    assert not ok and "right of" in why[0]
    # just inside the margin: centres one cell apart in x, boxes of the drawn size
    assert geneval.relative_position((0, 0, 14, 14), (16, 0, 30, 14)) == {"left of"}
    assert geneval.relative_position((0, 0, 14, 14), (2.7, 0, 16.7, 14)) == set()


# ---------------------------------------------------------------- mini-KRIS and mini-OmniContext
def edit_task(category: str):
    return make_task("edit", category, np.random.default_rng(1))


def assessment(instruction, consistency, quality, knowledge):
    return Assessment({"instruction": instruction, "consistency": consistency, "quality": quality,
                       "knowledge": knowledge}, (), False)


def test_kris_knowledge_rule_and_pooling():
    fact, move = edit_task("fact"), edit_task("move")
    assert mini_kris.needs_knowledge(fact) and not mini_kris.needs_knowledge(move)
    cat, s = mini_kris.sample(fact, assessment(2, 5, 5, 5))
    assert cat == "practical_knowledge" and s["knowledge"] == 1  # forced: instruction <= 2
    assert mini_kris.sample(fact, assessment(3, 5, 5, 5))[1]["knowledge"] == 5
    assert "knowledge" not in mini_kris.sample(move, assessment(5, 5, 5, 5))[1]
    res = mini_kris.score([(fact, assessment(2, 5, 5, 5)), (move, assessment(5, 3, 5, 1))])
    # Conceptual pools (5,5,2,1) -> 100,100,25,0; Factual (3,5,5) -> 50,100,100; overall over all 7 values
    assert res["Conceptual"] == pytest.approx(56.25)
    assert res["Factual"] == pytest.approx(250 / 3)
    assert res["overall"] == pytest.approx(475 / 7)
    assert res["by_category"] == {"move": pytest.approx(250 / 3), "fact": pytest.approx(56.25)}
    assert mini_kris.sample(move, None)[1] == {"consistency": 1, "quality": 1, "instruction": 1}
    with pytest.raises(ValueError, match="edit task"):
        mini_kris.sample(t2i("colors"), None)


def test_omni_mapping_and_geometric_mean():
    t = make_task("compose", "SCENE_object", np.random.default_rng(0))
    assert mini_omni.task_type(t) == "scene_object"
    assert mini_omni.judgements(assessment(5, 3, 5, 5)) == (10.0, 5.0)
    assert mini_omni.judgements(None) == (0.0, 0.0)
    res = mini_omni.score([(t, assessment(5, 3, 5, 5)), (t, assessment(1, 5, 5, 5))])
    assert res["scene_object"] == pytest.approx(math.sqrt(50) / 2) and res["overall"] == res["scene_object"]


# ---------------------------------------------------------------- held-out sets and a whole run
def test_held_out_sets_are_fixed_and_report_what_is_held_out():
    a, held = world_bench.held_out_tasks("t2i", geneval.TAGS, 3, 5)
    b, _ = world_bench.held_out_tasks("t2i", geneval.TAGS, 3, 5)
    assert [t.id for t in a] == [t.id for t in b] and len({t.id for t in a}) == len(a)
    assert held["single_object"] == 0  # all four single-object prompts hash to the training split
    assert held["position"] == 3
    per = {c: sum(t.meta["category"] == c for t in a) for c in geneval.TAGS}
    assert all(1 <= per[c] <= 3 for c in per) and per["position"] == 3
    edits, held_e = world_bench.held_out_tasks("edit", ("fact", "rule"), 2, 0)
    assert held_e == {"fact": 2, "rule": 2} and all(t.meta["split"] == "eval" for t in edits)
    with pytest.raises(ValueError, match="n_per_tag"):
        world_bench.held_out_tasks("t2i", geneval.TAGS, 0, 0)


@pytest.fixture(scope="module")
def tiny_policy():
    from sairlib.policy import Policy
    from sairlib.world_setup import build_tokenizers

    codec, tok, _ = build_tokenizers(WorldConfig(), 16, 64, 20, 10, 0)
    return Policy.create(tok, codec, {"hidden": 32, "layers": 2, "heads": 4}, seed=0)


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models decode faster on one thread than on two busy cores
    yield
    torch.set_num_threads(before)


def test_run_world_benchmarks_on_a_random_policy(tiny_policy, one_thread):
    kw = dict(n_per_tag=1, samples=2, seed=3, max_new_tokens=120)
    res = world_bench.run_world_benchmarks(tiny_policy, ANALYZER, {"grid": 4, "image_size": 64}, **kw)
    again = world_bench.run_world_benchmarks(tiny_policy, ANALYZER, WorldConfig(), **kw)
    assert res["headline"] == again["headline"]
    rows = res["rows"]
    assert len(rows) == 2 * (6 + 10 + 6)
    assert res["avg_images"] == pytest.approx(np.mean([r["n_images"] for r in rows]))
    assert sum(res["mode_mix"].values()) == pytest.approx(1.0)
    for b, lo, hi in (("geneval", 0, 1), ("kris", 0, 100), ("omni", 0, 10)):
        assert lo <= res[b]["overall"] <= hi and res["headline"][b] == res[b]["overall"]
        mine = [r for r in rows if r["benchmark"] == b]
        assert res[b]["avg_images"] == pytest.approx(np.mean([r["n_images"] for r in mine]))
    g = [r for r in rows if r["benchmark"] == "geneval"]
    accs = [np.mean([r["correct"] for r in g if r["category"] == tag]) for tag in geneval.TAGS]
    assert res["geneval"]["overall"] == pytest.approx(np.mean(accs))
    assert set(res["kris"]) >= {"Factual", "Conceptual", "Procedural", "overall", "by_category"}
    assert res["geneval"]["held_out_prompts"]["single_object"] == 0
    with pytest.raises(ValueError, match="benchmarks"):
        world_bench.run_world_benchmarks(tiny_policy, ANALYZER, None, benchmarks=("mmlu",))
    with pytest.raises(ValueError, match="cfg.colour"):
        world_bench.world_config({"colour": 3})
