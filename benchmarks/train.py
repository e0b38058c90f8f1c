"""Training throughput and MFU: the plain Trainer-style step vs a packed, compiled step, and a roofline.

    python benchmarks/train.py --quick                 # CPU, float32, tiny model, well under 30 s
    python benchmarks/train.py                         # GPU (H200): the ~154M policy, about 100 s
    python benchmarks/train.py --hidden 1536 --layers 18 --heads 24 --batch 16   # another size

Builds a random-init policy with :func:`sairlib.policy.model_config` (Llama over the world
vocabulary with ``--codes`` image codes: 2190 tokens for 2048 codes, or ``--vocab``; default size
1024x12, 16 heads, MLP 2688 = 153.9M parameters, the device README's "152M" row; ``--intermediate 0``
gives the project's default MLP of 4*hidden, 206M at 1024x12) and a stream of
random sequences whose lengths are uniform in ``[--min-len, --seq-len]``. Three things are measured
in the same run:

* **roofline**: the dense bf16 matmul rate of the device (float32 on CPU), square matmuls timed with
  CUDA events after a warm-up, best of a few sizes;
* **baseline**: what ``sairlib.training`` / ``sairlib.sft`` do today: eager HF model with SDPA,
  batches of ``--batch`` sequences right-padded to the longest (``DataCollatorForSeq2Seq``),
  bf16 autocast over float32 weights (``bf16=True``), gradient clipping at 1.0 (the Trainer's
  default) and fused AdamW;
* two more eager runs, read for throughput only (``--no-variants`` skips them): widths padded up to
  a multiple of 64 (``eager_pad64_*``) and full-length unpadded sequences without a mask
  (``eager_full_*``, the setup of the device README's "plain HF eager 29%");
* **optimised**: the same model, precision, clipping and optimizer, but the sequences are packed
  without padding into one row of ``batch * seq_len`` tokens (position ids restart at every
  sequence, the first token of each sequence is not a target) and attention is block-diagonal
  causal, so no sequence sees another: FlexAttention with a document mask (``--attention flex``,
  the default on CUDA) or SDPA with a dense block-diagonal mask (``sdpa``, the CPU path; rows of
  ``seq_len`` then, first fit); the model is wrapped in ``torch.compile`` (skipped on CPU).

Tokens are counted as real (non-pad) tokens. MFU = 6 * N * tokens/s / matmul rate, where N counts
**all** parameters (embeddings and the untied lm_head included; ``mfu_non_embedding`` leaves the
input embedding out); attention score FLOPs are not counted, as is the common convention.
Exactness is checked in the same run: the mean loss of packed sequences against the plain padded
forward on the same sequences and weights (``exact_*`` fields: relative differences; float32 on
CPU agrees to ~1e-6, bf16 autocast to ~1e-3).

If the optimised path fails (an older torch without FlexAttention, a compiler error), it falls
back to SDPA with a dense mask, then to eager, and records why in ``fallbacks``.
Writes ``benchmarks/results/train.json`` (``--quick``: ``train_quick.json``).
"""
from __future__ import annotations

import argparse
import copy
import math
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from transformers import AttentionInterface, LlamaForCausalLM
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sairlib.policy import model_config  # noqa: E402
from sairlib.tokenizers import build_tokenizer  # noqa: E402
from sairlib.world.grammar import vocabulary  # noqa: E402
from benchmarks.common import RESULTS, T0, log, matmul_tflops, rel, sync, write_result  # noqa: E402

QUICK = dict(hidden=64, layers=2, heads=4, intermediate=0, batch=4, seq_len=128, min_len=16, warmup=1, steps=3, threads=1,
             check_seqs=6)
