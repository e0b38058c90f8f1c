"""Selective loss masking: golden label masks per mode, the ablation variants, the SFT set.

    .venv/bin/pytest -q tests/test_masking.py

The golden tests spell out, token by token (by runs), which positions carry loss for
hand-written trajectories of each mode.
"""
from __future__ import annotations

import numpy as np
import pytest

from sairlib.masking import IGNORE, assistant_labels, loss_segments, mask_trajectory
from sairlib.reference_trajectories import reference_trajectory
from sairlib.review import append_review, load_reviews
from sairlib.sequence import Layout
from sairlib.sft_data import build_sft_dataset, check_sft_data, relabel_unmasked, select_for_sft
from sairlib.trajectory import Trajectory, TrajectorySegment, from_dataset, to_dataset
from sairlib.world import WorldAnalyzer, WorldConfig, make_tasks
from sairlib.world_setup import build_tokenizers

CODEC, TOK, _ = build_tokenizers(WorldConfig(), 16, 64, 20, 10, 0)
LAYOUT = Layout.from_tokenizer(TOK, CODEC.tokens_per_image)
IMG = CODEC.tokens_per_image + 2  # <boi> codes <eoi>

E_DONE = "instruction 5 consistency 5 quality 5 knowledge 5 . decision done"  # 11 words
E_BAD = "instruction 3 consistency 5 quality 5 knowledge 5 . error want a red circle found zero . decision reflect"  # 20
E_PLAN = "instruction 2 consistency 5 quality 5 knowledge 5 . error want a red circle found zero . decision plan"  # 20
E_STEP = "step done . decision next"  # 5
R_FIX = "error want a red circle found zero . fix add a red circle at row 1 column 1"  # 17
S_ADD = "add a red circle at row 1 column 1"  # 9
S_ADD2 = "add a blue square at row 2 column 2"  # 9


def image(colour: tuple[int, int, int]) -> np.ndarray:
    im = np.zeros((64, 64, 3), np.uint8)
    im[16:48, 16:48] = colour
    return im


G = lambda c: TrajectorySegment("G", image=image(c))
T = lambda k, s: TrajectorySegment(k, text=s)


def ctx(n: int) -> list[int]:
    return [0] * n


def loss(n: int) -> list[int]:
    return [1] * n


def text(s: str) -> int:  # tokens of a text segment: open tag, one per word, close tag
    return len(s.split()) + 2


def check(t: Trajectory, expected: list[int], masking: str = "selective") -> None:
    ex = mask_trajectory(t, LAYOUT, CODEC, masking)
    got = [int(l != IGNORE) for l in ex.labels]
    assert got == expected
    assert all(l == i for i, l in zip(ex.input_ids, ex.labels) if l != IGNORE)
    assert ex.input_ids[-1] == LAYOUT.eos and ex.labels[-1] == LAYOUT.eos


def test_direct_golden():
    t = Trajectory(id="d1", instruction="draw a red circle .", mode="direct", segments=[G((255, 0, 0)), T("E", E_DONE)])
    prompt = 2 + 5 + 1  # <bos> <user> 5 words <assistant>
    check(t, ctx(prompt) + loss(IMG) + loss(text(E_DONE)) + loss(1))


def test_reflection_golden_two_rounds_with_an_input_image():
    segs = [G((0, 0, 255)), T("E", E_BAD), T("R", R_FIX),
            G((0, 255, 0)), T("E", E_BAD), T("R", R_FIX),
            G((255, 0, 0)), T("E", E_DONE)]
    t = Trajectory(id="r1", instruction="add a red circle .", mode="reflection", segments=segs, rounds=2,
                   input_images=[image((9, 9, 9))])
    prompt = 2 + 5 + IMG + 1
    expected = (ctx(prompt)
                + ctx(IMG) + ctx(text(E_BAD)) + ctx(text(R_FIX))      # G1 E1 R1: context
                + ctx(IMG) + loss(text(E_BAD)) + loss(text(R_FIX))    # G2 context; E2 R2 = E(K-1) R(K-1)
                + loss(IMG) + loss(text(E_DONE)) + loss(1))           # GK EK <eos>
    check(t, expected)
    # without masking every answer token is learned, the prompt still is not
    check(t, ctx(prompt) + loss(len(expected) - prompt), masking="none")


