"""Real unified models as the policy: Janus (``JanusForConditionalGeneration``) with its own image
codec, interleaved generation, the selective loss, SFT and a GRPO step.

Janus keeps image tokens out of the text vocabulary: images are drawn token by token through a
separate head (``model.model.generation_head``) and fed back through their own embeddings
(``prepare_embeddings_for_image_generation``); its VQ-VAE (``model.model.vqmodel``) is the codec.
:class:`UnifiedPolicy` holds everything that does not depend on how a model embeds and scores
image codes (the sequence layout, the constrained interleaved sampler, the masked loss, the
per-token log-probs GRPO needs); :class:`JanusPolicy` supplies Janus' pieces, and
:class:`sairlib.interop.emu3.Emu3Policy` Emu3's (image codes inside the text vocabulary).

The sequence of one trajectory (tags are written as text through the model's tokenizer, whose
``tokenize`` must not add special tokens)::

    <bos> request  [ <boi> codes <eoi> | <eval> text </eval> | <reflect> .. | <step> .. ]*  <eos>

Text positions are scored by the text head (``lm_head``), image codes by the image head; the loss
of a trajectory is the cross-entropy of each head on its own targets, only on the segments
:func:`sairlib.masking.loss_segments` trains (tags, ``<boi>``/``<eoi>`` and the final ``<eos>``
included, the prompt never), as in :mod:`sairlib.masking`.

    jp = JanusPolicy(model, tokenize=lambda s: tok.encode(s, add_special_tokens=False),
                     detokenize=tok.decode, boi_id=..., eoi_id=...)
    s = jp.generate("draw a red circle .", seed=0, max_new_tokens=200)   # InterleavedSample
    s.parsed.segments, s.images, s.logprobs, s.mode, s.trajectory("t0")
    out = jp.loss(trajectory)                                            # JanusLoss(loss, n_text, n_image)
    history = sft(jp, trajectories, steps=10, lr=1e-3, seed=0)           # AdamW on the masked loss
    res = grpo_step(jp, optimizer, ["draw a red circle ."], reward_fn, group_size=4, seed=0,
                    max_new_tokens=200)                                  # GRPOStepResult

Generation follows the layout whatever the weights (like :mod:`sairlib.generation`): between
segments only an opening tag, ``<boi>`` or ``<eos>`` may come; an image holds exactly
``tokens_per_image`` codes (never started unless the budget can finish it, its ``<eoi>`` and the
``<eos>``); a text segment closes with its own tag (forced at ``max_text_tokens`` or when the
budget only has room for the tag and ``<eos>``), so every sample ends with ``<eos>``. A position
where the constraint left one choice is *forced*: log-prob 0, no GRPO loss. No classifier-free
guidance in interleaved sampling, so that the recorded log-probs are the policy's own.

Scope: text-to-image requests (a trajectory with input images is an error naming it); Janus'
understanding encoder (input images) is not used here.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..generation import cache_arguments, sample_tokens
from ..masking import check_masking, loss_segments
from ..modes import DEFAULT_MAX_ROUNDS
from ..rewards import DEFAULT_REWARD, Rollout, complexity_penalty
from ..sequence import TEXT_TAGS, Parsed, Segment
from ..trajectory import Trajectory, TrajectorySegment

ANSWER_TEXT_KINDS: tuple[str, ...] = ("E", "R", "S")  # text segments an answer may hold (D is not one)
TEXT, IMAGE = "text", "image"
FREE_TEXT, ALL_CODES = "text", "codes"  # allowed-set names besides explicit id tuples


@dataclass(frozen=True)
class JanusLoss:
    """The mean cross-entropy over every trained target, and how many text and image targets it has."""

    loss: Any
    n_text: int
    n_image: int


@dataclass
class TrajectoryForward:
    """One trajectory's sequence and both heads' logits at every position but the last.

    ``ids``/``heads``/``trained`` describe each token (``heads[i]`` ``"text"`` or ``"image"``;
    image tokens are code indices). ``text_logits[p]`` and ``image_logits[p]`` predict token
    ``p + 1``; :meth:`UnifiedPolicy.masked_loss` uses the row of the target's head where
    ``trained[p + 1]``.
    """

    ids: list[int]
    heads: list[str]
    trained: list[bool]
    text_logits: torch.Tensor
    image_logits: torch.Tensor


@dataclass
class InterleavedSample:
    """One sampled answer: completion ids, per-position heads, log-probs and constraint, the parsed
    segments and the decoded images.

    ``ids`` holds text ids where ``heads`` says ``"text"`` and image code indices where it says
    ``"image"``; ``logprobs[i]`` is the log-prob of ``ids[i]`` under the temperature-scaled head
    renormalised over ``allowed[i]`` (0 where ``forced[i]``); ``spans`` gives each segment's
    ``(kind, start, end)`` in the completion.
    """

    instruction: str
    prompt_ids: list[int]
    ids: list[int]
    heads: list[str]
    allowed: list[Any]
    forced: list[bool]
    logprobs: list[float]
    spans: list[tuple[str, int, int]]
    parsed: Parsed
    images: list[np.ndarray]
    seed: int
    temperature: float
    codes: list[np.ndarray] = field(default_factory=list)

    @property
    def kinds(self) -> str:
        return "".join(s.kind for s in self.parsed.segments)

    @property
    def n_images(self) -> int:
        return len(self.images)

    def rollout(self, task: Any = None) -> Rollout:
        """The sample as :class:`sairlib.rewards.Rollout` (for the project's reward functions)."""
        return Rollout(task, self.parsed, list(self.images))

    @property
    def mode(self) -> str | None:
        """The mode the segments follow (the format reward's rule), or None."""
        return self.rollout().mode

    def trajectory(self, id: str, meta: dict[str, Any] | None = None) -> Trajectory:
        """A :class:`Trajectory` (``kept`` when the segments follow a mode, else ``discarded``)."""
        segs = [TrajectorySegment("G", image=im) for im in self.images]
        it = iter(segs)
        out = [next(it) if s.kind == "G" else TrajectorySegment(s.kind, text=s.text) for s in self.parsed.segments]
        mode = self.mode
        return Trajectory(id=id, instruction=self.instruction, segments=out, mode=mode, meta=dict(meta or {}),
                          status="kept" if mode else "discarded",
                          discard_reason=None if mode else f"format: segments {self.kinds!r} follow no mode",
                          rounds=max(0, self.kinds.count("R")) if mode == "reflection" else 0,
                          provenance={"sampler": "interleaved", "seed": self.seed})


class UnifiedPolicy:
    """The model-independent half of a unified policy (layout, sampler, masked loss, log-probs).

    Subclasses set ``tokens_per_image``, ``n_codes``, ``image_slots`` (per image position: ``None``
    for a code, or a fixed text id such as Emu3's end-of-line) and implement :meth:`backbone`,
    :meth:`embed_text`, :meth:`embed_codes`, :meth:`text_head`, :meth:`image_head`,
    :meth:`encode_image`, :meth:`decode_image` and :meth:`special_ids`.
    """

    tokens_per_image: int
    n_codes: int
    image_slots: list[int | None]

    def __init__(self, model: Any, tokenize: Callable[[str], Sequence[int]], boi_id: int, eoi_id: int,
                 detokenize: Callable[[Sequence[int]], str] | None = None, bos_id: int | None = None,
                 eos_id: int | None = None, pad_id: int | None = None) -> None:
        self.model, self.tokenize, self.detokenize = model, tokenize, detokenize
        self.boi_id, self.eoi_id = int(boi_id), int(eoi_id)
        tc = self.text_config
        self.bos_id = int(bos_id if bos_id is not None else _req(tc.bos_token_id, "bos_id"))
        self.eos_id = int(eos_id if eos_id is not None else _req(tc.eos_token_id, "eos_id"))
        self.pad_id = pad_id if pad_id is not None else tc.pad_token_id

    # ---------------------------------------------------------------- to implement
    @property
    def text_config(self) -> Any:
        raise NotImplementedError

    def backbone(self, x: torch.Tensor, cache: Any = None) -> torch.Tensor:
        """Hidden states ``[1, T, d]`` of the language model for input embeddings ``x`` ``[1, T, d]``."""
        raise NotImplementedError

    def embed_text(self, ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def embed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def text_head(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def image_head(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode_image(self, image: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def decode_image(self, codes: Any) -> np.ndarray:
        raise NotImplementedError

    def special_ids(self) -> set[int]:
        """Ids a text body may not hold (markers, and for Emu3 every image token)."""
        return {i for i in (self.bos_id, self.eos_id, self.pad_id, self.boi_id, self.eoi_id) if i is not None}

    # ---------------------------------------------------------------- shared helpers
    def _backbone_call(self, lm: Any, x: torch.Tensor, cache: Any) -> torch.Tensor:
        if cache is None:
            return lm(inputs_embeds=x, use_cache=False).last_hidden_state
        key = "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"
        return lm(inputs_embeds=x, use_cache=True, **{key: cache}).last_hidden_state

    @property
    def vocab_size(self) -> int:
        return int(self.model.lm_head.out_features)

    def prompt_ids(self, instruction: str) -> list[int]:
        return [self.bos_id] + list(self.tokenize(instruction))

    def tag_ids(self, kind: str) -> tuple[list[int], list[int]]:
        """Token ids of a text kind's opening and closing tags."""
        open_, close = TEXT_TAGS[kind]
        a, b = list(self.tokenize(open_)), list(self.tokenize(close))
        if not a or not b:
            raise ValueError(f"tokenize: the {kind} tags {open_!r}/{close!r} must tokenize to non-empty ids")
        return a, b

    def _text_mask(self) -> torch.Tensor:
        if getattr(self, "_text_mask_cache", None) is None:
            m = torch.ones(self.vocab_size, dtype=torch.bool)
            m[sorted(i for i in self.special_ids() if 0 <= i < self.vocab_size)] = False
            self._text_mask_cache = m
        return self._text_mask_cache

    def _embed_stream(self, ids: Sequence[int], heads: Sequence[str]) -> torch.Tensor:
        t = torch.tensor(list(ids), dtype=torch.long)
        img = torch.tensor([h == IMAGE for h in heads])
        et = self.embed_text(torch.where(img, 0, t))
        if not bool(img.any()):
            return et
        ei = self.embed_codes(torch.where(img, t, 0))
        return torch.where(img[:, None], ei, et)

    def _image_items(self, codes: torch.Tensor, where: str) -> tuple[list[int], list[str]]:
        c = torch.as_tensor(codes).reshape(-1)
        if c.numel() != self.tokens_per_image:
            raise ValueError(f"{where}: an image has {c.numel()} codes, expected {self.tokens_per_image}")
        if c.numel() and (int(c.min()) < 0 or int(c.max()) >= self.n_codes):
            raise ValueError(f"{where}: image codes must be in 0..{self.n_codes - 1}")
        it = iter(int(x) for x in c)
        ids, heads = [self.boi_id], [TEXT]
        for slot in self.image_slots:
            ids.append(next(it) if slot is None else slot)
            heads.append(IMAGE if slot is None else TEXT)
        return ids + [self.eoi_id], heads + [TEXT]

    # ---------------------------------------------------------------- trajectories and the masked loss
    def stream(self, t: Any, masking: str = "selective", codes: Sequence[Any] | None = None,
               max_rounds: int | None = None) -> tuple[list[int], list[str], list[bool]]:
        """Ids, heads and trained flags of trajectory ``t``'s whole sequence (see the module layout)."""
        if t.input_images:
            raise ValueError(f"trajectory {t.id}: input_images: not supported by the {type(self).__name__} adapter")
        if t.mode is None:
            raise ValueError(f"trajectory {t.id}: mode: missing")
        rounds = max_rounds if max_rounds is not None else max(DEFAULT_MAX_ROUNDS, int(t.rounds or 0))
        on = loss_segments(t.kinds, t.mode, masking, rounds, where=f"trajectory {t.id}")
        codes = list(codes) if codes is not None else [self.encode_image(im) for im in t.images]
        if len(codes) != t.n_images:
            raise ValueError(f"trajectory {t.id}: codes: {len(codes)} given for {t.n_images} images")
        ids = self.prompt_ids(t.instruction)
        heads, trained = [TEXT] * len(ids), [False] * len(ids)
        it = iter(codes)
        for i, (seg, on_) in enumerate(zip(t.segments, on)):
            if seg.kind == "G":
                si, sh = self._image_items(next(it), f"trajectory {t.id}: segments[{i}]")
            else:
                a, b = self.tag_ids(seg.kind)
                si = a + list(self.tokenize(seg.text or "")) + b
                sh = [TEXT] * len(si)
            ids += si
            heads += sh
            trained += [on_] * len(si)
        return ids + [self.eos_id], heads + [TEXT], trained + [True]

    def forward(self, t: Any, masking: str = "selective", codes: Sequence[Any] | None = None) -> TrajectoryForward:
        """Both heads' logits over trajectory ``t`` (with gradients; see :class:`TrajectoryForward`)."""
        ids, heads, trained = self.stream(t, masking, codes)
        h = self.backbone(self._embed_stream(ids, heads)[None])[0, :-1]
        return TrajectoryForward(ids, heads, trained, self.text_head(h), self.image_head(h))

    @staticmethod
    def masked_loss(fw: TrajectoryForward, where: str = "trajectory") -> JanusLoss:
        """Mean cross-entropy of each head on its trained targets (the sum over both heads / their count)."""
        losses, n = [], {TEXT: 0, IMAGE: 0}
        for head, logits in ((TEXT, fw.text_logits), (IMAGE, fw.image_logits)):
            pos = [p for p in range(len(fw.ids) - 1) if fw.heads[p + 1] == head and fw.trained[p + 1]]
            n[head] = len(pos)
            if pos:
                y = torch.tensor([fw.ids[p + 1] for p in pos])
                losses.append(F.cross_entropy(logits[pos].float(), y, reduction="sum"))
        total = n[TEXT] + n[IMAGE]
        if not total:
            raise ValueError(f"{where}: no segment carries loss")
        return JanusLoss(torch.stack(losses).sum() / total, n[TEXT], n[IMAGE])

    def loss(self, t: Any, masking: str = "selective", codes: Sequence[Any] | None = None) -> JanusLoss:
        """The masked loss of trajectory ``t`` (images encoded with :meth:`encode_image` unless ``codes``)."""
        return self.masked_loss(self.forward(t, masking, codes), where=f"trajectory {t.id}")

    # ---------------------------------------------------------------- the constrained interleaved sampler
    def _grammar(self) -> dict[str, Any]:
        if getattr(self, "_grammar_cache", None) is None:
            tags = {k: self.tag_ids(k) for k in ANSWER_TEXT_KINDS}
            for a in ANSWER_TEXT_KINDS:
                for b in ANSWER_TEXT_KINDS:
                    oa, ob = tags[a][0], tags[b][0]
                    if a != b and ob[:len(oa)] == oa:
                        raise ValueError(f"tokenize: the {a} opening tag's ids are a prefix of the {b} tag's")
                    if set(oa + tags[a][1]) & self.special_ids():
                        raise ValueError(f"tokenize: the {a} tags tokenize to a marker id")
            self._grammar_cache = tags
        return self._grammar_cache

    def _next(self, st: dict[str, Any], left: int, max_text: int) -> tuple[str, Any]:
        """(head, allowed) for the next token in state ``st`` with ``left`` tokens of budget."""
        tags = self._grammar()
        where = st["where"]
        if where == "out":
            pre = st["prefix"]
            ok: set[int] = set()
            for k, (o, c) in tags.items():
                if o[:len(pre)] == pre and len(o) > len(pre) and left >= len(o) - len(pre) + 1 + len(c) + 1:
                    ok.add(o[len(pre)])
            if not pre:
                if left >= len(self.image_slots) + 3:  # <boi> slots <eoi> <eos>
                    ok.add(self.boi_id)
                ok.add(self.eos_id)
            return TEXT, tuple(sorted(ok))
        if where == "img":
            i = st["slot"]
            if i == len(self.image_slots):
                return TEXT, (self.eoi_id,)
            slot = self.image_slots[i]
            return (IMAGE, ALL_CODES) if slot is None else (TEXT, (slot,))
        # inside a text segment
        close = tags[st["kind"]][1]
        if st["closing"] is not None:
            return TEXT, (close[st["closing"]],)
        if left <= len(close) + 1 or st["body"] >= max_text:
            st["closing"] = 0
            return TEXT, (close[0],)
        return TEXT, FREE_TEXT

    def _advance(self, st: dict[str, Any], tok: int, ids: list[int], spans: list) -> dict[str, Any]:
        tags = self._grammar()
        pos = len(ids) - 1  # ids already holds tok
        where = st["where"]
        if where == "out":
            if tok == self.eos_id:
                return {"where": "done"}
            if tok == self.boi_id:
                return {"where": "img", "slot": 0, "start": pos}
            pre = st["prefix"] + [tok]
            for k, (o, _) in tags.items():
                if o == pre:
                    return {"where": "text", "kind": k, "start": pos - len(o) + 1, "body": 0, "closing": None}
            return {"where": "out", "prefix": pre}
        if where == "img":
            if st["slot"] == len(self.image_slots):
                spans.append(("G", st["start"], pos + 1))
                return {"where": "out", "prefix": []}
            return {**st, "slot": st["slot"] + 1}
        close = tags[st["kind"]][1]
        if st["closing"] is not None:
            if st["closing"] + 1 == len(close):
                spans.append((st["kind"], st["start"], pos + 1))
                return {"where": "out", "prefix": []}
            return {**st, "closing": st["closing"] + 1}
        st = {**st, "body": st["body"] + 1}
        if ids[-len(close):] == close and pos + 1 - st["start"] >= len(tags[st["kind"]][0]) + len(close):
            spans.append((st["kind"], st["start"], pos + 1))
            return {"where": "out", "prefix": []}
        return st

    def _mask(self, head: str, allowed: Any) -> torch.Tensor:
        if head == IMAGE:
            return torch.ones(self.n_codes, dtype=torch.bool)
        if allowed == FREE_TEXT:
            return self._text_mask()
        m = torch.zeros(self.vocab_size, dtype=torch.bool)
        m[list(allowed)] = True
        return m

    def _new_cache(self) -> Any:
        from transformers import DynamicCache

        return DynamicCache(config=self.text_config)

    @torch.no_grad()
    def generate(self, instruction: str, seed: int, max_new_tokens: int, temperature: float = 1.0, top_k: int = 0,
                 max_text_tokens: int = 32) -> InterleavedSample:
        """Sample one interleaved answer to ``instruction`` (KV cache, one token per step; seeded).

        ``max_new_tokens`` bounds the completion (``<eos>`` included); ``temperature`` 0 is greedy
        (log-probs then at temperature 1); ``max_text_tokens`` bounds each text segment's words.
        """
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens: must be a positive integer, got {max_new_tokens!r}")
        if not isinstance(max_text_tokens, int) or max_text_tokens < 1:
            raise ValueError(f"max_text_tokens: must be a positive integer, got {max_text_tokens!r}")
        if not temperature >= 0:
            raise ValueError(f"temperature: must be >= 0, got {temperature!r}")
        if self.detokenize is None:
            raise ValueError("detokenize: needed to read generated text segments")
        gen = torch.Generator().manual_seed(int(seed))
        temp = float(temperature) if temperature > 0 else 1.0
        prompt = self.prompt_ids(instruction)
        cache = self._new_cache()
        h = self.backbone(self.embed_text(torch.tensor(prompt))[None], cache)[0, -1]
        ids: list[int] = []
        heads: list[str] = []
        allowed_l: list[Any] = []
        forced: list[bool] = []
        lps: list[float] = []
        spans: list[tuple[str, int, int]] = []
        st: dict[str, Any] = {"where": "out", "prefix": []}
        while st["where"] != "done":
            head, allowed = self._next(st, max_new_tokens - len(ids), max_text_tokens)
            if isinstance(allowed, tuple) and len(allowed) == 1:
                tok, lp, f = allowed[0], 0.0, True
            else:
                scores = (self.image_head(h) if head == IMAGE else self.text_head(h)).float()
                mask = self._mask(head, allowed)
                tok = int(sample_tokens(scores[None], mask[None], temperature=float(temperature), top_k=top_k,
                                        generator=gen)[0])
                lp = float((scores / temp).masked_fill(~mask, float("-inf")).log_softmax(-1)[tok])
                f = False
            ids.append(tok)
            heads.append(head)
            allowed_l.append(allowed)
            forced.append(f)
            lps.append(lp)
            st = self._advance(st, tok, ids, spans)
            if st["where"] == "done":
                break
            t = torch.tensor([tok])
            h = self.backbone((self.embed_codes(t) if head == IMAGE else self.embed_text(t))[None], cache)[0, -1]
        segs, codes = [], []
        for kind, a, b in spans:
            if kind == "G":
                c = [ids[i] for i in range(a, b) if heads[i] == IMAGE]
                codes.append(np.asarray(c, dtype=np.int64))
                segs.append(Segment("G", codes=c))
            else:
                o, c = self._grammar()[kind]
                segs.append(Segment(kind, text=self.detokenize(ids[a + len(o):b - len(c)])))
        images = [self.decode_image(torch.as_tensor(c)) for c in codes]
        return InterleavedSample(instruction, prompt, ids, heads, allowed_l, forced, lps, spans,
                                 Parsed(segs, ok=True, ended=True), images, int(seed), temp, codes)

    def completion_logprobs(self, s: InterleavedSample) -> torch.Tensor:
        """Log-probs ``[len(s.ids)]`` of the sample's tokens under the current weights (with gradients),
        at the sample's temperature and renormalised over each position's allowed set (0 where forced)."""
        ids = s.prompt_ids + s.ids
        heads = [TEXT] * len(s.prompt_ids) + s.heads
        h = self.backbone(self._embed_stream(ids, heads)[None])[0, len(s.prompt_ids) - 1:-1]
        out = torch.zeros(len(s.ids))
        for head, proj in ((TEXT, self.text_head), (IMAGE, self.image_head)):
            pos = [i for i in range(len(s.ids)) if s.heads[i] == head and not s.forced[i]]
            if not pos:
                continue
            logits = proj(h[pos]).float() / s.temperature
            mask = torch.stack([self._mask(head, s.allowed[i]) for i in pos])
            lp = logits.masked_fill(~mask, float("-inf")).log_softmax(-1)
            y = torch.tensor([s.ids[i] for i in pos])
            out = out.index_put((torch.tensor(pos),), lp.gather(1, y[:, None])[:, 0])
        return out


class JanusPolicy(UnifiedPolicy):
    """A ``JanusForConditionalGeneration``, a text tokenizer (and detokenizer, for generation) and the
    begin/end-of-image token ids of its vocabulary."""

    def __init__(self, model: Any, tokenize: Callable[[str], Sequence[int]], boi_id: int, eoi_id: int,
                 detokenize: Callable[[Sequence[int]], str] | None = None, bos_id: int | None = None,
                 eos_id: int | None = None, pad_id: int | None = None) -> None:
        super().__init__(model, tokenize, boi_id, eoi_id, detokenize, bos_id, eos_id, pad_id)
        self.tokens_per_image = int(model.config.vision_config.num_image_tokens)
        self.n_codes = int(model.model.generation_head.vision_head.out_features)
        self.image_slots = [None] * self.tokens_per_image

    @property
    def text_config(self) -> Any:
        return self.model.config.text_config

    def special_ids(self) -> set[int]:
        extra = getattr(self.model.config, "image_token_id", None)
        return super().special_ids() | ({int(extra)} if extra is not None else set())

    def backbone(self, x: torch.Tensor, cache: Any = None) -> torch.Tensor:
        return self._backbone_call(self.model.model.language_model, x, cache)

    def embed_text(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(ids)

    def embed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        return self.model.prepare_embeddings_for_image_generation(codes[None])[0]

    def text_head(self, h: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(h)

    def image_head(self, h: torch.Tensor) -> torch.Tensor:
        return self.model.model.generation_head(h)

    # ---------------------------------------------------------------- the model's own codec
    def encode_image(self, image: np.ndarray) -> torch.Tensor:
        """An RGB uint8 image (at the VQ-VAE's resolution) -> its ``tokens_per_image`` codes."""
        arr = np.asarray(image)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"image: must be an HxWx3 uint8 array, got {arr.dtype} {arr.shape}")
        x = torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        with torch.no_grad():
            codes = self.model.model.vqmodel.encode(x).image_tokens
        return codes.reshape(-1)

    def decode_image(self, codes: Any) -> np.ndarray:
        """``tokens_per_image`` codes -> an RGB uint8 image through the VQ-VAE decoder."""
        with torch.no_grad():
            px = self.model.decode_image_tokens(torch.as_tensor(codes).reshape(1, -1))[0]
        return ((px.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()

    def draw(self, prompt_ids: Sequence[int], seed: int, guidance_scale: float = 2.0, do_sample: bool = True) -> Any:
        """Image codes for a prompt (ending with ``boi_id``) through Janus' image generation mode (with CFG)."""
        from transformers import GenerationConfig, StaticCache

        ids = torch.tensor([list(prompt_ids)])
        cfg = self.model.generation_config
        gc = GenerationConfig(max_new_tokens=self.tokens_per_image, do_sample=do_sample, guidance_scale=guidance_scale,
                              bos_token_id=cfg.bos_token_id, pad_token_id=cfg.pad_token_id,
                              generation_kwargs={"boi_token_id": self.boi_id})
        torch.manual_seed(seed)
        # Janus' image generation doubles the batch (conditional + unconditional rows) and, given no
        # cache, builds a static one through a private helper whose signature transformers 5.17 itself
        # calls wrongly (a TypeError); a cache passed in is used as is, on 5.17 as on later releases.
        cache = StaticCache(config=self.model.config.get_text_config(),
                            max_cache_len=len(ids[0]) + self.tokens_per_image)
        key, _ = cache_arguments(self.model)  # "past_key_values" on 5.17, "cache" later
        return self.model.generate(ids, attention_mask=torch.ones_like(ids), generation_mode="image",
                                   generation_config=gc, **{key: cache})[0]


# -------------------------------------------------------------------- SFT
def sft(policy: UnifiedPolicy, trajectories: Sequence[Trajectory], steps: int, lr: float = 1e-3, seed: int = 0,
        masking: str = "selective", batch_size: int | None = None, codes: Sequence[Sequence[Any]] | None = None,
        optimizer: torch.optim.Optimizer | None = None, weight_decay: float = 0.0) -> list[float]:
    """``steps`` AdamW steps on the masked loss of ``trajectories`` (kept ones); returns each step's loss.

    Each step averages :meth:`UnifiedPolicy.loss` over ``batch_size`` trajectories (default: all),
    taken in a seeded shuffled order. Images are encoded once with the policy's codec unless
    ``codes`` (one list of code arrays per trajectory) is given. Run::

        history = sft(JanusPolicy(model, tok_fn, boi_id=b, eoi_id=e), trajectories, steps=100, lr=1e-4)
    """
    check_masking(masking)
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: must be a positive integer, got {steps!r}")
    ts = list(trajectories)
    if not ts:
        raise ValueError("trajectories: empty")
    bad = [t.id for t in ts if t.status != "kept"]
    if bad:
        raise ValueError(f"trajectories: {bad[0]!r} has status other than 'kept'")
    bs = batch_size or len(ts)
    if not isinstance(bs, int) or bs < 1:
        raise ValueError(f"batch_size: must be a positive integer, got {batch_size!r}")
    if codes is not None and len(codes) != len(ts):
        raise ValueError(f"codes: need one list per trajectory ({len(ts)}), got {len(codes)}")
    cs = list(codes) if codes is not None else [[policy.encode_image(im) for im in t.images] for t in ts]
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = optimizer or torch.optim.AdamW(policy.model.parameters(), lr=lr, weight_decay=weight_decay)
    was_training = policy.model.training
    policy.model.train()
    order: list[int] = []
    history: list[float] = []
    try:
        for _ in range(steps):
            batch = []
            while len(batch) < bs:
                if not order:
                    order = list(rng.permutation(len(ts)))
                batch.append(order.pop(0))
            opt.zero_grad()
            loss = torch.stack([policy.loss(ts[i], masking, cs[i]).loss for i in batch]).mean()
            loss.backward()
            opt.step()
            history.append(float(loss.detach()))
    finally:
        policy.model.train(was_training)
    return history


# -------------------------------------------------------------------- GRPO
def group_advantages(rewards: Sequence[float] | np.ndarray, group_size: int) -> np.ndarray:
    """``(r - mean) / (std + 1e-4)`` within each consecutive group of ``group_size`` rewards (the
    unbiased std, as TRL's ``scale_rewards="group"`` which :mod:`sairlib.grpo` trains with)."""
    r = np.asarray(rewards, dtype=np.float64)
    if not isinstance(group_size, int) or group_size < 2 or r.ndim != 1 or len(r) % group_size:
        raise ValueError(f"group_size: must be an integer >= 2 dividing {len(r)}, got {group_size!r}")
    g = r.reshape(-1, group_size)
    return ((g - g.mean(1, keepdims=True)) / (g.std(1, ddof=1, keepdims=True) + 1e-4)).reshape(-1)


@dataclass
class GRPOStepResult:
    """One GRPO step: its loss, raw rewards, penalised rewards, advantages and the samples."""

    loss: float
    rewards: np.ndarray
    penalised: np.ndarray
    advantages: np.ndarray
    samples: list[InterleavedSample] = field(default_factory=list, repr=False)


def grpo_update(policy: UnifiedPolicy, optimizer: torch.optim.Optimizer, samples: Sequence[InterleavedSample],
                rewards: Sequence[float], group_size: int, clip_epsilon: float = 0.2,
                epsilon: float = DEFAULT_REWARD["epsilon"], penalty: bool = True) -> GRPOStepResult:
    """One optimiser step of the clipped policy-gradient loss on sampled groups (task-major order).

    Rewards go through :func:`sairlib.rewards.complexity_penalty` (when ``penalty``), then
    :func:`group_advantages`; the loss is ``-min(ρA, clip(ρ, 1±clip_epsilon)A)`` over every
    unforced sampled token, text and image alike, averaged over all of them (TRL's ``dapo``
    normalisation, as :mod:`sairlib.grpo`); ρ is the ratio to the log-probs recorded at sampling.
    """
    samples = list(samples)
    r = np.asarray(rewards, dtype=np.float64)
    if r.shape != (len(samples),):
        raise ValueError(f"rewards: need one per sample ({len(samples)}), got shape {r.shape}")
    if not np.all(np.isfinite(r)):
        raise ValueError("rewards: must be finite")
    if not clip_epsilon > 0:
        raise ValueError(f"clip_epsilon: must be > 0, got {clip_epsilon!r}")
    pen = complexity_penalty(r, [s.n_images for s in samples], group_size, epsilon) if penalty else r.copy()
    adv = group_advantages(pen, group_size)
    n_tok = sum(1 for s in samples for f in s.forced if not f)
    was_training = policy.model.training
    policy.model.train()
    optimizer.zero_grad()
    total = 0.0
    try:
        for s, a in zip(samples, adv):
            keep = torch.tensor([not f for f in s.forced])
            if not bool(keep.any()):
                continue
            new = policy.completion_logprobs(s)[keep]
            ratio = torch.exp(new - torch.tensor(s.logprobs)[keep])
            a_t = torch.tensor(float(a))
            per_tok = -torch.minimum(ratio * a_t, ratio.clamp(1 - clip_epsilon, 1 + clip_epsilon) * a_t)
            loss = per_tok.sum() / max(n_tok, 1)
            loss.backward()
            total += float(loss.detach())
        optimizer.step()
    finally:
        policy.model.train(was_training)
    return GRPOStepResult(total, r, pen, adv, samples)


def sample_groups(policy: UnifiedPolicy, instructions: Sequence[str], group_size: int, seed: int,
                  max_new_tokens: int, temperature: float = 1.0, top_k: int = 0,
                  max_text_tokens: int = 32) -> list[InterleavedSample]:
    """``group_size`` samples per instruction (task-major), sample ``g`` of request ``i`` seeded by
    ``(seed, i, g)``, so a group does not depend on the others."""
    out = []
    for i, ins in enumerate(instructions):
        for g in range(group_size):
            s = int(np.random.SeedSequence([int(seed), i, g]).generate_state(1)[0])
            out.append(policy.generate(ins, s, max_new_tokens, temperature, top_k, max_text_tokens))
    return out


def grpo_step(policy: UnifiedPolicy, optimizer: torch.optim.Optimizer, instructions: Sequence[str],
              reward_fn: Callable[[InterleavedSample], float], group_size: int = 4, seed: int = 0,
              max_new_tokens: int = 256, temperature: float = 1.0, top_k: int = 0, max_text_tokens: int = 32,
              clip_epsilon: float = 0.2, epsilon: float = DEFAULT_REWARD["epsilon"],
              penalty: bool = True) -> GRPOStepResult:
    """Sample ``group_size`` answers per instruction, score each with ``reward_fn`` (>= 0 when the
    penalty is on, e.g. ``lambda s: format_reward(s.rollout(task))``) and take one :func:`grpo_update`."""
    if not isinstance(group_size, int) or group_size < 2:
        raise ValueError(f"group_size: GRPO needs at least 2 samples per request, got {group_size!r}")
    was_training = policy.model.training
    policy.model.eval()
    try:
        samples = sample_groups(policy, instructions, group_size, seed, max_new_tokens, temperature, top_k,
                                max_text_tokens)
    finally:
        policy.model.train(was_training)
    rewards = [float(reward_fn(s)) for s in samples]
    return grpo_update(policy, optimizer, samples, rewards, group_size, clip_epsilon, epsilon, penalty)


def _req(value: Any, name: str) -> Any:
    if value is None:
        raise ValueError(f"{name}: not given and not in the model's text config")
    return value[0] if isinstance(value, (list, tuple)) else value


__all__ = ["JanusLoss", "TrajectoryForward", "InterleavedSample", "UnifiedPolicy", "JanusPolicy", "sft",
           "group_advantages", "GRPOStepResult", "grpo_update", "sample_groups", "grpo_step"]
