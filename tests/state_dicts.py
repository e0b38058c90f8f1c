"""Distances between model weights, for tests that compare training runs.

    from state_dicts import distance
    moved, apart = distance(x, start), distance(x, y)   # how far a run moved; how far two runs ended apart
"""
from __future__ import annotations

import torch


def distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The L2 distance between two state dicts with the same keys, over all their tensors."""
    return float(sum((a[k] - b[k]).norm() ** 2 for k in a) ** 0.5)
