"""The Generator on an OpenAI-compatible images endpoint: generation and editing.

    gen = make_generator({"backend": "openai", "base_url": "http://localhost:8001/v1",
                          "model": "my-image-model", "api_key_env": "SAIR_IMAGES_API_KEY",
                          "size": "512x512", "resize_to": [64, 64], "cache_dir": "outputs/run/image_cache"})
    img = gen.generate("draw a red circle", [])          # POST /images/generations (JSON)
    img = gen.generate("make it blue", [img])             # POST /images/edits (multipart, PNG inputs)

Answers must carry ``data[0].b64_json`` (a PNG or JPEG); the image comes back as an RGB uint8
array, resized to ``resize_to`` (height, width) when given. Same client machinery as the judge:
bounded concurrency, retries with backoff, disk cache (keyed by model, prompt, size and the input
images' bytes), latency accounting. :class:`ServiceDrawer` adapts a generator to the escalation
pipeline's batched ``draw`` interface.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
from typing import Any, Sequence

import numpy as np

from .client import ServiceClient
from .errors import ServiceError


def _png_bytes(image: np.ndarray, where: str) -> bytes:
    from PIL import Image

    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"{where}: must be an HxWx3 uint8 array, got {arr.dtype} {arr.shape}")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


class OpenAIImageGenerator:
    """``generate(instruction, images)`` through ``/images/generations`` or ``/images/edits``."""

    def __init__(self, client: ServiceClient, model: str, *, size: str | None = None,
                 response_format: str | None = "b64_json", resize_to: Sequence[int] | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        if not isinstance(model, str) or not model:
            raise ValueError(f"model: must be a model name, got {model!r}")
        if resize_to is not None and (len(resize_to) != 2 or not all(isinstance(v, int) and v > 0 for v in resize_to)):
            raise ValueError(f"resize_to: must be [height, width] in pixels, got {resize_to!r}")
        self.client, self.model, self.size = client, model, size
        self.response_format, self.extra = response_format, dict(extra or {})
        self.resize_to = tuple(resize_to) if resize_to is not None else None

    def _fields(self, instruction: str) -> dict[str, Any]:
        f: dict[str, Any] = {"model": self.model, "prompt": instruction, "n": 1, **self.extra}
        if self.size:
            f["size"] = self.size
        if self.response_format:
            f["response_format"] = self.response_format
        return f

    async def agenerate(self, instruction: str, images: Sequence[np.ndarray]) -> np.ndarray:
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError("instruction: must be a non-empty string")
        fields = self._fields(instruction)
        if not images:
            body = await self.client.submit(self.client.post_json("/images/generations", fields))
            return self._image(body, "/images/generations")
        pngs = [_png_bytes(im, f"images[{i}]") for i, im in enumerate(images)]
        name = "image" if len(pngs) == 1 else "image[]"
        files = [(name, (f"input{i}.png", b, "image/png")) for i, b in enumerate(pngs)]
        key = {"path": "/images/edits", "fields": fields, "images": [hashlib.sha256(b).hexdigest() for b in pngs]}
        data = {k: str(v) for k, v in fields.items()}
        body = await self.client.submit(self.client.post_multipart("/images/edits", data, files, key))
        return self._image(body, "/images/edits")

    def _image(self, body: Any, path: str) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        try:
            b64 = body["data"][0]["b64_json"]
            raw = base64.b64decode(b64, validate=True)
            im = Image.open(io.BytesIO(raw)).convert("RGB")
        except (KeyError, IndexError, TypeError):
            raise ServiceError(f"POST {path}", "bad_response", 1, "no data[0].b64_json in the answer") from None
        except (binascii.Error, ValueError, UnidentifiedImageError, OSError):
            raise ServiceError(f"POST {path}", "bad_response", 1, "data[0].b64_json is not an image") from None
        if self.resize_to is not None:
            h, w = self.resize_to
            im = im.resize((w, h), Image.Resampling.NEAREST)
        return np.asarray(im, dtype=np.uint8)

    def generate(self, instruction: str, images: Sequence[np.ndarray]) -> np.ndarray:
        return self.client.call(self.agenerate(instruction, images))

    def usage(self) -> dict[str, Any]:
        return self.client.stats()

    def close(self) -> None:
        self.client.close()


class ServiceDrawer:
    """The escalation pipeline's batched ``draw`` over any Generator with ``agenerate`` (concurrent)."""

    def __init__(self, generator: OpenAIImageGenerator, name: str = "service") -> None:
        self.generator, self.name = generator, name

    def draw(self, requests: Sequence[Any]) -> list[np.ndarray]:
        async def all_() -> list[np.ndarray]:
            return list(await asyncio.gather(*(self.generator.agenerate(r.instruction, r.images) for r in requests)))

        return self.generator.client.call(all_())
