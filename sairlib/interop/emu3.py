"""Emu3 (``Emu3ForConditionalGeneration``) as the policy: image tokens inside the text vocabulary.

Emu3's image codes are ordinary vocabulary entries (``<|visual token 000123|>``, mapped by
``model.vocabulary_mapping``) and its VQ-VAE (``model.model.vqmodel``) is the codec: an image of
``image_size`` pixels is a ``g x g`` grid of codes (``g = image_size / 2**(len(channel_multiplier)-1)``),
written row by row with Emu3's end-of-line token (``<|extra_200|>``) after each row. So an image
segment here is ``<boi>`` + ``g`` rows of (``g`` codes + EOL) + ``<eoi>``: the codes are scored by
``lm_head`` restricted to the visual tokens (the "image head" of the shared machinery), the EOLs
are forced. Everything else (layout, constrained interleaved sampling, selective masking, SFT,
the GRPO step) is :class:`sairlib.interop.janus.UnifiedPolicy`'s, shared with Janus::

    from sairlib.interop.emu3 import Emu3Policy
    from sairlib.interop.janus import sft, grpo_step
    ep = Emu3Policy(model, tokenize=lambda s: tok.encode(s, add_special_tokens=False), detokenize=tok.decode,
                    boi_id=tok.convert_tokens_to_ids("<|image start|>"),
                    eoi_id=tok.convert_tokens_to_ids("<|image end|>"), image_size=64)
    s = ep.generate("draw a red circle .", seed=0, max_new_tokens=400)
    history = sft(ep, trajectories, steps=10)

Differences from Emu3's own generation prompt: the ``<|image token|>`` / ``"{h}*{w}"`` size header
and the end-of-frame token are not written (the grid size is fixed by ``image_size``); images are
encoded as single frames (the VQ-VAE repeats a still image over its temporal window).
Input images (understanding) are not handled, as for Janus.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .janus import UnifiedPolicy


class Emu3Policy(UnifiedPolicy):
    """An ``Emu3ForConditionalGeneration``, its tokenizer functions, begin/end-of-image ids and the
    image size in pixels (square; a multiple of the VQ-VAE's spatial factor)."""

    def __init__(self, model: Any, tokenize: Callable[[str], Sequence[int]], boi_id: int, eoi_id: int,
                 image_size: int, detokenize: Callable[[Sequence[int]], str] | None = None,
                 bos_id: int | None = None, eos_id: int | None = None, pad_id: int | None = None) -> None:
        super().__init__(model, tokenize, boi_id, eoi_id, detokenize, bos_id, eos_id, pad_id)
        vq = model.model.vqmodel
        f = int(vq.spatial_scale_factor)
        if not isinstance(image_size, int) or image_size < f or image_size % f:
            raise ValueError(f"image_size: must be a positive multiple of the VQ-VAE's factor {f}, got {image_size!r}")
        self.image_size, self.grid = image_size, image_size // f
        vm = model.vocabulary_mapping
        self.n_codes = int(vq.config.codebook_size)
        missing = [c for c in range(self.n_codes) if c not in vm.img2bpe]
        if missing:
            raise ValueError(f"vocabulary_map: no visual token for code {missing[0]}")
        if vm.eol_token_id is None:
            raise ValueError("vocabulary_map: no '<|extra_200|>' (end-of-line) token")
        self.code_ids = torch.tensor([vm.img2bpe[c] for c in range(self.n_codes)], dtype=torch.long)
        self.eol_id = int(vm.eol_token_id)
        self.tokens_per_image = self.grid * self.grid
        self.image_slots = ([None] * self.grid + [self.eol_id]) * self.grid

    @property
    def text_config(self) -> Any:
        return self.model.config.text_config

    def special_ids(self) -> set[int]:
        vm = self.model.vocabulary_mapping
        extra = {self.eol_id} | ({int(vm.image_token_id)} if vm.image_token_id is not None else set())
        return super().special_ids() | extra | {int(i) for i in self.code_ids}

    def backbone(self, x: torch.Tensor, cache: Any = None) -> torch.Tensor:
        return self._backbone_call(self.model.model.text_model, x, cache)

    def embed_text(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(ids)

    def embed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(self.code_ids[codes])

    def text_head(self, h: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(h)

    def image_head(self, h: torch.Tensor) -> torch.Tensor:
        head = self.model.lm_head
        return F.linear(h, head.weight[self.code_ids], None if head.bias is None else head.bias[self.code_ids])

    # ---------------------------------------------------------------- the model's own codec
    def encode_image(self, image: np.ndarray) -> torch.Tensor:
        """An RGB uint8 ``image_size`` x ``image_size`` image -> its ``grid * grid`` codes (row-major)."""
        arr = np.asarray(image)
        if arr.dtype != np.uint8 or arr.shape != (self.image_size, self.image_size, 3):
            raise ValueError(f"image: must be a {self.image_size}x{self.image_size}x3 uint8 array, "
                             f"got {arr.dtype} {arr.shape}")
        x = torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        with torch.no_grad():
            out = self.model.model.vqmodel.encode(x, torch.tensor([[self.image_size, self.image_size]]))
        return out.image_tokens[0].reshape(-1).long()

    def decode_image(self, codes: Any) -> np.ndarray:
        """``grid * grid`` codes -> an RGB uint8 image through the VQ-VAE decoder."""
        c = torch.as_tensor(codes).long().reshape(1, self.grid, self.grid)
        with torch.no_grad():
            px = self.model.model.vqmodel.decode(c)[0]
        return ((px.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()


__all__ = ["Emu3Policy"]
