"""One GRPO run as a job: trained in this process, or on several processes through a launcher.

Notebook 04 trains in its own kernel on one device; with several GPUs visible it writes a
:class:`GRPOJob` and runs it under ``accelerate launch`` (DDP), where every rank samples the
rollouts of its share of each step's groups, scores them, and the complexity penalty is applied
after the rewards are gathered (:mod:`sairlib.grpo`), so a group split over ranks is penalised
exactly as on one process::

    job = GRPOJob(base_dir="outputs/run/03_sft/model", model_dir="outputs/run/04_grpo/model",
                  output_dir="outputs/run/04_grpo/checkpoints", grpo={...}, reward={...},
                  world={...}, task_seed=43, seed=0)
    run = launch_grpo(job)            # in-process; a launcher when more than one GPU is visible
    run.history                       # TRL's log; the trained policy is in run.model_dir

or from a shell::

    accelerate launch --config_file params/accelerate/multi_gpu.yaml --num_processes 2 \\
        -m sairlib.grpo_launch outputs/run/04_grpo/checkpoints/launch.json

A job file that is not a job (missing or unknown fields, bad parameters) is refused with its path.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from .grpo import check_grpo, train_grpo
from .launch import HISTORY_FILE, JobFile, launch_command, launch_job, launch_jobs
from .rewards import check_reward


@dataclass
class GRPOJob(JobFile):
    """Everything one GRPO run needs, as paths and plain values (so another process can run it)."""

    KIND: ClassVar[str] = "a GRPO job"

    base_dir: str                 # the policy to start from (Policy.save folder: 03's model)
    model_dir: str                # where the trained policy is saved
    output_dir: str               # trainer output, launch.json, history.json
    grpo: dict[str, Any]          # sairlib.grpo parameters
    reward: dict[str, Any]        # sairlib.rewards parameters
    world: dict[str, Any]         # WorldConfig fields
    task_seed: int = 43           # training requests: make_tasks(grpo["train_tasks"], "train", task_seed)
    seed: int = 0

    def __post_init__(self) -> None:
        self.grpo = check_grpo(self.grpo)
        self.reward = check_reward(self.reward)

    def memory_hint(self) -> str:
        g = self.grpo
        answers = g["prompts_per_step"] * g["num_generations"]
        return (f"grpo.grad_accum is {g['grad_accum']}: raise it to train each step's {answers} answers in more, "
                "smaller micro-batches (answers / processes must divide by it); the step stays the same")


@dataclass
class GRPOJobRun:
    """A finished job: where its policy is and TRL's log history."""

    model_dir: Path
    history: list[dict[str, Any]]


def run_grpo_job(job: GRPOJob) -> GRPOJobRun:
    """Train in this process (one device, or one rank under a launcher); the main process saves
    the policy and the history."""
    from accelerate import PartialState

    from .policy import Policy
    from .rewards import RewardContext
    from .world import WorldAnalyzer, WorldConfig, make_tasks

    state = PartialState(cpu=not torch.cuda.is_available())  # CPU ranks: one gloo group
    torch.manual_seed(job.seed)
    policy = Policy.load(job.base_dir, device=state.device)
    tasks = make_tasks(job.grpo["train_tasks"], "train", int(job.task_seed), cfg=WorldConfig(**job.world))
    ctx = RewardContext({t.id: t for t in tasks}, WorldAnalyzer(), policy.layout, policy.codec, job.reward)
    run = train_grpo(policy, tasks, ctx, job.grpo, seed=job.seed, output_dir=job.output_dir)
    history = run.history
    run.trainer.accelerator.wait_for_everyone()
    if state.is_main_process:
        Policy(policy.model.to("cpu"), policy.tokenizer, policy.codec, policy.layout).save(job.model_dir)
        Path(job.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(job.output_dir) / HISTORY_FILE).write_text(json.dumps(history, indent=1))
    state.wait_for_everyone()
    return GRPOJobRun(Path(job.model_dir), history)


def grpo_command(job_path: str | Path, processes: int, config: str | Path | None = None) -> list[str]:
    """The command line running the GRPO job ``job_path`` on ``processes`` processes."""
    return launch_command("sairlib.grpo_launch", job_path, processes, config)


def launch_grpo(job: GRPOJob, processes: int | None = None, accelerate_config: str | Path | None = None,
                subprocess_: bool | None = None) -> GRPOJobRun:
    """Run ``job`` in this process, or through a launcher when more than one GPU is visible
    (``processes``, default: the GPU count), a config is given, or ``subprocess_`` is True."""
    history = launch_job(job, "sairlib.grpo_launch", lambda j: run_grpo_job(j).history, processes,
                         accelerate_config, subprocess_)
    return GRPOJobRun(Path(job.model_dir), history)


def launch_grpo_all(jobs: dict[str, GRPOJob], concurrent: bool | None = None) -> dict[str, GRPOJobRun]:
    """Run independent GRPO jobs (the full run and its twin without the complexity penalty): at
    once on one GPU, one after another elsewhere (:func:`sairlib.launch.launch_jobs`)."""
    histories = launch_jobs(jobs, "sairlib.grpo_launch", lambda j: run_grpo_job(j).history, concurrent)
    return {name: GRPOJobRun(Path(jobs[name].model_dir), h) for name, h in histories.items()}
