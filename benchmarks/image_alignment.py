"""Can the policy compare two images cell by cell? Sequential positions against image-local positions.

    python benchmarks/image_alignment.py --quick      # CPU, float32, tiny model, about a minute
    python benchmarks/image_alignment.py --device cuda --examples 40000 --epochs 3

The question (docs/LOG.md, sixth session): the base model names colours from one image almost
perfectly, yet misses a kept object drawn in the wrong colour, even when the request is to change
nothing. Under 1-D rotary positions, the code of a cell in the candidate image sits a varying
distance from the same cell's code in the input image, so the model must learn a sharp attention
at that distance. Two position schemes, the same initial weights, the same batches:

* ``sequential``: positions 0, 1, 2, ... (what the project trains and samples with);
* ``image_local``: every image code at ``IMAGE_BASE + its patch index`` (the same cell of every
  image shares a position, so comparing two images is attention at distance 0, in the spirit of
  the 2-D positions of vision-language models), every other token where it was.

Training data: :func:`sairlib.pretrain.pretrain_examples` with the mix ``compare`` and
``evaluate`` (``--mix``), bf16 autocast and fused AdamW on CUDA, warm-up then cosine, right padding.
Held-out measurement: examples built the same way from eval-split tasks
(:func:`sairlib.pretrain.evaluation_example`), teacher-forced; at the word ``consistency`` of the
evaluation the model predicts the consistency score. Reported per scheme, per set (``compare``:
a request to change nothing; ``evaluate``: the world's requests) and per candidate kind: how often
"5" (consistent) is predicted exactly when the truth is 5 (``agree``), and the exact score.

Writes ``benchmarks/results/image_alignment.json`` (``--quick``: ``image_alignment_quick.json``):
the arguments, the device, per scheme the losses, tokens/s, seconds, and the measurements.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sairlib.policy import Policy  # noqa: E402
from sairlib.pretrain import IGNORE, check_mix, evaluation_example, keep_task, pretrain_examples  # noqa: E402
from sairlib.sequence import Layout  # noqa: E402
from sairlib.world import WorldAnalyzer, WorldConfig  # noqa: E402
from sairlib.world.tasks import make_tasks  # noqa: E402
from sairlib.world_setup import build_tokenizers  # noqa: E402
from benchmarks.common import RESULTS, policy_options, log, sync, write_result  # noqa: E402

WORLD = dict(grid=4, image_size=64, max_objects=8, eval_fraction=0.2)   # params/gpu.yaml's world
SCHEMES = ("sequential", "image_local")
IMAGE_BASE = 4096   # image_local: where every image's codes are placed
QUICK = dict(hidden=64, layers=2, heads=4, batch=16, codes=128, patch_size=16, fit_tasks=60, residual_images=20,
             examples=600, epochs=1.0, eval_tasks=40, data_workers=1, threads=2, device="cpu", log_every=10)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--quick`` makes a tiny CPU run's sizes the defaults (explicit options still win)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    policy_options(p)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=float, default=0.03, help="share of the steps with a linear warm-up")
    p.add_argument("--examples", type=int, default=40000, help="training examples")
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--mix", default="compare=1,evaluate=1", help="pretraining mix, KIND=WEIGHT,...")
    p.add_argument("--eval-tasks", type=int, default=600, help="held-out tasks per set")
    p.add_argument("--schemes", default=",".join(SCHEMES))
    p.add_argument("--fit-tasks", type=int, default=4000, help="tasks the image codec is fitted on")
    p.add_argument("--residual-images", type=int, default=2000, help="perturbed images in the codec fit")
    p.add_argument("--data-workers", type=int, default=min(16, os.cpu_count() or 1))
    p.add_argument("--log-every", type=int, default=100, help="steps between loss lines")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--quick", action="store_true", help="tiny float32 model on CPU; explicit options still apply")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.quick:
        p.set_defaults(**QUICK)
        args = p.parse_args(argv)
    try:
        args.mix = {k: float(v) for k, v in (kv.split("=") for kv in args.mix.split(","))}
        check_mix(args.mix)
    except ValueError as e:
        p.error(f"--mix: {e}")
    args.schemes = [s.strip() for s in args.schemes.split(",") if s.strip()]
    if not args.schemes or set(args.schemes) - set(SCHEMES):
        p.error(f"--schemes: a subset of {','.join(SCHEMES)}, got {args.schemes}")
    if args.examples < args.batch or args.eval_tasks < 1 or args.epochs <= 0:
        p.error("--examples must be at least --batch; --eval-tasks and --epochs positive")
    if args.out is None:
        args.out = str(RESULTS / ("image_alignment_quick.json" if args.quick else "image_alignment.json"))
    return args


def positions(ids: torch.Tensor, layout: Layout, scheme: str) -> torch.Tensor:
    """Position ids ``[N, L]`` of right-padded rows ``ids`` under ``scheme`` (see the module's doc)."""
    pos = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
    if scheme == "sequential":
        return pos
    # codes come only inside images, exactly tokens_per_image of them each: counting codes gives the patch
    code = (ids >= layout.code_lo) & (ids < layout.code_hi)
    patch = (code.long().cumsum(1) - 1) % layout.tokens_per_image
    return torch.where(code, IMAGE_BASE + patch, pos)


def padded(rows: list[dict[str, Any]], pad: int) -> dict[str, torch.Tensor]:
    """One batch of ``rows``, right-padded (labels -100 on padding)."""
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad)
    labels = torch.full((len(rows), width), IGNORE)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for j, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[j, :n], labels[j, :n], mask[j, :n] = torch.tensor(r["input_ids"]), torch.tensor(r["labels"]), 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def train(policy: Policy, rows: list[dict[str, Any]], scheme: str, args: argparse.Namespace,
          device: torch.device) -> dict[str, Any]:
    """``epochs`` passes over ``rows`` in a seeded order; returns losses, tokens/s, seconds."""
    model, layout, cuda = policy.model.to(device).train(), policy.layout, device.type == "cuda"
    n_steps = max(1, int(args.epochs * len(rows) // args.batch))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0, fused=cuda)
    warm = max(1, int(args.warmup * n_steps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, 0.5 * (1 + math.cos(
        math.pi * min(1.0, max(0, s - warm) / max(1, n_steps - warm))))))
    rng = np.random.default_rng(args.seed)
    pending: list[dict[str, torch.Tensor]] = []
    losses, tokens, step = [], 0, 0
    sync(device)
    t0 = time.perf_counter()
    while step < n_steps:
        if not pending:  # a new epoch in a new order, full batches only
            order = rng.permutation(len(rows))
            pending = [padded([rows[i] for i in order[k:k + args.batch]], layout.pad)
                       for k in range(0, len(rows) - args.batch + 1, args.batch)]
        b = {k: v.to(device, non_blocking=True) for k, v in pending.pop(0).items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = model(**b, position_ids=positions(b["input_ids"], layout, scheme), use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        tokens += int(b["attention_mask"].sum())
        step += 1
        if step % args.log_every == 0 or step == n_steps:
            losses.append((step, float(loss.detach())))
            log(f"{scheme}: step {step}/{n_steps} loss {losses[-1][1]:.4f}")
    sync(device)
    seconds = time.perf_counter() - t0
    return {"steps": n_steps, "losses": losses, "seconds": seconds, "tok_s": tokens / seconds}


@torch.no_grad()
def consistency_calls(policy: Policy, rows: list[dict[str, Any]], scheme: str, args: argparse.Namespace,
                      device: torch.device) -> list[tuple[int, int]]:
    """(predicted, true) consistency score token of each row, teacher-forced."""
    model, layout = policy.model.eval(), policy.layout
    word = layout.text("consistency")[0]
    out = []
    for k in range(0, len(rows), args.batch):
        b = {name: v.to(device) for name, v in padded(rows[k:k + args.batch], layout.pad).items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                           position_ids=positions(b["input_ids"], layout, scheme), use_cache=False).logits
        for j in range(b["input_ids"].shape[0]):
            ids = b["input_ids"][j]
            at = int((ids == word).nonzero()[-1])     # the evaluation's "consistency" (the last one)
            out.append((int(logits[j, at].argmax()), int(ids[at + 1])))
    return out


def held_out(layout: Layout, codec: Any, analyzer: WorldAnalyzer, cfg: WorldConfig, args: argparse.Namespace
             ) -> dict[str, tuple[list[dict[str, Any]], list[str]]]:
    """Per set, eval-split examples and the kind of candidate each judges."""
    tasks = make_tasks(args.eval_tasks, "eval", args.seed + 100, cfg=cfg)
    sets = {}
    for name in ("compare", "evaluate"):
        rng = np.random.default_rng(args.seed + (1 if name == "compare" else 2))
        xs = [keep_task(t.target.target, cfg.image_size) for t in tasks] if name == "compare" else tasks
        pairs = [evaluation_example(layout, codec, analyzer, x, rng, cfg.image_size, kind=name)
                 for x in xs]
        sets[name] = ([p[0] for p in pairs], [p[1] for p in pairs])
    return sets


def score(calls: list[tuple[int, int]], kinds: list[str], five: int) -> dict[str, Any]:
    """``agree``: predicted consistent exactly when truly consistent; ``exact``: the same score; by kind too."""
    by: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    for (pred, true), k in zip(calls, kinds):
        by[k].append(((pred == five) == (true == five), pred == true))
    every = [v for vs in by.values() for v in vs]
    return {"agree": float(np.mean([a for a, _ in every])), "exact": float(np.mean([e for _, e in every])),
            "n": len(every), "by_kind": {k: {"agree": float(np.mean([a for a, _ in v])), "n": len(v)}
                                         for k, v in sorted(by.items())}}


def table(r: dict[str, Any]) -> str:
    kinds = sorted({k for s in r["schemes"].values() for m in s["sets"].values() for k in m["by_kind"]})
    head = f"{'scheme':<12} {'set':<9} {'agree':>6} {'exact':>6} " + " ".join(f"{k:>12}" for k in kinds)
    lines = [head, "-" * len(head)]
    for name, s in r["schemes"].items():
        for set_name, m in s["sets"].items():
            lines.append(f"{name:<12} {set_name:<9} {m['agree']:6.3f} {m['exact']:6.3f} "
                         + " ".join(f"{m['by_kind'].get(k, {}).get('agree', float('nan')):12.3f}" for k in kinds))
    for name, s in r["schemes"].items():
        lines.append(f"{name}: {s['train']['steps']} steps, {s['train']['seconds']:.1f} s, "
                     f"{s['train']['tok_s']:,.0f} tokens/s, last loss {s['train']['losses'][-1][1]:.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = WorldConfig(**WORLD)
    analyzer = WorldAnalyzer(grid=cfg.grid)
    log("tokenizers")
    codec, tok, _ = build_tokenizers(cfg, args.patch_size, args.codes, args.fit_tasks, args.residual_images, args.seed)
    size = {"hidden": args.hidden, "layers": args.layers, "heads": args.heads, "max_len": 2048}
    layout = Layout.from_tokenizer(tok, codec.tokens_per_image)
    log("training examples")
    rows = [{"input_ids": e["input_ids"], "labels": e["labels"]} for e in
            pretrain_examples(layout, codec, analyzer, args.examples, args.mix, args.seed, cfg, args.data_workers)]
    log("held-out examples")
    sets = held_out(layout, codec, analyzer, cfg, args)
    five = layout.text("5")[0]
    result: dict[str, Any] = {"args": dict(vars(args)), "device": (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"),
        "torch": torch.__version__, "image_base": IMAGE_BASE, "schemes": {}}
    for scheme in args.schemes:
        policy = Policy.create(tok, codec, size, seed=args.seed)   # the same initial weights for every scheme
        result["params_M"] = policy.n_params / 1e6
        log(f"{scheme}: training {policy.n_params / 1e6:.1f}M parameters")
        tr = train(policy, rows, scheme, args, device)
        measured = {name: score(consistency_calls(policy, ex, scheme, args, device), kinds, five)
                    for name, (ex, kinds) in sets.items()}
        result["schemes"][scheme] = {"train": tr, "sets": measured}
    print(table(result))
    write_result(args.out, result)
    return result


if __name__ == "__main__":
    main()