def test_reflection_golden_one_round():
    segs = [G((0, 0, 255)), T("E", E_BAD), T("R", R_FIX), G((255, 0, 0)), T("E", E_DONE)]
    t = Trajectory(id="r0", instruction="draw a red circle .", mode="reflection", segments=segs, rounds=1)
    check(t, ctx(8) + ctx(IMG) + loss(text(E_BAD)) + loss(text(R_FIX)) + loss(IMG) + loss(text(E_DONE)) + loss(1))


def test_multistep_golden():
    segs = [G((0, 0, 255)), T("E", E_PLAN),
            T("S", S_ADD), G((255, 0, 0)), T("E", E_STEP),
            T("S", S_ADD2), G((255, 0, 0)), T("E", E_DONE)]
    t = Trajectory(id="m1", instruction="draw a red circle and a blue square .", mode="multistep", segments=segs)
    prompt = 2 + 9 + 1
    check(t, ctx(prompt) + ctx(IMG) + loss(text(E_PLAN))
          + loss(text(S_ADD)) + loss(IMG) + loss(text(E_STEP))
          + loss(text(S_ADD2)) + loss(IMG) + loss(text(E_DONE)) + loss(1))


def test_segment_rules_and_image_codes():
    assert loss_segments("GE", "direct") == [True, True]
    assert loss_segments("GERGERGERGE", "reflection") == [False] * 7 + [True] * 4
    assert loss_segments("GESGE", "multistep") == [False, True, True, True, True]
    assert loss_segments("GERGE", "reflection", "none") == [True] * 5
    t = Trajectory(id="d2", instruction="draw a red circle .", mode="direct", segments=[G((255, 0, 0)), T("E", E_DONE)])
    ex = mask_trajectory(t, LAYOUT, CODEC)
    g = next(s for s in ex.spans if s.kind == "G")
    codes = CODEC.encode(image((255, 0, 0)))
    assert ex.input_ids[g.start:g.end] == [LAYOUT.boi] + [LAYOUT.code_lo + int(c) for c in codes] + [LAYOUT.eoi]
    assert ex.counts()["G"] == {"loss": IMG, "context": 0}


def test_wrong_mode_names_the_trajectory():
    bad = Trajectory(id="oops-7", instruction="draw a red circle .", mode="direct", status="discarded",
                     segments=[G((1, 1, 1)), T("E", E_BAD), T("R", R_FIX), G((1, 1, 1)), T("E", E_DONE)])
    with pytest.raises(ValueError, match="oops-7.*not a 'direct'.*'reflection'"):
        mask_trajectory(bad, LAYOUT, CODEC)
    with pytest.raises(ValueError, match="masking"):
        mask_trajectory(bad, LAYOUT, CODEC, masking="partial")
    with pytest.raises(ValueError, match="trajectory x"):
        loss_segments("GEGE", "multistep", where="trajectory x")
    with pytest.raises(ValueError, match="sft_data.modes"):
        check_sft_data({"modes": "reflection_only"})
    with pytest.raises(ValueError, match="sft_data.mask"):
        check_sft_data({"mask": "none"})


@pytest.fixture(scope="module")
def world_trajectories() -> list[Trajectory]:
    a, out = WorldAnalyzer(), []
    tasks = [x for fam in ("t2i", "edit", "compose") for x in make_tasks(2, "train", seed=3, family=fam)]
    for i, x in enumerate(tasks):
        for mode in ("direct", "reflection", "multistep"):
            t = reference_trajectory(x, mode, a, np.random.default_rng(i), rounds=1 + i % 3)
            t.id = f"{x.id}-{mode}"
            out.append(t)
    out[0].status = "discarded"
    return out


