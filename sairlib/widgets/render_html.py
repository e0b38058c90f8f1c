"""Escaped HTML of trajectories: images and texts interleaved in answer order, with the outcome.

The explorer, the reviewer and the static (offline) view all draw a trajectory with
:func:`trajectory_html`; every text (request, segments, decisions, reasons, ids, metadata) goes
through ``html.escape`` and images are inline PNG data URLs, so the HTML is self-contained::

    from sairlib.widgets.render_html import trajectory_html
    from IPython.display import HTML
    HTML(trajectory_html(trajectories[0]))

Each card is a ``<div class="sair-traj" data-trajectory-id="..." data-mode="..." data-status="...">``:
pages and tests find the trajectories shown by these attributes.
"""
from __future__ import annotations

import base64
import html
import io
from typing import Any, Iterable

import numpy as np

from ..interfaces import DIMENSIONS
from ..trajectory import Trajectory

SEGMENT_LABELS: dict[str, str] = {"G": "image", "E": "evaluation", "R": "reflection", "S": "step"}
STATUS_COLOURS: dict[str, str] = {"kept": "#1a7f37", "discarded": "#9a6700", "error": "#cf222e"}

CSS = """
.sair-traj{border:1px solid #d0d7de;border-radius:6px;padding:8px 10px;margin:8px 0;font:13px/1.4 sans-serif;
  color:#1f2328;background:#fff}
.sair-traj .sair-head{display:flex;flex-wrap:wrap;gap:6px;align-items:center;margin-bottom:4px}
.sair-traj .sair-id{font-family:monospace;font-weight:600}
.sair-traj .sair-tag{border-radius:10px;padding:0 7px;background:#eaeef2;font-size:12px}
.sair-traj .sair-instr{margin:4px 0 6px 0}
.sair-traj .sair-segs{display:flex;flex-wrap:wrap;gap:6px;align-items:flex-start}
.sair-traj .sair-seg{border:1px solid #eaeef2;border-radius:4px;padding:3px 5px;max-width:340px}
.sair-traj .sair-seg-label{font-size:11px;color:#57606a;font-weight:600}
.sair-traj .sair-seg-text{font-family:monospace;font-size:12px;white-space:pre-wrap;word-break:break-word}
.sair-traj .sair-seg-E{background:#f6f8fa}.sair-traj .sair-seg-R{background:#fff8c5}
.sair-traj .sair-seg-S{background:#ddf4ff}
.sair-traj img{image-rendering:pixelated;display:block}
.sair-traj table{border-collapse:collapse;margin-top:6px;font-size:12px}
.sair-traj td,.sair-traj th{border:1px solid #d0d7de;padding:1px 6px;text-align:left}
.sair-traj ol{margin:4px 0 0 0;padding-left:22px;font-size:12px}
.sair-traj .sair-reason{color:#9a6700;font-weight:600}
"""


def esc(value: Any) -> str:
    """``html.escape`` of ``str(value)`` (quotes too, so it is safe in attributes)."""
    return html.escape(str(value), quote=True)


