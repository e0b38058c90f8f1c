"""OmniContext's protocol: record checks, the per-sample score and the overall score.

Prompt following (PF) and subject consistency (SC) are judged 0-10; a sample scores sqrt(PF x SC);
a task type's score is the mean over its samples; overall is the unweighted mean over task types.

    score = aggregate([("single_character", 8, 9), ("scene_object", 6, 7)])
"""
from __future__ import annotations

import math
from typing import Any, Iterable

TASK_TYPES: tuple[str, ...] = ("single_character", "single_object", "multi_character", "multi_object",
                               "multi_character_object", "scene_character", "scene_object",
                               "scene_character_object")


def check(record: Any, where: str = "record") -> dict[str, Any]:
    """Validate one record's fields: key, task_type, instruction, input_images (a non-empty list)."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: must be a mapping")
    for k in ("key", "instruction"):
        if not isinstance(record.get(k), str) or not record[k]:
            raise ValueError(f"{where}.{k}: must be a non-empty string")
    if record.get("task_type") not in TASK_TYPES:
        raise ValueError(f"{where}.task_type: must be one of {TASK_TYPES}, got {record.get('task_type')!r}")
    imgs = record.get("input_images")
    if not isinstance(imgs, (list, tuple)) or not imgs:
        raise ValueError(f"{where}.input_images: must be a non-empty list of images")
    return record


def english(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records scored by the benchmark: English instructions (records without a language field count)."""
    return [r for r in records if r.get("instruction_language", "en") == "en"]


def sample_score(pf: float, sc: float) -> float:
    for name, v in (("prompt_following", pf), ("subject_consistency", sc)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 10:
            raise ValueError(f"{name}: must be a number in 0..10, got {v!r}")
    return math.sqrt(pf * sc)


def aggregate(samples: Iterable[tuple[str, float, float]]) -> dict[str, float]:
    """Per task type mean of sqrt(PF x SC), and overall = unweighted mean over the task types present."""
    by: dict[str, list[float]] = {}
    for task_type, pf, sc in samples:
        if task_type not in TASK_TYPES:
            raise ValueError(f"task_type: unknown {task_type!r}")
        by.setdefault(task_type, []).append(sample_score(pf, sc))
    if not by:
        raise ValueError("samples: empty")
    out = {t: sum(v) / len(v) for t, v in by.items()}
    out["overall"] = sum(out.values()) / len(by)
    return out
