"""The authors' output folders as trajectories (mode inferred, clear errors), and SFT exports."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sairlib.interop import (AuthorsFormatError, export_openai_messages, export_sharegpt, load_authors_result,
                             load_authors_results)
from sairlib.trajectory import load_jsonl, save_jsonl

DIMS = ("consistency", "instruction", "quality", "knowledge")


def ev(low: str | None = None, score: int = 2) -> dict:
    e = {}
    for d in DIMS:
        e[f"{d}_score"] = score if d == low else 5
        e[f"{d}_reasoning"] = f"{d} is off" if d == low else f"{d} fine"
    return e


def png(path: Path, v: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), v, np.uint8)).save(path)
    return path.name


def sample(root: Path, name: str, **fields) -> Path:
    d = root / name
    rec = {"task_id": name, "edit_prompt": f"request {name}", "original_image_path": None,
           "direct_edit_image_path": png(d / "direct.png", 10), "evaluation": ev(),
           "reflect": [], "multi_step": [], "final_edited_image_path": "direct.png", "failure_reason": None}
    rec.update({k: v(d) if callable(v) else v for k, v in fields.items()})
    (d / "result.json").write_text(json.dumps(rec))
    return d / "result.json"


@pytest.fixture()
def folder(tmp_path):
    root = tmp_path / "authors"
    sample(root, "a_direct", original_image_path=lambda d: png(d / "in.png", 3))
    sample(root, "b_reflect", evaluation=ev("instruction"),
           original_image_path=lambda d: [png(d / "in1.png", 1), str(d / png(d / "in2.png", 2))],
           reflect=lambda d: [{"reflect_thinking": {"failure_analysis": "the square is red",
                                                    "improvement_plan": "make the square blue"},
                               "reflect_image_path": png(d / "r1.png", 20), "evaluation": ev("quality", 3)},
                              {"reflect_thinking": {"failure_analysis": "smudges", "improvement_plan": "clean it"},
                               "reflect_image_path": png(d / "r2.png", 30), "evaluation": ev()}],
           final_edited_image_path="r2.png")
    sample(root, "c_steps", evaluation=ev("instruction", 1),
           multi_step=lambda d: [{"step_instruction": "draw a circle", "step_image_path": png(d / "s1.png", 40),
                                  "evaluation": ev()},
                                 {"step_instruction": "add a square", "step_image_path": png(d / "s2.png", 50),
                                  "evaluation": ev()}],
           final_edited_image_path="s2.png")
    sample(root, "d_fail", evaluation=ev("knowledge"), final_edited_image_path=None,
           failure_reason="lacks knowledge")
    return root


def test_import_infers_modes_and_texts(folder):
    ts = {t.id: t for t in load_authors_results(folder)}
    assert {i: (t.mode, t.status, t.kinds) for i, t in ts.items()} == {
        "a_direct": ("direct", "kept", "GE"), "b_reflect": ("reflection", "kept", "GERGERGE"),
        "c_steps": ("multistep", "kept", "GESGESGE"), "d_fail": (None, "discarded", "GE")}
    b = ts["b_reflect"]
    assert [im[0, 0, 0] for im in b.input_images] == [1, 2] and b.rounds == 2
    assert [im[0, 0, 0] for im in b.images] == [10, 20, 30]
    e1, r1 = b.segments[1].text, b.segments[2].text
    assert e1.startswith("instruction 2 consistency 5 quality 5 knowledge 5 .") and "instruction is off" in e1
    assert e1.endswith("decision reflect") and b.segments[-1].text.endswith("decision done")
    assert r1 == "the square is red\nfix: make the square blue"
    c = ts["c_steps"]
    assert [s.text for s in c.segments if s.kind == "S"] == ["draw a circle", "add a square"]
    assert c.segments[1].text.endswith("decision plan") and c.scores["instruction"] == 5
    assert ts["d_fail"].discard_reason == "lacks knowledge" and ts["a_direct"].meta["family"] == "edit"


def test_import_round_trips_through_our_storage(folder, tmp_path):
    ts = load_authors_results(folder)
    save_jsonl(ts, tmp_path / "ours")
    back = load_jsonl(tmp_path / "ours")
    assert [(t.id, t.mode, t.kinds, t.scores) for t in back] == [(t.id, t.mode, t.kinds, t.scores) for t in ts]


@pytest.mark.parametrize("field,value,match", [
    ("evaluation", ev("quality", 6), r"evaluation\.quality_score: must be an integer 1-5, got 6"),
    ("direct_edit_image_path", "missing.png", r"direct_edit_image_path: image 'missing.png' not found"),
    ("reflect", [{"reflect_thinking": {"failure_analysis": "x"}, "reflect_image_path": "direct.png",
                  "evaluation": ev()}], r"reflect\[0\]\.reflect_thinking\.improvement_plan: must be a non-empty"),
    ("multi_step", [{"step_instruction": "", "step_image_path": "direct.png", "evaluation": ev()}],
     r"multi_step\[0\]\.step_instruction"),
    ("original_image_path", 7, r"original_image_path: must be a path, a list of paths or null"),
    ("final_edited_image_path", "other.png", r"final_edited_image_path: image 'other.png' not found"),
])
def test_import_errors_name_file_and_field(tmp_path, field, value, match):
    p = sample(tmp_path, "bad", **{field: value})
    with pytest.raises(AuthorsFormatError, match=match) as e:
        load_authors_result(p)
    assert str(p) in str(e.value)


def test_final_image_must_be_the_last_image(tmp_path):
    p = sample(tmp_path, "x", final_edited_image_path=lambda d: png(d / "other.png", 99))
    with pytest.raises(AuthorsFormatError, match="differs from the last direct image"):
        load_authors_result(p)


def test_exports(folder, tmp_path):
    ts = load_authors_results(folder)
    p = export_sharegpt(ts, tmp_path / "sg")
    rows = [json.loads(line) for line in p.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a_direct", "b_reflect", "c_steps"]  # kept only
    for r in rows:
        n_tokens = sum(c["value"].count("<image>") for c in r["conversations"])
        assert n_tokens == len(r["images"]) and all((tmp_path / "sg" / i).is_file() for i in r["images"])
    b = rows[1]
    assert b["conversations"][0]["value"] == "<image><image>request b_reflect"
    assert b["conversations"][1]["value"].startswith("<image><eval>instruction 2")
    assert "<reflect>the square is red\nfix: make the square blue</reflect><image>" in b["conversations"][1]["value"]
    img = np.asarray(Image.open(tmp_path / "sg" / b["images"][3]))
    assert img[0, 0, 0] == 20  # inputs (2), then G1, then the first redraw

    p = export_openai_messages(ts, tmp_path / "oa", status=None)
    rows = [json.loads(line) for line in p.read_text().splitlines()]
    assert len(rows) == 4
    c = rows[2]["messages"]
    assert c[0]["content"] == [{"type": "text", "text": "request c_steps"}]
    kinds = ["G" if part["type"] == "image_url" else part["text"][:6] for part in c[1]["content"]]
    assert kinds == ["G", "<eval>", "<step>", "G", "<eval>", "<step>", "G", "<eval>"]
    assert all((tmp_path / "oa" / part["image_url"]["url"]).is_file()
               for m in c for part in m["content"] if part["type"] == "image_url")