PACKED_ATTENTION = "sair_packed"  # registered below: FlexAttention for a BlockMask, SDPA otherwise


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--quick`` overrides the sizes with a tiny CPU run."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--kv-heads", type=int, default=None, help="default: --heads")
    p.add_argument("--intermediate", type=int, default=2688,
                   help="MLP width (0: the project's default 4*hidden); 2688 = the device README's 152M row")
    p.add_argument("--codes", type=int, default=2048, help="image codebook size (world vocabulary + codes)")
    p.add_argument("--vocab", type=int, default=0, help="override the vocabulary size (0: the world's)")
    p.add_argument("--batch", type=int, default=32, help="sequences per baseline step; packed rows hold batch*seq_len")
    p.add_argument("--seq-len", type=int, default=1024, help="longest sequence (and the model's max_len)")
    p.add_argument("--min-len", type=int, default=0, help="shortest sequence (0: seq_len // 4)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps of each path (the first compiles)")
    p.add_argument("--steps", type=int, default=20, help="timed steps of each path")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--attention", choices=["auto", "flex", "sdpa"], default="auto",
                   help="packed attention (auto: flex on CUDA, sdpa on CPU where flex has no backward)")
    p.add_argument("--no-compile", action="store_true", help="optimised path without torch.compile")
    p.add_argument("--compile-mode", default="default",
                   help="torch.compile mode (default, max-autotune-no-cudagraphs, ...)")
    p.add_argument("--no-variants", action="store_true",
                   help="skip the two extra eager runs (padded to a multiple of 64; full-length, unpadded)")
    p.add_argument("--check-seqs", type=int, default=8, help="sequences in the eager exactness check")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--quick", action="store_true", help="tiny float32 model on CPU (< 30 s)")
    p.add_argument("--out", default=None, help="JSON path (default results/train.json, --quick: train_quick.json)")
    args = p.parse_args(argv)
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
        args.device = "cpu"
    args.kv_heads = args.kv_heads or args.heads
    args.min_len = args.min_len or max(2, args.seq_len // 4)
    if not 2 <= args.min_len <= args.seq_len:
        p.error(f"--min-len must lie in [2, --seq-len={args.seq_len}], got {args.min_len}")
    dev = torch.device(args.device)
    args.compile = dev.type == "cuda" and not args.no_compile
    if args.attention == "auto":
        args.attention = "flex" if dev.type == "cuda" else "sdpa"
    if args.out is None:
        args.out = str(RESULTS / ("train_quick.json" if args.quick else "train.json"))
    return args


# ----------------------------------------------------------------------------- model
def build_model(args: argparse.Namespace, device: torch.device) -> tuple[LlamaForCausalLM, int]:
    """Random-init float32 policy as :meth:`sairlib.policy.Policy.create` builds it; returns it and ``<pad>``."""
    tok = build_tokenizer(vocabulary(), n_image_codes=args.codes)
    size = {"hidden": args.hidden, "layers": args.layers, "heads": args.heads, "kv_heads": args.kv_heads,
            "max_len": args.seq_len}
    if args.intermediate:
        size["intermediate"] = args.intermediate
    cfg = model_config(tok, size)
    if args.vocab:
        cfg.vocab_size = args.vocab
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(cfg).to(device).train()
    return model, min(int(cfg.pad_token_id), cfg.vocab_size - 1)


def packed_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: Any, dropout: float = 0.0, scaling: float | None = None,
                     **kwargs: Any) -> tuple[torch.Tensor, None]:
    """HF attention function: FlexAttention when the mask is a ``BlockMask``, HF's SDPA otherwise.

    Under autocast the rotary embedding leaves q/k in float32 beside a bf16 v; SDPA is cast by
    autocast, FlexAttention is not, so q/k/v are cast to the autocast dtype here."""
    from torch.nn.attention.flex_attention import BlockMask, flex_attention
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if not isinstance(attention_mask, BlockMask):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    kind = query.device.type
    dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else value.dtype
    out = flex_attention(query.to(dtype), key.to(dtype), value.to(dtype), block_mask=attention_mask, scale=scaling,
                         enable_gqa=key.shape[1] != query.shape[1])
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(PACKED_ATTENTION, packed_attention)
AttentionMaskInterface.register(PACKED_ATTENTION, sdpa_mask)  # 2D padding masks: as for "sdpa"


