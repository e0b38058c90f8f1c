"""Figures for the notebooks: task galleries and image grids (matplotlib, embedded as PNG).

    from sairlib.viz import show_tasks
    fig = show_tasks(tasks[:6])
"""
from __future__ import annotations

import textwrap
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from .interfaces import X2IInput
from .world.render import render


def _wrap(text: str, width: int = 38) -> str:
    return "\n".join(textwrap.wrap(text, width))


def show_tasks(tasks: Sequence[X2IInput], image_size: int = 64, max_inputs: int = 3):
    """One row per task: its input images, then the hidden target; the request as the title."""
    max_inputs = max(1, min(max_inputs, max(len(t.images) for t in tasks)))
    cols = max_inputs + 1
    fig, axes = plt.subplots(len(tasks), cols, figsize=(2.1 * cols + 3.2, 2.0 * len(tasks)), squeeze=False)
    for r, t in enumerate(tasks):
        ims = list(t.images[:max_inputs]) + [None] * (max_inputs - min(len(t.images), max_inputs))
        ims.append(render(t.target.target, image_size) if t.target is not None else None)
        for c, im in enumerate(ims):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if im is None:
                ax.axis("off")
                continue
            ax.imshow(im, interpolation="nearest")
            ax.set_xlabel("target" if c == max_inputs else f"image {c + 1}", fontsize=8)
        m = t.meta
        axes[r, cols - 1].text(1.08, 0.5, f"{m.get('family')}/{m.get('category')} (complexity {m.get('complexity')})\n"
                               + _wrap(t.instruction), transform=axes[r, cols - 1].transAxes, fontsize=8,
                               va="center", family="monospace")
    fig.tight_layout()
    return fig


def show_pairs(top: np.ndarray, bottom: np.ndarray, labels: Sequence[str] = ("original", "reconstruction"), n: int = 8):
    """Two rows of images (e.g. originals and their codec reconstructions)."""
    n = min(n, len(top))
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.4), squeeze=False)
    for i in range(n):
        for r, (imgs, lab) in enumerate(((top, labels[0]), (bottom, labels[1]))):
            axes[r, i].imshow(imgs[i], interpolation="nearest")
            axes[r, i].set_xticks([])
            axes[r, i].set_yticks([])
            if i == 0:
                axes[r, i].set_ylabel(lab, fontsize=9)
    fig.tight_layout()
    return fig


def show_trajectory(t, max_cols: int = 8, text_width: int = 30):
    """A trajectory as one strip: input images, then its segments in order (texts under the images
    they follow, plan steps above the images they draw); the request and mode as the title."""
    cols: list[tuple[np.ndarray | None, str]] = [(im, f"input {i + 1}") for i, im in enumerate(t.input_images)]
    pending = ""
    for s in t.segments:
        if s.kind == "G":
            cols.append((s.image, pending))
            pending = ""
        elif s.kind == "S":
            pending = f"S: {s.text}"
        else:
            im, label = cols[-1] if cols else (None, "")
            cols[-1:] = [(im, (label + "\n" if label else "") + f"{s.kind}: {s.text}")]
    cols = cols[:max_cols]
    fig, axes = plt.subplots(1, len(cols), figsize=(2.6 * len(cols), 3.6), squeeze=False)
    for ax, (im, label) in zip(axes[0], cols):
        ax.set_xticks([])
        ax.set_yticks([])
        if im is not None:
            ax.imshow(im, interpolation="nearest")
        ax.set_xlabel(_wrap(label, text_width)[:400], fontsize=6, family="monospace")
    fig.suptitle(_wrap(f"[{t.mode or t.status}] {t.instruction}", 120), fontsize=8)
    fig.tight_layout()
    return fig
