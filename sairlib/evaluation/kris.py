"""KRIS-Bench's protocol: annotation loader, its knowledge taxonomy, and score pooling.

Each sample is scored 1-5 on visual consistency, visual quality, instruction following and (for
knowledge categories) knowledge plausibility; knowledge is forced to 1 when instruction
following is 2 or less. Scores map to 0-100 by (s - 1) x 25 and are pooled over all
(sample, metric) values: per group (Factual / Conceptual / Procedural) and overall.

    records = load("final_data.json")
    pooled = aggregate([(r["type"], sample_scores(5, 4, 3, 2)) for r in records])
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

# category -> (group, sub-group), the benchmark's taxonomy
TAXONOMY: dict[str, tuple[str, str]] = {
    **{c: ("Factual", "attribute perception") for c in
       ("color_change", "size_adjustment", "part_completion", "anomaly_correction", "count_change")},
    **{c: ("Factual", "spatial perception") for c in ("position_movement", "viewpoint_change")},
    "temporal_prediction": ("Factual", "temporal prediction"),
    **{c: ("Conceptual", "social science") for c in ("humanities", "practical_knowledge")},
    **{c: ("Conceptual", "natural science") for c in
       ("biology", "chemistry", "geography", "mathematics", "medicine", "physics")},
    **{c: ("Procedural", "logical reasoning") for c in ("abstract_reasoning", "rule-based_reasoning")},
    **{c: ("Procedural", "instruction decomposition") for c in
       ("multi-instruction_execution", "multi-element_composition")},
}
GROUPS: tuple[str, ...] = ("Factual", "Conceptual", "Procedural")
METRICS: tuple[str, ...] = ("consistency", "quality", "instruction", "knowledge")


def load(path: str | Path) -> list[dict[str, Any]]:
    """Read a KRIS-Bench annotation list (``final_data.json`` layout); errors name the record."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON ({e.msg})") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: must hold a list of records")
    seen = set()
    for i, r in enumerate(data):
        where = f"{path}[{i}]"
        if not isinstance(r, dict):
            raise ValueError(f"{where}: must be an object")
        if r.get("type") not in TAXONOMY:
            raise ValueError(f"{where}.type: unknown category {r.get('type')!r}")
        for k in ("id", "ins_en"):
            if not isinstance(r.get(k), str) or not r[k]:
                raise ValueError(f"{where}.{k}: must be a non-empty string")
        ori = r.get("ori_img")
        if not (isinstance(ori, str) or (isinstance(ori, list) and ori and all(isinstance(o, str) for o in ori))):
            raise ValueError(f"{where}.ori_img: must be a filename or a list of filenames")
        key = (r["type"], r["id"])
        if key in seen:
            raise ValueError(f"{where}.id: duplicate id {r['id']!r} in {r['type']}")
        seen.add(key)
    return data


def sample_scores(consistency: int, quality: int, instruction: int, knowledge: int | None = None) -> dict[str, int]:
    """One sample's 1-5 scores, with knowledge forced to 1 when instruction following is 2 or less."""
    vals = {"consistency": consistency, "quality": quality, "instruction": instruction, "knowledge": knowledge}
    for k, v in vals.items():
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 5):
            raise ValueError(f"{k}: must be an integer in 1..5, got {v!r}")
    if knowledge is not None and instruction <= 2:
        vals["knowledge"] = 1
    return {k: v for k, v in vals.items() if v is not None}


def aggregate(samples: Iterable[tuple[str, dict[str, int]]]) -> dict[str, float]:
    """Pool (s - 1) x 25 over every (sample, metric) value, per group and overall (0-100)."""
    pools: dict[str, list[float]] = {g: [] for g in GROUPS}
    for category, scores in samples:
        if category not in TAXONOMY:
            raise ValueError(f"category: unknown {category!r}")
        pools[TAXONOMY[category][0]] += [(s - 1) * 25.0 for s in scores.values()]
    everything = [v for p in pools.values() for v in p]
    if not everything:
        raise ValueError("samples: empty")
    out = {g: sum(p) / len(p) for g, p in pools.items() if p}
    out["overall"] = sum(everything) / len(everything)
    return out
