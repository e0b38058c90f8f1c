"""Scoring rules of GenEval, KRIS-Bench and OmniContext on hand-made cases, and the loaders on the
real annotation files (in ../shared/benchmarks beside the checkout)."""
import json
import math
from pathlib import Path

import pytest

from sairlib.evaluation import geneval, kris, omnicontext
from sairlib.evaluation.geneval import Detection

SHARED = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/benchmarks is not beside this checkout")


def box(cx, cy, w=10, h=10):
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


# ---------------------------------------------------------------- GenEval
def test_position_rule_uses_the_size_margin():
    # centres 20 apart, sizes 10+10: the margin removes 0.1*20 = 2 -> still clearly left
    assert geneval.relative_position(box(40, 50), box(60, 50)) == {"left of"}
    assert geneval.relative_position(box(60, 50), box(40, 50)) == {"right of"}
    assert geneval.relative_position(box(50, 20), box(50, 60)) == {"above"}
    # offset 1.5 < margin 0.1*(10+10)=2: no relation at all
    assert geneval.relative_position(box(50, 50), box(51.5, 50)) == set()
    # big boxes: offset 12 < margin 0.1*(100+100)=20 on x, so a pure horizontal offset gives nothing
    assert geneval.relative_position(box(50, 50, 100, 100), box(62, 50, 100, 100)) == set()
    # diagonal: both components past half of the direction
    assert geneval.relative_position(box(0, 0), box(40, 40)) == {"left of", "above"}


def test_counting_fails_with_one_too_many():
    item = {"tag": "counting", "prompt": "two clocks", "include": [{"class": "clock", "count": 2}],
            "exclude": [{"class": "clock", "count": 3}]}
    two = [Detection("clock", box(10, 10)), Detection("clock", box(40, 10))]
    assert geneval.judge(item, {"clock": two})[0]
    assert not geneval.judge(item, {"clock": two[:1]})[0]
    ok, why = geneval.judge(item, {"clock": two + [Detection("clock", box(70, 10))]})
    assert not ok and "clock<3" in why[0]


def test_colour_is_judged_on_the_required_number_of_most_confident_instances():
    item = {"tag": "color_attr", "prompt": "a red apple", "include": [{"class": "apple", "count": 1, "color": "red"}]}
    assert geneval.judge(item, {"apple": [Detection("apple", box(5, 5), "red"), Detection("apple", box(30, 5), "green")]})[0]
    # the most confident apple is green: a red one further down the list does not count
    assert not geneval.judge(item, {"apple": [Detection("apple", box(5, 5), "green"), Detection("apple", box(30, 5), "red")]})[0]


