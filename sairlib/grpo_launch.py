"""Entry point of one GRPO job under ``accelerate launch`` or ``torchrun`` (one process per device).

    accelerate launch --config_file params/accelerate/multi_gpu.yaml --num_processes 2 \\
        -m sairlib.grpo_launch outputs/run/04_grpo/checkpoints/launch.json

The job file is what :class:`sairlib.grpo_job.GRPOJob` writes (``launch_grpo`` writes and launches it).
"""
from __future__ import annotations

import argparse
import os
import sys

from .grpo_job import GRPOJob, run_grpo_job
from .launch import claim_memory_share


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sairlib.grpo_launch", description=__doc__.splitlines()[0])
    p.add_argument("job", help="path of the GRPO job JSON")
    args = p.parse_args(argv)
    claim_memory_share()  # set when the job shares its GPU with another
    run = run_grpo_job(GRPOJob.load(args.job))
    rewards = [h["reward"] for h in run.history if "reward" in h]
    if rewards and os.environ.get("RANK", "0") == "0":
        print(f"grpo: {len(rewards)} logged steps, last reward {rewards[-1]:.4f}; model in {run.model_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
