"""Constrained generation: the one decode loop used by the data pipeline, evaluation and GRPO rollouts.

Every completion follows :class:`sairlib.sequence.Layout` whatever the model's weights are:
a :class:`LayoutConstraint` masks the logits at each step so that images hold exactly
``tokens_per_image`` codes, text segments hold only words and close with their own tag, and
the sequence always ends with ``<eos>`` within ``max_new_tokens``::

    from sairlib.generation import generate
    prompts = [layout.prompt("draw a red circle .", [])]
    outs = generate(model, layout, prompts, max_new_tokens=64, temperature=1.0, seed=0)
    outs[0].ids          # completion ids, up to and including <eos>
    outs[0].forced       # True where the constraint left exactly one choice (no loss in GRPO)
    outs[0].parsed.ok    # always True

Classifier-free guidance on image codes: pass ``uncond_prompts`` (one per prompt, e.g. the
prompt without its request words) and ``cfg_scale != 1``.

GRPO can replay the constraint on finished completions with :meth:`LayoutConstraint.trace`
(allowed-set class per position; ``constraint.table[classes]`` gives the masks).
"""
from __future__ import annotations

import contextlib
import inspect
import threading
import warnings
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from transformers import DynamicCache, StaticCache
from transformers.cache_utils import DynamicLayer, StaticLayer

from .sequence import TEXT_TAGS, Layout, Parsed

__all__ = ["Generation", "LayoutConstraint", "ConstraintState", "check_cache", "counter_exponential", "generate",
           "resolve_cache", "row_bucket", "sample_tokens"]

_TEXT_KINDS: tuple[str, ...] = tuple(TEXT_TAGS)  # E, R, S, D
_K = len(_TEXT_KINDS)

# Allowed-set classes (rows of LayoutConstraint.table).
C_OUT_ALL, C_OUT_TEXT, C_EOS, C_CODES, C_EOI = 0, 1, 2, 3, 4
C_TEXT0 = 5                 # words + close tag of kind k: C_TEXT0 + k
C_CLOSE0 = C_TEXT0 + _K     # close tag of kind k only:   C_CLOSE0 + k
C_PAD = C_CLOSE0 + _K
N_CLASSES = C_PAD + 1

# Token categories (what a token means to the automaton).
T_OTHER, T_BOI, T_EOI, T_EOS, T_CODE, T_OPEN0 = 0, 1, 2, 3, 4, 5   # open tag of kind k: T_OPEN0 + k
T_CLOSE0 = T_OPEN0 + _K                                            # close tag of kind k: T_CLOSE0 + k
N_CATEGORIES = T_CLOSE0 + _K

_CHECK_EVERY = 8  # decode steps between checks that every row has ended (each check waits for the device)


@dataclass
class Generation:
    """One completion: its prompt, ids (up to and including ``<eos>``), forced flags, parse, images."""

    prompt: list[int]
    ids: list[int]
    forced: list[bool]
    parsed: Parsed
    images: list[np.ndarray] = field(default_factory=list)


@dataclass
class ConstraintState:
    """Per-sequence constraint state: automaton ``node`` and budget ``left``, each a ``[B]`` long tensor."""

    node: torch.Tensor
    left: torch.Tensor