def params_count(model: torch.nn.Module) -> tuple[int, int]:
    """All parameters, and all but the input embedding (lm_head is untied and counted in both)."""
    n = sum(p.numel() for p in model.parameters())
    return n, n - model.get_input_embeddings().weight.numel()


# ----------------------------------------------------------------------------- data
def sequence_stream(vocab: int, pad: int, min_len: int, max_len: int, seed: int) -> Iterator[np.ndarray]:
    """Endless random token sequences (never ``<pad>``), lengths uniform in ``[min_len, max_len]``."""
    rng = np.random.default_rng(seed)
    while True:
        ids = rng.integers(0, vocab, int(rng.integers(min_len, max_len + 1)))
        ids[ids == pad] = (pad + 1) % vocab
        yield ids


def take(stream: Iterator[np.ndarray], n: int) -> list[np.ndarray]:
    return [next(stream) for _ in range(n)]


def padded_batch(seqs: list[np.ndarray], pad: int, multiple: int = 1) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids`` / ``attention_mask`` / ``labels`` (-100 on pads), as the project's collator
    (width: the longest, rounded up to ``multiple``)."""
    width = multiple * math.ceil(max(len(s) for s in seqs) / multiple)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.from_numpy(s)
        mask[i, :len(s)] = 1
    return dict(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100))


@dataclass
class PackedBatch:
    """Sequences laid end to end in ``rows`` rows of ``width`` tokens (CPU tensors).

    ``doc`` numbers the sequences of a row; the unused tail of a row is one more "sequence" of pads
    (its own document, so that no attention row is empty) whose labels are all -100."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    position_ids: torch.Tensor
    doc: torch.Tensor
    seqs: list[np.ndarray]

    @property
    def tokens(self) -> int:
        return sum(len(s) for s in self.seqs)


def pack(stream: Iterator[np.ndarray], rows: int, width: int, pad: int,
         pending: list[np.ndarray]) -> PackedBatch:
    """Fill ``rows`` x ``width`` first-fit from ``pending`` + the stream; stops at the first sequence
    that fits nowhere (kept in ``pending`` for the next batch), so order is preserved up to rows."""
    fill = [0] * rows
    placed: list[tuple[int, int, np.ndarray]] = []
    while True:
        s = pending.pop(0) if pending else next(stream, None)
        if s is None:  # a finite stream ran out
            break
        r = next((r for r in range(rows) if fill[r] + len(s) <= width), None)
        if r is None:
            pending.append(s)
            break
        placed.append((r, fill[r], s))
        fill[r] += len(s)
    ids = torch.full((rows, width), pad, dtype=torch.long)
    labels = torch.full((rows, width), -100, dtype=torch.long)
    pos = torch.zeros((rows, width), dtype=torch.long)
    doc = torch.zeros((rows, width), dtype=torch.int32)
    ndocs = [0] * rows
    for r, start, s in placed:
        n = len(s)
        ids[r, start:start + n] = torch.from_numpy(s)
        labels[r, start + 1:start + n] = ids[r, start + 1:start + n]  # the first token is nobody's target
        pos[r, start:start + n] = torch.arange(n)
        doc[r, start:start + n] = ndocs[r]
        ndocs[r] += 1
    for r in range(rows):
        pos[r, fill[r]:] = torch.arange(width - fill[r])
        doc[r, fill[r]:] = ndocs[r]
    return PackedBatch(ids, labels, pos, doc, [s for _, _, s in placed])


