"""mini-KRIS: the world's edit tasks in KRIS-Bench's Factual / Conceptual / Procedural groups.

Each sample gets the Analyzer's 1-5 scores of its final image: visual consistency, visual
quality, instruction following and, for tasks whose target needs world knowledge (a colour
from the fact table or a colour mix), knowledge plausibility. ``sairlib.evaluation.kris`` then
applies KRIS's rules: knowledge forced to 1 when instruction following is 2 or less; every
(sample, metric) value mapped by (s - 1) x 25 and pooled per group and overall.

World categories stand in for KRIS categories (``KRIS_CATEGORY``), which fixes their group;
a sample without a final image scores 1 everywhere.

    pooled = score([(task, assessment), ...])
    pooled["overall"], pooled["Factual"], pooled["by_category"]["recolour"]
"""
from __future__ import annotations

from typing import Iterable

from ..interfaces import Assessment, X2IInput
from ..world.tasks import KRIS_GROUP
from . import kris

# world edit category -> the KRIS-Bench category it stands in for
KRIS_CATEGORY: dict[str, str] = {
    "add": "part_completion", "remove": "anomaly_correction", "recolour": "color_change",
    "resize": "size_adjustment", "count": "count_change", "move": "position_movement",
    "fact": "practical_knowledge", "mix": "chemistry",
    "multi": "multi-instruction_execution", "rule": "rule-based_reasoning",
}
assert all(kris.TAXONOMY[k][0].lower() == KRIS_GROUP[w] for w, k in KRIS_CATEGORY.items())


def needs_knowledge(task: X2IInput) -> bool:
    """Whether any constraint of the task's hidden spec takes its target from world knowledge."""
    return any(getattr(c, "knowledge", False) for c in getattr(task.target, "constraints", ()))


def sample(task: X2IInput, assessment: Assessment | None) -> tuple[str, dict[str, int]]:
    """(KRIS category, the sample's 1-5 scores after KRIS's knowledge rule)."""
    cat = task.meta.get("category")
    if task.meta.get("family") != "edit" or cat not in KRIS_CATEGORY:
        raise ValueError(f"task {task.id}: mini-KRIS needs an edit task, got {task.meta.get('family')}/{cat}")
    s = assessment.scores if assessment is not None else {d: 1 for d in kris.METRICS}
    knowledge = int(s["knowledge"]) if needs_knowledge(task) else None
    return KRIS_CATEGORY[cat], kris.sample_scores(int(s["consistency"]), int(s["quality"]), int(s["instruction"]),
                                                  knowledge)


def score(results: Iterable[tuple[X2IInput, Assessment | None]]) -> dict:
    """Pooled 0-100 scores per group and overall, plus per world category (``by_category``)."""
    samples = [(t.meta["category"], *sample(t, a)) for t, a in results]
    out: dict = dict(kris.aggregate((k, s) for _, k, s in samples))
    out["by_category"] = {}
    for world_cat in KRIS_CATEGORY:
        sub = [(k, s) for w, k, s in samples if w == world_cat]
        if sub:
            out["by_category"][world_cat] = kris.aggregate(sub)["overall"]
    return out
