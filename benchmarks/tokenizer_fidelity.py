"""Tokenizer fidelity benchmark: the Analyzer's verdict on decode(encode(image)) vs on the image.

    python benchmarks/tokenizer_fidelity.py [--patch 16 --codebook 1024 --fit-tasks 1500 --tasks 450 --seed 0]

Prints a table per image kind and writes benchmarks/results/tokenizer_fidelity.json.
Each held-out task gives 5 images: its target and 4 perturbations; "rendered" counts the
images the world's renderer can produce (all but the noise patch).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sairlib.fidelity import tokenizer_fidelity
from sairlib.world import WorldAnalyzer, WorldConfig, make_tasks
from sairlib.world_setup import build_tokenizers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patch", type=int, default=16)
    ap.add_argument("--codebook", type=int, default=1024)
    ap.add_argument("--fit-tasks", type=int, default=1500)
    ap.add_argument("--residual", type=int, default=1000)
    ap.add_argument("--tasks", type=int, default=520)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "tokenizer_fidelity.json"))
    a = ap.parse_args()
    cfg = WorldConfig()
    t0 = time.time()
    codec, _, info = build_tokenizers(cfg, a.patch, a.codebook, a.fit_tasks, a.residual, a.seed)
    fit_s = time.time() - t0
    r = tokenizer_fidelity(codec, WorldAnalyzer(), make_tasks(a.tasks, "eval", a.seed + 3, cfg=cfg), seed=a.seed)
    r.update({"args": vars(a), "codec": info, "fit_s": round(fit_s, 2), "wall_s": round(time.time() - t0, 2)})
    print(f"{'kind':<14}{'verdict agreement':>18}")
    for k, v in r["by_kind"].items():
        print(f"{k:<14}{v:>18.4f}")
    print(f"{'rendered':<14}{r['rendered_verdict_agreement']:>18.4f}   ({r['rendered_images']} images)")
    print(f"{'all':<14}{r['verdict_agreement']:>18.4f}   ({r['n_images']} images; exact scores {r['score_agreement']:.4f})")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
