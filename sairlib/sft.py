"""Supervised fine-tuning with TRL's ``SFTTrainer`` on precomputed ``input_ids`` + ``labels``.

TRL 1.16 recognises a pre-tokenized dataset by its ``input_ids`` column and uses a ``labels``
column as given (no re-tokenization, no re-masking); its ``DataCollatorForLanguageModeling`` pads
``labels`` with -100. The config below also turns off what could still touch the sequences:
``max_length=None`` (no truncation: :mod:`sairlib.sft_data` already dropped what does not fit),
no packing into fixed-length blocks, no completion- or assistant-only masks. The loss is then the
mean cross-entropy over exactly the positions whose label is not -100.

One job, two ways to run it (same code, same result)::

    job = SFTJob(base_dir="outputs/run/00_world/base", train_dir=".../train", model_dir=".../model",
                 output_dir=".../checkpoints", hparams={"batch_size": 16, "lr": 1e-3, "epochs": 2.0}, seed=0)
    run = launch_sft(job)      # in-process on one device; `accelerate launch` when >1 GPU is visible
    run.history                # the trainer's log (loss per logging step)

or from a shell, on several GPUs::

    accelerate launch --config_file params/accelerate/multi_gpu.yaml -m sairlib.sft_launch job.json

``hparams`` keys: ``batch_size`` (per device), ``lr``, ``epochs``, ``max_steps`` (0: by epochs),
``warmup_ratio``, ``weight_decay``, ``logging_steps``, ``eval_steps`` (0: no evaluation),
``save_steps``, ``grad_accum``, ``packing`` (default false, below). ``lora`` (optional): ``r``
(0: full fine-tuning), ``alpha``, ``dropout``; LoRA adapters on every linear layer of the blocks,
and the embeddings and LM head trained in full (``modules_to_save``) so that rows of new tokens
learn; merged before saving.
A killed run restarted with the same job resumes from its newest checkpoint; a different job
in the same ``output_dir`` starts over.

``packing: true`` (``hparams={"batch_size": 32, "packing": True, ...}``) turns on TRL's own
padding-free mode (``SFTConfig.padding_free``; not its ``packing``, which would cut and regroup
the sequences into ``max_length`` blocks): its collator concatenates the rows of a batch into one
row with ``position_ids`` restarting per sequence, no attention mask, and -100 on each sequence's
first label; the attention keeps the sequences apart (see :mod:`sairlib.training`). The labels
are otherwise used as given and the loss is the same mean over the same tokens as unpacked
(``tests/test_packing.py``). TRL documents padding-free as "only supported with FlashAttention 2
or 3" but does not check it; with the policy's SDPA attention it is exact, though attention then
spans the whole packed row under a dense block-diagonal mask, which can cost more than the padding
it saves (see :mod:`sairlib.training`). So on CUDA a padding-free job trains under FlexAttention
(:func:`sairlib.training.training_attention`, as pretraining does) and saves the policy with its own
attention; the row's tail is padded to a multiple of 128. ``compile: true`` compiles the step (the
Trainer's ``torch_compile``). Neither has been timed on a GPU for SFT yet.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from .launch import ACCELERATE_DIR, HISTORY_FILE, JobFile, launch_command, launch_job, launch_jobs
from .params import check_section
from .training import HPARAM_KEYS, check_packable, pack_multiple, pad_multiple, trainer_fields, training_attention

SFT_KEYS = HPARAM_KEYS  # the trainer's hyperparameters, as for pretraining
SFT_BATCH_SIZE = 16  # per device, where ``hparams`` gives no ``batch_size``
LORA_KEYS = {"r": int, "alpha": int, "dropout": float}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA_FULL = ["embed_tokens", "lm_head"]


def check_sft(h: dict[str, Any], where: str = "sft") -> dict[str, Any]:
    """Validate trainer hyperparameters (unknown keys and wrong types name the key)."""
    check_section(h, SFT_KEYS, where)
    if h.get("batch_size", 1) < 1:
        raise ValueError(f"{where}.batch_size: must be at least 1")
    return h


def check_lora(lora: dict[str, Any] | None, where: str = "sft_lora") -> dict[str, Any] | None:
    if lora is None:
        return None
    check_section(lora, LORA_KEYS, where)
    if lora.get("dropout", 0.0) >= 1:
        raise ValueError(f"{where}.dropout: must be below 1, got {lora['dropout']!r}")
    return lora


def sft_config(h: dict[str, Any], output_dir: str | Path, seed: int, evaluate: bool = False) -> Any:
    """The ``SFTConfig``: the trainer's own fields from ``h``, and no touching of the sequences
    (``h["packing"]`` only switches padded batches to padding-free ones)."""
    from trl import SFTConfig

    check_sft(h)
    return SFTConfig(
        **trainer_fields(h, output_dir, seed, batch_size=SFT_BATCH_SIZE,
                         eval_steps=h.get("eval_steps", 0) if evaluate else 0),
        **{_checkpointing_field(SFTConfig): False},  # tiny policies: recomputation costs more than it saves
        # the sequences are final: used as given (padding-free only concatenates a batch's rows)
        max_length=None,
        packing=False,
        padding_free=h.get("packing", False),
        # padded: to a multiple of 64 on CUDA; padding-free: the one row's tail to FlexAttention's block of 128,
        # each pad its own 1-token sequence (TRL restarts their positions at 0)
        pad_to_multiple_of=pack_multiple() if h.get("packing", False) else pad_multiple(),
        completion_only_loss=False,
        assistant_only_loss=False,
        shuffle_dataset=False,
        loss_type="nll",
    )


def _checkpointing_field(config_cls: type) -> str:
    """transformers >= 5.2x renamed ``gradient_checkpointing`` to ``activation_checkpointing``."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(config_cls)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def lora_config(lora: dict[str, Any] | None) -> Any:
    """PEFT ``LoraConfig`` (None when ``lora`` is None or its ``r`` is 0)."""
    check_lora(lora)
    if not lora or not lora.get("r", 0):
        return None
    from peft import LoraConfig

    return LoraConfig(r=lora["r"], lora_alpha=lora.get("alpha", 2 * lora["r"]), lora_dropout=lora.get("dropout", 0.0),
                      target_modules=list(LORA_TARGETS), modules_to_save=list(LORA_FULL), task_type="CAUSAL_LM",
                      bias="none")


