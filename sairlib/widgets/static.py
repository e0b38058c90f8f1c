"""A static, self-contained HTML view of trajectories, for notebooks read offline.

The live widgets need a kernel (or widget JavaScript fetched from a CDN) to show anything, so an
executed notebook's HTML export opened offline would show an empty explorer. Notebooks therefore
display this view next to the explorer; it is plain HTML (inline CSS, PNG data URLs, every text
escaped), drawn by the same renderer as the explorer::

    from sairlib.widgets import static_view, write_static_html
    static_view(trajectories, n=6)                          # an IPython HTML object for the notebook
    write_static_html(trajectories, "outputs/run/01_pipeline/trajectories.html", n=50)

Why not the widget state: papermill executes through nbclient, whose ``store_widget_state`` is on
by default, so an executed notebook does carry the widgets' last state in its metadata, and
nbconvert's HTML export embeds it. But that page draws widgets with
``@jupyter-widgets/html-manager`` fetched from a CDN (``HTMLExporter.jupyter_widgets_base_url``,
unpkg by default; the package is not installed with the Python dependencies), so offline it shows
nothing, and online it shows one frozen page: filtering and paging run in Python, which the
export has no kernel for.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

from .explorer import as_trajectories
from .render_html import esc, trajectories_html


def static_html(trajectories: Any, n: int = 6, image_size: int = 96,
                title: str = "Trajectories (static view, readable offline)") -> str:
    """An HTML fragment: a ``<details open>`` block with the first ``n`` trajectories' cards."""
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n: must be a non-negative integer, got {n!r}")
    total = len(trajectories)
    if hasattr(trajectories, "select") and hasattr(trajectories, "features"):  # a dataset: decode only n rows
        trajectories = trajectories.select(range(min(n, total)))
    shown = as_trajectories(trajectories)[:n]
    summary = f"{title} · first {len(shown)} of {total}"
    return (f'<details open class="sair-static"><summary>{esc(summary)}</summary>'
            f"{trajectories_html(shown, image_size)}</details>")


def static_view(trajectories: Any, n: int = 6, image_size: int = 96, title: str | None = None) -> Any:
    """:func:`static_html` wrapped for notebook display (``IPython.display.HTML``)."""
    from IPython.display import HTML

    kw = {"title": title} if title is not None else {}
    return HTML(static_html(trajectories, n, image_size, **kw))


def write_static_html(trajectories: Iterable[Any], path: str | os.PathLike, n: int = 50, image_size: int = 96,
                      title: str = "Trajectories") -> Path:
    """Write a complete HTML page of the first ``n`` trajectories to ``path`` and return it."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    body = static_html(trajectories, n, image_size, title)
    p.write_text(f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{esc(title)}</title></head>'
                 f"<body>{body}</body></html>")
    return p
