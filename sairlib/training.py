"""Supervised training of the policy on precomputed ``input_ids`` + ``labels`` with transformers' Trainer.

    history = train_lm(policy.model, policy.tokenizer, train_ds, eval_ds, hparams, out_dir, seed=0)

bf16 on GPU, fused AdamW where available, checkpoints every ``save_steps`` into ``out_dir`` and
automatic resume from the newest one (a killed run restarted with the same arguments continues
where it stopped and ends with the same model).

``hparams`` keys (:data:`HPARAM_KEYS`, shared with SFT in :mod:`sairlib.sft`): ``batch_size`` (per
device), ``lr``, ``epochs``, ``max_steps`` (0: by epochs), ``warmup_ratio``, ``weight_decay``,
``logging_steps``, ``eval_steps`` (0: no evaluation), ``save_steps``, ``grad_accum``, ``packing`` and
``compile`` (both default false).

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
tokens: 1.1 s per padded step, 3.8 s packed (16 sequences: 0.7 s vs 1.1 s). So on CUDA a packed
run trains under ``flex_attention`` (:func:`training_attention`: the document mask becomes a
block-sparse ``BlockMask``; the model's own attention is restored afterwards), and the packed row
is padded to a multiple of :data:`PACK_MULTIPLE_CUDA` (FlexAttention's block) by one extra
sequence of pads that carries no loss, so that the compiled step meets few shapes. On CPU, where
FlexAttention has no backward, the model's attention is kept.

``compile: true`` sets the Trainer's own ``torch_compile`` (the model is wrapped in
``torch.compile`` by accelerate; the trained module itself is unchanged and saved as usual).
Together with ``packing`` on CUDA it is the step that ``benchmarks/train.py`` measured at 7.9x the
padded Trainer-style step (154M policy, 43.8% MFU); ``benchmarks/train_loop.py --sections mfu``
measures it inside ``train_lm`` on the world's examples.
"""
from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening, Trainer, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from .params import check_section

# Batches are padded to a multiple of this on CUDA: widths of any length sent SDPA to a slower
# kernel; `python3 benchmarks/train.py` on the H200 measured 47k -> 94k tokens/s (eager, 154M).
PAD_MULTIPLE_CUDA = 64
# Packed rows are padded to a multiple of this on CUDA: FlexAttention's block size, so the block mask
# covers whole blocks and a compiled step sees one width per 128 tokens of batch.
PACK_MULTIPLE_CUDA = 128
# What packed batches train under on CUDA: block-sparse, so the masked blocks of other sequences are skipped.
PACKED_ATTENTION_CUDA = "flex_attention"
# FlexAttention's compiled kernels need heads at least this wide (torch 2.11: "NYI: embedding dimension ...").
FLEX_MIN_HEAD_DIM = 16


def pad_multiple() -> int | None:
    """What batches are padded to a multiple of: ``PAD_MULTIPLE_CUDA`` on CUDA, nothing on CPU."""
    return PAD_MULTIPLE_CUDA if torch.cuda.is_available() else None


HPARAM_KEYS = {"batch_size": int, "lr": float, "epochs": float, "max_steps": int, "warmup_ratio": float,
               "weight_decay": float, "logging_steps": int, "eval_steps": int, "save_steps": int,
               "grad_accum": int, "packing": bool, "compile": bool}

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
        torch_compile=h.get("compile", False),
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


def pack_multiple() -> int | None:
    """What packed rows are padded to a multiple of: ``PACK_MULTIPLE_CUDA`` on CUDA, nothing on CPU."""
    return PACK_MULTIPLE_CUDA if torch.cuda.is_available() else None