class LayoutConstraint:
    """The layout's grammar as a finite automaton over lookup tables, vectorised over the batch.

    Nodes: ``outside`` (0), ``image with c codes`` (``1 + c``, c = 0..tokens_per_image),
    ``inside text kind k``, ``done``. The allowed-set class is ``cls_of[node, min(left, tpi + 3)]``
    and the next node ``next_of[node, category[token]]``, so a step is a few gathers::

        c = LayoutConstraint(layout, vocab_width, device)
        s = c.start(batch, max_new_tokens)
        cls = c.classes(s); mask = c.table[cls]; forced = c.n_allowed[cls] == 1
        s = c.advance(s, tokens)
    """

    def __init__(self, layout: Layout, vocab_width: int, device: torch.device | str = "cpu") -> None:
        n_tokens = len(layout.tokenizer) if layout.tokenizer is not None else vocab_width
        if n_tokens > vocab_width:
            raise ValueError(f"vocab_width: the model scores {vocab_width} tokens but the vocabulary has {n_tokens}")
        tpi = layout.tokens_per_image
        self.layout, self.width, self.device = layout, int(vocab_width), torch.device(device)
        self.outside, self.image0, self.text0, self.done_node = 0, 1, tpi + 2, tpi + 2 + _K
        self.n_nodes = self.done_node + 1
        self.table = self._allowed_table(n_tokens).to(self.device)    # [N_CLASSES, V] bool
        self.n_allowed = self.table.sum(1)                             # [N_CLASSES]
        self.cls_of = self._class_table().to(self.device)              # [nodes, tpi + 4]
        self.next_of = self._next_table().to(self.device)              # [nodes, N_CATEGORIES]
        self.category = self._categories().to(self.device)            # [V]
        self.is_code_node = torch.zeros(self.n_nodes, dtype=torch.bool, device=self.device)
        self.is_code_node[self.image0:self.image0 + tpi] = True        # the next token is an image code

    # ------------------------------------------------------------ tables
    def _allowed_table(self, n_tokens: int) -> torch.Tensor:
        lay, t = self.layout, torch.zeros(N_CLASSES, self.width, dtype=torch.bool)
        opens = [lay.open_tag[k] for k in _TEXT_KINDS]
        t[C_OUT_ALL, opens + [lay.boi, lay.eos]] = True
        t[C_OUT_TEXT, opens + [lay.eos]] = True
        t[C_EOS, lay.eos] = True
        t[C_CODES, lay.code_lo:lay.code_hi] = True
        t[C_EOI, lay.eoi] = True
        for k, kind in enumerate(_TEXT_KINDS):
            t[C_TEXT0 + k, lay.code_hi:n_tokens] = True
            t[C_TEXT0 + k, lay.close_tag[kind]] = True
            t[C_CLOSE0 + k, lay.close_tag[kind]] = True
        t[C_PAD, lay.pad] = True
        return t

    def _class_table(self) -> torch.Tensor:
        """``[nodes, tpi + 4]``: allowed-set class by node and budget left (clipped to ``tpi + 3``)."""
        tpi = self.layout.tokens_per_image
        left = torch.arange(tpi + 4)
        cls = torch.full((self.n_nodes, tpi + 4), C_PAD, dtype=torch.long)
        cls[self.outside] = torch.where(left >= tpi + 3, C_OUT_ALL, torch.where(left >= 3, C_OUT_TEXT, C_EOS))
        cls[self.image0:self.image0 + tpi] = C_CODES
        cls[self.image0 + tpi] = C_EOI
        for k in range(_K):
            cls[self.text0 + k] = torch.where(left > 2, C_TEXT0 + k, C_CLOSE0 + k)
        return cls

    def _next_table(self) -> torch.Tensor:
        """``[nodes, N_CATEGORIES]``: the node after a token of each category (disallowed ones: stay)."""
        tpi = self.layout.tokens_per_image
        nxt = torch.arange(self.n_nodes)[:, None].repeat(1, N_CATEGORIES)
        nxt[self.outside, T_BOI] = self.image0
        nxt[self.outside, T_EOS] = self.done_node
        for k in range(_K):
            nxt[self.outside, T_OPEN0 + k] = self.text0 + k
            nxt[self.text0 + k, T_CLOSE0 + k] = self.outside
        for c in range(tpi):
            nxt[self.image0 + c, T_CODE] = self.image0 + c + 1
        nxt[self.image0 + tpi, T_EOI] = self.outside
        return nxt

    def _categories(self) -> torch.Tensor:
        lay, cat = self.layout, torch.full((self.width,), T_OTHER, dtype=torch.long)
        cat[lay.code_lo:lay.code_hi] = T_CODE
        cat[[lay.boi, lay.eoi, lay.eos]] = torch.tensor([T_BOI, T_EOI, T_EOS])
        for k, kind in enumerate(_TEXT_KINDS):
            cat[lay.open_tag[kind]] = T_OPEN0 + k
            cat[lay.close_tag[kind]] = T_CLOSE0 + k
        return cat

    # ------------------------------------------------------------ state
    def start(self, batch: int, max_new_tokens: int | torch.Tensor, start_in: str | None = None) -> ConstraintState:
        """State before the first completion token; ``max_new_tokens`` is an int or a ``[batch]`` tensor.

        ``start_in`` (a text kind, e.g. ``"E"``): the prompt ends with that segment's open tag, so
        decoding starts inside it."""
        first = self.outside if start_in is None else self.text0 + _TEXT_KINDS.index(start_in)
        node = torch.full((batch,), first, dtype=torch.long, device=self.device)
        left = torch.as_tensor(max_new_tokens, dtype=torch.long, device=self.device).expand(batch).clone()
        return ConstraintState(node, left)

    def classes(self, s: ConstraintState) -> torch.Tensor:
        """Allowed-set class of each row (``[B]`` long, an index into :attr:`table`)."""
        return self.cls_of[s.node, s.left.clamp(0, self.layout.tokens_per_image + 3)]

    def allowed(self, s: ConstraintState) -> torch.Tensor:
        """``[B, V]`` bool: the tokens each row may emit next."""
        return self.table[self.classes(s)]

    def forced(self, s: ConstraintState) -> torch.Tensor:
        """``[B]`` bool: exactly one token is allowed (padding after ``<eos>`` counts as forced)."""
        return self.n_allowed[self.classes(s)] == 1

    def in_image(self, s: ConstraintState) -> torch.Tensor:
        """``[B]`` bool: the next token is an image code (where guidance applies)."""
        return self.is_code_node[s.node]

    def advance(self, s: ConstraintState, tokens: torch.Tensor) -> ConstraintState:
        """State after each row emits ``tokens`` (``[B]`` long), assumed allowed."""
        return ConstraintState(self.next_of[s.node, self.category[tokens]], s.left - 1)

    def done(self, s: ConstraintState) -> torch.Tensor:
        """``[B]`` bool: ``<eos>`` was emitted."""
        return s.node == self.done_node

    def trace(self, ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """Replay completions ``ids`` (``[B, T]`` long): the class before each token, ``[B, T]`` long.

        ``self.table[classes]`` are the allowed masks and ``self.n_allowed[classes] == 1`` the forced ones.
        """
        ids = ids.to(self.device)
        s, out = self.start(ids.shape[0], max_new_tokens), []
        for t in range(ids.shape[1]):
            out.append(self.classes(s))
            s = self.advance(s, ids[:, t])
        return torch.stack(out, 1) if out else ids.new_zeros(ids.shape)


# ---------------------------------------------------------------------------- sampling
def sample_tokens(scores: torch.Tensor, allowed: torch.Tensor, *, temperature: float = 1.0, top_k: int = 0,
                  top_p: float = 1.0, generator: torch.Generator | None = None,
                  noise: torch.Tensor | None = None) -> torch.Tensor:
    """Pick one token per row from float ``scores`` ``[B, V]`` among ``allowed`` ``[B, V]``; returns ``[B]``.

    Greedy when ``temperature == 0``; else softmax(scores / temperature) cut to the ``top_k``
    best (0: all) and the smallest set of mass ``top_p``, sampled with ``generator`` (or with the
    given Exp(1) ``noise`` ``[B, V]``, e.g. from :func:`counter_exponential`).
    A row whose pick is not allowed (NaN or -inf scores) falls back to its first allowed token.
    """
    scores = scores.masked_fill(~allowed, float("-inf"))
    if temperature == 0:
        tok = scores.argmax(-1)
    else:  # argmax(scores - log(Exp(1) noise)) is a draw from softmax(scores)
        scores = scores if temperature == 1 else scores / temperature
        scores = _filter_top_p(_filter_top_k(scores, top_k), top_p)
        if noise is None:
            noise = torch.empty_like(scores).exponential_(generator=generator)
        tok = (scores - noise.log()).argmax(-1)
    ok = allowed.gather(1, tok[:, None])[:, 0]
    return torch.where(ok, tok, allowed.to(torch.uint8).argmax(-1))


_M64 = (1 << 64) - 1


def _signed(c: int) -> int:
    return c - (1 << 64) if c >= 1 << 63 else c


_MIX1, _MIX2 = _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)
_GOLD, _STEP = _signed(0x9E3779B97F4A7C15), _signed(0xD1B54A32D192ED03)


