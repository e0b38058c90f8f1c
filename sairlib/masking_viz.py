"""What the loss sees: masked sequences as HTML, token counts per segment kind, a trajectory picker.

    from IPython.display import HTML
    ex = mask_trajectory(t, policy.layout, policy.codec)
    HTML(example_html(ex, policy.layout, policy.codec))    # tokens coloured by loss, images as thumbnails
    span_counts([ex, ...])                                 # DataFrame: tokens with loss / context per kind
    counts_frame(report["tokens_by_mode"])                # the same from build_sft_dataset's report
    trajectory_picker(trajectories, policy.layout, policy.codec)   # ipywidgets dropdown over all of them

Every text shown comes from the tokenizer and is HTML-escaped; images are the codec's decoding
of the very codes in the sequence (what the model reads and writes), not the source PNGs.
"""
from __future__ import annotations

import base64
import html
import io
from typing import Any, Sequence

import numpy as np

from .masking import MaskedExample, mask_trajectory
from .sequence import Layout

LOSS_COLOUR = "#2e9d4f"
CONTEXT_COLOUR = "#9aa0a6"
STYLE = f"""<style>
.sair-mask {{font-family: monospace; font-size: 12px; line-height: 2.1;}}
.sair-mask .tok {{padding: 1px 3px; margin: 0 1px; border-radius: 3px; white-space: nowrap;}}
.sair-mask .loss {{background: #c8ecd2; color: #0b3d1a; border-bottom: 2px solid {LOSS_COLOUR};}}
.sair-mask .ctx {{background: #eceff1; color: #5f6368;}}
.sair-mask .img {{display: inline-block; position: relative; vertical-align: middle; margin: 2px 4px;}}
.sair-mask .img img {{display: block; image-rendering: pixelated;}}
.sair-mask .img .veil {{position: absolute; inset: 0; border: 3px solid; box-sizing: border-box;}}
.sair-mask .img .veil.loss {{border-color: {LOSS_COLOUR}; background: rgba(46,157,79,0.12);}}
.sair-mask .img .veil.ctx {{border-color: {CONTEXT_COLOUR};
  background: repeating-linear-gradient(45deg, rgba(80,80,80,0.45) 0 4px, rgba(80,80,80,0) 4px 9px);}}
.sair-mask .img .cap {{position: absolute; left: 2px; bottom: 1px; font-size: 9px; color: #fff;
  text-shadow: 0 0 2px #000;}}
.sair-mask .seg {{display: inline; margin-right: 6px;}}
</style>"""


def png_data_uri(image: np.ndarray, size: int) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).resize((size, size), Image.NEAREST).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _tokens(layout: Layout, ids: Sequence[int], loss: bool) -> str:
    cls = "loss" if loss else "ctx"
    names = layout.tokenizer.convert_ids_to_tokens([int(i) for i in ids])
    return "".join(f'<span class="tok {cls}">{html.escape(str(n))}</span>' for n in names)


def _image(layout: Layout, codec: Any, ids: Sequence[int], loss: bool, caption: str, size: int) -> str:
    codes = np.asarray(ids[1:-1]) - layout.code_lo  # between <boi> and <eoi>
    uri = png_data_uri(codec.decode(codes), size)
    cls = "loss" if loss else "ctx"
    title = f"{caption}: {len(ids)} tokens, {'loss' if loss else 'context'}"
    return (f'<span class="img" title="{html.escape(title)}"><img src="{uri}" width="{size}" height="{size}">'
            f'<span class="veil {cls}"></span><span class="cap">{html.escape(caption)}</span></span>')


def example_html(ex: MaskedExample, layout: Layout, codec: Any, thumb: int = 56) -> str:
    """One masked sequence: green tokens and outlined images carry loss; grey ones (hatched images) are context."""
    counters: dict[str, int] = {}
    parts = []
    for sp in ex.spans:
        ids = ex.input_ids[sp.start:sp.end]
        if sp.kind in ("G", "input"):
            counters[sp.kind] = counters.get(sp.kind, 0) + 1
            cap = f"{'G' if sp.kind == 'G' else 'in'}{counters[sp.kind]}"
            parts.append(_image(layout, codec, ids, sp.loss, cap, thumb))
        else:
            parts.append(f'<span class="seg">{_tokens(layout, ids, sp.loss)}</span>')
    head = (f"<div><b>{html.escape(ex.id)}</b> · mode {html.escape(ex.mode)} · masking {html.escape(ex.masking)} · "
            f"{len(ex.input_ids)} tokens, {ex.n_loss} with loss · "
            f'<span class="tok loss">loss</span> <span class="tok ctx">context</span></div>')
    return f'{STYLE}<div class="sair-mask">{head}{"".join(parts)}</div>'


def counts_frame(tokens_by_mode: dict[str, dict[str, dict[str, int]]]) -> Any:
    """DataFrame indexed by (mode, span kind) from ``{mode: {kind: {"loss": n, "context": n}}}``
    (the ``tokens_by_mode`` of :func:`sairlib.sft_data.build_sft_dataset`'s report)."""
    import pandas as pd

    rows = [{"mode": m, "kind": k, "loss": c.get("loss", 0), "context": c.get("context", 0)}
            for m, kinds in tokens_by_mode.items() for k, c in kinds.items()]
    if not rows:
        return pd.DataFrame(columns=["loss", "context", "loss_share"])
    df = pd.DataFrame(rows).groupby(["mode", "kind"], sort=True)[["loss", "context"]].sum()
    df["loss_share"] = (df["loss"] / (df["loss"] + df["context"])).round(3)
    return df


def span_counts(examples: Sequence[MaskedExample]) -> Any:
    """DataFrame indexed by (mode, span kind): tokens with loss, tokens of context, loss share."""
    acc: dict[str, dict[str, dict[str, int]]] = {}
    for ex in examples:
        for kind, c in ex.counts().items():
            d = acc.setdefault(ex.mode, {}).setdefault(kind, {"loss": 0, "context": 0})
            d["loss"] += c["loss"]
            d["context"] += c["context"]
    return counts_frame(acc)


def trajectory_picker(trajectories: Sequence[Any], layout: Layout, codec: Any, masking: str = "selective",
                      thumb: int = 56, max_options: int = 2000) -> Any:
    """An ipywidgets box: a dropdown over (the first ``max_options``) trajectories and the masked view
    of the chosen one."""
    import ipywidgets as widgets
    from IPython.display import HTML, display

    trajectories = list(trajectories)[:max_options]
    by_id = {t.id: t for t in trajectories}
    options = [(f"{t.id} · {t.mode} · c={t.complexity}", t.id) for t in trajectories]
    pick = widgets.Dropdown(options=options, description="trajectory", layout=widgets.Layout(width="480px"))
    out = widgets.Output()

    def show(change: Any = None) -> None:
        out.clear_output(wait=True)
        with out:
            display(HTML(example_html(mask_trajectory(by_id[pick.value], layout, codec, masking), layout, codec,
                                      thumb)))

    pick.observe(show, names="value")
    if options:
        show()
    return widgets.VBox([pick, out])
