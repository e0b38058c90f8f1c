"""GRPO on TRL's ``GRPOTrainer``: whole interleaved trajectories as completions, rewards from the
Analyzer, and the intra-group complexity penalty applied after the rewards are gathered.

    ctx = RewardContext(tasks_by_id, WorldAnalyzer(), policy.layout, policy.codec, reward)
    run = train_grpo(policy, train_tasks, ctx, grpo={"steps": 20, "num_generations": 4}, seed=0,
                     output_dir="outputs/run/04_grpo/checkpoints")
    run.history          # TRL's log: reward components, penalty, images, mode mix, loss ... per step

How the pieces fit TRL 1.16:

- the dataset holds one row per training request: ``prompt`` and ``task_id`` (both the request's
  id); TRL's ``RepeatSampler`` repeats each ``num_generations`` times, so a group's completions
  may land on several processes;
- :func:`make_rollout_func` answers each (repeated) prompt with one completion from the
  constrained decoder (:func:`sairlib.generation.generate`), returning ``prompt_ids``,
  ``completion_ids`` and ``env_mask`` (0 where the constraint forced the token: no loss there);
  each row is sampled with a seed of (run seed, step, global row), so the completions do not
  depend on how the batch is split over processes;
- the reward functions (:func:`sairlib.rewards.reward_funcs`) read images from ``completion_ids``;
  TRL weighs them by ``reward_weights`` (the α) and gathers them over processes;
- :class:`SairGRPOTrainer` overrides ``_calculate_rewards``: after TRL's gather it gathers each
  completion's image count the same way and scales each completion's row of rewards by its
  penalty factor (so the α-weighted sum TRL computes next is the penalised composite), then
  TRL computes group advantages as usual. Being computed on the gathered batch, the penalty is
  the same however groups are split. It also logs, per step, the unpenalised components, the
  penalty's effect, average images, the mode mix and format failures.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

from .generation import LayoutConstraint, generate
from .interfaces import X2IInput
from .modes import MODES
from .params import check_section
from .rewards import COMPONENTS, RewardContext, alphas, penalty_factors, penalty_reach, reward_funcs
from .sft_eval import BALANCE
from .solve import default_budget

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is marked experimental in TRL 1.16

from trl import GRPOConfig, GRPOTrainer  # noqa: E402

GRPO_KEYS = {"steps": int, "num_generations": int, "prompts_per_step": int, "lr": float, "beta": float,
             "temperature": float, "top_k": int, "max_new_tokens": int, "train_tasks": int, "logging_steps": int,
             "grad_accum": int, "clip_epsilon": float, "warmup_steps": int}
DEFAULT_GRPO = {"steps": 20, "num_generations": 4, "prompts_per_step": 2, "lr": 1.0e-5, "beta": 0.0,
                "temperature": 1.0, "top_k": 0, "max_new_tokens": 0, "train_tasks": 200, "logging_steps": 1,
                "grad_accum": 1, "clip_epsilon": 0.2, "warmup_steps": 0}
MODE_CODES: tuple[str, ...] = MODES + ("invalid",)


def check_grpo(p: Mapping[str, Any], where: str = "grpo") -> dict[str, Any]:
    """Validate the ``grpo`` parameters (unknown keys and wrong types name the key); defaults filled.

    ``max_new_tokens`` 0 means :func:`sairlib.solve.default_budget` (room for six images with texts).
    ``grad_accum`` splits each optimizer step's ``prompts_per_step x num_generations`` answers into
    that many micro-batches (one generation per step, as TRL's ``steps_per_generation``): the same
    step with less memory at once, DAPO's loss being normalised over the whole step.
    """
    out = {**DEFAULT_GRPO, **check_section(p, GRPO_KEYS, where)}
    out = {k: want(out[k]) for k, want in GRPO_KEYS.items()}
    for k in ("steps", "prompts_per_step", "train_tasks", "logging_steps", "grad_accum"):
        if out[k] < 1:
            raise ValueError(f"{where}.{k}: must be at least 1, got {out[k]!r}")
    if out["num_generations"] < 2:
        raise ValueError(f"{where}.num_generations: GRPO needs at least 2 completions per request")
    return out


GRPO_EVAL_KEYS = {"tasks": int, "samples": int, "temperature": float, "max_new_tokens": int, "no_penalty_twin": bool,
                  "balance": BALANCE}


def check_grpo_eval(p: Mapping[str, Any], where: str = "grpo_eval") -> dict[str, Any]:
    """Validate the before/after evaluation parameters (``max_new_tokens`` 0: solve's default budget;
    ``balance`` as in ``sft_eval``, "none" when absent). Returns them with ``balance`` filled in."""
    p = check_section({"balance": "none", **p} if isinstance(p, Mapping) else p, GRPO_EVAL_KEYS, where,
                      required=True)
    if p["tasks"] < 1 or p["samples"] < 1:
        raise ValueError(f"{where}: tasks and samples must be at least 1")
    return dict(p)


# ---------------------------------------------------------------------------- data
def prompt_dataset(tasks: Sequence[X2IInput]) -> Any:
    """The training prompts: one row per request, ``prompt`` and ``task_id`` both its id."""
    from datasets import Dataset

    ids = [t.id for t in tasks]
    if len(set(ids)) != len(ids):
        raise ValueError("tasks: request ids must be distinct")
    return Dataset.from_dict({"prompt": ids, "task_id": ids})


def row_seed(seed: int, step: int, row: int) -> int:
    """A 62-bit sampling seed for one completion, from the run seed, the step and its global row."""
    h = hashlib.sha256(f"grpo|{seed}|{step}|{row}".encode()).digest()
    return int.from_bytes(h[:8], "little") >> 2


@dataclass
class Sampling:
    """How rollouts are sampled: the constrained decoder's budget and temperature, and the run seed."""

    max_new_tokens: int
    temperature: float = 1.0
    top_k: int = 0
    seed: int = 0
    batch_size: int | None = None


def make_rollout_func(ctx: RewardContext, policy_prompt: Callable[[X2IInput], list[int]],
                      sampling: Sampling) -> Callable[[list, Any], dict[str, list]]:
    """TRL's ``rollout_func(prompts, trainer)``: one constrained completion per (repeated) prompt.

    ``prompts`` are request ids (this process's slice of the generation batch). Returns
    ``prompt_ids``, ``completion_ids`` (up to and including ``<eos>``), ``logprobs`` (None: TRL
    recomputes them), ``env_mask`` (0 on tokens the constraint forced) and ``task_id``.
    """
    cache: dict[str, list[int]] = {}

    def rollout(prompts: list, trainer: Any) -> dict[str, list]:
        missing = [p for p in prompts if p not in ctx.tasks]
        if missing:
            raise KeyError(f"prompt: unknown request id {missing[0]!r}")
        for p in prompts:
            if p not in cache:
                cache[p] = policy_prompt(ctx.tasks[p])
        step, rank = trainer.state.global_step, trainer.accelerator.process_index
        first = rank * len(prompts)
        seeds = [row_seed(sampling.seed, step, first + i) for i in range(len(prompts))]
        model = trainer.accelerator.unwrap_model(trainer.model)
        gens = generate(model, ctx.layout, [cache[p] for p in prompts], sampling.max_new_tokens,
                        temperature=sampling.temperature, top_k=sampling.top_k, row_seeds=seeds,
                        batch_size=sampling.batch_size)
        return {"prompt_ids": [g.prompt for g in gens], "completion_ids": [g.ids for g in gens], "logprobs": None,
                "env_mask": [[0 if f else 1 for f in g.forced] for g in gens], "task_id": list(prompts)}

    return rollout


# ---------------------------------------------------------------------------- the trainer
class SairGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` with the intra-group complexity penalty applied to the gathered rewards.

    ``reward_ctx`` gives the penalty's settings (``reward["penalty"]``, ``reward["epsilon"]``) and
    reads each completion's image count and mode from its ids.
    """

    def __init__(self, *args: Any, reward_ctx: RewardContext, **kwargs: Any) -> None:
        self.reward_ctx = reward_ctx
        self._constraint: LayoutConstraint | None = None
        super().__init__(*args, **kwargs)

    def _get_per_token_logps_and_entropies(self, model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                                           logits_to_keep: int, batch_size: int | None = None,
                                           compute_entropy: bool = False, compute_aux_loss: bool = False,
                                           **unused: Any) -> tuple[torch.Tensor, torch.Tensor | None, None]:
        """Log-probs and entropies of the completion tokens under the policy *as sampled*: the
        layout constraint's allowed set at each position (replayed from the ids with
        :meth:`LayoutConstraint.trace`) renormalises the temperature-scaled logits, so a forced
        token has log-prob 0 and an image code competes only with image codes."""
        if self._constraint is None:
            vocab = self.accelerator.unwrap_model(model).config.vocab_size  # DDP wraps the model on several ranks
            self._constraint = LayoutConstraint(self.reward_ctx.layout, vocab, input_ids.device)
        con = self._constraint
        batch_size = batch_size or input_ids.size(0)
        logps, ents = [], []
        for a in range(0, input_ids.size(0), batch_size):
            ids, mask = input_ids[a:a + batch_size], attention_mask[a:a + batch_size]
            completion = ids[:, -logits_to_keep:]
            allowed = con.table[con.trace(completion, self.max_completion_length or logits_to_keep)]
            with self.accelerator.autocast():
                logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=logits_to_keep + 1).logits
            logits = logits[:, :-1].float() / self.temperature
            logp_all = logits.masked_fill(~allowed, float("-inf")).log_softmax(-1)
            logps.append(logp_all.gather(-1, completion[..., None])[..., 0])
            if compute_entropy:
                p_all = logp_all.exp()
                ents.append(-torch.where(allowed, p_all * logp_all, torch.zeros_like(p_all)).sum(-1))
        return torch.cat(logps), (torch.cat(ents) if compute_entropy else None), None

    def _calculate_rewards(self, inputs: list, prompts: list, completions: list,
                           completion_ids_list: list) -> torch.Tensor:
        per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)  # gathered [N, F]
        device = per_func.device
        ctx = self.reward_ctx
        stats = []
        for x, ids in zip(inputs, completion_ids_list):
            r = ctx.rollout(x["task_id"], ids)
            stats.append([r.n_images, MODE_CODES.index(r.mode or "invalid")])
        stats_all = self.accelerator.gather(torch.tensor(stats, dtype=torch.float32, device=device))
        mode = "train" if self.model.training else "eval"
        group = self.num_generations if mode == "train" else self.num_generations_eval
        weights = self.reward_weights.to(device)
        raw = (per_func * weights).nansum(1)
        raw_np, images_np = raw.double().cpu().numpy(), stats_all[:, 0].cpu().numpy()
        if ctx.reward["penalty"]:
            factors = torch.as_tensor(penalty_factors(raw_np, images_np, group, ctx.reward["epsilon"]),
                                      dtype=per_func.dtype, device=device)
        else:
            factors = torch.ones_like(raw)
        out = per_func * factors[:, None]
        reach = penalty_reach(raw_np, images_np, group, ctx.reward["epsilon"])
        self._log_batch(mode, per_func, raw, factors, stats_all, reach)
        return out

    def _log_batch(self, mode: str, per_func: torch.Tensor, raw: torch.Tensor, factors: torch.Tensor,
                   stats: torch.Tensor, reach: dict[str, float]) -> None:
        m = self._metrics[mode]
        for k, v in reach.items():  # logged in runs without the penalty too: what it would have reached
            m[f"penalty/{k}"].append(v)
        for i, name in enumerate(self.reward_func_names):
            m[f"raw/{name}"].append(torch.nanmean(per_func[:, i]).item())
        m["raw/composite"].append(torch.nanmean(raw).item())
        m["penalty/factor_mean"].append(factors.mean().item())
        m["penalty/penalised_frac"].append((factors < 1).float().mean().item())
        m["penalty/reward_drop"].append(torch.nanmean(raw - raw * factors).item())
        m["images/mean"].append(stats[:, 0].mean().item())
        for k, name in enumerate(MODE_CODES):
            m[f"mode/{name}"].append((stats[:, 1] == k).float().mean().item())
        m["format/failures"].append((stats[:, 1] == len(MODES)).float().mean().item())


# ---------------------------------------------------------------------------- the entry point
@dataclass
class GRPORun:
    """A finished run: the trainer (its model trained in place) and TRL's log history."""

    trainer: Any
    history: list[dict[str, Any]] = field(default_factory=list)


def grpo_config(grpo: Mapping[str, Any], output_dir: str, seed: int, n_processes: int = 1) -> GRPOConfig:
    """TRL's ``GRPOConfig`` for checked ``grpo`` parameters (``prompts_per_step`` requests per optimizer
    step over all processes, each answered ``num_generations`` times)."""
    g = check_grpo(grpo)
    total = g["prompts_per_step"] * g["num_generations"]
    if total % (n_processes * g["grad_accum"]):
        raise ValueError(f"grpo: prompts_per_step x num_generations = {total} must split over {n_processes} processes"
                         f" x grad_accum {g['grad_accum']} micro-batches")
    cuda = torch.cuda.is_available()
    return GRPOConfig(
        output_dir=output_dir, seed=seed, data_seed=seed, max_steps=g["steps"], learning_rate=g["lr"],
        per_device_train_batch_size=total // (n_processes * g["grad_accum"]), gradient_accumulation_steps=g["grad_accum"],
        num_generations=g["num_generations"], beta=g["beta"], epsilon=g["clip_epsilon"],
        temperature=g["temperature"] if g["temperature"] > 0 else 1.0, warmup_steps=g["warmup_steps"],
        logging_steps=g["logging_steps"], save_strategy="no", report_to="none", disable_tqdm=True,
        gradient_checkpointing=False, bf16=cuda and torch.cuda.is_bf16_supported(), use_cpu=not cuda,
        max_completion_length=g["max_new_tokens"] or None, reward_weights=None, loss_type="dapo", scale_rewards="group",
        dataloader_num_workers=0,
    )


def build_trainer(policy: Any, tasks: Sequence[X2IInput], ctx: RewardContext, grpo: Mapping[str, Any], seed: int,
                  output_dir: str, callbacks: Sequence[Any] = ()) -> SairGRPOTrainer:
    """The trainer for ``policy.model`` on ``tasks`` (their ids must be in ``ctx.tasks``), not yet trained.

    One reward function per component with a positive α (TRL's ``reward_weights``); the number of
    processes is read from ``WORLD_SIZE`` (set by ``torchrun`` / ``accelerate launch``).
    """
    g = check_grpo(grpo)
    a = alphas(ctx.reward)
    names = [k for k in COMPONENTS if a[k] != 0]
    if not names:
        raise ValueError("reward.alpha: at least one component needs a positive weight")
    g["max_new_tokens"] = g["max_new_tokens"] or default_budget(policy.layout.tokens_per_image)
    args = grpo_config(g, output_dir, seed, int(os.environ.get("WORLD_SIZE", "1")))
    args.reward_weights = [a[k] for k in names]
    rollout = make_rollout_func(ctx, policy.prompt, Sampling(g["max_new_tokens"], g["temperature"], g["top_k"], seed))
    return SairGRPOTrainer(model=policy.model, reward_funcs=reward_funcs(names, ctx), args=args,
                           train_dataset=prompt_dataset(tasks), processing_class=policy.tokenizer,
                           rollout_func=rollout, callbacks=list(callbacks), reward_ctx=ctx)


def train_grpo(policy: Any, tasks: Sequence[X2IInput], ctx: RewardContext, grpo: Mapping[str, Any], seed: int,
               output_dir: str, callbacks: Sequence[Any] = ()) -> GRPORun:
    """Train ``policy.model`` in place with GRPO on ``tasks``; returns the trainer and its log."""
    trainer = build_trainer(policy, tasks, ctx, grpo, seed, output_dir, callbacks)
    trainer.train()
    policy.model = trainer.accelerator.unwrap_model(trainer.model)
    return GRPORun(trainer, list(trainer.state.log_history))


__all__ = ["GRPO_KEYS", "DEFAULT_GRPO", "GRPO_EVAL_KEYS", "MODE_CODES", "check_grpo", "check_grpo_eval", "prompt_dataset", "row_seed", "Sampling",
           "make_rollout_func", "SairGRPOTrainer", "GRPORun", "grpo_config", "build_trainer", "train_grpo"]