def counter_exponential(row_seeds: torch.Tensor, step: int, width: int) -> torch.Tensor:
    """Exp(1) noise ``[B, width]`` that depends only on (row seed, step, token index).

    A splitmix64-style hash of the three counters (int64 arithmetic, wrapping), so a row's draws
    do not depend on which other rows share its batch, nor on the device: a request sampled alone
    or inside any batch gets the same tokens (given the same logits). This is what makes the data
    pipeline's results independent of how requests were batched, and resumable.
    """
    tok = torch.arange(width, device=row_seeds.device, dtype=torch.int64)
    salt = torch.tensor(int(step) + 1, dtype=torch.int64, device=row_seeds.device) * _STEP
    x = row_seeds.to(torch.int64)[:, None] * _GOLD + salt + tok[None, :]
    x = (x ^ ((x >> 30) & ((1 << 34) - 1))) * _MIX1
    x = (x ^ ((x >> 27) & ((1 << 37) - 1))) * _MIX2
    x = x ^ ((x >> 31) & ((1 << 33) - 1))
    u = ((x >> 11) & ((1 << 53) - 1)).to(torch.float64).add_(0.5).mul_(2.0 ** -53)  # in (0, 1)
    return (-u.log()).to(torch.float32)


def _filter_top_k(scores: torch.Tensor, top_k: int) -> torch.Tensor:
    if top_k <= 0 or top_k >= scores.shape[-1]:
        return scores
    kth = scores.topk(top_k, dim=-1).values[:, -1:]
    return scores.masked_fill(scores < kth, float("-inf"))


