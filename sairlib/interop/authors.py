"""Import the authors' pipeline output: one ``result.json`` per sample, as our trajectories.

A ``result.json`` holds ``task_id``, ``edit_prompt``, ``original_image_path`` (a path, a list of
paths, or null for text-to-image), ``direct_edit_image_path``, ``evaluation`` (the direct try's
``{consistency,instruction,quality,knowledge}_score`` 1-5 and ``*_reasoning``), ``reflect``
(rounds: ``reflect_thinking {failure_analysis, improvement_plan}``, ``reflect_image_path``,
``evaluation``), ``multi_step`` (``step_instruction``, ``step_image_path``, ``evaluation``),
``final_edited_image_path`` and ``failure_reason``.

The mode follows from what is filled in: a failure reason or no final image -> discarded; steps ->
``multistep`` (G1 E1, then S G E per step); reflection rounds -> ``reflection`` (G1 E1, then R G E
per round); otherwise ``direct`` (G1 E1). E texts are written from the evaluations (scores, the
reasoning of every dimension below 5, the decision), R texts from ``reflect_thinking`` in the form
our judges write (``analysis`` + ``"\\nfix: "`` + plan). Image paths are tried as given, then
relative to the sample's folder, then relative to the root, then by file name in the sample's
folder (released folders are often moved). Any problem raises :class:`AuthorsFormatError` naming
the file and the field.

    trajs = load_authors_results("authors_output/")      # every */result.json under it, sorted
    t = load_authors_result("authors_output/0001/result.json")
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..interfaces import DIMENSIONS
from ..trajectory import Trajectory, TrajectorySegment

FIX_MARK = "\nfix: "  # the same form as sairlib.services.judge writes reflections


class AuthorsFormatError(ValueError):
    """A ``result.json`` that does not fit the authors' format; the message names file and field."""


class _Reader:
    def __init__(self, path: Path, root: Path) -> None:
        self.path, self.root = path, root

    def fail(self, field: str, problem: str) -> AuthorsFormatError:
        return AuthorsFormatError(f"{self.path}: {field}: {problem}")

    def text(self, d: dict[str, Any], key: str, where: str) -> str:
        v = d.get(key)
        if not isinstance(v, str) or not v.strip():
            raise self.fail(f"{where}{key}", f"must be a non-empty string, got {json.dumps(v)[:60]}")
        return v.strip()

    def image(self, p: Any, field: str) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        if not isinstance(p, str) or not p:
            raise self.fail(field, f"must be an image path, got {json.dumps(p)[:60]}")
        cands = [Path(p), self.path.parent / p, self.root / p, self.path.parent / Path(p).name]
        for c in cands:
            if c.is_file():
                try:
                    return np.asarray(Image.open(c).convert("RGB"), dtype=np.uint8)
                except (UnidentifiedImageError, OSError) as e:
                    raise self.fail(field, f"{c} is not a readable image ({e})") from None
        raise self.fail(field, f"image {p!r} not found (tried as given, in {self.path.parent} and {self.root})")

    def scores(self, ev: Any, field: str) -> tuple[dict[str, int], dict[str, str]]:
        if not isinstance(ev, dict):
            raise self.fail(field, f"must be an object with *_score and *_reasoning, got {json.dumps(ev)[:60]}")
        scores, reasons = {}, {}
        for d in DIMENSIONS:
            v = ev.get(f"{d}_score")
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 5:
                raise self.fail(f"{field}.{d}_score", f"must be an integer 1-5, got {json.dumps(v)}")
            scores[d] = v
            r = ev.get(f"{d}_reasoning", "")
            if not isinstance(r, str):
                raise self.fail(f"{field}.{d}_reasoning", f"must be a string, got {json.dumps(r)[:60]}")
            reasons[d] = " ".join(r.split())
        return scores, reasons

    def evaluation(self, ev: Any, field: str, decision: str) -> tuple[str, dict[str, int]]:
        scores, reasons = self.scores(ev, field)
        low = "; ".join(f"{d} {scores[d]}: {reasons[d]}" for d in DIMENSIONS if scores[d] < 5 and reasons[d])
        head = " ".join(f"{d} {scores[d]}" for d in DIMENSIONS)
        return f"{head} . {low or 'no errors'} . decision {decision}", scores


def _list(v: Any, reader: _Reader, field: str) -> list[Any]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise reader.fail(field, f"must be a list or null, got {type(v).__name__}")
    return v


