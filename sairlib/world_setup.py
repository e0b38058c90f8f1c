"""Stage 00's library side: build the world's tokenizers and measure their fidelity.

    from sairlib.world_setup import build_tokenizers
    codec, tok, info = build_tokenizers(cfg, patch_size=16, codebook_size=1024, fit_tasks=1500,
                                        residual_images=1000, seed=0, out_dir="outputs/x/00_world")

The codec is fitted on world images (training tasks' inputs and targets, plus a catalogue of
every look the world can draw, so that none is missing); a residual corpus of noise-corrupted
images fills the spare codes, so artifacts stay representable. Only training tasks are used.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .tokenizers import ImageCodec, build_tokenizer
from .world.corpus import catalogue_images, perturbations, task_images
from .world.grammar import vocabulary
from .world.tasks import WorldConfig, make_tasks


def build_tokenizers(cfg: WorldConfig, patch_size: int, codebook_size: int, fit_tasks: int, residual_images: int,
                     seed: int, out_dir: str | Path | None = None) -> tuple[ImageCodec, Any, dict[str, Any]]:
    """Fit the image codec, build the joint text tokenizer, save both under ``out_dir``."""
    train = make_tasks(fit_tasks, "train", seed, cfg=cfg)
    clean = np.concatenate([task_images(train, cfg.image_size), catalogue_images(cfg.grid, cfg.image_size)])
    rng = np.random.default_rng(seed)
    noisy = [perturbations(t, rng, cfg.image_size)[-1][1] for t in train[:residual_images]]
    codec = ImageCodec.fit(clean, patch_size, codebook_size, seed=seed, residual=np.stack(noisy) if noisy else None)
    tok = build_tokenizer(vocabulary(), codec.codebook_size)
    if out_dir is not None:
        out = Path(out_dir)
        codec.save(out / "codec")
        tok.save_pretrained(out / "tokenizer")
    n_unique = len({p.tobytes() for p in codec.codebook})
    info = {"fit_images": int(len(clean)), "residual_images": len(noisy), "distinct_codes": n_unique,
            "tokens_per_image": codec.tokens_per_image, "vocab_size": len(tok)}
    return codec, tok, info