def _filter_top_p(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    if top_p >= 1.0:
        return scores
    sorted_scores, order = scores.sort(-1, descending=True)
    probs = sorted_scores.softmax(-1)
    drop_sorted = probs.cumsum(-1) - probs > top_p          # mass before this token already exceeds top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return scores.masked_fill(drop, float("-inf"))


# ---------------------------------------------------------------------------- the model side
def cache_arguments(model: Any) -> tuple[str, bool]:
    """The forward argument that takes the KV cache, and whether forward takes ``cache_position``.

    transformers 5.17 takes ``past_key_values`` and ``cache_position``; later 5.x take ``cache``
    and derive positions in the cache from the cache itself.
    """
    params = inspect.signature(model.forward).parameters
    return ("cache" if "cache" in params else "past_key_values"), "cache_position" in params


CACHES: tuple[str, ...] = ("auto", "dynamic", "growing", "static", "compiled")


def check_cache(cache: Any) -> str:
    """``cache`` if it names a KV cache of :func:`generate` (:data:`CACHES`), else a ``ValueError``."""
    if cache not in CACHES:
        raise ValueError(f"cache: must be one of {CACHES}, got {cache!r}")
    return cache


def resolve_cache(cache: str, device: torch.device) -> str:
    """The KV cache that ``cache`` means on ``device``: ``"auto"`` is ``"growing"`` on the CPU and
    ``"dynamic"`` elsewhere; the other names are themselves.

    On the CPU, ``DynamicCache`` grows by ``torch.cat`` at every step, so each step copies the whole
    cache: in stage 04's evaluation (40 requests, the 0.67M default policy, 2 cores) the copies took
    33.6 of 55.7 s, and a ``StaticCache`` (written in place) gave the same tokens in 24.2 s. But a
    static cache attends over all its slots, filled or not: in GRPO's rollouts (answers of 30-200
    tokens in an 876-token budget) attention over the full width took 31 of 70 s. ``"growing"``
    writes in place and attends over the filled part only. On CUDA the copies are cheap next to the
    kernels, and the H200 runs were measured with the dynamic cache.
    """
    if check_cache(cache) != "auto":
        return cache
    return "growing" if torch.device(device).type == "cpu" else "dynamic"


class _GrowingLayer(DynamicLayer):
    """A ``DynamicLayer`` that writes each step's keys and values into buffers of doubling capacity
    and returns views of the filled part: no per-step copy of the whole cache (``torch.cat``), and
    attention spans only the positions written so far."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None
        self._n = 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self._n + key_states.shape[-2]
        if self._k is None or end > self._k.shape[-2]:
            cap = max(end, 2 * (0 if self._k is None else self._k.shape[-2]), 64)
            k = key_states.new_empty((*key_states.shape[:2], cap, key_states.shape[-1]))
            v = value_states.new_empty((*value_states.shape[:2], cap, value_states.shape[-1]))
            if self._n:
                k[:, :, :self._n] = self._k[:, :, :self._n]
                v[:, :, :self._n] = self._v[:, :, :self._n]
            self._k, self._v = k, v
        self._k[:, :, self._n:end] = key_states
        self._v[:, :, self._n:end] = value_states
        self._n = end
        self.keys, self.values = self._k[:, :, :end], self._v[:, :, :end]
        return self.keys, self.values


def _growing_cache(config: Any) -> DynamicCache:
    """A ``DynamicCache`` whose layers are :class:`_GrowingLayer` (left as they are if the model has
    layers of another kind, e.g. sliding windows)."""
    cache = DynamicCache(config=config)
    if cache.layers and all(type(layer) is DynamicLayer for layer in cache.layers):
        cache.layers = [_GrowingLayer() for _ in cache.layers]
    return cache


_WIDTH_MULTIPLE = 128   # compiled decoding: cache length rounded up, so prompt widths share a graph
# Compiled decoding pads each chunk's rows up to a bucket (row_bucket): powers of two up to batch_size, which
# is a bucket itself, starting at batch_size / 32 (at least 8), so at most _ROW_BUCKETS per batch size. Every
# new (rows, width) shape costs a compile (the first took 15-27 s on the H200) while a padded row costs one
# row's work (about 4.3 us per row per step there at 512-2048 rows); padding a small chunk to batch_size / 32
# adds at most 1/32 of a full chunk's work, and removes the graphs of 8, 16 and 32 rows at batch_size 2048.
_MIN_ROW_BUCKET = 8
_ROW_BUCKETS = 6
# Compiled decoding keeps one compiled step and its StaticCache per (rows, width) shape and model, so that a
# shape seen again replays. The caches are what costs memory: 2 x layers x rows x width x kv_heads x head_dim
# elements each, e.g. 16 GiB in bf16 (32 GiB in float32) for 2048 rows x 512 slots of 8 layers of hidden 512,
# but 1/32 of that at 64 rows. So the least recently used shapes are dropped when there are more than
# _GRAPHS_PER_MODEL of them or when their caches together exceed _cache_budget (the newest is always kept).
# With 6 row buckets and 3 widths (128, 256, 384: prompts of 0-4 images), the data pipeline (batch_size 2048)
# meets up to 18 shapes, whose caches would take 94.5 GiB in float32 (47 GiB in bf16) were all kept: memory
# is bounded by the budget, the count limit only bounds the bookkeeping. A dropped shape seen again gets a new
# cache; dynamo keeps the compiled graph of that shape and reuses it (no retrace, measured on CPU; on CUDA
# the CUDA graph presumably has to be recorded again for the new cache's addresses, not measured).
_GRAPHS_PER_MODEL = 32
_CACHE_BUDGET_FRACTION = 0.35   # of an accelerator's memory, for the kept caches of one model (H200: 49 GiB)
_CACHE_BUDGET_CPU = 4 << 30     # bytes, for the kept caches of one model on the CPU
# Compiled decoding reads the key/value cache only up to a width bucket that covers the slots written so far
# (kv_buckets): at most _KV_BUCKETS widths per cache, multiples of 128. The decode step is bound by reading
# the cache (at 512 rows of the 81.5M policy a 384-slot cache is 6 GB against 0.16 GB of weights), and
# attending over every slot from the first step read about twice the slots in use on average.
_KV_BUCKETS = 4
_RECOMPILE_LIMIT = 64 * _KV_BUCKETS   # compiled decoding: distinct graphs before torch.compile stops (an error)
# the dynamo settings of every compiled step (only those this torch has)
_DYNAMO_PATCH = {k: v for k, v in {"recompile_limit": _RECOMPILE_LIMIT, "fail_on_recompile_limit_hit": True}.items()
                 if hasattr(torch._dynamo.config, k)}


def _compile_options(device: torch.device) -> dict[str, Any]:
    """torch.compile settings of the decode step: CUDA graphs on CUDA, plain inductor elsewhere."""
    opts: dict[str, Any] = {"fullgraph": True, "dynamic": False}
    if device.type == "cuda":
        opts["mode"] = "reduce-overhead"
    return opts


def kv_buckets(width: int, buckets: int = _KV_BUCKETS) -> list[int]:
    """The cache widths a compiled step of ``width`` slots attends over: multiples of a step (a
    multiple of 128) up to ``width``, at most ``buckets`` of them, ``width`` itself the last."""
    step = _WIDTH_MULTIPLE * -(-width // (_WIDTH_MULTIPLE * buckets))
    return [w for w in range(step, width, step)] + [width]


def _prefix_cache(model: Any, full: StaticCache, width: int) -> StaticCache | None:
    """A ``StaticCache`` of ``width`` slots whose layers are views of the first ``width`` slots of
    ``full``'s (initialised) layers, sharing their write counters: writing through it writes ``full``,
    and attention through it reads only those slots. None where a layer is not a plain ``StaticLayer``
    (sliding windows and other kinds keep the full width)."""
    view = StaticCache(config=model.config, max_cache_len=width)
    if len(view.layers) != len(full.layers):
        return None
    for mine, theirs in zip(view.layers, full.layers):
        if type(mine) is not StaticLayer or type(theirs) is not StaticLayer or not theirs.is_initialized:
            return None
        mine.__dict__.update({k: v for k, v in theirs.__dict__.items() if k != "max_cache_len"})
        mine.keys, mine.values = theirs.keys[:, :, :width], theirs.values[:, :, :width]
        for t in (mine.keys, mine.values):
            torch._dynamo.mark_static_address(t)  # written in place by every step, as the full cache is
    return view


class _CompiledStep:
    """One compiled single-token forward over one reused ``StaticCache`` of ``rows x width`` slots.

    Every input has a fixed shape (tokens ``[rows, 1]``, the mask ``[rows, bucket]``, positions
    ``[rows, 1]``, the cache slot ``[1]``), so each graph is traced once and, on CUDA, replayed as a
    CUDA graph. A step attends over the smallest of :func:`kv_buckets` that covers the slot it
    writes, through a view of the cache's first slots (:func:`_prefix_cache`): one graph per bucket,
    the same logits as over the whole width (later slots are masked either way). The cache's tensors
    keep their addresses between calls (``reset`` zeroes them).
    """

    def __init__(self, model: Any, rows: int, width: int, device: torch.device) -> None:
        self.rows, self.width, self.device, self.dtype = rows, width, device, _model_dtype(model)
        self.cache = StaticCache(config=model.config, max_cache_len=width)
        self.buckets = kv_buckets(width)
        self._views: dict[int, StaticCache | None] = {}
        self.nbytes = _kv_bytes(model.config, rows, width, self.dtype)
        self.model = weakref.ref(model)  # weak: _GRAPHS holds this object under the model's (weak) key
        key, wants_cache_position = cache_arguments(model)

        def step(model: Any, cache: StaticCache, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor,
                 slot: torch.Tensor) -> torch.Tensor:
            extra: dict[str, Any] = {key: cache}
            if wants_cache_position:
                extra["cache_position"] = slot
            out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1,
                         **extra)
            return out.logits[:, -1, :].float()

        self.fn = torch.compile(step, **_compile_options(device))

    def cache_for(self, written: int) -> tuple[StaticCache, int]:
        """The cache to attend over once ``written`` slots hold keys (this step's included), and its width."""
        width = next(w for w in self.buckets if w >= written)
        if width == self.width:
            return self.cache, width
        if width not in self._views:
            self._views[width] = _prefix_cache(self.model(), self.cache, width)
        view = self._views[width]
        return (self.cache, self.width) if view is None else (view, width)

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, slot: int) -> torch.Tensor:
        """Logits after one token per row written at cache slot ``slot`` (``mask`` covers every slot)."""
        if hasattr(torch.compiler, "cudagraph_mark_step_begin"):
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's output is no longer read
        cache, width = self.cache_for(slot + 1)
        where = torch.arange(slot, slot + 1, device=ids.device)
        skips = _cudagraph_skips()
        try:
            with torch._dynamo.config.patch(**_DYNAMO_PATCH):
                logits = self.fn(self.model(), cache, ids, mask[:, :width], pos, where)
        except Exception as e:  # never fall back to eager quietly
            first = str(e).splitlines()[0] if str(e) else ""
            raise RuntimeError(f"cache='compiled': the compiled decode step failed ({type(e).__name__}: {first}); "
                               "use cache='static' or 'dynamic'") from e
        if self.device.type == "cuda" and _cudagraph_skips() > skips:
            warnings.warn("cache='compiled': torch.compile did not capture the decode step as a CUDA graph "
                          "(see TORCH_LOGS=perf_hints); it runs compiled but without graphs", RuntimeWarning,
                          stacklevel=2)
        return logits.clone()  # a CUDA graph's output buffer is overwritten by its next replay


def _cudagraph_skips() -> int:
    """How many times inductor declined to use CUDA graphs so far (0 where torch does not count it)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:  # pragma: no cover
        return 0
    return int(counters["inductor"].get("cudagraph_skips", 0))


_GRAPHS: "weakref.WeakKeyDictionary[Any, OrderedDict[tuple[int, int], _CompiledStep]]" = weakref.WeakKeyDictionary()


def _compiled_step(model: Any, rows: int, width: int, device: torch.device) -> _CompiledStep:
    """The model's compiled step for this shape, built on first use; the least recently used shapes are
    dropped beyond ``_GRAPHS_PER_MODEL`` shapes or :func:`_cache_budget` bytes of caches (never this one)."""
    per_model = _GRAPHS.setdefault(model, OrderedDict())
    key, dtype = (rows, width), _model_dtype(model)
    if key not in per_model or (per_model[key].device, per_model[key].dtype) != (device, dtype):
        per_model.pop(key, None)
        per_model[key] = _CompiledStep(model, rows, width, device)  # new, or the model moved: a fresh cache
    per_model.move_to_end(key)
    budget = _cache_budget(device)
    while len(per_model) > 1 and (len(per_model) > _GRAPHS_PER_MODEL
                                  or sum(s.nbytes for s in per_model.values()) > budget):
        per_model.popitem(last=False)  # the cache is allocated on first use, so a new one adds nothing yet
    return per_model[key]


def _kv_bytes(config: Any, rows: int, width: int, dtype: torch.dtype | None) -> int:
    """Bytes of a ``StaticCache`` of ``rows x width`` slots for this model config (keys and values)."""
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = getattr(cfg, "num_attention_heads", 1) or 1
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or getattr(cfg, "hidden_size", heads) // heads
    item = torch.empty((), dtype=dtype or torch.float32).element_size()
    return 2 * getattr(cfg, "num_hidden_layers", 1) * rows * width * kv_heads * head_dim * item


def _cache_budget(device: torch.device) -> int:
    """Bytes of compiled-step caches kept per model: a share of the accelerator's memory, or a fixed CPU amount."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return int(_CACHE_BUDGET_FRACTION * torch.cuda.get_device_properties(index).total_memory)
    return _CACHE_BUDGET_CPU


def row_bucket(rows: int, batch_size: int) -> int:
    """Rows a compiled chunk of ``rows`` prompts is padded to, so that chunks of varying size share few
    graphs: the smallest power of two that holds them, from ``batch_size / 32`` (rounded up to a power of
    two, at least 8) up, and never more than ``batch_size`` (itself a bucket). At ``batch_size`` 2048
    the buckets are 64, 128, ..., 2048; at 256 they are 8, ..., 256; at 1000, 32, ..., 512 and 1000."""
    top = 1 << (int(batch_size) - 1).bit_length()  # batch_size rounded up to a power of two
    bucket = max(_MIN_ROW_BUCKET, top >> (_ROW_BUCKETS - 1))
    while bucket < rows:
        bucket *= 2
    return max(rows, min(bucket, batch_size))


def decode_width(prompt_width: int, max_new_tokens: int, cache: str) -> int:
    """KV-cache positions a chunk needs: exact, or rounded up to a multiple of 128 when compiled."""
    need = prompt_width + max_new_tokens
    return -(-need // _WIDTH_MULTIPLE) * _WIDTH_MULTIPLE if cache == "compiled" else need


class _Decoder:
    """Runs the model over one KV cache: ``prefill`` the prompts, then ``step`` one token at a time.

    ``cache="dynamic"`` uses ``DynamicCache``; ``"static"`` preallocates a ``StaticCache`` of
    ``width`` positions; ``"compiled"`` reuses a ``StaticCache`` and a compiled step
    (:class:`_CompiledStep`) per (rows, width), so the decode step has fixed shapes. All return
    float32 logits ``[N, V]``.
    """

    def __init__(self, model: Any, rows: int, width: int, cache: str, device: torch.device) -> None:
        self.model, self.seen = model, 0
        self.key, self.wants_cache_position = cache_arguments(model)
        self.compiled: _CompiledStep | None = None
        if cache == "dynamic":
            self.cache = DynamicCache(config=model.config)
        elif cache == "growing":
            self.cache = _growing_cache(model.config)
        elif cache == "static":
            self.cache = StaticCache(config=model.config, max_cache_len=width)
        elif cache == "compiled":
            self.compiled = _compiled_step(model, rows, width, device)
            self.cache = self.compiled.cache
            self.cache.reset()
        else:
            raise ValueError(f"cache: must be one of {CACHES}, got {cache!r}")

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        extra: dict[str, Any] = {self.key: self.cache}
        if self.wants_cache_position:  # slots written in the cache (the same for every row)
            extra["cache_position"] = torch.arange(self.seen, self.seen + ids.shape[1], device=ids.device)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1,
                         **extra)
        self.seen += ids.shape[1]
        return out.logits[:, -1, :].float()

    def prefill(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Logits after the whole (left-padded) prompts ``ids`` ``[N, L]`` (never compiled)."""
        return self._forward(ids, mask, pos)

    def step(self, tokens: torch.Tensor, full_mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Logits after one more token per row (``tokens`` ``[N]``, ``pos`` ``[N]``).

        ``full_mask`` ``[N, width]`` covers every cache slot; the eager caches see the slots
        written so far, the compiled step those of its width bucket (later slots are hidden by causality).
        """
        if self.compiled is None:
            return self._forward(tokens[:, None], full_mask[:, :self.seen + 1], pos[:, None])
        self.seen += 1
        return self.compiled(tokens[:, None], full_mask, pos[:, None], self.seen - 1)


def _left_pad(prompts: Sequence[Sequence[int]], pad: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Left-padded ids ``[N, L]``, attention mask ``[N, L]`` and position ids ``[N, L]``."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
        mask[i, width - len(p):] = 1
    pos = (mask.cumsum(1) - 1).clamp_min(0)
    return ids.to(device), mask.to(device), pos.to(device)


@dataclass
class _Options:
    """The decoding settings of one ``generate`` call, checked."""

    max_new_tokens: int
    temperature: float
    top_k: int
    top_p: float
    cfg_scale: float
    cache: str
    start_in: str | None = None


def _guided(logits: torch.Tensor, rows: int, scale: float, in_image: torch.Tensor) -> torch.Tensor:
    """Cond logits, with ``uncond + scale * (cond - uncond)`` on rows inside an image span."""
    if logits.shape[0] == rows:
        return logits
    cond, uncond = logits[:rows], logits[rows:]
    return torch.where(in_image[:, None], uncond + scale * (cond - uncond), cond)


def _run_chunk(model: Any, layout: Layout, prompts: list[list[int]], uncond: list[list[int]] | None,
               opt: _Options, gen: torch.Generator, device: torch.device,
               row_seeds: list[int] | None = None, pad_rows: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode one chunk: completion ids ``[B, T]`` (pad after ``<eos>``) and forced flags ``[B, T]``.

    ``pad_rows``: decode that many extra copies of the first prompt (its uncond prompt and row seed) so
    that the compiled step's shape is a bucket's; they draw row 0's noise, do not delay the end of the
    chunk, and are dropped. Rows never mix, so the real rows' tokens are those of the unpadded chunk."""
    real = len(prompts)
    if pad_rows:
        prompts = prompts + [prompts[0]] * pad_rows
        uncond = None if uncond is None else uncond + [uncond[0]] * pad_rows
        row_seeds = None if row_seeds is None else row_seeds + [row_seeds[0]] * pad_rows
    rows = len(prompts)
    ids, mask, pos = _left_pad(prompts + (uncond or []), layout.pad, device)
    width = decode_width(ids.shape[1], opt.max_new_tokens, opt.cache)
    full_mask = torch.cat([mask, mask.new_ones(mask.shape[0], width - ids.shape[1])], 1)
    dec = _Decoder(model, ids.shape[0], width, opt.cache, device)
    logits = dec.prefill(ids, mask, pos)
    con = LayoutConstraint(layout, logits.shape[-1], device)
    state, pos = con.start(rows, opt.max_new_tokens, opt.start_in), pos[:, -1]
    out_ids, out_forced = [], []
    seeds = None if row_seeds is None else torch.tensor(row_seeds, dtype=torch.int64, device=device)
    for t in range(opt.max_new_tokens):
        cls = con.classes(state)
        allowed, forced = con.table[cls], con.n_allowed[cls] == 1
        scores = _guided(logits, rows, opt.cfg_scale, con.in_image(state))
        noise = None if seeds is None or opt.temperature == 0 else counter_exponential(seeds, t, scores.shape[-1])
        if noise is None and pad_rows and opt.temperature != 0:  # the generator draws for the real rows only
            noise = torch.empty((real, scores.shape[-1]), dtype=scores.dtype, device=device).exponential_(
                generator=gen)
            noise = torch.cat([noise, noise[:1].expand(pad_rows, -1)])
        tok = sample_tokens(scores, allowed, temperature=opt.temperature, top_k=opt.top_k, top_p=opt.top_p,
                            generator=gen, noise=noise)
        out_ids.append(tok)
        out_forced.append(forced)
        state = con.advance(state, tok)
        if t + 1 == opt.max_new_tokens or ((t + 1) % _CHECK_EVERY == 0 and bool(con.done(state)[:real].all())):
            break  # checking only every few steps lets the host queue steps ahead of the device
        pos = pos + 1
        feed = tok if logits.shape[0] == rows else torch.cat([tok, tok])
        logits = dec.step(feed, full_mask, pos)
    return torch.stack(out_ids, 1)[:real], torch.stack(out_forced, 1)[:real]


# ---------------------------------------------------------------------------- validation
def _check_ids(name: str, seqs: Any, width: int | None) -> list[list[int]]:
    """``seqs`` as lists of ints in ``0..width-1``; ``ValueError`` naming ``name`` otherwise."""
    if not isinstance(seqs, (list, tuple)) or len(seqs) == 0:
        raise ValueError(f"{name}: need a non-empty list of token-id lists")
    out = []
    for i, p in enumerate(seqs):
        if isinstance(p, (torch.Tensor, np.ndarray)):
            p = p.tolist()
        if isinstance(p, (str, bytes)) or not isinstance(p, (list, tuple)) or len(p) == 0:
            raise ValueError(f"{name}[{i}]: must be a non-empty list of token ids, got {type(p).__name__}")
        if not all(_is_int(t) for t in p):
            raise ValueError(f"{name}[{i}]: token ids must be ints")
        if min(p) < 0 or (width is not None and max(p) >= width):
            raise ValueError(f"{name}[{i}]: token ids must be in 0..{(width or 0) - 1}")
        out.append([int(t) for t in p])
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_numbers(max_new_tokens: Any, temperature: Any, top_k: Any, top_p: Any, batch_size: Any) -> None:
    if not _is_int(max_new_tokens) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: must be an int >= 1, got {max_new_tokens!r}")
    if not temperature >= 0:  # also rejects NaN
        raise ValueError(f"temperature: must be >= 0, got {temperature!r}")
    if not _is_int(top_k) or top_k < 0:
        raise ValueError(f"top_k: must be an int >= 0, got {top_k!r}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p: must be in (0, 1], got {top_p!r}")
    if batch_size is not None and (not _is_int(batch_size) or batch_size < 1):
        raise ValueError(f"batch_size: must be None or an int >= 1, got {batch_size!r}")


def _check_uncond(uncond_prompts: Any, n_prompts: int, cfg_scale: float, width: int | None) -> list | None:
    if cfg_scale != 1.0 and uncond_prompts is None:
        raise ValueError("uncond_prompts: cfg_scale != 1 needs uncond_prompts (one per prompt)")
    if uncond_prompts is None:
        return None
    us = _check_ids("uncond_prompts", uncond_prompts, width)
    if len(us) != n_prompts:
        raise ValueError(f"uncond_prompts: need one per prompt ({n_prompts}), got {len(us)}")
    return us


def _model_dtype(model: Any) -> torch.dtype | None:
    try:
        return next(model.parameters()).dtype
    except (StopIteration, AttributeError):
        return None


def _model_device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def _to_generation(layout: Layout, prompt: list[int], ids: list[int], forced: list[bool], codec: Any,
                   start_in: str | None = None) -> Generation:
    n = ids.index(layout.eos) + 1 if layout.eos in ids else len(ids)
    opened = [] if start_in is None else [layout.open_tag[start_in]]  # the open tag ended the prompt
    parsed = layout.parse(opened + ids[:n])
    images = [] if codec is None else [np.asarray(codec.decode(np.asarray(s.codes, dtype=np.int64)))
                                       for s in parsed.segments if s.kind == "G"]
    return Generation(prompt, ids[:n], forced[:n], parsed, images)


# ---------------------------------------------------------------------------- the entry point
def generate(model: Any, layout: Layout, prompts: Sequence[Sequence[int]], max_new_tokens: int, *,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, cfg_scale: float = 1.0,
             uncond_prompts: Sequence[Sequence[int]] | None = None, seed: int = 0, batch_size: int | None = None,
             codec: Any = None, cache: str = "auto", start_in: str | None = None,
             row_seeds: Sequence[int] | None = None) -> list[Generation]:
    """Constrained completions of ``prompts`` (token-id lists), one :class:`Generation` each, in order.

    ``model`` is a transformers causal LM; the loop runs on its device, in ``torch.inference_mode``
    and eval mode (restored afterwards). Completions end with ``<eos>`` within ``max_new_tokens``
    and always parse. ``temperature=0`` is greedy; sampling uses a ``torch.Generator`` seeded with
    ``seed``. ``batch_size`` splits the prompts into chunks of at most that many. With
    ``cfg_scale != 1`` and ``uncond_prompts``, image codes use classifier-free guidance. ``codec``
    (anything with ``decode(codes) -> image``) fills ``Generation.images``. ``cache`` is
    ``"auto"`` (default: :func:`resolve_cache`, growing on the CPU, dynamic elsewhere), ``"dynamic"``
    (``DynamicCache``), ``"growing"`` (written in place into buffers of doubling size, attention over
    the filled part), ``"static"`` (a ``StaticCache``) or ``"compiled"``:
    a ``StaticCache`` of prompt width + ``max_new_tokens`` rounded up to a multiple of 128, and the
    one-token decode step compiled once with ``torch.compile(fullgraph=True, dynamic=False)``
    (``mode="reduce-overhead"``, i.e. CUDA graphs, on CUDA; the prefill stays eager); every input of
    the step has a fixed shape (the full-width attention mask, the cache slot as a tensor). The rows
    of each chunk are padded up to a bucket (:func:`row_bucket`: powers of two from ``batch_size / 32``
    (at least 8) up to ``batch_size``, which is one; without ``batch_size`` the one chunk is not
    padded) with copies of its first prompt whose completions are dropped, so chunks of varying size
    share at most six graphs per width. Steps and caches
    are kept per model for recent (rows, width) shapes, within a memory budget (see
    ``_GRAPHS_PER_MODEL``): the first call of a shape compiles (seconds to a minute), later ones
    replay; a failed compile raises ``RuntimeError`` (never a quiet eager fallback), and so do more
    than 64 compiled shapes. All modes give the same tokens (up to float rounding).
    ``start_in`` (a text kind): every prompt ends with that
    segment's open tag and decoding continues inside it (e.g. asking for an evaluation); the
    parsed segments then include it. ``row_seeds`` (one int per prompt): sample each row with
    :func:`counter_exponential` noise keyed by its own seed instead of ``seed``'s generator, so a
    completion does not depend on the batch it was decoded in.
    """
    width = getattr(getattr(model, "config", None), "vocab_size", None)
    ps = _check_ids("prompts", prompts, width)
    _check_numbers(max_new_tokens, temperature, top_k, top_p, batch_size)
    us = _check_uncond(uncond_prompts, len(ps), cfg_scale, width)
    device = _model_device(model)
    cache = resolve_cache(cache, device)
    if cfg_scale == 1.0:
        us = None  # guidance at scale 1 is the cond logits: skip the doubled batch
    if start_in is not None and start_in not in layout.open_tag:
        raise ValueError(f"start_in: must be one of {sorted(layout.open_tag)} or None, got {start_in!r}")
    if start_in is not None and any(not p or p[-1] != layout.open_tag[start_in] for p in ps):
        raise ValueError(f"start_in: every prompt must end with the {start_in} segment's open tag")
    if row_seeds is not None:
        row_seeds = [int(r) for r in row_seeds]
        if len(row_seeds) != len(ps):
            raise ValueError(f"row_seeds: need one per prompt ({len(ps)}), got {len(row_seeds)}")
    opt = _Options(int(max_new_tokens), float(temperature), int(top_k), float(top_p), float(cfg_scale), cache,
                   start_in)
    with _decode_threads(model, device), _compiled_lock(model, cache):
        return _generate(model, layout, ps, us, opt, device, seed, batch_size, codec, start_in, row_seeds)


SMALL_MODEL_PARAMS = 20_000_000

_COMPILED_LOCKS: "weakref.WeakKeyDictionary[Any, threading.Lock]" = weakref.WeakKeyDictionary()
_COMPILED_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def _compiled_lock(model: Any, cache: str) -> Iterator[None]:
    """With ``cache="compiled"``, one ``generate`` call at a time per model: the calls share the model's
    compiled steps and their ``StaticCache``s, so two threads decoding at once would overwrite each
    other's cache. That happened on the H200 in the data pipeline, whose direct and redraw batchers
    call the same policy from two executor threads: a device-side "index out of bounds" assertion in
    the compiled step after 34,817 of 60,000 requests. The other caches are made per call and need no lock."""
    if cache != "compiled":
        yield
        return
    with _COMPILED_LOCKS_GUARD:
        lock = _COMPILED_LOCKS.setdefault(model, threading.Lock())
    with lock:
        yield


@contextlib.contextmanager
def _decode_threads(model: Any, device: torch.device) -> Iterator[None]:
    """Decode a small model on one CPU thread: its per-token matrices are too small to split, and
    on 2 busy cores several threads were 6x (idle) to 60x (loaded) slower in our measurements."""
    before = torch.get_num_threads()
    small = sum(p.numel() for p in model.parameters()) < SMALL_MODEL_PARAMS if hasattr(model, "parameters") else True
    if device.type == "cpu" and small and before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _generate(model: Any, layout: Layout, ps: list[list[int]], us: list | None, opt: _Options, device: torch.device,
              seed: int, batch_size: int | None, codec: Any, start_in: str | None,
              row_seeds: list[int] | None) -> list[Generation]:
    gen = torch.Generator(device=device).manual_seed(int(seed))
    step = batch_size or len(ps)
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        results: list[Generation] = []
        with torch.inference_mode():
            for a in range(0, len(ps), step):
                chunk_u = us[a:a + step] if us is not None else None
                n = len(ps[a:a + step])
                pad = row_bucket(n, step) - n if opt.cache == "compiled" else 0
                ids, forced = _run_chunk(model, layout, ps[a:a + step], chunk_u, opt, gen, device,
                                         None if row_seeds is None else row_seeds[a:a + step], pad)
                for p, row, frow in zip(ps[a:a + step], ids.tolist(), forced.tolist()):
                    results.append(_to_generation(layout, p, row, frow, codec, start_in))
        return results
    finally:
        model.train(was_training)
