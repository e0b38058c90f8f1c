"""The trajectory explorer, reviewer and static view, driven headless (no kernel, no browser).

    .venv/bin/python -m pytest -q tests/test_widgets.py

Widgets are built in plain Python; filters are set through the widgets' values and buttons pressed
with ``button.click()``, exactly the code paths a browser triggers through the kernel.
"""
from __future__ import annotations

import base64
import io
import json
from dataclasses import replace
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from sairlib.review import apply_reviews, load_reviews
from sairlib.trajectory import Trajectory, TrajectorySegment, to_dataset
from sairlib.widgets import (TrajectoryExplorer, TrajectoryReviewer, static_html, trajectory_html,
                             write_static_html)
from sairlib.widgets.explorer import ANY
from sairlib.widgets.samples import sample_trajectories


class _Cards(HTMLParser):
    """Collects, per trajectory card, its id and the labels and images of its segments in order."""

    def __init__(self) -> None:
        super().__init__()
        self.cards: list[dict] = []
        self._label = False
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = a.get("class", "") or ""
        if tag == "script":
            self.scripts += 1
        if "data-trajectory-id" in a:
            self.cards.append({"id": a["data-trajectory-id"], "labels": [], "images": []})
        if "sair-seg-label" in cls.split():
            self._label = True
        if tag == "img" and self.cards and " input " not in a.get("alt", ""):  # answer images, not inputs
            self.cards[-1]["images"].append(a)

    def handle_data(self, data):
        if self._label and self.cards:
            self.cards[-1]["labels"].append(data.split(" ")[0])
            self._label = False


def cards(html_text: str) -> _Cards:
    p = _Cards()
    p.feed(html_text)
    return p


@pytest.fixture(scope="module")
def trajectories() -> list[Trajectory]:
    return sample_trajectories(seed=0, per_mode=2)


def hostile(base: Trajectory) -> Trajectory:
    """A trajectory whose every text field tries to inject markup."""
    g = base.segments[0].image
    return replace(base, id='evil-"><b>1', instruction="draw <script>alert('x')</script> a red circle .",
                   segments=[TrajectorySegment("G", image=g), TrajectorySegment("E", text="<img src=x onerror=alert(1)>")],
                   mode=None, status="discarded", passed=False, discard_reason="<i>lacks</i> knowledge",
                   decisions=[{"stage": "<u>direct</u>", "decision": "fail", "why": "a < b & c"}],
                   meta={**base.meta, "family": "t2i", "category": "<svg/onload=alert(2)>"}, errors=["<hr>"])


# ---------------------------------------------------------------- explorer
def test_explorer_filters_by_mode_status_outcome(trajectories):
    e = TrajectoryExplorer(trajectories, page_size=20)
    assert e.shown_ids() == [t.id for t in trajectories]
    for mode in ("direct", "reflection", "multistep"):
        e.mode.value = mode
        assert e.shown_ids() == [t.id for t in trajectories if t.mode == mode] and len(e.shown_ids()) == 2
    e.mode.value = ANY
    e.status.value = "error"
    assert [t.status for t in e.shown()] == ["error"]
    e.status.value = ANY
    e.outcome.value = "failed"
    assert {t.status for t in e.shown()} == {"discarded", "error"}
    e.outcome.value = "passed"
    assert all(t.passed and t.status == "kept" for t in e.shown()) and len(e.shown()) == 6
    assert "6 of 8 trajectories match" in e.summary.value


def test_explorer_complexity_family_category(trajectories):
    e = TrajectoryExplorer(trajectories, page_size=20)
    cx = sorted({t.complexity for t in trajectories})
    assert e.complexity.value == (cx[0], cx[-1])
    e.complexity.value = (cx[-1], cx[-1])
    assert e.shown_ids() == [t.id for t in trajectories if t.complexity == cx[-1]]
    e.set_filters(complexity=None, family="edit")
    edits = [t for t in trajectories if t.meta["family"] == "edit"]
    assert e.shown_ids() == [t.id for t in edits]
    # the category menu narrows to the family's categories; picking one narrows the view
    assert set(e.category.options) == {ANY} | {t.meta["category"] for t in edits}
    one = edits[0].meta["category"]
    e.category.value = one
    assert e.shown_ids() == [t.id for t in edits if t.meta["category"] == one]
    e.family.value = "compose"  # the edit category no longer applies
    assert e.category.value == ANY and all(t.meta["family"] == "compose" for t in e.shown())
    with pytest.raises(ValueError, match="family"):
        e.set_filters(family="nope")
    with pytest.raises(ValueError, match="unknown 'colour'"):
        e.set_filters(colour="red")