def image_data_url(image: np.ndarray, size: int = 96) -> str:
    """A ``data:image/png;base64,...`` URL of an RGB uint8 image, scaled (nearest) to ``size`` px wide."""
    from PIL import Image

    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"image: must be an HxWx3 uint8 array, got {arr.dtype} {arr.shape}")
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size: must be a positive integer, got {size!r}")
    im = Image.fromarray(arr)
    h = max(1, round(arr.shape[0] * size / arr.shape[1]))
    if (size, h) != im.size:
        im = im.resize((size, h), Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _img(image: np.ndarray, size: int, alt: str) -> str:
    return f'<img src="{image_data_url(image, size)}" width="{size}" alt="{esc(alt)}">'


def _tag(text: Any, colour: str | None = None) -> str:
    style = f' style="background:{colour};color:#fff"' if colour else ""
    return f'<span class="sair-tag"{style}>{esc(text)}</span>'


def segments_html(t: Trajectory, image_size: int = 96) -> str:
    """The answer segments in order: G as thumbnails, E/R/S as labelled text blocks (G1 E1 R1 G2 ...)."""
    counts: dict[str, int] = {}
    parts = []
    for s in t.segments:
        counts[s.kind] = counts.get(s.kind, 0) + 1
        label = f"{s.kind}{counts[s.kind]} · {SEGMENT_LABELS[s.kind]}"
        if s.kind == "G":
            body = _img(s.image, image_size, f"{t.id} {s.kind}{counts[s.kind]}")
        else:
            body = f'<div class="sair-seg-text">{esc(s.text)}</div>'
        parts.append(f'<div class="sair-seg sair-seg-{s.kind}"><div class="sair-seg-label">{esc(label)}</div>{body}</div>')
    return f'<div class="sair-segs">{"".join(parts)}</div>'


def scores_html(t: Trajectory) -> str:
    """The final scores (one column per dimension; blank where the trajectory has none)."""
    head = "".join(f"<th>{esc(d)}</th>" for d in DIMENSIONS)
    row = "".join(f"<td>{esc(t.scores[d]) if d in t.scores else ''}</td>" for d in DIMENSIONS)
    return f'<table class="sair-scores"><tr><th>final scores</th>{head}</tr><tr><td></td>{row}</tr></table>'


def decisions_html(t: Trajectory) -> str:
    """The pipeline's decisions in order (stage: decision — why)."""
    if not t.decisions:
        return ""
    items = []
    for d in t.decisions:
        if isinstance(d, dict):
            stage, dec, why = d.get("stage", ""), d.get("decision", ""), d.get("why", "")
            rest = {k: v for k, v in d.items() if k not in ("stage", "decision", "why")}
            extra = f" ({esc(', '.join(f'{k}={v}' for k, v in rest.items()))})" if rest else ""
            items.append(f"<li><b>{esc(stage)}</b>: {esc(dec)}{' — ' + esc(why) if why else ''}{extra}</li>")
        else:
            items.append(f"<li>{esc(d)}</li>")
    return f'<div class="sair-decisions">decisions<ol>{"".join(items)}</ol></div>'


def trajectory_html(t: Trajectory, image_size: int = 96, review: dict[str, Any] | None = None) -> str:
    """One trajectory as an escaped HTML card (header, request, inputs, segments, scores, decisions).

    ``review``: a decision from :func:`sairlib.review.load_reviews`, shown in the header when given.
    """
    if not isinstance(t, Trajectory):
        raise ValueError(f"trajectory: expected a sairlib.trajectory.Trajectory, got {type(t).__name__}")
    m = t.meta
    tags = [_tag(t.mode or "no mode"), _tag(t.status, STATUS_COLOURS.get(t.status)),
            _tag("passed" if t.passed else "failed", "#1a7f37" if t.passed else "#cf222e"),
            _tag(f"complexity {t.complexity}"), _tag(f"{m.get('family', '?')}/{m.get('category', '?')}")]
    if t.rounds:
        tags.append(_tag(f"{t.rounds} round{'s' if t.rounds != 1 else ''}"))
    if review:
        rv = f"review: {review.get('decision', '')}"
        if review.get("reason"):
            rv += f" ({review['reason']})"
        tags.append(_tag(rv, "#0969da" if review.get("decision") == "accept" else "#8250df"))
    head = f'<div class="sair-head"><span class="sair-id">{esc(t.id)}</span>{"".join(tags)}</div>'
    instr = f'<div class="sair-instr"><b>request:</b> {esc(t.instruction)}</div>'
    inputs = ""
    if t.input_images:
        ims = "".join(_img(im, max(32, image_size * 2 // 3), f"{t.id} input {i + 1}") for i, im in enumerate(t.input_images))
        inputs = f'<div class="sair-inputs"><span class="sair-seg-label">input images</span><div class="sair-segs">{ims}</div></div>'
    reason = f'<div class="sair-reason">discarded: {esc(t.discard_reason)}</div>' if t.discard_reason else ""
    errors = ""
    if t.errors:
        errors = '<div class="sair-errors">errors<ol>' + "".join(f"<li>{esc(e)}</li>" for e in t.errors) + "</ol></div>"
    body = head + instr + inputs + segments_html(t, image_size) + scores_html(t) + reason + errors + decisions_html(t)
    return (f'<div class="sair-traj" data-trajectory-id="{esc(t.id)}" data-mode="{esc(t.mode or "")}" '
            f'data-status="{esc(t.status)}">{body}</div>')


def trajectories_html(trajectories: Iterable[Trajectory], image_size: int = 96,
                      reviews: dict[str, dict[str, Any]] | None = None, empty: str = "no trajectory matches") -> str:
    """Cards for several trajectories, with the stylesheet in front (a self-contained fragment)."""
    cards = [trajectory_html(t, image_size, (reviews or {}).get(t.id)) for t in trajectories]
    body = "".join(cards) if cards else f'<div class="sair-empty">{esc(empty)}</div>'
    return f"<style>{CSS}</style>{body}"
