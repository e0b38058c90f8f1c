"""The shapes world: scenes, rendering, perception, tasks, the grammar and the exact Analyzer.

    from sairlib.world import WorldAnalyzer, make_tasks, render
    x = make_tasks(1, "train", seed=0, family="edit")[0]
    a = WorldAnalyzer()
    print(x.instruction, a.assess(x, x.images[0]).scores)
"""
from .analyzer import DEFAULT_THRESHOLDS, WorldAnalyzer
from .grammar import GrammarError, vocabulary
from .perceive import perceive, perceive_batch
from .render import blank, render
from .scene import Obj, Part, Scene, SceneError
from .tasks import (COMPLEXITY_BUCKETS, FAMILIES, TaskError, WorldConfig, complexity_bucket, make_balanced_tasks,
                    make_task, make_tasks)

__all__ = ["DEFAULT_THRESHOLDS", "WorldAnalyzer", "GrammarError", "vocabulary", "perceive", "perceive_batch",
           "blank", "render", "Obj", "Part", "Scene", "SceneError", "COMPLEXITY_BUCKETS", "FAMILIES", "TaskError",
           "WorldConfig", "complexity_bucket", "make_balanced_tasks", "make_task", "make_tasks"]
