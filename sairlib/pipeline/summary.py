"""What the pipeline produced: mode mix by complexity, discard reasons, images, rounds.

    m = summarise_trajectories(trajectories)
    m["mode_share_by_complexity"]["5"]   # {"direct": .., "reflection": .., "multistep": ..}
    m["mode_counts_by_family_complexity"]["edit"]["3"]   # the same counts within one family

Complexity (the number of constraints) orders difficulty within a family, not across families:
in the shapes world most complexity-3 requests are placements on an empty canvas, easier than
the scene compositions at complexity 2, so the pooled Direct share rises again at 3.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Sequence

import numpy as np

from ..modes import MODES
from ..trajectory import Trajectory


def _share(counter: Counter, keys: Sequence[str]) -> dict[str, float]:
    n = sum(counter[k] for k in keys)
    return {k: (counter[k] / n if n else 0.0) for k in keys}


def _trend(shares: dict[str, dict[str, float]], mode: str) -> float:
    """Slope of a mode's share against complexity (least squares; 0 with fewer than 2 points)."""
    xs = [int(c) for c in shares]
    if len(xs) < 2:
        return 0.0
    ys = [shares[c][mode] for c in shares]
    return float(np.polyfit(xs, ys, 1)[0])


def summarise_trajectories(ts: Sequence[Trajectory], min_per_complexity: int = 5) -> dict[str, Any]:
    kept = [t for t in ts if t.status == "kept"]
    status = Counter(t.status for t in ts)
    modes = Counter(t.mode for t in kept)
    by_c: dict[int, Counter] = defaultdict(Counter)
    by_fc: dict[str, dict[int, Counter]] = defaultdict(lambda: defaultdict(Counter))
    for t in kept:
        by_c[t.complexity][t.mode] += 1
        by_fc[str(t.meta.get("family", ""))][t.complexity][t.mode] += 1
    shares = {str(c): _share(by_c[c], MODES) for c in sorted(by_c) if sum(by_c[c].values()) >= min_per_complexity}
    reasons = Counter((t.discard_reason or "").split(" after ")[0] for t in ts if t.status != "kept")
    return {
        "n_tasks": len(ts), "kept": status["kept"], "discarded": status["discarded"], "errors": status["error"],
        "modes": {m: modes[m] for m in MODES}, "mode_share": _share(modes, MODES),
        "mode_counts_by_complexity": {str(c): {m: by_c[c][m] for m in MODES} for c in sorted(by_c)},
        "mode_share_by_complexity": shares,
        "mode_counts_by_family_complexity": {f: {str(c): {m: by_fc[f][c][m] for m in MODES} for c in sorted(by_fc[f])}
                                             for f in sorted(by_fc)},
        "direct_share_slope": _trend(shares, "direct"), "multistep_share_slope": _trend(shares, "multistep"),
        "discard_reasons": dict(reasons.most_common()),
        "avg_images": {m: float(np.mean([t.n_images for t in kept if t.mode == m])) if modes[m] else 0.0
                       for m in MODES},
        "avg_images_all": float(np.mean([t.n_images for t in kept])) if kept else 0.0,
        "rounds": {str(k): v for k, v in sorted(Counter(t.rounds for t in kept if t.mode == "reflection").items())},
        "by_family": {f: {m: sum(1 for t in kept if t.meta.get("family") == f and t.mode == m) for m in MODES}
                      for f in sorted({str(t.meta.get("family", "")) for t in kept})},
    }