def build_trainer(model: Any, tokenizer: Any, train_ds: Any, eval_ds: Any | None, h: dict[str, Any],
                  output_dir: str | Path, seed: int, lora: dict[str, Any] | None = None) -> Any:
    """An ``SFTTrainer`` over the ``input_ids`` and ``labels`` columns (other columns dropped)."""
    from trl import SFTTrainer

    cols = ["input_ids", "labels"]
    for name, ds in (("train", train_ds), ("eval", eval_ds)):
        if ds is not None and not set(cols) <= set(ds.column_names):
            raise ValueError(f"{name} dataset: needs columns {cols}, has {ds.column_names}")
    train_ds = train_ds.select_columns(cols)
    eval_ds = eval_ds.select_columns(cols) if eval_ds is not None and len(eval_ds) else None
    args = sft_config(h, output_dir, seed, evaluate=eval_ds is not None)
    if args.padding_free:
        check_packable(model)
    return SFTTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                      processing_class=tokenizer, peft_config=lora_config(lora))


def trained_model(trainer: Any) -> Any:
    """The trained model, unwrapped, with any LoRA adapters merged into it."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return model


# ---------------------------------------------------------------- jobs
@dataclass
class SFTJob(JobFile):
    """Everything one SFT run needs, as paths and plain values (so a subprocess can run it too)."""

    KIND: ClassVar[str] = "an SFT job"

    base_dir: str      # the policy to start from (Policy.save folder)
    train_dir: str     # HF dataset (save_to_disk) with input_ids + labels
    model_dir: str     # where the trained policy is saved
    output_dir: str    # checkpoints, job.json, history.json
    hparams: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    eval_dir: str | None = None
    lora: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        check_sft(self.hparams)
        check_lora(self.lora)

    def memory_hint(self) -> str:
        b, g = self.hparams.get("batch_size", SFT_BATCH_SIZE), self.hparams.get("grad_accum", 1)
        return (f"sft.batch_size is {b} per device and sft.grad_accum {g}: divide the batch and multiply "
                "grad_accum by the same factor to keep the step with less memory at once")


@dataclass
class SFTRun:
    model_dir: Path
    history: list[dict[str, Any]]

    @property
    def losses(self) -> list[dict[str, float]]:
        return [{"step": h["step"], "loss": h["loss"]} for h in self.history if "loss" in h]

    @property
    def eval_losses(self) -> list[dict[str, float]]:
        return [{"step": h["step"], "eval_loss": h["eval_loss"]} for h in self.history if "eval_loss" in h]


def _fingerprint(job: SFTJob) -> str:
    from datasets import load_from_disk

    parts = [job.to_json()] + [load_from_disk(d)._fingerprint for d in (job.train_dir, job.eval_dir) if d]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _prepare_output(job: SFTJob, main: bool) -> str | None:
    """The checkpoint to resume from, if ``output_dir`` holds one of this very job; else start clean."""
    from transformers.trainer_utils import get_last_checkpoint

    out = Path(job.output_dir)
    stamp = out / "job.sha256"
    fp = _fingerprint(job)
    same = stamp.is_file() and stamp.read_text() == fp
    last = get_last_checkpoint(str(out)) if same and out.is_dir() else None
    if main and not same:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        (out / "job.json").write_text(job.to_json())
        stamp.write_text(fp)
    return last


def run_job(job: SFTJob) -> SFTRun:
    """Train in this process (one device, or one rank under ``accelerate launch``) and save the policy."""
    from accelerate import PartialState
    from datasets import load_from_disk

    from .policy import Policy

    state = PartialState(cpu=not torch.cuda.is_available())  # CPU ranks: one gloo group
    with state.main_process_first():
        last = _prepare_output(job, state.is_main_process)
    policy = Policy.load(job.base_dir)
    train = load_from_disk(job.train_dir)
    evals = load_from_disk(job.eval_dir) if job.eval_dir else None
    # padding-free on CUDA: FlexAttention while training, the policy's own attention when saved
    with training_attention(policy.model, job.hparams.get("packing", False)):
        trainer = build_trainer(policy.model, policy.tokenizer, train, evals, job.hparams, job.output_dir, job.seed,
                                job.lora)
        trainer.train(resume_from_checkpoint=last)
    history = trainer.state.log_history
    trainer.accelerator.wait_for_everyone()
    if trainer.is_fsdp_enabled:
        if job.lora and job.lora.get("r"):
            raise ValueError("lora: merging adapters under FSDP is not supported; use multi_gpu.yaml (DDP)")
        trainer.save_model(job.model_dir)  # gathers the full state dict on the main process
        if state.is_main_process:
            policy.tokenizer.save_pretrained(job.model_dir)
            policy.codec.save(Path(job.model_dir) / "codec")
    elif state.is_main_process:
        model = trained_model(trainer).to("cpu")
        Policy(model, policy.tokenizer, policy.codec, policy.layout).save(job.model_dir)
    if state.is_main_process:
        (Path(job.output_dir) / HISTORY_FILE).write_text(json.dumps(history, indent=1))
    state.wait_for_everyone()
    return SFTRun(Path(job.model_dir), history)


def accelerate_command(job_path: str | Path, processes: int, config: str | Path | None = None) -> list[str]:
    """The command line running the SFT job ``job_path`` on ``processes`` processes (see
    :func:`sairlib.launch.launch_command`)."""
    return launch_command("sairlib.sft_launch", job_path, processes, config)


def launch_sft(job: SFTJob, processes: int | None = None, accelerate_config: str | Path | None = None,
               subprocess_: bool | None = None) -> SFTRun:
    """Run ``job``: in this process on one device, or through ``accelerate launch`` when more than
    one GPU is visible (``processes``, default: the GPU count) or ``subprocess_`` is True."""
    history = launch_job(job, "sairlib.sft_launch", lambda j: run_job(j).history, processes, accelerate_config,
                         subprocess_)
    return SFTRun(Path(job.model_dir), history)


def launch_sft_all(jobs: dict[str, SFTJob], concurrent: bool | None = None) -> dict[str, SFTRun]:
    """Run independent SFT jobs (the masked model and its unmasked twin): at once on one GPU,
    one after another elsewhere (:func:`sairlib.launch.launch_jobs`)."""
    histories = launch_jobs(jobs, "sairlib.sft_launch", lambda j: run_job(j).history, concurrent)
    return {name: SFTRun(Path(jobs[name].model_dir), h) for name, h in histories.items()}
