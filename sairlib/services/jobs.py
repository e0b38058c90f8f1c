"""A resumable judging job: score many (request, image) pairs, record every outcome, lose nothing.

    from sairlib.services.jobs import judge_images
    summary = judge_images(judge, [(x1, img1), (x2, img2)], "outputs/run/judge")

Writes ``out_dir/results.jsonl`` (one line per sample as it finishes, flushed: ``id``,
``status`` ``ok`` | ``judge_error`` | ``service_error`` | ``error``, ``scores``, ``passed``,
``reasons``, ``error``) and ``out_dir/metrics.json`` (status counts plus the backend's usage:
requests, cache hits, retries, latency, tokens, repairs). A rerun keeps the ``ok`` lines and asks
again only for the failed or missing samples (with a response cache, answered requests cost
nothing).
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..interfaces import X2IInput
from ..metrics import write_json
from .errors import JudgeError, ServiceError


def _status(e: BaseException) -> str:
    return "judge_error" if isinstance(e, JudgeError) else "service_error" if isinstance(e, ServiceError) else "error"


def _load(path: Path) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:  # a torn last line from a killed run
                continue
            done[r["id"]] = r
    return done


def judge_images(analyzer: Any, items: Sequence[tuple[X2IInput, np.ndarray]], out_dir: str | Path) -> dict[str, Any]:
    """Assess every pair with ``analyzer.aassess`` concurrently; returns the metrics it writes."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.jsonl"
    ids = [x.id for x, _ in items]
    if len(set(ids)) != len(ids):
        raise ValueError("items: request ids must be unique")
    previous = _load(path)
    kept = {i: r for i, r in previous.items() if r.get("status") == "ok" and i in set(ids)}
    todo = [(x, im) for x, im in items if x.id not in kept]

    with path.open("w") as f:
        for r in kept.values():
            f.write(json.dumps(r) + "\n")
        f.flush()

        async def one(x: X2IInput, im: np.ndarray) -> None:
            try:
                a = await analyzer.aassess(x, im)
                r = {"id": x.id, "status": "ok", "scores": a.scores, "passed": a.passed, "reasons": list(a.reasons),
                     "error": None}
            except (JudgeError, ServiceError, ValueError) as e:
                r = {"id": x.id, "status": _status(e), "scores": {}, "passed": False, "reasons": [],
                     "error": f"{type(e).__name__}: {e}"}
            f.write(json.dumps(r) + "\n")
            f.flush()

        async def all_() -> None:
            await asyncio.gather(*(one(x, im) for x, im in todo))

        analyzer._run(all_())
    results = _load(path)
    counts: dict[str, int] = {}
    for r in results.values():
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    metrics = {"samples": len(items), "reused": len(kept), "asked": len(todo), "status": counts,
               "usage": analyzer.usage()}
    write_json(out / "metrics.json", metrics)
    return metrics
