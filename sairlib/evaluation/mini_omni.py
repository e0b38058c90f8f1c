"""mini-OmniContext: the world's composition tasks, OmniContext's task types and score.

World categories map onto OmniContext's task types (``SINGLE_character`` -> ``single_character``,
``MULTIPLE_object`` -> ``multi_object``, ``SCENE_character`` -> ``scene_character``, ...). The
two 0-10 judgements come from the Analyzer's 1-5 scores of the final image:

- prompt following  PF = 2.5 x (instruction - 1): every placement, count and relation asked for;
- subject consistency SC = 2.5 x (consistency - 1): the scene's objects kept and nothing drawn
  that is not asked for, so a subject drawn with another look (colour, inner part) counts
  against it as an unasked-for object;

so 1 maps to 0 and 5 to 10. A sample without a final image scores PF = SC = 0.
``sairlib.evaluation.omnicontext`` then takes sqrt(PF x SC) per sample, the mean per task type,
and the unweighted mean over task types.

    res = score([(task, assessment), ...]); res["overall"], res["scene_object"]
"""
from __future__ import annotations

from typing import Iterable

from ..interfaces import Assessment, X2IInput
from . import omnicontext

KIND: dict[str, str] = {"SINGLE": "single", "MULTIPLE": "multi", "SCENE": "scene"}


def task_type(task: X2IInput) -> str:
    cat = str(task.meta.get("category", ""))
    kind, _, sub = cat.partition("_")
    if task.meta.get("family") != "compose" or kind not in KIND or not sub:
        raise ValueError(f"task {task.id}: mini-OmniContext needs a compose task, got {task.meta.get('family')}/{cat}")
    out = f"{KIND[kind]}_{sub}"
    if out not in omnicontext.TASK_TYPES:
        raise ValueError(f"task {task.id}: no OmniContext task type {out!r}")
    return out


def judgements(assessment: Assessment | None) -> tuple[float, float]:
    """(prompt following, subject consistency) on 0-10."""
    if assessment is None:
        return 0.0, 0.0
    return 2.5 * (assessment.scores["instruction"] - 1), 2.5 * (assessment.scores["consistency"] - 1)


def score(results: Iterable[tuple[X2IInput, Assessment | None]]) -> dict[str, float]:
    """Mean sqrt(PF x SC) per task type and overall (0-10)."""
    return omnicontext.aggregate((task_type(t), *judgements(a)) for t, a in results)
