"""Selectively masked SFT examples for the SFT and packing tests: reference trajectories of every
mode on a few world tasks, each encoded with ``build_sft_dataset`` (prompt and tool output -100)."""
from __future__ import annotations

from typing import Any

import numpy as np

from sairlib.reference_trajectories import reference_trajectory
from sairlib.sft_data import build_sft_dataset
from sairlib.world import WorldAnalyzer, make_tasks


def reference_sft_dataset(n_tasks: int, layout: Any, codec: Any) -> Any:
    """``n_tasks`` training tasks x (direct, reflection, multistep), reflection with 1 or 2 rounds."""
    a, trajs = WorldAnalyzer(), []
    for i, x in enumerate(make_tasks(n_tasks, "train", seed=5)):
        for mode in ("direct", "reflection", "multistep"):
            t = reference_trajectory(x, mode, a, np.random.default_rng(i), rounds=1 + i % 2)
            t.id = f"{x.id}-{mode}"
            trajs.append(t)
    ds, _ = build_sft_dataset(trajs, layout, codec, "selective", "full")
    return ds