def test_world_trajectories_round_trip_the_dataset_and_mask_the_same(world_trajectories):
    back = from_dataset(to_dataset(world_trajectories))
    for a, b in zip(world_trajectories, back):
        if a.status == "kept":
            ea, eb = mask_trajectory(a, LAYOUT, CODEC), mask_trajectory(b, LAYOUT, CODEC)
            assert (ea.input_ids, ea.labels) == (eb.input_ids, eb.labels)


def test_sft_set_applies_reviews_filters_and_lengths(world_trajectories, tmp_path):
    path = tmp_path / "reviews.jsonl"
    rejected = world_trajectories[4].id
    append_review(path, rejected, "reject", "E1 misreads the colour")
    append_review(path, world_trajectories[5].id, "reject", "bad step")
    append_review(path, world_trajectories[5].id, "accept")  # the reviewer changed their mind
    reviews = load_reviews(path)
    ds, rep = build_sft_dataset(world_trajectories, LAYOUT, CODEC, "selective", "full", reviews)
    assert rep["kept"] == len(world_trajectories) - 1 and rep["rejected_by_review"] == 1
    assert rejected not in ds["id"] and world_trajectories[5].id in ds["id"]
    assert len(ds) == rep["examples"] == rep["kept"] - 1
    assert rep["by_mode"] == {"direct": 5, "multistep": 6, "reflection": 5}
    assert rep["tokens"]["prompt"]["loss"] == 0 and rep["tokens"]["input"]["loss"] == 0
    assert rep["tokens_by_mode"]["multistep"]["G"]["context"] == 6 * IMG  # only each failed direct image
    assert rep["tokens_by_mode"]["direct"]["G"]["context"] == 0
    assert rep["tokens_by_mode"]["reflection"]["G"]["context"] == IMG * sum(
        t.rounds for t in world_trajectories if t.mode == "reflection" and t.id in ds["id"])
    prompt = sum(sum(rep["tokens"][k].values()) for k in ("prompt", "input", "assistant"))
    assert rep["answer_tokens"] == rep["total_tokens"] - prompt
    assert set(ds.column_names) >= {"input_ids", "labels", "id", "mode", "complexity", "family"}

    for name, modes in (("direct_only", {"direct"}), ("no_reflection", {"direct", "multistep"}),
                        ("no_multistep", {"direct", "reflection"})):
        chosen, counts = select_for_sft(world_trajectories, name, reviews)
        assert {t.mode for t in chosen} == modes and counts["filtered_by_mode"] > 0

    longest = max(ds["n_tokens"])
    short, rep2 = build_sft_dataset(world_trajectories, LAYOUT, CODEC, "selective", "full", reviews,
                                    max_len=longest - 1)
    assert rep2["too_long"] >= 1 and max(short["n_tokens"]) < longest

    none, _ = build_sft_dataset(world_trajectories, LAYOUT, CODEC, "none", "full", reviews)
    twin = relabel_unmasked(ds, LAYOUT)
    assert twin["labels"] == none["labels"] and twin["input_ids"] == ds["input_ids"]
    assert all(m == "none" for m in twin["masking"])
    assert sum(twin["n_loss"]) > sum(ds["n_loss"])
    assert assistant_labels(ds[0]["input_ids"], LAYOUT) == none[0]["labels"]


def test_html_view_escapes_tokens_and_overlays_images():
    from sairlib.masking_viz import example_html, span_counts

    segs = [G((0, 0, 255)), T("E", E_BAD), T("R", R_FIX), G((255, 0, 0)), T("E", E_DONE)]
    t = Trajectory(id="r<9>", instruction="draw a red circle .", mode="reflection", segments=segs, rounds=1)
    ex = mask_trajectory(t, LAYOUT, CODEC)
    page = example_html(ex, LAYOUT, CODEC)
    assert "<eval>" not in page and "&lt;eval&gt;" in page and "r&lt;9&gt;" in page
    assert page.count("<img ") == 2
    assert page.count('class="veil ctx"') == 1 and page.count('class="veil loss"') == 1  # G1 context, G2 loss
    df = span_counts([ex])
    assert df.loc[("reflection", "G"), "loss"] == IMG and df.loc[("reflection", "G"), "context"] == IMG
    assert df.loc[("reflection", "prompt"), "loss"] == 0
