"""Supervised training of the policy on precomputed ``input_ids`` + ``labels`` with transformers' Trainer.

    history = train_lm(policy.model, policy.tokenizer, train_ds, eval_ds, hparams, out_dir, seed=0)

bf16 on GPU, fused AdamW where available, checkpoints every ``save_steps`` into ``out_dir`` and
automatic resume from the newest one (a killed run restarted with the same arguments continues
where it stopped and ends with the same model).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments
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
               "grad_accum": int}


def check_hparams(h: dict[str, Any], where: str = "train") -> dict[str, Any]:
    check_section(h, HPARAM_KEYS, where)
    return h


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
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


def training_arguments(h: dict[str, Any], out_dir: str | Path, seed: int) -> TrainingArguments:
    return TrainingArguments(**trainer_fields(h, out_dir, seed), remove_unused_columns=True)


def train_lm(model: Any, tokenizer: Any, train_ds: Any, eval_ds: Any | None, hparams: dict[str, Any],
             out_dir: str | Path, seed: int) -> list[dict[str, Any]]:
    """Train in place; return the Trainer's log history (losses per logging step)."""
    check_hparams(hparams)
    args = training_arguments(hparams, out_dir, seed)
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100, return_tensors="pt",
                                      pad_to_multiple_of=pad_multiple())
    cols = ["input_ids", "labels"]
    train_ds = train_ds.select_columns(cols)
    eval_ds = eval_ds.select_columns(cols) if eval_ds is not None else None
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds, data_collator=collator)
    last = get_last_checkpoint(str(out_dir)) if Path(out_dir).is_dir() else None
    trainer.train(resume_from_checkpoint=last)
    return trainer.state.log_history
