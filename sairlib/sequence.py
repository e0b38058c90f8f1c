"""How requests and interleaved answers become token ids, and how generated ids are read back.

One layout for every stage (pretraining, the pipeline's trajectories, masking, rollouts)::

    <bos> <user> request words [<boi> codes <eoi>]* <assistant> segment* <eos>

A segment is an image ``G`` (``<boi>`` + exactly ``tokens_per_image`` codes + ``<eoi>``) or a
text segment in its tags: ``E`` ``<eval> .. </eval>``, ``R`` ``<reflect> .. </reflect>``,
``S`` ``<step> .. </step>``, ``D`` ``<describe> .. </describe>`` (scene descriptions).

    layout = Layout.from_tokenizer(tok, tokens_per_image=16)
    ids = layout.prompt(x.instruction, [codec.encode(im) for im in x.images])
    ids += layout.segments([Segment("G", codes=codes), Segment("E", text="instruction 5 ...")])
    parsed = layout.parse(completion_ids)   # segments, read from ids (never from decoded text)
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from functools import cached_property
from itertools import repeat
from typing import Any, Sequence

import numpy as np

from .tokenizers import encode_strict, image_code_range, special_id

TEXT_TAGS: dict[str, tuple[str, str]] = {
    "E": ("<eval>", "</eval>"),
    "R": ("<reflect>", "</reflect>"),
    "S": ("<step>", "</step>"),
    "D": ("<describe>", "</describe>"),
}
KINDS: tuple[str, ...] = ("G",) + tuple(TEXT_TAGS)


@dataclass(frozen=True)
class Segment:
    """One step of an answer: an image (``codes``) or a text."""

    kind: str
    text: str | None = None
    codes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind: must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "G":
            if self.codes is None:
                raise ValueError("codes: an image segment needs its image codes")
            object.__setattr__(self, "codes", tuple(int(c) for c in self.codes))
        elif not isinstance(self.text, str):
            raise ValueError(f"text: a {self.kind} segment needs text")


@dataclass
class Parsed:
    """Segments read back from generated ids, and whether the ids were well formed."""

    segments: list[Segment] = field(default_factory=list)
    ok: bool = True
    error: str | None = None
    ended: bool = False  # an <eos> was reached


@dataclass(frozen=True)
class Layout:
    """Token ids of the layout's markers, the image code block, and the image length."""

    pad: int
    bos: int
    eos: int
    boi: int
    eoi: int
    user: int
    assistant: int
    open_tag: dict[str, int]
    close_tag: dict[str, int]
    code_lo: int
    code_hi: int
    tokens_per_image: int
    tokenizer: Any = field(repr=False, compare=False, default=None)

    @staticmethod
    def from_tokenizer(tok: Any, tokens_per_image: int) -> "Layout":
        lo, hi = image_code_range(tok)
        sid = lambda t: special_id(tok, t)
        return Layout(sid("<pad>"), sid("<bos>"), sid("<eos>"), sid("<boi>"), sid("<eoi>"), sid("<user>"),
                      sid("<assistant>"), {k: sid(a) for k, (a, _) in TEXT_TAGS.items()},
                      {k: sid(b) for k, (_, b) in TEXT_TAGS.items()}, lo, hi, int(tokens_per_image), tok)

    @property
    def n_codes(self) -> int:
        return self.code_hi - self.code_lo

    # ------------------------------------------------------------- writing
    def image(self, codes: Sequence[int] | np.ndarray) -> list[int]:
        codes = np.asarray(codes).reshape(-1)
        if len(codes) != self.tokens_per_image:
            raise ValueError(f"codes: an image has {self.tokens_per_image} codes, got {len(codes)}")
        if len(codes) and (codes.min() < 0 or codes.max() >= self.n_codes):
            raise ValueError(f"codes: must be in 0..{self.n_codes - 1}")
        return [self.boi] + [self.code_lo + int(c) for c in codes] + [self.eoi]

    def text(self, text: str) -> list[int]:
        return encode_strict(self.tokenizer, text)

    def prompt(self, instruction: str, image_codes: Sequence[Sequence[int]] = ()) -> list[int]:
        ids = [self.bos, self.user] + self.text(instruction)
        for codes in image_codes:
            ids += self.image(codes)
        return ids + [self.assistant]

    def segment(self, seg: Segment) -> list[int]:
        if seg.kind == "G":
            return self.image(seg.codes)
        return [self.open_tag[seg.kind]] + self.text(seg.text) + [self.close_tag[seg.kind]]

    def segments(self, segs: Sequence[Segment], end: bool = True) -> list[int]:
        ids = [t for s in segs for t in self.segment(s)]
        return ids + [self.eos] if end else ids

    # ------------------------------------------------------------- reading
    def parse(self, ids: Sequence[int]) -> Parsed:
        """Read segments from completion ids (up to <eos>; padding after it is ignored)."""
        out = Parsed()
        open_kind = self._open_kind
        i, ids = 0, list(map(int, ids))
        lo, hi, tpi = self.code_lo, self.code_hi, self.tokens_per_image
        while i < len(ids):
            t = ids[i]
            if t == self.eos:
                out.ended = True
                return out
            if t == self.boi:
                j = i + 1 + tpi
                body = ids[i + 1:j]
                if len(body) < tpi or (body and (min(body) < lo or max(body) >= hi)):
                    return _bad(out, f"image at {i}: needs {tpi} image codes")
                if j >= len(ids) or ids[j] != self.eoi:
                    return _bad(out, f"image at {i}: no <eoi> after {tpi} codes")
                out.segments.append(Segment("G", codes=list(map(operator.sub, body, repeat(lo, tpi)))))
                i = j + 1
                continue
            if t in open_kind:
                kind = open_kind[t]
                try:
                    j = ids.index(self.close_tag[kind], i + 1)
                except ValueError:
                    return _bad(out, f"{kind} segment at {i}: not closed")
                body = ids[i + 1:j]
                if not self._marker_or_code.isdisjoint(body):
                    return _bad(out, f"{kind} segment at {i}: holds a tag or image code")
                out.segments.append(Segment(kind, text=self.tokenizer.decode(body)))
                i = j + 1
                continue
            if t == self.pad:
                i += 1
                continue
            return _bad(out, f"token {i}: {t} outside any segment")
        return out

    @cached_property
    def _open_kind(self) -> dict[int, str]:
        return {v: k for k, v in self.open_tag.items()}

    @cached_property
    def _marker_or_code(self) -> frozenset[int]:
        """Tokens a text segment may not hold: the structural markers and every image code."""
        return frozenset((self.boi, self.eoi, self.bos, self.eos, self.user, self.assistant,
                          *self.open_tag.values(), *self.close_tag.values(), *range(self.code_lo, self.code_hi)))


def _bad(p: Parsed, why: str) -> Parsed:
    p.ok = False
    p.error = why
    return p