def test_explorer_pages(trajectories):
    e = TrajectoryExplorer(trajectories, page_size=3)
    ids = [t.id for t in trajectories]
    assert e.shown_ids() == ids[:3] and e.prev_button.disabled and not e.next_button.disabled
    e.next_button.click()
    assert e.shown_ids() == ids[3:6] and "page 2 / 3" in e.summary.value
    e.next_button.click()
    assert e.shown_ids() == ids[6:] and e.next_button.disabled
    e.next_button.click()  # past the end: stays
    assert e.shown_ids() == ids[6:]
    e.prev_button.click()
    assert e.shown_ids() == ids[3:6]
    e.mode.value = "multistep"  # a filter change goes back to page 1
    assert e.page == 0 and e.shown_ids() == [t.id for t in trajectories if t.mode == "multistep"]
    e.set_filters(mode="direct", status="error")
    assert e.shown_ids() == [] and "no trajectory matches" in e.view.value


def test_explorer_interleaves_images_and_texts(trajectories):
    e = TrajectoryExplorer(trajectories, page_size=20, image_size=80)
    parsed = cards(e.view.value)
    assert [c["id"] for c in parsed.cards] == [t.id for t in trajectories]
    for t, c in zip(trajectories, parsed.cards):
        # segment labels in answer order: G1 E1 R1 G2 E2 ...
        assert [lab[0] for lab in c["labels"] if lab[0] in "GERS" and lab[1:].isdigit()] == list(t.kinds)
        assert len(c["images"]) == t.n_images
        for im, want in zip(c["images"], t.images):
            assert im["src"].startswith("data:image/png;base64,")
            png = Image.open(io.BytesIO(base64.b64decode(im["src"].split(",", 1)[1])))
            assert png.size == (80, 80)
            small = np.asarray(png.convert("RGB").resize(want.shape[1::-1], Image.NEAREST))
            assert np.array_equal(small, want)
    multistep = next(t for t in trajectories if t.mode == "multistep")
    card = trajectory_html(multistep)
    for s in multistep.segments:
        if s.kind != "G":
            assert s.text.replace("<", "&lt;") in card
    for d in multistep.decisions:
        assert d["stage"] in card


def test_explorer_escapes_every_text(trajectories):
    evil = hostile(trajectories[0])
    e = TrajectoryExplorer([*trajectories, evil], page_size=20)
    e.status.value = "discarded"
    assert evil.id in e.shown_ids()
    html_text = e.view.value
    parsed = cards(html_text)
    assert parsed.scripts == 0
    assert [c["id"] for c in parsed.cards if c["id"].startswith("evil")] == [evil.id]  # the attribute survived whole
    for raw in ("<script>", "<img src=x", "<i>lacks", "<u>direct", "<hr>", "<svg/onload", 'evil-"><b>1'):
        assert raw not in html_text
    for shown in ("&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;", "&lt;img src=x onerror=alert(1)&gt;",
                  "&lt;i&gt;lacks&lt;/i&gt; knowledge", "a &lt; b &amp; c", "&lt;svg/onload=alert(2)&gt;"):
        assert shown in html_text


def test_explorer_takes_a_dataset(trajectories):
    ds = to_dataset(trajectories)
    e = TrajectoryExplorer(ds, page_size=20)
    assert e.shown_ids() == [t.id for t in trajectories]
    e.mode.value = "reflection"
    assert [t.rounds for t in e.shown()] == [1, 1]
    with pytest.raises(ValueError, match=r"trajectories\[0\]"):
        TrajectoryExplorer([{"id": "x"}])


# ---------------------------------------------------------------- reviewer
def test_reviewer_refuses_reject_without_reason(trajectories, tmp_path):
    path = tmp_path / "reviews.jsonl"
    r = TrajectoryReviewer(trajectories, path)
    r.reason.value = "   "
    r.reject_button.click()
    assert not path.exists() and r.index == 0
    assert "needs a reason" in r.message.value
    r.reason.value = "E1 misreads the colour"
    r.reject_button.click()
    assert r.index == 1 and r.reason.value == ""
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(x["id"], x["decision"], x["reason"]) for x in recs] == [(trajectories[0].id, "reject", "E1 misreads the colour")]


