"""Human review decisions on trajectories: a JSON Lines file, applied when the SFT set is built.

Each line is ``{"id": ..., "decision": "accept" | "reject", "reason": ..., "time": ...}``; the
last line for an id wins, so a reviewer can change their mind and the file stays append-only
(a crash never loses an earlier decision)::

    append_review("outputs/run/01_pipeline/reviews.jsonl", "t2i-ab12", "reject", "E1 misreads the colour")
    kept = apply_reviews(trajectories, load_reviews("outputs/run/01_pipeline/reviews.jsonl"))
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence, TypeVar

from .metrics import utc_now

DECISIONS: tuple[str, ...] = ("accept", "reject")
T = TypeVar("T")


def append_review(path: str | os.PathLike, traj_id: str, decision: str, reason: str = "") -> dict[str, Any]:
    """Append one decision (flushed and fsynced) and return it."""
    if decision not in DECISIONS:
        raise ValueError(f"decision: must be one of {DECISIONS}, got {decision!r}")
    if not isinstance(traj_id, str) or not traj_id:
        raise ValueError("id: a review needs the trajectory's id")
    if decision == "reject" and not reason.strip():
        raise ValueError("reason: a rejection needs a reason")
    rec = {"id": traj_id, "decision": decision, "reason": reason,
           "time": utc_now()}
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("a") as f:
        f.write(json.dumps(rec) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return rec


def load_reviews(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """id -> latest decision; a missing file means no reviews. Bad lines name file and line."""
    p = Path(path)
    if not p.exists():
        return {}
    out: dict[str, dict[str, Any]] = {}
    for n, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}:{n}: not JSON ({e.msg})") from None
        if not isinstance(rec, dict) or "id" not in rec:
            raise ValueError(f"{p}:{n}: id: missing")
        if rec.get("decision") not in DECISIONS:
            raise ValueError(f"{p}:{n}: decision: must be one of {DECISIONS}, got {rec.get('decision')!r}")
        out[rec["id"]] = rec
    return out


def apply_reviews(items: Sequence[T], reviews: dict[str, dict[str, Any]]) -> list[T]:
    """The items (anything with an ``id``) not rejected by the reviews; unreviewed ones stay."""
    return [t for t in items if reviews.get(getattr(t, "id"), {}).get("decision") != "reject"]
