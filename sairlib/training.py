"""Supervised training of the policy on precomputed ``input_ids`` + ``labels`` with transformers' Trainer.

    history = train_lm(policy.model, policy.tokenizer, train_ds, eval_ds, hparams, out_dir, seed=0)

bf16 on GPU, fused AdamW where available, checkpoints every ``save_steps`` into ``out_dir`` and
automatic resume from the newest one (a killed run restarted with the same arguments continues
where it stopped and ends with the same model).

``hparams`` keys (:data:`HPARAM_KEYS`, shared with SFT in :mod:`sairlib.sft`): ``batch_size`` (per
device), ``lr``, ``epochs``, ``max_steps`` (0: by epochs), ``warmup_ratio``, ``weight_decay``,
``logging_steps``, ``eval_steps`` (0: no evaluation), ``save_steps``, ``grad_accum`` and ``packing``.

``packing: true`` makes batches padding-free: transformers' ``DataCollatorWithFlattening`` joins
the rows of a batch into one row, with ``position_ids`` restarting at 0 for every sequence and no
attention mask, and puts -100 on the first label of every sequence (so no token learns to predict
the next sequence's first token; the unpacked loss never uses a row's first label either). The
model's attention keeps the sequences apart from the restarting ``position_ids``
(``transformers.masking_utils.find_packed_sequence_indices``, used by SDPA, eager and flex masks
when there is no attention mask and no KV cache; the Trainer sets ``config.use_cache = False``).
The loss is the same mean over the same labelled tokens as padded batches (``tests/test_packing.py``)::

    history = train_lm(policy.model, policy.tokenizer, train_ds, None, {"batch_size": 64, "packing": True},
                       out_dir, seed=0)

No compute goes to padding, but with SDPA or eager attention the packed row's mask is a dense
block-diagonal matrix over the whole batch: attention costs (sum of lengths)^2 instead of
batch * longest^2 (a warning says so); only varlen kernels (flash attention) or block-sparse ones
(flex) skip the masked blocks. On one CPU thread, a 2-layer 128-wide model, 32 sequences of 60-260
tokens: 1.1 s per padded step, 3.8 s packed (16 sequences: 0.7 s vs 1.1 s). Measure before
switching a GPU run to packing with SDPA.
"""
from __future__ import annotations

import os

import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening, Trainer, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from .params import check_section

# Batches are padded to a multiple of this on CUDA: widths of any length sent SDPA to a slower
# kernel; `python3 benchmarks/train.py` on the H200 measured 47k -> 94k tokens/s (eager, 154M).
PAD_MULTIPLE_CUDA = 64


def pad_multiple() -> int | None:
    """What batches are padded to a multiple of: ``PAD_MULTIPLE_CUDA`` on CUDA, nothing on CPU."""
    return PAD_MULTIPLE_CUDA if torch.cuda.is_available() else None


HPARAM_KEYS = {"batch_size": int, "lr": float, "epochs": float, "max_steps": int, "warmup_ratio": float,
               "weight_decay": float, "logging_steps": int, "eval_steps": int, "save_steps": int,
               "grad_accum": int, "packing": bool}

# Attention implementations that keep packed sequences apart given only restarting position_ids:
# the mask-based ones through transformers.masking_utils, the flash ones through varlen kernels.
PACKABLE_ATTENTION = ("sdpa", "eager", "flex_attention", "flash_attention_2", "flash_attention_3")


def check_hparams(h: dict[str, Any], where: str = "train") -> dict[str, Any]:
    """Validate trainer hyperparameters (unknown keys and wrong types name the key)."""
    check_section(h, HPARAM_KEYS, where)
    return h


def check_packable(model: Any) -> None:
    """Raise if ``model``'s attention might let packed sequences see each other (see the module doc);
    warn where it keeps them apart with a dense mask over the whole packed row (SDPA, eager)."""
    impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if impl not in PACKABLE_ATTENTION:
        raise ValueError(f"packing: attention {impl!r} is not known to separate packed sequences "
                         f"(known: {', '.join(PACKABLE_ATTENTION)})")
    if impl in ("sdpa", "eager"):
        warnings.warn(f"packing with {impl} attention: exact, but attention spans the whole packed row under a "
                      "dense block-diagonal mask, (sum of lengths)^2 per batch; it can be slower than padding",
                      stacklevel=2)