def load_authors_result(path: str | Path, root: str | Path | None = None) -> Trajectory:
    """One ``result.json`` as a :class:`Trajectory` (kept in its mode, or discarded with the reason)."""
    path = Path(path)
    R = _Reader(path, Path(root) if root is not None else path.parent)
    try:
        r = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise AuthorsFormatError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(r, dict):
        raise AuthorsFormatError(f"{path}: must hold a JSON object")
    if "task_id" not in r or r["task_id"] in (None, ""):
        raise R.fail("task_id", "missing")
    tid, prompt = str(r["task_id"]), R.text(r, "edit_prompt", "")
    orig = r.get("original_image_path")
    orig_paths = [] if orig is None else [orig] if isinstance(orig, str) else orig
    if not isinstance(orig_paths, list):
        raise R.fail("original_image_path", f"must be a path, a list of paths or null, got {type(orig).__name__}")
    inputs = [R.image(p, f"original_image_path[{i}]" if isinstance(orig, list) else "original_image_path")
              for i, p in enumerate(orig_paths)]
    reflect = _list(r.get("reflect"), R, "reflect")
    steps = _list(r.get("multi_step"), R, "multi_step")
    failure = r.get("failure_reason")
    final = r.get("final_edited_image_path")
    meta = {"source": "authors", "task_id": r["task_id"], "file": str(path),
            "family": "edit" if inputs else "t2i", "n_reflect": len(reflect), "n_steps": len(steps)}
    base = dict(id=tid, instruction=prompt, input_images=inputs, meta=meta,
                provenance={"importer": "sairlib.interop.authors"})

    G = lambda im: TrajectorySegment("G", image=im)
    T = lambda kind, text: TrajectorySegment(kind, text=text)
    g1 = R.image(r.get("direct_edit_image_path"), "direct_edit_image_path")
    later = "plan" if steps else "reflect" if reflect else "done"
    if failure or not final:
        why = str(failure).strip() if failure else "no final_edited_image_path"
        segs = [G(g1)]
        scores: dict[str, int] = {}
        if isinstance(r.get("evaluation"), dict):
            e1, scores = R.evaluation(r["evaluation"], "evaluation", "reflect")
            segs.append(T("E", e1))
        return Trajectory(**base, segments=segs, status="discarded", discard_reason=why, scores=scores,
                          decisions=[{"stage": "import", "decision": "discard", "why": why}])

    e1, s1 = R.evaluation(r.get("evaluation"), "evaluation", later)
    segs, last = [G(g1), T("E", e1)], s1
    if steps:
        mode = "multistep"
        for i, st in enumerate(steps):
            w = f"multi_step[{i}]"
            if not isinstance(st, dict):
                raise R.fail(w, "must be an object")
            e, last = R.evaluation(st.get("evaluation"), f"{w}.evaluation", "done" if i == len(steps) - 1 else "next")
            segs += [T("S", R.text(st, "step_instruction", f"{w}.")), G(R.image(st.get("step_image_path"),
                                                                              f"{w}.step_image_path")), T("E", e)]
    elif reflect:
        mode = "reflection"
        for i, rf in enumerate(reflect):
            w = f"reflect[{i}]"
            if not isinstance(rf, dict) or not isinstance(rf.get("reflect_thinking"), dict):
                raise R.fail(f"{w}.reflect_thinking", "must be an object with failure_analysis and improvement_plan")
            th = rf["reflect_thinking"]
            text = (" ".join(R.text(th, "failure_analysis", f"{w}.reflect_thinking.").split()) + FIX_MARK
                    + " ".join(R.text(th, "improvement_plan", f"{w}.reflect_thinking.").split()))
            decision = "done" if i == len(reflect) - 1 else "reflect"
            e, last = R.evaluation(rf.get("evaluation"), f"{w}.evaluation", decision)
            segs += [T("R", text), G(R.image(rf.get("reflect_image_path"), f"{w}.reflect_image_path")), T("E", e)]
    else:
        mode = "direct"
    final_im = R.image(final, "final_edited_image_path")
    if not np.array_equal(final_im, segs[-2].image):
        raise R.fail("final_edited_image_path", f"differs from the last {mode} image")
    return Trajectory(**base, segments=segs, mode=mode, status="kept", scores=last, passed=True,
                      rounds=len(reflect) if mode == "reflection" else 0,
                      decisions=[{"stage": "import", "decision": mode, "why": "inferred from the filled fields"}])


def load_authors_results(root: str | Path) -> list[Trajectory]:
    """Every ``result.json`` under ``root`` (recursively, in path order) as trajectories."""
    root = Path(root)
    if not root.is_dir():
        raise AuthorsFormatError(f"{root}: not a folder")
    files = sorted(root.rglob("result.json"))
    if not files:
        raise AuthorsFormatError(f"{root}: no result.json found")
    return [load_authors_result(f, root) for f in files]
