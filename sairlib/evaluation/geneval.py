"""GenEval's protocol: metadata loader, the per-image rule, and the overall score.

An image is correct when every ``include`` clause holds and no ``exclude`` clause does:

- an object counts when it is detected; a clause needs at least ``count`` detections of its
  class; colour and position are judged on the ``count`` most confident ones only;
- ``exclude`` (counting prompts): N+1 or more detections of the class fail the image;
- position: A is "left of" B when, after shrinking the centre offset by 0.1 x the sum of the two
  boxes' sizes on each axis, the offset's direction points left by more than half (and likewise
  for right, above, below); every judged A must hold against every judged object of the
  reference clause.

Overall = unweighted mean of the six tags' accuracies.

    items = load("evaluation_metadata.jsonl")
    ok, reasons = judge(items[0], {"bench": [Detection("bench", (10, 10, 50, 40))]})
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

TAGS: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
POSITION_MARGIN = 0.1


@dataclass(frozen=True)
class Detection:
    """A detected object: class, box (x0, y0, x1, y1) in pixels, colour (if classified), confidence."""

    cls: str
    box: tuple[float, float, float, float]
    color: str | None = None
    score: float = 1.0


def load(path: str | Path) -> list[dict[str, Any]]:
    """Read GenEval's ``evaluation_metadata.jsonl``; errors name the line and the field."""
    items = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not JSON ({e.msg})") from None
        check(item, where)
        items.append(item)
    return items


def check(item: Any, where: str = "item") -> dict[str, Any]:
    """Validate one metadata record."""
    if not isinstance(item, dict):
        raise ValueError(f"{where}: must be an object")
    if item.get("tag") not in TAGS:
        raise ValueError(f"{where}.tag: must be one of {TAGS}, got {item.get('tag')!r}")
    if not isinstance(item.get("prompt"), str):
        raise ValueError(f"{where}.prompt: must be a string")
    inc = item.get("include")
    if not isinstance(inc, list) or not inc:
        raise ValueError(f"{where}.include: must be a non-empty list")
    for i, req in enumerate(inc + item.get("exclude", [])):
        w = f"{where}.{'include' if i < len(inc) else 'exclude'}[{i if i < len(inc) else i - len(inc)}]"
        if not isinstance(req, dict) or not isinstance(req.get("class"), str):
            raise ValueError(f"{w}.class: must be a string")
        if not isinstance(req.get("count"), int) or req["count"] < 1:
            raise ValueError(f"{w}.count: must be a positive integer")
        if "position" in req:
            pos = req["position"]
            if (not isinstance(pos, list) or len(pos) != 2 or pos[0] not in RELATIONS
                    or not isinstance(pos[1], int) or not 0 <= pos[1] < i):
                raise ValueError(f"{w}.position: must be [relation, index of an earlier include clause]")
    return item


def relative_position(a: Sequence[float], b: Sequence[float], margin: float = POSITION_MARGIN) -> set[str]:
    """Where box ``a`` is relative to box ``b`` (a set of GenEval relations, possibly empty)."""
    ca = ((a[0] + a[2]) / 2, (a[1] + a[3]) / 2)
    cb = ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)
    size = (abs(a[2] - a[0]) + abs(b[2] - b[0]), abs(a[3] - a[1]) + abs(b[3] - b[1]))
    off = (ca[0] - cb[0], ca[1] - cb[1])
    shrunk = [math.copysign(max(abs(o) - margin * s, 0.0), o) for o, s in zip(off, size)]
    if all(abs(v) < 1e-3 for v in shrunk):
        return set()
    norm = math.hypot(*off)
    dx, dy = shrunk[0] / norm, shrunk[1] / norm
    out = set()
    if dx < -0.5:
        out.add("left of")
    if dx > 0.5:
        out.add("right of")
    if dy < -0.5:
        out.add("above")
    if dy > 0.5:
        out.add("below")
    return out


def judge(item: dict[str, Any], detections: dict[str, list[Detection]]) -> tuple[bool, list[str]]:
    """Is the image correct for this prompt? ``detections``: class -> detections, most confident first."""
    ok, reasons, groups = True, [], []
    for req in item["include"]:
        cls, n = req["class"], req["count"]
        found = detections.get(cls, [])[:n]
        matched = len(found) >= n
        if not matched:
            reasons.append(f"expected {cls}>={n}, found {len(found)}")
        if matched and "color" in req:
            hits = sum(d.color == req["color"] for d in found)
            if hits < n:
                matched = False
                reasons.append(f"expected {req['color']} {cls}>={n}, found {hits}")
        if matched and "position" in req:
            rel, g = req["position"]
            if groups[g] is None:
                matched = False
                reasons.append(f"no target for {cls} to be {rel}")
            elif not all(rel in relative_position(d.box, t.box) for d in found for t in groups[g]):
                matched = False
                reasons.append(f"expected {cls} {rel} its target")
        ok &= matched
        groups.append(found if matched else None)
    for req in item.get("exclude", []):
        if len(detections.get(req["class"], [])) >= req["count"]:
            ok = False
            reasons.append(f"expected {req['class']}<{req['count']}, found {len(detections[req['class']])}")
    return ok, reasons


def overall(results: Iterable[tuple[str, bool]]) -> dict[str, float]:
    """Per-tag accuracy and the overall score (unweighted mean over the tags present)."""
    by: dict[str, list[bool]] = {}
    for tag, ok in results:
        if tag not in TAGS:
            raise ValueError(f"tag: unknown {tag!r}")
        by.setdefault(tag, []).append(bool(ok))
    if not by:
        raise ValueError("results: empty")
    acc = {t: sum(v) / len(v) for t, v in by.items()}
    return {**acc, "overall": sum(acc.values()) / len(acc)}
