"""The Analyzer on a local transformers VLM (``AutoModelForImageTextToText`` + ``AutoProcessor``).

    judge = make_analyzer({"backend": "transformers", "model": "Qwen/Qwen2.5-VL-7B-Instruct",
                           "device": "cuda", "dtype": "bfloat16", "max_new_tokens": 256})
    judge.assess(x, image)

Same prompts, strict parsing and single repair request as the endpoint judge
(:mod:`sairlib.services.prompts`, :class:`~sairlib.services.judge.VLMAnalyzer`): the OpenAI-style
messages are turned into the processor's chat format (each ``image_url`` data URL becomes a
``{"type": "image"}`` part holding the decoded PIL image, its label text kept just before it),
``processor.apply_chat_template(..., tokenize=True, return_dict=True)`` builds the inputs and
``model.generate`` answers greedily. Generation is serialised (one model, one lock); calls work from
plain code and from inside an event loop alike.
"""
from __future__ import annotations

import asyncio
import base64
import io
import threading
from typing import Any, Coroutine

from .judge import VLMAnalyzer
from .loop import BackgroundLoop


def _pil(url: str) -> Any:
    from PIL import Image

    if not url.startswith("data:image/"):
        raise ValueError(f"image_url: a local judge takes data URLs only, got {url[:40]!r}")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")


def to_processor_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI-style chat messages -> the processor chat format (text parts, PIL image parts)."""
    out = []
    for m in messages:
        c = m["content"]
        parts = [{"type": "text", "text": c}] if isinstance(c, str) else [
            {"type": "image", "image": _pil(p["image_url"]["url"])} if p["type"] == "image_url"
            else {"type": "text", "text": p["text"]} for p in c]
        out.append({"role": m["role"], "content": parts})
    return out


class TransformersAnalyzer(VLMAnalyzer):
    """A judge on a local image-text-to-text model and its processor (greedy decoding)."""

    def __init__(self, model: Any, processor: Any, *, max_new_tokens: int = 256,
                 thresholds: dict[str, int] | None = None) -> None:
        super().__init__(thresholds)
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens: must be a positive integer, got {max_new_tokens!r}")
        self.model, self.processor, self.max_new_tokens = model.eval(), processor, max_new_tokens
        self._lock = threading.Lock()
        self._bg = BackgroundLoop("sair-local-judge")
        self.counts["generations"] = 0

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, device: str = "cpu", dtype: str = "float32",
                        max_new_tokens: int = 256, thresholds: dict[str, int] | None = None) -> "TransformersAnalyzer":
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if not hasattr(torch, dtype) or not isinstance(getattr(torch, dtype), torch.dtype):
            raise ValueError(f"dtype: not a torch dtype: {dtype!r}")
        model = AutoModelForImageTextToText.from_pretrained(name_or_path, dtype=getattr(torch, dtype)).to(device)
        return cls(model, AutoProcessor.from_pretrained(name_or_path), max_new_tokens=max_new_tokens,
                   thresholds=thresholds)

    def _generate(self, messages: list[dict[str, Any]]) -> str:
        import torch

        inputs = self.processor.apply_chat_template(to_processor_messages(messages), tokenize=True, return_dict=True,
                                                    add_generation_prompt=True, return_tensors="pt")
        inputs = inputs.to(self.model.device)
        with self._lock, torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
            self._count("generations")
        return self.processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    async def _complete(self, messages: list[dict[str, Any]]) -> str:
        return await asyncio.to_thread(self._generate, messages)

    def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self._bg.run(coro)

    def close(self) -> None:
        self._bg.close()
