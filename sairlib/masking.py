"""Selective loss masking: a trajectory becomes ``input_ids`` + ``labels`` (``-100`` = context).

The sequence is the project's one layout (:mod:`sairlib.sequence`)::

    <bos> <user> request [<boi> input codes <eoi>]* <assistant> segment* <eos>

with every image ``G`` encoded by the policy's codec. The paper trains only on the subsequence
``O`` of each mode; everything else is context the model reads but is never taught to write:

==============  ===============================================  =================================
mode            segments                                         ``O`` (carries loss)
==============  ===============================================  =================================
direct          ``G1 E1``                                        ``G1 E1``
reflection      ``G1 E1 R1 G2 E2 .. R(K-1) GK EK``               ``E(K-1) R(K-1) GK EK``
multistep       ``G1 E1 S1 G'1 E'1 .. Sn G'n E'n``               ``E1`` and every ``Si G'i E'i``
==============  ===============================================  =================================

So the model never learns to draw its own failures (earlier images; in reflection also the
earlier rounds' evaluations and reflections), yet learns to judge the last failure and recover.

Token-level decisions (the same for every mode):

- a segment in ``O`` carries loss on all its tokens: its tags (``<eval>``, ``</eval>``, ...,
  ``<boi>``, ``<eoi>``) as well as its words or image codes, so the model learns to open and
  close segments; a context segment carries none, tags included;
- the final ``<eos>`` carries loss (the last segment always belongs to ``O``): the model learns
  to stop;
- the prompt (``<bos> <user>`` request, input images, ``<assistant>``) is always context.

Masking ``"none"`` (the ablation) puts loss on every token after ``<assistant>``.

    ex = mask_trajectory(trajectory, policy.layout, policy.codec, masking="selective")
    ex.input_ids, ex.labels, ex.spans        # spans: which tokens belong to which segment
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .modes import DEFAULT_MAX_ROUNDS, infer_mode, kinds_string
from .sequence import Layout, Segment

IGNORE = -100
MASKINGS: tuple[str, ...] = ("selective", "none")


def check_masking(masking: str) -> str:
    if masking not in MASKINGS:
        raise ValueError(f"masking: must be one of {MASKINGS}, got {masking!r}")
    return masking


def loss_segments(kinds: str | Sequence[str], mode: str, masking: str = "selective",
                  max_rounds: int = DEFAULT_MAX_ROUNDS, where: str = "trajectory") -> list[bool]:
    """Per answer segment: does it carry loss? ``kinds`` must follow ``mode``'s grammar exactly.

        >>> loss_segments("GERGERGE", "reflection")
        [False, False, False, False, True, True, True, True]
        >>> loss_segments("GESGESGE", "multistep")
        [False, True, True, True, True, True, True, True]
    """
    check_masking(masking)
    s = kinds_string(kinds)
    got = infer_mode(s, max_rounds=max_rounds)
    if got is None or got != mode:
        raise ValueError(f"{where}: segments {s!r} are not a {mode!r} trajectory"
                         + (f" (they read as {got!r})" if got else ""))
    n = len(s)
    if masking == "none" or mode == "direct":
        return [True] * n
    if mode == "reflection":  # the last round's E R and the final G E
        return [i >= n - 4 for i in range(n)]
    return [i >= 1 for i in range(n)]  # multistep: all but the failed direct image


@dataclass(frozen=True)
class Span:
    """Tokens ``[start, end)`` of one part of the sequence.

    ``kind``: ``prompt`` (bos, user, request words), ``input`` (an input image), ``assistant``
    (the marker), a segment kind ``G``/``E``/``R``/``S``, or ``eos``. ``index`` is the segment's
    position among the answer segments (-1 outside them).
    """

    kind: str
    start: int
    end: int
    loss: bool
    index: int = -1

    @property
    def n(self) -> int:
        return self.end - self.start


@dataclass
class MaskedExample:
    """One training sequence: ids, labels and the spans they came from."""

    id: str
    mode: str
    masking: str
    input_ids: list[int]
    labels: list[int]
    spans: list[Span] = field(default_factory=list)

    @property
    def n_loss(self) -> int:
        return sum(1 for l in self.labels if l != IGNORE)

    def counts(self) -> dict[str, dict[str, int]]:
        """Per span kind: tokens with loss and tokens of context."""
        out: dict[str, dict[str, int]] = {}
        for s in self.spans:
            c = out.setdefault(s.kind, {"loss": 0, "context": 0})
            c["loss" if s.loss else "context"] += s.n
        return out


def encode_images(codec: Any, images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Codes of each image (``[tokens_per_image]`` each), encoded in one batch."""
    if not len(images):
        return []
    return list(codec.encode(np.stack([np.asarray(im, dtype=np.uint8) for im in images])))


def mask_trajectory(t: Any, layout: Layout, codec: Any, masking: str = "selective",
                    max_rounds: int | None = None) -> MaskedExample:
    """``input_ids``, ``labels`` and spans of a trajectory (:class:`sairlib.trajectory.Trajectory`).

    ``max_rounds`` bounds reflection rounds for the mode grammar (default: 3, or the
    trajectory's own ``rounds`` if larger). A trajectory whose segments do not follow its mode is
    an error naming its id.
    """
    check_masking(masking)
    if t.mode is None:
        raise ValueError(f"trajectory {t.id}: mode: missing")
    rounds = max_rounds if max_rounds is not None else max(DEFAULT_MAX_ROUNDS, int(getattr(t, "rounds", 0) or 0))
    flags = loss_segments(t.kinds, t.mode, masking, rounds, where=f"trajectory {t.id}")
    inputs = encode_images(codec, t.input_images)
    drawn = iter(encode_images(codec, [s.image for s in t.segments if s.kind == "G"]))

    ids: list[int] = [layout.bos, layout.user] + layout.text(t.instruction)
    spans = [Span("prompt", 0, len(ids), False)]
    for codes in inputs:
        start = len(ids)
        ids += layout.image(codes)
        spans.append(Span("input", start, len(ids), False))
    spans.append(Span("assistant", len(ids), len(ids) + 1, False))
    ids.append(layout.assistant)
    for i, (s, loss) in enumerate(zip(t.segments, flags)):
        seg = Segment("G", codes=next(drawn)) if s.kind == "G" else Segment(s.kind, text=s.text)
        start = len(ids)
        ids += layout.segment(seg)
        spans.append(Span(s.kind, start, len(ids), loss, i))
    spans.append(Span("eos", len(ids), len(ids) + 1, True))
    ids.append(layout.eos)

    labels = [IGNORE] * len(ids)
    for sp in spans:
        if sp.loss:
            labels[sp.start:sp.end] = ids[sp.start:sp.end]
    return MaskedExample(t.id, t.mode, masking, ids, labels, spans)


def assistant_labels(input_ids: Sequence[int], layout: Layout) -> list[int]:
    """Masking ``"none"`` from the ids alone: loss on every token after the first ``<assistant>``."""
    ids = [int(i) for i in input_ids]
    try:
        a = ids.index(layout.assistant)
    except ValueError:
        raise ValueError("input_ids: no <assistant> marker") from None
    return [IGNORE] * (a + 1) + ids[a + 1:]