def test_reviewer_persists_and_reloads(trajectories, tmp_path):
    path = tmp_path / "reviews.jsonl"
    r = TrajectoryReviewer(trajectories, path)
    r.accept_button.click()                      # 0 accepted
    r.reason.value = "plan step 2 is wrong"
    r.reject_button.click()                      # 1 rejected
    r.next_button.click()                        # 2 skipped
    r.accept_button.click()                      # 3 accepted
    r.prev_button.click()
    r.prev_button.click()
    assert r.index == 2 and r.decision() is None
    assert r.counts() == {"accept": 2, "reject": 1, "unreviewed": len(trajectories) - 3}

    again = TrajectoryReviewer(trajectories, path)   # a restart on the same file
    assert again.index == 2                          # the first one not yet reviewed
    assert again.counts() == r.counts()
    assert again.decision(trajectories[1].id)["reason"] == "plan step 2 is wrong"
    again.go(1)
    assert "review: reject (plan step 2 is wrong)" in again.view.value
    again.accept_button.click()                      # a change of mind: the last line wins
    reviews = load_reviews(path)
    assert reviews[trajectories[1].id]["decision"] == "accept"
    kept = apply_reviews(trajectories, reviews)
    assert [t.id for t in kept] == [t.id for t in trajectories]
    again.go(0)
    again.reason.value = "duplicate"
    again.reject_button.click()
    assert [t.id for t in apply_reviews(trajectories, load_reviews(path))] == [t.id for t in trajectories[1:]]


def test_reviewer_keys(trajectories, tmp_path):
    path = tmp_path / "reviews.jsonl"
    r = TrajectoryReviewer(trajectories, path)
    r.keys.value = "n"
    assert r.index == 1 and r.keys.value == ""
    r.keys.value = "p"
    assert r.index == 0
    r.keys.value = "a"
    assert r.index == 1 and load_reviews(path)[trajectories[0].id]["decision"] == "accept"
    r.keys.value = "r"
    assert r.index == 1 and "needs a reason" in r.message.value
    r.reason.value = "wrong count"
    r.keys.value = "r"
    assert r.index == 2 and load_reviews(path)[trajectories[1].id]["reason"] == "wrong count"
    r.keys.value = "x"
    assert r.index == 2 and "unknown key x" in r.message.value
    for b in (r.accept_button, r.reject_button, r.prev_button, r.next_button):
        assert b.tooltip and b.description


def test_reviewer_bad_input(trajectories, tmp_path):
    with pytest.raises(ValueError, match="nothing to review"):
        TrajectoryReviewer([], tmp_path / "r.jsonl")
    with pytest.raises(ValueError, match="appears more than once"):
        TrajectoryReviewer([trajectories[0], trajectories[0]], tmp_path / "r.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "decision": "maybe"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1: decision"):
        TrajectoryReviewer(trajectories, bad)


# ---------------------------------------------------------------- static view
def test_static_view_is_self_contained_and_escaped(trajectories, tmp_path):
    evil = hostile(trajectories[0])
    frag = static_html([evil, *trajectories], n=4)
    parsed = cards(frag)
    assert [c["id"] for c in parsed.cards] == [evil.id] + [t.id for t in trajectories[:3]]
    assert parsed.scripts == 0 and "<script>" not in frag
    assert "first 4 of 9" in frag
    page = write_static_html(trajectories, tmp_path / "view.html", n=50).read_text()
    assert page.startswith("<!DOCTYPE html>") and len(cards(page).cards) == len(trajectories)
    # nothing is fetched: every image is inline, no external URL anywhere
    assert "http://" not in page and "https://" not in page
    assert page.count('src="data:image/png;base64,') == sum(t.n_images + len(t.input_images) for t in trajectories)
    with pytest.raises(ValueError, match="n: must be"):
        static_html(trajectories, n=-1)
    from_ds = static_html(to_dataset(trajectories), n=2)
    assert [c["id"] for c in cards(from_ds).cards] == [t.id for t in trajectories[:2]] and "first 2 of 8" in from_ds
