"""Entry point of one SFT job under ``accelerate launch`` (one process per GPU).

    accelerate launch --config_file params/accelerate/multi_gpu.yaml --num_processes 2 \\
        -m sairlib.sft_launch outputs/run/03_sft/checkpoints/launch.json

The job file is what :class:`sairlib.sft.SFTJob` writes (``launch_sft`` writes and launches it).
"""
from __future__ import annotations

import argparse
import sys

from .sft import SFTJob, run_job
from .launch import claim_memory_share


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sairlib.sft_launch", description=__doc__.splitlines()[0])
    p.add_argument("job", help="path of the SFT job JSON")
    args = p.parse_args(argv)
    claim_memory_share()  # set when the job shares its GPU with another
    run = run_job(SFTJob.load(args.job))
    losses = run.losses
    if losses:
        print(f"sft: {len(losses)} logged steps, last loss {losses[-1]['loss']:.4f}; model in {run.model_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