class MaskBuilder:
    """Attention masks of packed rows on the device: a FlexAttention ``BlockMask`` over a persistent
    document-id buffer (one mask function for the whole run, so compiled code is reused), or a dense
    ``[rows, 1, width, width]`` boolean mask for SDPA."""

    def __init__(self, kind: str, rows: int, width: int, device: torch.device) -> None:
        self.kind, self.rows, self.width, self.device = kind, rows, width, device
        self.doc = torch.zeros((rows, width), dtype=torch.int32, device=device)
        doc = self.doc

        def same_doc_causal(b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
            return (doc[b, q] == doc[b, kv]) & (q >= kv)

        self.mask_mod = same_doc_causal

    def __call__(self, doc: torch.Tensor) -> Any:
        self.doc.copy_(doc, non_blocking=True)
        if self.kind == "flex":
            from torch.nn.attention.flex_attention import create_block_mask

            big = self.device.type == "cuda" and self.rows * self.width ** 2 > (1 << 26)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # _compile: still the cheapest way in 2.11
                return create_block_mask(self.mask_mod, self.rows, None, self.width, self.width,
                                         device=self.device, _compile=big)
        idx = torch.arange(self.width, device=self.device)
        causal = idx[:, None] >= idx[None, :]
        return ((self.doc[:, :, None] == self.doc[:, None, :]) & causal)[:, None]


def packed_inputs(batch: PackedBatch, masks: MaskBuilder, device: torch.device) -> dict[str, Any]:
    """Model keyword arguments of a packed batch (the mask passed as a ready 4D mask: HF uses it as is)."""
    mv = lambda t: t.to(device, non_blocking=True)  # noqa: E731
    return dict(input_ids=mv(batch.input_ids), labels=mv(batch.labels), position_ids=mv(batch.position_ids),
                attention_mask=masks(batch.doc))


# ----------------------------------------------------------------------------- measurements
class Stepper:
    """One training step as the Trainer does it: autocast forward, backward, clip at 1.0, AdamW step."""

    def __init__(self, model: torch.nn.Module, fn: Callable[..., Any], device: torch.device, lr: float) -> None:
        self.model, self.fn, self.device = model, fn, device
        self.amp = device.type == "cuda"
        self.opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, fused=self.amp)

    def __call__(self, inputs: dict[str, Any]) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            loss = self.fn(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.detach()


def timed_steps(step: Callable[[dict[str, Any]], torch.Tensor], make: Callable[[int], tuple[dict[str, Any], int]],
                n: int, device: torch.device) -> tuple[int, float]:
    """Run ``n`` steps on ``make(i)``'s inputs (host work and copies included); real tokens and seconds."""
    sync(device)
    t0 = time.perf_counter()
    tokens = 0
    for i in range(n):
        inputs, k = make(i)
        step(inputs)
        tokens += k
    sync(device)
    return tokens, time.perf_counter() - t0


@torch.no_grad()
def padded_loss(model: torch.nn.Module, seqs: list[np.ndarray], pad: int, device: torch.device,
                chunk: int = 16) -> float:
    """Mean next-token loss over ``seqs`` with the plain padded forward (the reference for exactness)."""
    total, count = 0.0, 0
    for i in range(0, len(seqs), chunk):
        b = {k: v.to(device) for k, v in padded_batch(seqs[i:i + chunk], pad).items()}
        labels = b.pop("labels")
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(**b).logits
        tgt = labels[:, 1:]
        total += F.cross_entropy(logits[:, :-1].float().transpose(1, 2), tgt, ignore_index=-100,
                                 reduction="sum").item()
        count += int((tgt != -100).sum())
    return total / count


@torch.no_grad()
def packed_loss(model: torch.nn.Module, seqs: list[np.ndarray], pad: int, kind: str, device: torch.device) -> float:
    """Mean loss of ``seqs`` packed into one row (a multiple of 128 wide), eager, with ``kind`` attention."""
    width = 128 * math.ceil(sum(len(s) for s in seqs) / 128)
    batch = pack(iter(seqs), 1, width, pad, [])
    inputs = packed_inputs(batch, MaskBuilder(kind, 1, width, device), device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        return model(**inputs).loss.item()


# ----------------------------------------------------------------------------- the two paths
def run_baseline(model: LlamaForCausalLM, args: argparse.Namespace, pad: int, device: torch.device,
                 variant: str = "padded") -> dict[str, Any]:
    """Eager HF model on batches of ``args.batch`` sequences: ``padded`` (the project's Trainer today:
    right-padded to the longest), ``pad64`` (widths rounded up to a multiple of 64, the collator's
    ``pad_to_multiple_of``) or ``full`` (every sequence ``seq_len`` long, no mask: the device README's setup)."""
    lo = args.seq_len if variant == "full" else args.min_len
    stream = sequence_stream(model.config.vocab_size, pad, lo, args.seq_len, args.seed + 1)
    batches = [padded_batch(take(stream, args.batch), pad, 64 if variant == "pad64" else 1)
               for _ in range(args.warmup + args.steps)]
    if variant == "full":
        for b in batches:
            del b["attention_mask"]
            b["n"] = b["input_ids"].numel()
    step = Stepper(model, model, device, args.lr)

    real = lambda b: b["n"] if "n" in b else int(b["attention_mask"].sum())  # noqa: E731

    def make(i: int) -> tuple[dict[str, Any], int]:
        b = batches[i]
        return {k: v.to(device, non_blocking=True) for k, v in b.items() if k != "n"}, real(b)

    log(f"eager {variant}: {args.warmup} warm-up steps")
    timed_steps(step, make, args.warmup, device)
    log(f"eager {variant}: {args.steps} timed steps")
    tokens, seconds = timed_steps(step, lambda i: make(args.warmup + i), args.steps, device)
    timed = batches[args.warmup:]
    slots = sum(b["input_ids"].numel() for b in timed)
    return dict(tok_s=tokens / seconds, seconds=seconds, tokens=tokens,
                pad_fraction=1 - sum(real(b) for b in timed) / slots)


def run_optimised(model: LlamaForCausalLM, args: argparse.Namespace, pad: int, device: torch.device,
                  attention: str, compiled: bool) -> dict[str, Any]:
    """Packed batches, block-diagonal causal attention, optionally ``torch.compile``d; checks exactness."""
    rows, width = (1, args.batch * args.seq_len) if attention == "flex" else (args.batch, args.seq_len)
    if attention == "flex":
        width = 128 * math.ceil(width / 128)
    stream = sequence_stream(model.config.vocab_size, pad, args.min_len, args.seq_len, args.seed + 1)
    pending: list[np.ndarray] = []
    batches = [pack(stream, rows, width, pad, pending) for _ in range(args.warmup + args.steps)]
    masks = MaskBuilder(attention, rows, width, device)
    reference = padded_loss(model, batches[0].seqs, pad, device)  # weights as the first step sees them
    fn = torch.compile(model, mode=None if args.compile_mode == "default" else args.compile_mode) if compiled \
        else model
    step = Stepper(model, fn, device, args.lr)

    def make(i: int) -> tuple[dict[str, Any], int]:
        return packed_inputs(batches[i], masks, device), batches[i].tokens

    log(f"optimised ({attention}, compile={compiled}): first step{' (compiles)' if compiled else ''}")
    first = step(make(0)[0]).item()
    log("optimised: first step done")
    if args.warmup > 1:
        timed_steps(step, lambda i: make(1 + i), args.warmup - 1, device)
    log(f"optimised: {args.steps} timed steps")
    tokens, seconds = timed_steps(step, lambda i: make(args.warmup + i), args.steps, device)
    timed = batches[args.warmup:]
    return dict(tok_s=tokens / seconds, seconds=seconds, tokens=tokens, rows=rows, row_len=width,
                pack_fill=sum(b.tokens for b in timed) / (rows * width * len(timed)),
                seqs_per_step=sum(len(b.seqs) for b in timed) / len(timed),
                exact_first_step_loss=first, exact_reference_loss=reference,
                exact_first_step_rel_diff=rel(first, reference))


def exact_eager(model: LlamaForCausalLM, args: argparse.Namespace, pad: int, device: torch.device) -> dict[str, float]:
    """Packed (dense SDPA mask, and FlexAttention forward) vs padded loss on a few sequences, eager."""
    stream = sequence_stream(model.config.vocab_size, pad, args.min_len, args.seq_len, args.seed + 2)
    seqs = take(stream, args.check_seqs)
    while len(seqs) > 1 and sum(len(s) for s in seqs) > 4096:  # eager flex materialises the scores
        seqs.pop()
    ref = padded_loss(model, seqs, pad, device)
    out = {"exact_eager_packed_sdpa_rel_diff": rel(packed_loss(model, seqs, pad, "sdpa", device), ref)}
    try:
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
        out["exact_eager_packed_flex_rel_diff"] = rel(packed_loss(model, seqs, pad, "flex", device), ref)
    except Exception as e:  # noqa: BLE001 - reported, the benchmark goes on
        log(f"flex forward check failed: {type(e).__name__}: {e}")
        out["exact_eager_packed_flex_rel_diff"] = float("nan")
    return out


# ----------------------------------------------------------------------------- report
def table(r: dict[str, Any]) -> str:
    rows = [("device", r["device"]), ("params (M, all)", f"{r['params_M']:.2f}"),
            ("model", f"{r['hidden']}x{r['layers']} heads {r['heads']} vocab {r['vocab']}"),
            ("batch x seq_len (lengths)", f"{r['batch']} x {r['seq_len']} ({r['min_len']}..{r['seq_len']})"),
            ("dtype", r["dtype"]), ("matmul TFLOP/s (measured)", f"{r['matmul_tflops']:.4g}"),
            ("baseline tok/s (real tokens)", f"{r['baseline_tok_s']:.0f}"), ("baseline MFU", f"{r['baseline_mfu']:.3f}"),
            ("  padding in its batches", f"{r['baseline_pad_fraction']:.3f}"),
            *[(f"eager {v} tok/s / MFU", f"{r[f'eager_{v}_tok_s']:.0f} / {r[f'eager_{v}_mfu']:.3f}")
              for v in ("pad64", "full") if f"eager_{v}_tok_s" in r],
            (f"optimised tok/s ({r['attention']}, compile={r['compile']})", f"{r['tok_s']:.0f}"),
            ("optimised MFU", f"{r['mfu']:.3f}"), ("  packing fill", f"{r['pack_fill']:.3f}"),
            ("speedup (optimised / baseline)", f"{r['speedup']:.2f}x"),
            ("exact: first step vs padded (rel)", f"{r['exact_first_step_rel_diff']:.2e}"),
            ("exact: eager packed sdpa / flex (rel)",
             f"{r['exact_eager_packed_sdpa_rel_diff']:.2e} / {r['exact_eager_packed_flex_rel_diff']:.2e}"),
            ("torch / transformers", f"{r['torch']} / {r['transformers']}")]
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table and write the JSON; returns the result dict."""
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = device.type == "cuda"
    log(f"device {device}, torch {torch.__version__}, transformers {transformers.__version__}")
    rate, rate_n = matmul_tflops(device, torch.bfloat16 if cuda else torch.float32)
    log(f"matmul rate {rate:.1f} TFLOP/s (n={rate_n})")
    base, pad = build_model(args, device)
    opt_model = copy.deepcopy(base)  # same initial weights for both paths
    opt_model.set_attn_implementation(PACKED_ATTENTION)
    n_all, n_non_emb = params_count(base)
    log(f"model {n_all / 1e6:.1f}M parameters, vocab {base.config.vocab_size}")
    checks = exact_eager(opt_model, args, pad, device)
    log(f"eager exactness: {checks}")
    baseline = run_baseline(base, args, pad, device)
    log(f"baseline {baseline['tok_s']:.0f} tok/s")
    variants = {}
    if not args.no_variants:
        for v in ("pad64", "full"):  # same model, trained on: only throughput is read from these
            variants[v] = run_baseline(base, args, pad, device, v)
            log(f"eager {v} {variants[v]['tok_s']:.0f} tok/s")
    del base
    if cuda:
        torch.cuda.empty_cache()

    w0 = {k: v.detach().clone() for k, v in opt_model.state_dict().items()}
    attempts = [(args.attention, args.compile)]
    if args.attention == "flex":
        attempts.append(("sdpa", args.compile))
    if args.compile:
        attempts.append(("sdpa", False))
    fallbacks: list[str] = []
    for attention, compiled in attempts:
        try:
            opt_model.load_state_dict(w0)
            opt = run_optimised(opt_model, args, pad, device, attention, compiled)
            break
        except Exception as e:  # noqa: BLE001 - fall back to the next, plainer setting and say why
            traceback.print_exc()
            fallbacks.append(f"{attention}/compile={compiled}: {type(e).__name__}: {str(e)[:300]}")
            log(f"optimised path failed, falling back: {fallbacks[-1]}")
            torch._dynamo.reset()
            opt_model.zero_grad(set_to_none=True)
            if cuda:
                torch.cuda.empty_cache()
    else:
        raise RuntimeError("every optimised setting failed: " + " | ".join(fallbacks))
    log(f"optimised {opt['tok_s']:.0f} tok/s")

    flops = lambda tok_s, n: 6 * n * tok_s / (rate * 1e12)  # noqa: E731
    r = dict(device=torch.cuda.get_device_name(device) if cuda else f"cpu ({torch.get_num_threads()} thread(s))",
             params_M=n_all / 1e6, params_counted="all (input embedding and untied lm_head included)",
             params_non_embedding_M=n_non_emb / 1e6, hidden=args.hidden, layers=args.layers, heads=args.heads,
             kv_heads=args.kv_heads, vocab=opt_model.config.vocab_size, batch=args.batch, seq_len=args.seq_len,
             min_len=args.min_len,
             dtype="bf16 autocast, float32 weights (as Trainer bf16=True)" if cuda else "float32",
             optimizer="AdamW fused" if cuda else "AdamW (foreach)", grad_clip=1.0,
             matmul_tflops=rate, matmul_n=rate_n,
             tok_s=opt["tok_s"], mfu=flops(opt["tok_s"], n_all), mfu_non_embedding=flops(opt["tok_s"], n_non_emb),
             baseline_tok_s=baseline["tok_s"], baseline_mfu=flops(baseline["tok_s"], n_all),
             baseline_pad_fraction=baseline["pad_fraction"], speedup=opt["tok_s"] / baseline["tok_s"],
             **{f"eager_{v}_{k}": (x["tok_s"] if k == "tok_s" else flops(x["tok_s"], n_all))
                for v, x in variants.items() for k in ("tok_s", "mfu")},
             attention=attention, compile=compiled, compile_mode=args.compile_mode if compiled else None,
             compile_skipped_reason=None if compiled else ("CPU" if not cuda else "disabled or failed"),
             fallbacks=fallbacks, warmup=args.warmup, steps=args.steps,
             seconds=opt["seconds"], baseline_seconds=baseline["seconds"], tokens=opt["tokens"],
             baseline_tokens=baseline["tokens"], rows=opt["rows"], row_len=opt["row_len"], pack_fill=opt["pack_fill"],
             seqs_per_step=opt["seqs_per_step"], exact_first_step_loss=opt["exact_first_step_loss"],
             exact_reference_loss=opt["exact_reference_loss"],
             exact_first_step_rel_diff=opt["exact_first_step_rel_diff"], **checks,
             torch=torch.__version__, transformers=transformers.__version__, quick=args.quick,
             total_seconds=time.perf_counter() - T0)
    print(table(r), flush=True)
    write_result(args.out, r)
    return r


if __name__ == "__main__":
    main()
