"""Pretraining-data throughput: ``sairlib.pretrain.pretrain_examples`` for a parameter file's mix.

    python benchmarks/pretrain_data.py --params params/gpu.yaml --examples 8192 --workers 1,2

Fits the parameter file's image codec (``--fit-tasks`` overrides ``codec_fit_tasks`` for speed; the
codes differ, the work per example hardly does), then builds ``--examples`` examples of its
``pretrain_mix`` (and ``pretrain_candidates``) with each worker count in turn, checking that every
count gives the same examples (SHA-256 of their JSON). Prints a table; writes
``benchmarks/results/pretrain_data.json``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    root = ROOT
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default=str(root / "params" / "gpu.yaml"))
    p.add_argument("--examples", type=int, default=8192)
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts, timed in turn")
    p.add_argument("--fit-tasks", type=int, default=0, help="codec fit tasks (0: the parameter file's)")
    p.add_argument("--out", default=str(root / "benchmarks" / "results" / "pretrain_data.json"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print the table and write the JSON; returns the result dict."""
    args = parse_args(argv)
    from benchmarks.common import write_result
    from sairlib.params import resolve_params
    from sairlib.pretrain import pretrain_examples
    from sairlib.sequence import Layout
    from sairlib.world import WorldAnalyzer, WorldConfig
    from sairlib.world_setup import build_tokenizers

    p = resolve_params(args.params)
    cfg = WorldConfig(**p["world"])
    fit = args.fit_tasks or p["codec_fit_tasks"]
    t0 = time.perf_counter()
    codec, tok, _ = build_tokenizers(cfg, p["patch_size"], p["codebook_size"], fit, p["codec_residual_images"], p["seed"])
    fit_s = time.perf_counter() - t0
    layout = Layout.from_tokenizer(tok, codec.tokens_per_image)
    runs, digests = [], set()
    for w in (int(x) for x in args.workers.split(",")):
        t0 = time.perf_counter()
        ex = pretrain_examples(layout, codec, WorldAnalyzer(), args.examples, p["pretrain_mix"], p["seed"], cfg, w,
                               candidates=p.get("pretrain_candidates"))
        s = time.perf_counter() - t0
        digest = hashlib.sha256(json.dumps(ex, sort_keys=True).encode()).hexdigest()
        digests.add(digest)
        runs.append({"workers": w, "seconds": s, "examples_per_s": len(ex) / s, "sha256": digest})
    r = {"params": args.params, "examples": args.examples, "fit_tasks": fit,
         "fit_s": fit_s, "cpus": os.cpu_count(), "runs": runs, "same_examples": len(digests) == 1}
    print(f"{'workers':>8}{'seconds':>10}{'examples/s':>12}  sha256")
    for x in runs:
        print(f"{x['workers']:>8}{x['seconds']:>10.2f}{x['examples_per_s']:>12.1f}  {x['sha256'][:12]}")
    print(f"same examples for every worker count: {r['same_examples']}")
    write_result(args.out, r)
    return r


if __name__ == "__main__":
    main()