class PackedCollator:
    """``DataCollatorWithFlattening`` (one padding-free row: ``input_ids``, ``labels``, restarting
    ``position_ids``), then, with ``multiple``, the row's tail padded to a multiple of it by one more
    sequence: ``pad_id`` tokens, positions from 0 (so the attention keeps it apart), labels -100."""

    def __init__(self, pad_id: int, multiple: int | None = None) -> None:
        if multiple is not None and multiple < 1:
            raise ValueError(f"multiple: must be at least 1, got {multiple!r}")
        self.pad_id, self.multiple = int(pad_id), multiple
        self.flatten = DataCollatorWithFlattening(return_tensors="pt")

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.flatten(features)
        extra = (-batch["input_ids"].shape[1]) % self.multiple if self.multiple else 0
        if not extra:
            return batch
        tail = {"input_ids": torch.full((1, extra), self.pad_id, dtype=torch.long),
                "labels": torch.full((1, extra), -100, dtype=torch.long),
                "position_ids": torch.arange(extra, dtype=torch.long)[None]}
        return {k: torch.cat([v, tail[k]], dim=1) if k in tail else v for k, v in batch.items()}


def lm_collator(tokenizer: Any, packing: bool = False) -> Any:
    """The batch collator of :func:`train_lm`: rows right-padded (labels with -100) to the longest,
    a multiple of :func:`pad_multiple`; or, with ``packing``, one padding-free row
    (:class:`PackedCollator`, its tail padded to a multiple of :func:`pack_multiple`)."""
    if packing:
        return PackedCollator(tokenizer.pad_token_id, pack_multiple())
    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100, return_tensors="pt",
                                  pad_to_multiple_of=pad_multiple())


def flex_unfit(config: Any) -> str | None:
    """Why FlexAttention's kernels cannot train a model of ``config`` (None if they can)."""
    heads = getattr(config, "num_attention_heads", None)
    head_dim = getattr(config, "head_dim", None) or (config.hidden_size // heads if heads else None)
    if head_dim is not None and head_dim < FLEX_MIN_HEAD_DIM:
        return f"head dimension {head_dim} is below FlexAttention's {FLEX_MIN_HEAD_DIM}"
    return None


@contextmanager
def training_attention(model: Any, packing: bool) -> Iterator[str]:
    """The attention a run trains under: with ``packing`` on CUDA, :data:`PACKED_ATTENTION_CUDA`
    (restored to the model's own afterwards, also on error) unless the model's heads are too narrow
    for it (:func:`flex_unfit`: then the model's own, with a warning that says why); otherwise the
    model's own. Yields its name."""
    own = model.config._attn_implementation
    use = PACKED_ATTENTION_CUDA if packing and torch.cuda.is_available() else own
    if use != own and (why := flex_unfit(model.config)):
        warnings.warn(f"packing: training under {own} attention, not {use}: {why}", stacklevel=3)
        use = own
    if use != own:
        model.set_attn_implementation(use)
    try:
        yield use
    finally:
        if use != own:
            model.set_attn_implementation(own)


def train_lm(model: Any, tokenizer: Any, train_ds: Any, eval_ds: Any | None, hparams: dict[str, Any],
             out_dir: str | Path, seed: int, callbacks: list[Any] | None = None) -> list[dict[str, Any]]:
    """Train in place; return the Trainer's log history (losses per logging step).

    ``hparams`` as in the module doc; ``packing: true`` trains on padding-free batches, same loss;
    ``compile: true`` compiles the step. ``callbacks``: ``transformers.TrainerCallback`` objects
    (e.g. a step clock), given to the Trainer as they are."""
    check_hparams(hparams)
    packing = hparams.get("packing", False)
    cols = ["input_ids", "labels"]
    train_ds = train_ds.select_columns(cols)
    eval_ds = eval_ds.select_columns(cols) if eval_ds is not None else None
    with training_attention(model, packing):
        if packing:
            check_packable(model)
        args = training_arguments(hparams, out_dir, seed)
        trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                          data_collator=lm_collator(tokenizer, packing), callbacks=callbacks)
        # packed rows are told apart only without a KV cache: the Trainer sets config.use_cache from
        # TrainingArguments.use_cache (False); a cache in the forward would silently join the sequences
        if packing and model.config.use_cache:
            raise RuntimeError("packing: the model would run with a KV cache (use_cache), which joins packed sequences")
        last = get_last_checkpoint(str(out_dir)) if Path(out_dir).is_dir() else None
        trainer.train(resume_from_checkpoint=last)
    return trainer.state.log_history
