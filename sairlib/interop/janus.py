"""Janus (``JanusForConditionalGeneration``) as a unified policy: its own image codec, image-token
generation, and the selective loss over an interleaved trajectory.

Janus keeps image tokens out of the text vocabulary: images are drawn token by token through a
separate head (``model.model.generation_head``) and fed back through their own embeddings
(``prepare_embeddings_for_image_generation``), and its VQ-VAE (``model.model.vqmodel``) is the
codec. A trajectory is therefore embedded segment by segment, and its loss is the cross-entropy
of the text head on text targets plus that of the image head on image-code targets, each only
where ``sairlib.masking.loss_segments`` says the segment carries loss.

    jp = JanusPolicy(model, tokenize=tokenizer.encode, boi_id=..., eoi_id=...)
    codes = jp.draw(prompt_ids, seed=0)                 # image tokens from the model's own head
    image = jp.decode_image(codes)                      # RGB uint8 through the VQ-VAE decoder
    out = jp.loss(trajectory)                           # JanusLoss(loss, n_text, n_image)

Scope: text-to-image trajectories (a request without input images); understanding input images
would go through Janus' vision encoder and are not handled here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..masking import loss_segments
from ..sequence import TEXT_TAGS


@dataclass(frozen=True)
class JanusLoss:
    """The mean cross-entropy over every trained target, and how many text and image targets it has."""

    loss: Any
    n_text: int
    n_image: int


class JanusPolicy:
    """A Janus model, a text tokenizer and the begin/end-of-image token ids of its vocabulary."""

    def __init__(self, model: Any, tokenize: Callable[[str], Sequence[int]], boi_id: int, eoi_id: int) -> None:
        self.model, self.tokenize, self.boi_id, self.eoi_id = model, tokenize, int(boi_id), int(eoi_id)
        self.tokens_per_image = int(model.config.vision_config.num_image_tokens)

    # ---------------------------------------------------------------- the model's own codec
    def encode_image(self, image: np.ndarray) -> Any:
        """An RGB uint8 image (at the VQ-VAE's resolution) -> its ``tokens_per_image`` codes."""
        import torch

        arr = np.asarray(image)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"image: must be an HxWx3 uint8 array, got {arr.dtype} {arr.shape}")
        x = torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        with torch.no_grad():
            codes = self.model.model.vqmodel.encode(x).image_tokens
        return codes.reshape(-1)

    def decode_image(self, codes: Any) -> np.ndarray:
        import torch

        with torch.no_grad():
            px = self.model.decode_image_tokens(torch.as_tensor(codes).reshape(1, -1))[0]
        return ((px.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()

    def draw(self, prompt_ids: Sequence[int], seed: int, guidance_scale: float = 2.0, do_sample: bool = True) -> Any:
        """Image codes for a prompt (ending with ``boi_id``) through Janus' image generation mode."""
        import torch
        from transformers import GenerationConfig

        ids = torch.tensor([list(prompt_ids)])
        cfg = self.model.generation_config
        gc = GenerationConfig(max_new_tokens=self.tokens_per_image, do_sample=do_sample, guidance_scale=guidance_scale,
                              bos_token_id=cfg.bos_token_id, pad_token_id=cfg.pad_token_id,
                              generation_kwargs={"boi_token_id": self.boi_id})
        torch.manual_seed(seed)
        return self.model.generate(ids, attention_mask=torch.ones_like(ids), generation_mode="image",
                                   generation_config=gc)[0]

    # ---------------------------------------------------------------- trajectories
    def _text_ids(self, kind: str, text: str) -> list[int]:
        open_, close = TEXT_TAGS[kind]
        return list(self.tokenize(f"{open_}{text}{close}"))

    def loss(self, t: Any, masking: str = "selective", codes: Sequence[Any] | None = None) -> JanusLoss:
        """The masked loss of trajectory ``t`` (images encoded with :meth:`encode_image` unless ``codes``)."""
        import torch

        if t.input_images:
            raise ValueError(f"trajectory {t.id}: input images are not supported by the Janus adapter")
        on = loss_segments(t.kinds, t.mode, masking, where=f"trajectory {t.id}")
        codes = list(codes) if codes is not None else [self.encode_image(im) for im in t.images]
        emb = self.model.get_input_embeddings()
        pieces: list[Any] = []
        targets: list[tuple[str, int, bool]] = []  # (head, target id, trained) for every position after the first

        def text(ids: Sequence[int], trained: bool) -> None:
            pieces.append(emb(torch.tensor(list(ids))))
            targets.extend(("text", i, trained) for i in ids)

        text(self.tokenize(t.instruction), False)
        it = iter(codes)
        for seg, trained in zip(t.segments, on):
            if seg.kind == "G":
                c = torch.as_tensor(next(it)).reshape(-1)
                if c.numel() != self.tokens_per_image:
                    raise ValueError(f"trajectory {t.id}: an image has {c.numel()} codes, "
                                     f"expected {self.tokens_per_image}")
                text([self.boi_id], trained)
                pieces.append(self.model.prepare_embeddings_for_image_generation(c[None])[0])
                targets.extend(("image", int(i), trained) for i in c)
                text([self.eoi_id], trained)
            else:
                text(self._text_ids(seg.kind, seg.text or ""), trained)
        x = torch.cat(pieces)[None]
        h = self.model.model.language_model(inputs_embeds=x).last_hidden_state[0, :-1]
        nxt = targets[1:]
        losses, n = [], {"text": 0, "image": 0}
        for head, proj in (("text", self.model.lm_head), ("image", self.model.model.generation_head)):
            pos = [i for i, (k, _, tr) in enumerate(nxt) if k == head and tr]
            n[head] = len(pos)
            if pos:
                logits = proj(h[pos])
                y = torch.tensor([nxt[i][1] for i in pos])
                losses.append(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
        total = n["text"] + n["image"]
        if not total:
            raise ValueError(f"trajectory {t.id}: no segment carries loss")
        return JanusLoss(torch.stack(losses).sum() / total, n["text"], n["image"])
