"""One GRPO group, taken apart: the completions sampled for one request and every number GRPO
computes from them, for notebook 04 to step through.

    view = sample_group(policy, ctx, task, n=4, max_new_tokens=512, seed=0)
    view.frame()            # one row per completion: mode, images, R_outcome, R_format, R_step,
                            # composite, penalty factor, penalised reward, advantage
    HTML(group_html(view))  # the completions segment by segment, images inline, texts escaped

The numbers are the ones training uses: the same rollout decoder and seeds scheme
(:func:`sairlib.grpo.row_seed`), the same reward functions and penalty, and TRL's group
advantage ``(r - mean) / (std + 1e-4)`` with TRL's own ``nanstd``.
"""
from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .generation import generate
from .grpo import row_seed
from .interfaces import X2IInput
from .rewards import COMPONENTS, Judged, RewardContext, Rollout, alphas, composite, penalty_factors, step_judgements


@dataclass
class GroupView:
    """A sampled group: its request, completions (ids, forced flags, rollouts) and their rewards."""

    task: X2IInput
    ids: list[list[int]]
    forced: list[list[bool]]
    rollouts: list[Rollout]
    components: list[dict[str, float]]
    judgements: list[list[Judged]]
    alpha: dict[str, float]
    composite: np.ndarray
    factors: np.ndarray
    penalised: np.ndarray
    advantages: np.ndarray

    def frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame([{"mode": r.mode or "invalid", "segments": r.kinds, "images": r.n_images,
                              "tokens": len(i), "forced": int(sum(f)),
                              **{f"R_{k}": c[k] for k in COMPONENTS}, "composite": s, "penalty": f_,
                              "penalised": p, "advantage": a}
                             for r, i, f, c, s, f_, p, a in zip(self.rollouts, self.ids, self.forced, self.components,
                                                                self.composite, self.factors, self.penalised,
                                                                self.advantages)])


def group_advantages(rewards: np.ndarray) -> np.ndarray:
    """TRL's group-scaled advantages of one group: ``(r - mean) / (nanstd + 1e-4)``."""
    from trl.trainer.utils import nanstd

    r = torch.as_tensor(np.asarray(rewards, dtype=np.float32))
    return ((r - torch.nanmean(r)) / (nanstd(r) + 1e-4)).numpy()


def sample_group(policy: Any, ctx: RewardContext, task: X2IInput, n: int, max_new_tokens: int, *,
                 temperature: float = 1.0, top_k: int = 0, seed: int = 0, step: int = 0) -> GroupView:
    """Sample ``n`` completions for ``task`` as a rollout does, and score them as training does."""
    if task.id not in ctx.tasks:
        raise KeyError(f"task: request {task.id!r} is not in the reward context's tasks")
    prompt = policy.prompt(task)
    gens = generate(policy.model, policy.layout, [prompt] * n, max_new_tokens, temperature=temperature, top_k=top_k,
                    row_seeds=[row_seed(seed, step, i) for i in range(n)])
    ids = [g.ids for g in gens]
    rollouts = [ctx.rollout(task.id, i) for i in ids]
    comps = [{k: ctx.score(k, task.id, i) for k in COMPONENTS} for i in ids]
    a = alphas(ctx.reward)
    raw = np.array([composite(c, a) for c in comps])
    factors = penalty_factors(raw, [r.n_images for r in rollouts], n, ctx.reward["epsilon"]) \
        if ctx.reward["penalty"] else np.ones(n)
    pen = raw * factors
    return GroupView(task, ids, [g.forced for g in gens], rollouts, comps,
                     [step_judgements(r, ctx.analyzer) for r in rollouts], a, raw, factors, pen, group_advantages(pen))


def _png(image: np.ndarray, scale: int = 2) -> str:
    from PIL import Image

    im = Image.fromarray(np.asarray(image, dtype=np.uint8))
    im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def group_html(view: GroupView) -> str:
    """The group as HTML: per completion its segments in order (images inline, texts escaped with
    their step-wise judgement) and its rewards."""
    e = html.escape
    head = (f"<div style='font-family:sans-serif;font-size:12px'><b>request</b> {e(view.task.instruction)} "
            f"<span style='color:#777'>(complexity {view.task.complexity}, {e(str(view.task.meta.get('family', '')))})"
            "</span><br>")
    for im in view.task.images:
        head += f"<img src='{_png(im)}' title='input image' style='margin:2px;border:1px solid #999'>"
    rows = []
    for k, (r, c, js) in enumerate(zip(view.rollouts, view.components, view.judgements)):
        judged = {j.index: j.score for j in js}
        imgs = iter(r.images)
        cells = []
        for i, s in enumerate(r.parsed.segments):
            if s.kind == "G":
                cells.append(f"<img src='{_png(next(imgs))}' style='border:1px solid #999;vertical-align:middle'>")
            else:
                score = judged.get(i)
                badge = "" if score is None else f" <b style='color:{'#2a7' if score >= 1 else '#c44'}'>{score:.2f}</b>"
                cells.append(f"<span style='display:inline-block;max-width:260px;vertical-align:middle;"
                             f"background:#f4f4f4;padding:3px;margin:2px'><b>{e(s.kind)}</b> {e(s.text or '')}"
                             f"{badge}</span>")
        if not r.parsed.ok:
            cells.append(f"<span style='color:#c44'>parse error: {e(r.parsed.error or '')}</span>")
        rows.append(
            f"<tr><td style='vertical-align:top'><b>#{k}</b><br>{e(r.mode or 'invalid')}<br>{r.n_images} image(s)<br>"
            f"outcome {c['outcome']:.2f}<br>format {c['format']:.0f}<br>step {c['step']:.2f}<br>"
            f"composite {view.composite[k]:.3f}<br>× {view.factors[k]:.2f} → {view.penalised[k]:.3f}<br>"
            f"advantage {view.advantages[k]:+.2f}</td><td>{''.join(cells)}</td></tr>")
    return head + "<table>" + "".join(rows) + "</table></div>"


__all__ = ["GroupView", "sample_group", "group_advantages", "group_html"]
