"""Where the training loop's time goes: collation, the bare model step (padded vs packed), and ``train_lm``.

    python benchmarks/train_loop.py --quick     # CPU, float32, tiny model, well under a minute
    python benchmarks/train_loop.py --device cuda --hidden 512 --layers 8 --heads 8 --batch 128 --steps 120
    python benchmarks/train_loop.py --device cuda --batch 32 --step-lengths 150,1200 --sections step  # SFT-like

Everything runs on the project's own pretraining path: the world tokenizers of
:func:`sairlib.world_setup.build_tokenizers` (``--patch-size``, ``--codes``; params/gpu.yaml's
world 4x4 at 64 px), a random-init policy from :meth:`sairlib.policy.Policy.create` (SDPA, same
seed, so the same initial weights, in every run), and examples from
:func:`sairlib.pretrain.pretrain_examples` with params/gpu.yaml's ``pretrain_mix``. Three sections:

* **data**: the collator of :func:`sairlib.training.train_lm`, ``lm_collator(tokenizer)``
  (right-padded to the longest row, to a multiple of 64 on CUDA), on ``--data-batches`` batches of
  ``--batch`` examples: ms per batch, token slots (padded) and real tokens per batch, the padding
  fraction; and the packed collator ``lm_collator(tokenizer, packing=True)`` (ms per batch).
* **step**: the bare training step, no Trainer: bf16 autocast and fused AdamW on CUDA (float32 and
  AdamW on CPU), gradient clipping at 1.0, batches collated beforehand (collation is the data
  section's) and copied to the device inside the timed step. Three settings on the same batches:
  ``padded_sdpa`` (the project's default), ``packed_sdpa`` (``DataCollatorWithFlattening``: one
  row, position ids restarting per sequence, a dense block-diagonal SDPA mask) and ``packed_flex``
  (the same rows, ``config._attn_implementation = "flex_attention"``: a block-sparse mask;
  skipped, with the reason recorded, where FlexAttention cannot train, e.g. on CPU where it has no
  backward). Per setting: ms per step, tokens/s counted on real tokens only, the first step's loss
  (same weights, same batch: the packed losses must equal the padded one to 1e-3 relative, the
  differences are recorded) and peak GPU memory. ``--step-lengths LO,HI`` replaces the world
  examples of this section by random sequences of uniform lengths in [LO, HI] with the first
  third of each unlabelled (SFT-like prompts), as the earlier probe did for SFT.
* **mfu**: :func:`sairlib.training.train_lm` as a run uses it, twice from the same initial weights:
  ``padded`` (the default hyperparameters) and ``packed_compiled`` (``packing: true, compile: true``:
  padding-free rows under FlexAttention, the Trainer's ``torch_compile``; on CPU packing under SDPA,
  not compiled). Each trains one epoch over exactly ``--mfu-steps`` batches, so every example is
  seen once and the real tokens per step are known on average. A step clock (a ``TrainerCallback``
  that synchronises the device only at the two steps it reads) times the steps after
  ``--mfu-skip`` (compilation and warm-up excluded): steady tokens/s = mean real tokens per step x
  steps / seconds, and MFU = 6 x parameters (all) x tokens/s over the dense bf16 matmul rate
  measured in the same run on the device the Trainer uses (float32 on CPU), as in
  ``benchmarks/train.py``. The whole run's tokens/s (set-up and compilation included) and the
  logged losses are recorded beside it.
* **trainer**: :func:`sairlib.training.train_lm` (the real Trainer) for ``--steps`` steps with the
  data loader's collating workers at 0 and at ``--workers`` (``sairlib.training.loader_workers``
  patched), each run from the same initial weights into a fresh temporary output folder
  (``train_lm`` resumes from the newest checkpoint it finds there). Per run: wall ms per step
  (the Trainer's set-up and its final checkpoint included, as in a real run), the Trainer's own
  ``train_runtime`` per step, the logged losses.
  The sampler stays in the main process, so both runs see the same batches: on CPU the losses must
  be bitwise equal; on CUDA the maximum relative difference is recorded (GPU kernels are not
  bitwise reproducible run to run).

``--intermediate`` sets the policy's MLP width (0: 4 x hidden; ``--hidden 1024 --layers 12 --heads 16
--intermediate 2688`` is the 153.9M configuration of ``benchmarks/train.py``).

Failed checks (packed first loss off by more than 1e-3, CPU losses not equal) raise after the
table and the JSON are written. Writes ``benchmarks/results/train_loop.json``
(``--quick``: ``train_loop_quick.json``).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import transformers
from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import sairlib.training as training  # noqa: E402
from sairlib.policy import Policy  # noqa: E402
from sairlib.pretrain import pretrain_examples  # noqa: E402
from sairlib.world import WorldAnalyzer, WorldConfig  # noqa: E402
from sairlib.world_setup import build_tokenizers  # noqa: E402
from benchmarks.common import RESULTS, matmul_tflops, policy_options, T0, log, rel, sync, write_result  # noqa: E402

# params/gpu.yaml's world and pretraining mix
WORLD = dict(grid=4, image_size=64, max_objects=8, eval_fraction=0.2)
MIX = {"t2i": 2, "edit": 4, "compose": 1, "single_edit": 3, "describe": 2, "evaluate": 4}
SECTIONS = ("data", "step", "mfu", "trainer")
# the mfu section's two train_lm settings: today's default and the packed, compiled step
MFU_SETTINGS = (("padded", {}), ("packed_compiled", {"packing": True, "compile": True}))
STEP_SETTINGS = (("padded_sdpa", "sdpa", False), ("packed_sdpa", "sdpa", True),
                 ("packed_flex", "flex_attention", True))
FIRST_LOSS_RTOL = 1e-3
QUICK = dict(hidden=64, layers=2, heads=4, batch=8, codes=64, fit_tasks=20, residual_images=10, data_batches=6,
             warmup=1, bench_steps=3, steps=6, logging_steps=2, data_workers=1, threads=1, device="cpu",
             mfu_steps=6, mfu_skip=2)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--quick`` makes a tiny CPU run's sizes the defaults (explicit options still win)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    policy_options(p)
    p.add_argument("--max-len", type=int, default=2048, help="the model's max_len")
    p.add_argument("--intermediate", type=int, default=0, help="MLP width (0: 4 x hidden)")
    p.add_argument("--batch", type=int, default=128, help="examples per batch (all sections)")
    p.add_argument("--fit-tasks", type=int, default=1000, help="tasks the image codec is fitted on")
    p.add_argument("--residual-images", type=int, default=500, help="perturbed images in the codec fit")
    p.add_argument("--data-batches", type=int, default=20, help="batches collated in the data section")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps of each bare-step setting (first included)")
    p.add_argument("--bench-steps", type=int, default=10, help="timed steps of each bare-step setting")
    p.add_argument("--step-lengths", default="",
                   help="LO,HI: bare steps on random sequences of these lengths instead of world examples")
    p.add_argument("--steps", type=int, default=120, help="train_lm steps per worker setting")
    p.add_argument("--mfu-steps", type=int, default=200, help="train_lm steps per setting of the mfu section")
    p.add_argument("--mfu-skip", type=int, default=40, help="first steps left out of the mfu section's timing")
    p.add_argument("--logging-steps", type=int, default=20)
    p.add_argument("--workers", type=int, default=4, help="data-loader workers compared with 0")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--data-workers", type=int, default=min(16, os.cpu_count() or 1),
                   help="processes building the pretraining examples (the result does not depend on it)")
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset of data,step,trainer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--quick", action="store_true",
                   help="tiny float32 model on CPU (< 1 min); options given explicitly still apply")
    p.add_argument("--out", default=None,
                   help="JSON path (default results/train_loop.json, --quick: train_loop_quick.json)")
    args = p.parse_args(argv)
    if args.quick:  # QUICK's sizes become the defaults, so that e.g. --quick --steps 4 works
        p.set_defaults(**QUICK)
        args = p.parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    if not args.sections or set(args.sections) - set(SECTIONS):
        p.error(f"--sections: a subset of {','.join(SECTIONS)}, got {args.sections}")
    if args.step_lengths:
        try:
            lo, hi = (int(x) for x in args.step_lengths.split(","))
        except ValueError:
            p.error(f"--step-lengths: LO,HI, got {args.step_lengths!r}")
        if not 2 <= lo <= hi <= args.max_len:
            p.error(f"--step-lengths: need 2 <= LO <= HI <= --max-len, got {lo},{hi}")
        args.step_lengths = (lo, hi)
    if args.warmup < 1 or args.bench_steps < 1 or args.steps < 1 or args.data_batches < 1:
        p.error("--warmup, --bench-steps, --steps and --data-batches must be at least 1")
    if not 1 <= args.mfu_skip < args.mfu_steps:
        p.error(f"--mfu-skip must lie in [1, --mfu-steps), got {args.mfu_skip} of {args.mfu_steps}")
    if args.out is None:
        args.out = str(RESULTS / ("train_loop_quick.json" if args.quick else "train_loop.json"))
    return args


# ----------------------------------------------------------------------------- helpers
def rows_of(examples: list[dict[str, Any]]) -> list[dict[str, list[int]]]:
    """What the collators see: ``input_ids`` and ``labels`` only (``train_lm`` selects the same columns)."""
    return [{"input_ids": list(e["input_ids"]), "labels": list(e["labels"])} for e in examples]


def batches_of(rows: list[Any], batch: int, n: int) -> list[list[Any]]:
    return [rows[i * batch:(i + 1) * batch] for i in range(n)]


def real_tokens(rows: list[dict[str, list[int]]]) -> int:
    return sum(len(r["input_ids"]) for r in rows)


def synthetic_rows(n: int, lo: int, hi: int, vocab: int, pad: int, seed: int) -> list[dict[str, list[int]]]:
    """Random sequences of lengths uniform in [lo, hi] (never ``<pad>``), the first third unlabelled."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ids = rng.integers(0, vocab, int(rng.integers(lo, hi + 1)))
        ids[ids == pad] = (pad + 1) % vocab
        labels = ids.copy()
        labels[:len(ids) // 3] = -100
        out.append({"input_ids": ids.tolist(), "labels": labels.tolist()})
    return out


def new_policy(tok: Any, codec: Any, args: argparse.Namespace) -> Policy:
    """The policy as the notebooks create it (SDPA); the same seed gives the same initial weights."""
    size = {"hidden": args.hidden, "layers": args.layers, "heads": args.heads, "max_len": args.max_len}
    if args.intermediate:
        size["intermediate"] = args.intermediate
    return Policy.create(tok, codec, size, seed=args.seed)


# ----------------------------------------------------------------------------- data
def collation(tok: Any, batches: list[list[dict[str, list[int]]]]) -> dict[str, Any]:
    """``lm_collator`` padded and packed on each batch: ms per batch, token slots, real tokens."""
    padded, packed = training.lm_collator(tok), training.lm_collator(tok, packing=True)
    padded(batches[0]), packed(batches[0])  # first calls (imports, caches) not timed
    ms, ms_packed, slots, real, widths = [], [], [], [], []
    for rows in batches:
        t = time.perf_counter()
        b = padded(rows)
        ms.append(1000 * (time.perf_counter() - t))
        t = time.perf_counter()
        packed(rows)
        ms_packed.append(1000 * (time.perf_counter() - t))
        slots.append(b["input_ids"].numel())
        real.append(int(b["attention_mask"].sum()))
        widths.append(b["input_ids"].shape[1])
    lengths = [len(r["input_ids"]) for rows in batches for r in rows]
    return dict(batches=len(batches), collate_ms=float(np.mean(ms)), collate_ms_median=float(np.median(ms)),
                collate_packed_ms=float(np.mean(ms_packed)), padded_tokens_per_batch=float(np.mean(slots)),
                real_tokens_per_batch=float(np.mean(real)), padding_fraction=1 - sum(real) / sum(slots),
                padded_width_mean=float(np.mean(widths)), pad_multiple=training.pad_multiple(),
                length_min=int(min(lengths)), length_mean=float(np.mean(lengths)), length_max=int(max(lengths)))


# ----------------------------------------------------------------------------- bare step
def flex_trainable(device: torch.device) -> str | None:
    """None if FlexAttention can run forward and backward on ``device``, else why not (a tiny eager probe)."""
    try:
        from torch.nn.attention.flex_attention import flex_attention

        q = torch.randn(1, 1, 16, 16, device=device, requires_grad=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            flex_attention(q, q, q).sum().backward()
        return None
    except Exception as e:  # noqa: BLE001 - the reason is the result
        return f"{type(e).__name__}: {str(e)[:300]}"


def stepper(model: torch.nn.Module, device: torch.device, lr: float) -> Callable[[dict[str, Any]], torch.Tensor]:
    """One training step as the Trainer takes it (bf16 autocast and fused AdamW on CUDA, clip 1.0)."""
    cuda = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=lr, fused=cuda)

    def step(batch: dict[str, Any]) -> torch.Tensor:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = model(**batch, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def bare_step(name: str, attention: str, packing: bool, tok: Any, codec: Any, batches: list[list[dict]],
              args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Warm-up steps (the first one's loss kept), then ``bench_steps`` timed ones on the next batches."""
    collate = training.lm_collator(tok, packing)
    inputs = [collate(rows) for rows in batches]
    model = new_policy(tok, codec, args).model.to(device).train()
    model.config._attn_implementation = attention
    step = stepper(model, device, args.lr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # flex without torch.compile, the packed-SDPA notice, ...
        first = step(inputs[0]).item()
        for b in inputs[1:args.warmup]:
            step(b)
        sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        timed = inputs[args.warmup:]
        t = time.perf_counter()
        for b in timed:
            step(b)
        sync(device)
        seconds = time.perf_counter() - t
    tokens = sum(real_tokens(rows) for rows in batches[args.warmup:])
    return dict(name=name, attention=attention, packing=packing, first_loss=first, ms_per_step=1000 * seconds / len(timed),
                tok_s=tokens / seconds, tokens=tokens, seconds=seconds,
                width_mean=float(np.mean([b["input_ids"].shape[1] for b in timed])),
                rows=int(timed[0]["input_ids"].shape[0]),
                peak_gib=torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None)


def step_section(tok: Any, codec: Any, rows: list[dict], args: argparse.Namespace,
                 device: torch.device) -> dict[str, Any]:
    n = args.warmup + args.bench_steps
    if args.step_lengths:
        lo, hi = args.step_lengths
        rows = synthetic_rows(n * args.batch, lo, hi, len(tok), tok.pad_token_id, args.seed + 1)
    batches = batches_of(rows, args.batch, n)
    flex_reason = flex_trainable(device)
    settings = []
    for name, attention, packing in STEP_SETTINGS:
        if attention == "flex_attention" and flex_reason:
            settings.append(dict(name=name, attention=attention, packing=packing, skipped=flex_reason))
            log(f"step {name}: skipped ({flex_reason})")
            continue
        log(f"step {name}: {args.warmup} warm-up + {args.bench_steps} timed steps")
        try:
            settings.append(bare_step(name, attention, packing, tok, codec, batches, args, device))
        except Exception as e:  # noqa: BLE001 - recorded; the other settings go on
            traceback.print_exc()
            settings.append(dict(name=name, attention=attention, packing=packing,
                                 skipped=f"failed: {type(e).__name__}: {str(e)[:300]}"))
        finally:
            torch._dynamo.reset()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        s = settings[-1]
        if "skipped" not in s:
            log(f"step {name}: {s['ms_per_step']:.1f} ms, {s['tok_s']:.0f} tok/s, first loss {s['first_loss']:.6f}")
    ref = settings[0]
    for s in settings[1:]:
        if "first_loss" in s and "first_loss" in ref:
            s["first_loss_rel_diff"] = rel(s["first_loss"], ref["first_loss"])
            s["speedup_vs_padded"] = s["tok_s"] / ref["tok_s"]
    return dict(inputs="synthetic" if args.step_lengths else "world pretraining examples",
                lengths=list(args.step_lengths) if args.step_lengths else None, batch=args.batch,
                warmup=args.warmup, steps=args.bench_steps,
                dtype="bf16 autocast, float32 weights" if device.type == "cuda" else "float32",
                optimizer="AdamW fused" if device.type == "cuda" else "AdamW", grad_clip=1.0, lr=args.lr,
                settings=settings)


# ----------------------------------------------------------------------------- train_lm's MFU
def timed_train_lm(h: dict[str, Any], tok: Any, codec: Any, ds: Any, args: argparse.Namespace,
                   callbacks: list[Any] | None = None) -> tuple[list[dict[str, Any]], float]:
    """``train_lm`` with hyperparameters ``h`` on a new policy (the same initial weights every time), in a
    fresh temporary folder (``train_lm`` resumes from any checkpoint it finds); its log and wall seconds."""
    model = new_policy(tok, codec, args).model
    with tempfile.TemporaryDirectory(prefix="train_loop_") as out_dir:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = time.perf_counter()
            hist = training.train_lm(model, tok, ds, None, h, out_dir, args.seed, callbacks=callbacks)
            return hist, time.perf_counter() - t


class StepClock(TrainerCallback):
    """Wall time at the end of the optimizer steps in ``at`` (the device synchronised first, and only
    there), and the attention the model trains under."""

    def __init__(self, at: tuple[int, ...]) -> None:
        self.at, self.times, self.attention = set(at), {}, None

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.attention = getattr(getattr(model, "config", None), "_attn_implementation", None)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step in self.at:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.times[state.global_step] = time.perf_counter()


def mfu_run(name: str, extra: dict[str, Any], tok: Any, codec: Any, ds: Any, args: argparse.Namespace,
            rate_tflops: float, n_params: int) -> dict[str, Any]:
    """One epoch of ``train_lm`` over ``ds`` (``--mfu-steps`` batches) with ``extra`` hyperparameters."""
    cuda = torch.cuda.is_available()
    h = {"batch_size": args.batch, "lr": args.lr, "epochs": 1.0, "logging_steps": args.logging_steps,
         "save_steps": 10 ** 9, **extra}
    if not cuda:
        h.pop("compile", None)  # compiling on the CPU costs minutes and says nothing about the GPU
    clock = StepClock((args.mfu_skip, args.mfu_steps))
    hist, seconds = timed_train_lm(h, tok, codec, ds, args, callbacks=[clock])
    tokens = sum(len(x) for x in ds["input_ids"])
    steady_s = clock.times[args.mfu_steps] - clock.times[args.mfu_skip]
    tok_s = tokens / args.mfu_steps * (args.mfu_steps - args.mfu_skip) / steady_s
    whole = tokens / seconds
    mfu = lambda x: 6 * n_params * x / (rate_tflops * 1e12)  # noqa: E731
    return dict(name=name, hparams={k: v for k, v in h.items() if k in ("packing", "compile")},
                attention=clock.attention, steps=args.mfu_steps, timed_steps=args.mfu_steps - args.mfu_skip,
                tokens=tokens, tokens_per_step=tokens / args.mfu_steps, seconds=seconds, steady_seconds=steady_s,
                ms_per_step=1000 * steady_s / (args.mfu_steps - args.mfu_skip), tok_s=tok_s, mfu=mfu(tok_s),
                whole_run_tok_s=whole, whole_run_mfu=mfu(whole), losses=[x["loss"] for x in hist if "loss" in x])


def mfu_section(tok: Any, codec: Any, rows: list[dict], args: argparse.Namespace, n_params: int) -> dict[str, Any]:
    from datasets import Dataset

    ds = Dataset.from_list(rows[:args.mfu_steps * args.batch])
    # the Trainer trains on a GPU wherever there is one, even with --device cpu: its rate is the one to use
    cuda = torch.cuda.is_available()
    rate, rate_n = matmul_tflops(torch.device("cuda" if cuda else "cpu"), torch.bfloat16 if cuda else torch.float32)
    log(f"mfu: matmul rate {rate:.1f} TFLOP/s (n={rate_n})")
    runs = []
    for name, extra in MFU_SETTINGS:
        log(f"mfu {name}: train_lm, {args.mfu_steps} steps of {args.batch}, timed after {args.mfu_skip}")
        try:
            runs.append(mfu_run(name, extra, tok, codec, ds, args, rate, n_params))
            log(f"mfu {name}: {runs[-1]['tok_s']:.0f} tok/s steady, MFU {runs[-1]['mfu']:.3f}; "
                f"losses {runs[-1]['losses']}")
        except Exception as e:  # noqa: BLE001 - recorded; the other setting goes on
            traceback.print_exc()
            runs.append(dict(name=name, skipped=f"failed: {type(e).__name__}: {str(e)[:300]}"))
        finally:
            torch._dynamo.reset()
            if cuda:
                torch.cuda.empty_cache()
    out = dict(trainer_device="cuda" if cuda else "cpu",
               matmul_tflops=rate, matmul_n=rate_n, matmul_dtype="bf16" if cuda else "float32",
               batch=args.batch, steps=args.mfu_steps, skip=args.mfu_skip, examples=len(ds), runs=runs)
    base, new = runs
    if "skipped" not in base and "skipped" not in new:
        out["speedup"] = new["tok_s"] / base["tok_s"]
        out["losses_max_rel_diff"] = max((rel(x, y) for x, y in zip(new["losses"], base["losses"])),
                                         default=float("nan"))
    return out


# ----------------------------------------------------------------------------- train_lm
def trainer_run(workers: int, tok: Any, codec: Any, ds: Any, args: argparse.Namespace) -> dict[str, Any]:
    """``train_lm`` for ``args.steps`` steps with ``workers`` collating processes, in a fresh folder."""
    patched = training.loader_workers
    training.loader_workers = lambda: workers
    try:
        h = {"batch_size": args.batch, "lr": args.lr, "max_steps": args.steps, "logging_steps": args.logging_steps,
             "save_steps": 10 ** 9}
        hist, seconds = timed_train_lm(h, tok, codec, ds, args)
    finally:
        training.loader_workers = patched
    runtime = next((x["train_runtime"] for x in reversed(hist) if "train_runtime" in x), float("nan"))
    return dict(workers=workers, ms_per_step=1000 * seconds / args.steps, seconds=seconds,
                runtime_ms_per_step=1000 * runtime / args.steps,
                losses=[x["loss"] for x in hist if "loss" in x])


def trainer_section(tok: Any, codec: Any, rows: list[dict], args: argparse.Namespace) -> dict[str, Any]:
    from datasets import Dataset

    ds = Dataset.from_list(rows)
    runs = []
    for w in (0, args.workers):
        log(f"train_lm: {args.steps} steps, {w} loader workers")
        runs.append(trainer_run(w, tok, codec, ds, args))
        log(f"train_lm, {w} workers: {runs[-1]['ms_per_step']:.1f} ms/step, losses {runs[-1]['losses']}")
    a, b = runs[0]["losses"], runs[1]["losses"]
    return dict(device="cuda" if torch.cuda.is_available() else "cpu", batch=args.batch, steps=args.steps,
                logging_steps=args.logging_steps, lr=args.lr, examples=len(rows), runs=runs,
                speedup=runs[0]["ms_per_step"] / runs[1]["ms_per_step"],
                losses_bitwise_equal=a == b and len(a) > 0,
                losses_max_rel_diff=max((rel(x, y) for x, y in zip(b, a)), default=float("nan")))


# ----------------------------------------------------------------------------- report
def checks_of(r: dict[str, Any]) -> dict[str, Any]:
    """True / False per check, None where its section or setting did not run."""
    c: dict[str, Any] = {}
    if "step" in r:
        for s in r["step"]["settings"][1:]:
            d = s.get("first_loss_rel_diff")
            c[f"{s['name']}_first_loss_within_1e-3"] = None if d is None else bool(d <= FIRST_LOSS_RTOL)
    if "mfu" in r and "losses_max_rel_diff" in r["mfu"]:  # float32 on CPU: the same updates up to float order
        c["mfu_packed_losses_within_1e-3_on_cpu"] = (bool(r["mfu"]["losses_max_rel_diff"] <= FIRST_LOSS_RTOL)
                                                     if r["mfu"]["trainer_device"] == "cpu" else None)
    if "trainer" in r:
        c["trainer_losses_bitwise_equal_on_cpu"] = (r["trainer"]["losses_bitwise_equal"]
                                                    if r["trainer"]["device"] == "cpu" else None)
    return c


def table(r: dict[str, Any]) -> str:
    """One aligned table: section, setting, ms, tokens/s (real tokens), details."""
    head = ("section", "setting", "ms", "tok/s (real)", "details")
    rows: list[tuple[str, ...]] = []
    if "data" in r:
        d = r["data"]
        rows.append(("data", "lm_collator, padded", f"{d['collate_ms']:.2f}", "",
                     f"batch {r['batch']}: {d['padded_tokens_per_batch']:.0f} slots, {d['real_tokens_per_batch']:.0f} "
                     f"real tokens, padding {d['padding_fraction']:.3f} (lengths {d['length_min']}-{d['length_max']})"))
        rows.append(("data", "lm_collator, packing", f"{d['collate_packed_ms']:.2f}", "", "one padding-free row"))
    if "step" in r:
        for s in r["step"]["settings"]:
            if "skipped" in s:
                rows.append(("step", s["name"], "-", "-", f"skipped: {s['skipped'].split('. ')[0][:100]}"))
                continue
            detail = f"first loss {s['first_loss']:.6f}"
            if "first_loss_rel_diff" in s:
                detail += f" (rel diff {s['first_loss_rel_diff']:.1e}), {s['speedup_vs_padded']:.2f}x padded"
            if s["peak_gib"] is not None:
                detail += f", peak {s['peak_gib']:.2f} GiB"
            rows.append(("step", s["name"], f"{s['ms_per_step']:.1f}", f"{s['tok_s']:.0f}", detail))
    if "mfu" in r:
        m = r["mfu"]
        for run in m["runs"]:
            if "skipped" in run:
                rows.append(("mfu", run["name"], "-", "-", f"skipped: {run['skipped'][:100]}"))
                continue
            rows.append(("mfu", f"train_lm, {run['name']}", f"{run['ms_per_step']:.1f}", f"{run['tok_s']:.0f}",
                         f"MFU {run['mfu']:.3f} ({run['attention']}); whole run {run['whole_run_tok_s']:.0f} tok/s; "
                         "losses " + ", ".join(f"{x:.4f}" for x in run["losses"][:4])))
        if "speedup" in m:
            rows.append(("mfu", "packed_compiled / padded", "", "",
                         f"{m['speedup']:.2f}x; matmul {m['matmul_tflops']:.4g} TFLOP/s; "
                         f"losses max rel diff {m['losses_max_rel_diff']:.1e}"))
    if "trainer" in r:
        t = r["trainer"]
        for run in t["runs"]:
            rows.append(("trainer", f"train_lm, {run['workers']} workers", f"{run['ms_per_step']:.1f}", "",
                         f"runtime {run['runtime_ms_per_step']:.1f} ms/step; losses "
                         + ", ".join(f"{x:.4f}" for x in run["losses"][:6])))
        rows.append(("trainer", f"0 vs {r['workers']} workers", "", "",
                     f"{t['speedup']:.2f}x; losses bitwise equal: {t['losses_bitwise_equal']}, "
                     f"max rel diff {t['losses_max_rel_diff']:.1e}"))
    rows.append(("run", r["device"], "", "", f"model {r['hidden']}x{r['layers']} heads {r['heads']}, "
                 f"{r['params_M']:.2f}M params, vocab {r['vocab']}; torch {r['torch']}, transformers {r['transformers']}"))
    w = [max(len(x[i]) for x in (head, *rows)) for i in range(4)]

    def line(x: tuple[str, ...]) -> str:
        return f"{x[0]:<{w[0]}}  {x[1]:<{w[1]}}  {x[2]:>{w[2]}}  {x[3]:>{w[3]}}  {x[4]}".rstrip()

    return "\n".join([line(head), line(tuple("-" * n for n in (*w, 7))), *(line(x) for x in rows)])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table and write the JSON; returns the result dict."""
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = device.type == "cuda"
    log(f"device {device}, torch {torch.__version__}, transformers {transformers.__version__}")
    cfg = WorldConfig(**WORLD)
    codec, tok, tok_info = build_tokenizers(cfg, args.patch_size, args.codes, args.fit_tasks, args.residual_images,
                                            args.seed)
    policy = new_policy(tok, codec, args)
    n_params = policy.n_params
    need = args.batch * max(args.data_batches, args.warmup + args.bench_steps,
                            args.steps + 2 if "trainer" in args.sections else 0,
                            args.mfu_steps if "mfu" in args.sections else 0)
    log(f"tokenizers: {tok_info}; building {need} pretraining examples")
    rows = rows_of(pretrain_examples(policy.layout, codec, WorldAnalyzer(), need, MIX, args.seed, cfg,
                                     args.data_workers))
    del policy
    r: dict[str, Any] = dict(
        device=torch.cuda.get_device_name(device) if cuda else f"cpu ({torch.get_num_threads()} thread(s))",
        params_M=n_params / 1e6, hidden=args.hidden, layers=args.layers, heads=args.heads, max_len=args.max_len,
        intermediate=args.intermediate or 4 * args.hidden,
        vocab=len(tok), batch=args.batch, patch_size=args.patch_size, codes=args.codes,
        tokens_per_image=codec.tokens_per_image, world=WORLD, mix=MIX, workers=args.workers, seed=args.seed,
        sections=args.sections, torch=torch.__version__, transformers=transformers.__version__, quick=args.quick)
    if "data" in args.sections:
        log(f"data: collating {args.data_batches} batches of {args.batch}")
        r["data"] = collation(tok, batches_of(rows, args.batch, args.data_batches))
    if "step" in args.sections:
        r["step"] = step_section(tok, codec, rows, args, device)
    if "mfu" in args.sections:
        r["mfu"] = mfu_section(tok, codec, rows, args, n_params)
    if "trainer" in args.sections:
        r["trainer"] = trainer_section(tok, codec, rows, args)
    r["checks"] = checks_of(r)
    r["total_seconds"] = time.perf_counter() - T0
    print(table(r), flush=True)
    out = write_result(args.out, r)
    failed = [k for k, v in r["checks"].items() if v is False]
    if failed:
        raise AssertionError(f"checks failed: {', '.join(failed)} (see {out})")
    return r


if __name__ == "__main__":
    main()