def trainer_fields(h: dict[str, Any], out_dir: str | Path, seed: int, *, batch_size: int = 32,
                   eval_steps: int | None = None) -> dict[str, Any]:
    """``TrainingArguments`` fields from the hyperparameters ``h`` (shared by pretraining and SFT's
    ``SFTConfig``): cosine schedule, bf16 and the fused optimizer on CUDA, seeded, no reporting."""
    cuda = torch.cuda.is_available()
    eval_steps = h.get("eval_steps") if eval_steps is None else eval_steps
    return dict(
        output_dir=str(out_dir),
        per_device_train_batch_size=h.get("batch_size", batch_size),
        per_device_eval_batch_size=h.get("batch_size", batch_size),
        gradient_accumulation_steps=h.get("grad_accum", 1),
        learning_rate=h.get("lr", 1e-3),
        num_train_epochs=h.get("epochs", 1.0),
        max_steps=h.get("max_steps", -1) or -1,
        warmup_steps=h.get("warmup_ratio", 0.05),  # a float in [0, 1) is a ratio of the total steps
        weight_decay=h.get("weight_decay", 0.0),
        lr_scheduler_type="cosine",
        logging_steps=h.get("logging_steps", 10),
        eval_strategy="steps" if eval_steps else "no",
        eval_steps=eval_steps or None,
        save_strategy="steps",
        save_steps=h.get("save_steps", 500),
        save_total_limit=1,
        bf16=cuda,
        use_cpu=not cuda,  # without it, processes launched on CPU would not join one gloo group
        optim="adamw_torch_fused" if cuda else "adamw_torch",
        report_to=[],
        seed=seed,
        data_seed=seed,
        # On CUDA, batches are collated in worker processes: in the main process the collation of a
        # 128-row batch (about 50 ms) stalled every step (H200, params/gpu.yaml pretraining: 159 ms
        # a step with none, 95 ms with 4, same losses). The sampler stays in the main process, so the
        # batches, and the results, do not depend on the worker count.
        dataloader_num_workers=loader_workers(),
        dataloader_persistent_workers=loader_workers() > 0,
        dataloader_pin_memory=cuda,
        disable_tqdm=True,
    )


def loader_workers() -> int:
    """Collating worker processes of the training data loaders: 4 on CUDA (fewer if the host has
    fewer spare cores), none on CPU, where the cores are busy with the model itself."""
    if not torch.cuda.is_available():
        return 0
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def training_arguments(h: dict[str, Any], out_dir: str | Path, seed: int) -> TrainingArguments:
    return TrainingArguments(**trainer_fields(h, out_dir, seed), remove_unused_columns=True)


def lm_collator(tokenizer: Any, packing: bool = False) -> Any:
    """The batch collator of :func:`train_lm`: rows right-padded (labels with -100) to the longest,
    a multiple of :func:`pad_multiple`; or, with ``packing``, one padding-free row
    (``DataCollatorWithFlattening``: ``input_ids``, ``labels``, ``position_ids``, no attention mask)."""
    if packing:
        return DataCollatorWithFlattening(return_tensors="pt")
    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100, return_tensors="pt",
                                  pad_to_multiple_of=pad_multiple())


def train_lm(model: Any, tokenizer: Any, train_ds: Any, eval_ds: Any | None, hparams: dict[str, Any],
             out_dir: str | Path, seed: int) -> list[dict[str, Any]]:
    """Train in place; return the Trainer's log history (losses per logging step).

    ``hparams`` as in the module doc; ``packing: true`` trains on padding-free batches, same loss."""
    check_hparams(hparams)
    packing = hparams.get("packing", False)
    if packing:
        check_packable(model)
    args = training_arguments(hparams, out_dir, seed)
    collator = lm_collator(tokenizer, packing)
    cols = ["input_ids", "labels"]
    train_ds = train_ds.select_columns(cols)
    eval_ds = eval_ds.select_columns(cols) if eval_ds is not None else None
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds, data_collator=collator)
    # packed rows are told apart only without a KV cache: the Trainer sets config.use_cache from
    # TrainingArguments.use_cache (False); a cache in the forward would silently join the sequences
    if packing and model.config.use_cache:
        raise RuntimeError("packing: the model would run with a KV cache (use_cache), which joins packed sequences")
    last = get_last_checkpoint(str(out_dir)) if Path(out_dir).is_dir() else None
    trainer.train(resume_from_checkpoint=last)
    return trainer.state.log_history