def test_position_needs_a_matched_target():
    item = {"tag": "position", "prompt": "a dog right of a cat",
            "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1, "position": ["right of", 0]}]}
    cat, dog = Detection("cat", box(20, 50)), Detection("dog", box(80, 50))
    assert geneval.judge(item, {"cat": [cat], "dog": [dog]})[0]
    swapped = {"cat": [Detection("cat", box(80, 50))], "dog": [Detection("dog", box(20, 50))]}
    assert not geneval.judge(item, swapped)[0]
    ok, why = geneval.judge(item, {"dog": [dog]})
    assert not ok and any("no target" in w for w in why)


def test_overall_is_the_unweighted_mean_of_tags():
    res = [("counting", True), ("counting", False), ("counting", False), ("counting", False), ("colors", True)]
    out = geneval.overall(res)
    assert out["counting"] == 0.25 and out["colors"] == 1.0 and out["overall"] == 0.625


@needs_shared
def test_geneval_loader_on_the_real_file():
    items = geneval.load(SHARED / "geneval" / "evaluation_metadata.jsonl")
    assert len(items) == 553
    counts = {t: sum(i["tag"] == t for i in items) for t in geneval.TAGS}
    assert counts == {"single_object": 80, "two_object": 99, "counting": 80, "colors": 94, "position": 100,
                      "color_attr": 100}
    assert all("exclude" in i for i in items if i["tag"] == "counting")


def test_geneval_loader_errors_name_the_line_and_field(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text(json.dumps({"tag": "single_object", "prompt": "x", "include": [{"class": "cat", "count": 1}]}) + "\n"
                 + json.dumps({"tag": "single_object", "prompt": "x", "include": [{"class": "cat", "count": 0}]}) + "\n")
    with pytest.raises(ValueError, match=r"m.jsonl:2.include\[0\].count"):
        geneval.load(p)
    p.write_text("{not json\n")
    with pytest.raises(ValueError, match="m.jsonl:1: not JSON"):
        geneval.load(p)


# ---------------------------------------------------------------- KRIS-Bench
def test_knowledge_is_forced_to_one_when_instruction_fails():
    assert kris.sample_scores(5, 5, 2, 5)["knowledge"] == 1
    assert kris.sample_scores(5, 5, 3, 5)["knowledge"] == 5
    assert "knowledge" not in kris.sample_scores(5, 5, 2)
    with pytest.raises(ValueError, match="quality"):
        kris.sample_scores(5, 6, 3)


def test_pooling_over_sample_metric_values():
    samples = [("color_change", kris.sample_scores(5, 5, 5)),            # 100, 100, 100
               ("chemistry", kris.sample_scores(3, 5, 1, 5)),            # 50, 100, 0, knowledge forced -> 0
               ("abstract_reasoning", kris.sample_scores(1, 1, 1, 1))]   # 0, 0, 0, 0
    out = kris.aggregate(samples)
    assert out["Factual"] == 100.0
    assert out["Conceptual"] == pytest.approx(150 / 4)
    assert out["Procedural"] == 0.0
    assert out["overall"] == pytest.approx((300 + 150) / 11)  # pooled, not a mean of group means


@needs_shared
def test_kris_loader_on_the_real_file():
    records = kris.load(SHARED / "kris_bench" / "final_data.json")
    assert len(records) == 1267
    groups = {g: sum(kris.TAXONOMY[r["type"]][0] == g for r in records) for g in kris.GROUPS}
    assert sum(groups.values()) == 1267 and all(groups.values())


def test_kris_loader_errors(tmp_path):
    p = tmp_path / "k.json"
    p.write_text(json.dumps([{"id": "1", "type": "juggling", "ori_img": "1.jpg", "ins_en": "x"}]))
    with pytest.raises(ValueError, match=r"k.json\[0\].type"):
        kris.load(p)
    p.write_text(json.dumps([{"id": "1", "type": "biology", "ori_img": 3, "ins_en": "x"}]))
    with pytest.raises(ValueError, match="ori_img"):
        kris.load(p)


# ---------------------------------------------------------------- OmniContext
def test_geometric_mean_and_unweighted_task_types():
    out = omnicontext.aggregate([("single_character", 9, 4), ("single_character", 10, 10), ("scene_object", 0, 10)])
    assert out["single_character"] == pytest.approx((6 + 10) / 2)
    assert out["scene_object"] == 0.0
    assert out["overall"] == pytest.approx(4.0)
    assert omnicontext.sample_score(4, 9) == 6.0
    with pytest.raises(ValueError, match="subject_consistency"):
        omnicontext.sample_score(5, 11)
    with pytest.raises(ValueError, match="task_type"):
        omnicontext.aggregate([("dance", 1, 1)])


def test_omnicontext_record_checks():
    rec = {"key": "a1", "task_type": "multi_object", "instruction": "put them together", "input_images": ["img"]}
    assert omnicontext.check(rec) is rec
    with pytest.raises(ValueError, match="input_images"):
        omnicontext.check({**rec, "input_images": []})
    with pytest.raises(ValueError, match="task_type"):
        omnicontext.check({**rec, "task_type": "multi"})
    assert omnicontext.english([rec, {**rec, "instruction_language": "zh"}]) == [rec]
    assert math.isclose(omnicontext.sample_score(10, 10), 10.0)
