"""Export trajectories to the common SFT formats, images as PNG files referenced by path.

- ShareGPT style (LLaMA-Factory and similar): ``{"id", "conversations": [{"from": "human",
  "value": "<image>...request"}, {"from": "gpt", "value": "<image><eval>...</eval>..."}],
  "images": [paths in <image> order]}``: the request's input images first, then the answer's.
- OpenAI style: ``{"id", "messages": [{"role": "user", "content": [text and image_url parts]},
  {"role": "assistant", "content": [parts in segment order]}]}``, each image part's ``url`` the
  PNG's path relative to the export folder.

Texts keep our segment tags (``<eval>``, ``<reflect>``, ``<step>``, from ``sairlib.sequence``), so
a model trained on the export writes answers ``Layout.parse`` reads back. Only kept trajectories
are exported unless ``status=None``.

    from sairlib.interop import export_sharegpt
    export_sharegpt(trajectories, "exports/sharegpt")   # data.jsonl + images/<id>/*.png
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from ..sequence import TEXT_TAGS
from ..trajectory import Trajectory, _png, _safe

IMAGE_TOKEN = "<image>"


def _images(t: Trajectory, out: Path) -> tuple[list[str], list[str]]:
    sub = Path("images") / _safe(t.id)
    inputs, answer = [], []
    for i, im in enumerate(t.input_images):
        _png(out / sub / f"input{i}.png", im)
        inputs.append(str(sub / f"input{i}.png"))
    for i, im in enumerate(t.images):
        _png(out / sub / f"g{i}.png", im)
        answer.append(str(sub / f"g{i}.png"))
    return inputs, answer


def _tagged(kind: str, text: str) -> str:
    open_, close = TEXT_TAGS[kind]
    return f"{open_}{text}{close}"


def to_sharegpt(t: Trajectory, out_dir: str | Path) -> dict[str, Any]:
    """One ShareGPT-style record; writes the trajectory's PNGs under ``out_dir/images/<id>/``."""
    out = Path(out_dir)
    inputs, answer = _images(t, out)
    human = IMAGE_TOKEN * len(inputs) + t.instruction
    gpt = "".join(IMAGE_TOKEN if s.kind == "G" else _tagged(s.kind, s.text or "") for s in t.segments)
    return {"id": t.id, "mode": t.mode, "conversations": [{"from": "human", "value": human},
                                                           {"from": "gpt", "value": gpt}],
            "images": inputs + answer}


def to_openai_messages(t: Trajectory, out_dir: str | Path) -> dict[str, Any]:
    """One OpenAI-style messages record; images are PNG paths relative to ``out_dir``."""
    out = Path(out_dir)
    inputs, answer = _images(t, out)
    img = lambda p: {"type": "image_url", "image_url": {"url": p}}
    user = [img(p) for p in inputs] + [{"type": "text", "text": t.instruction}]
    it = iter(answer)
    assistant = [img(next(it)) if s.kind == "G" else {"type": "text", "text": _tagged(s.kind, s.text or "")}
                 for s in t.segments]
    return {"id": t.id, "mode": t.mode, "messages": [{"role": "user", "content": user},
                                                     {"role": "assistant", "content": assistant}]}


def _export(fn: Any, trajectories: Iterable[Trajectory], out_dir: str | Path, status: str | None) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [fn(t, out) for t in trajectories if status is None or t.status == status]
    path = out / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def export_sharegpt(trajectories: Iterable[Trajectory], out_dir: str | Path, status: str | None = "kept") -> Path:
    """``out_dir/data.jsonl`` of ShareGPT-style records plus the PNGs; returns the JSONL path."""
    return _export(to_sharegpt, trajectories, out_dir, status)


def export_openai_messages(trajectories: Iterable[Trajectory], out_dir: str | Path,
                           status: str | None = "kept") -> Path:
    """``out_dir/data.jsonl`` of OpenAI-style message records plus the PNGs; returns the JSONL path."""
    return _export(to_openai_messages, trajectories, out_dir, status)
