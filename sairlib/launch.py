"""Launching a training job on several processes: ``accelerate launch`` on GPUs, ``torchrun`` on CPU.

A job is a JSON file and a module whose ``main`` takes its path (``sairlib.sft_launch``,
``sairlib.grpo_launch``). :func:`launch_command` builds the command line; :func:`run_launch`
runs it from the project root and reports the last lines of its output when it fails::

    cmd = launch_command("sairlib.grpo_launch", "outputs/run/04_grpo/checkpoints/launch.json", 2)
    run_launch(cmd)     # raises RuntimeError naming the command if a rank fails
"""
from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE_DIR = ROOT / "params" / "accelerate"


def free_port() -> int:
    """A TCP port free on this machine now (for the rendezvous of CPU ranks)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_command(module: str, job_path: str | Path, processes: int, config: str | Path | None = None) -> list[str]:
    """The command line running ``python -m module job_path`` on ``processes`` processes.

    On GPUs: ``accelerate launch`` with ``config`` (default ``params/accelerate/multi_gpu.yaml``,
    or ``single_gpu.yaml`` for one process). On CPU with more than one process: ``torchrun``,
    whose ranks join one gloo group (``accelerate launch --cpu`` starts a single process).
    """
    if processes < 1:
        raise ValueError(f"processes: must be at least 1, got {processes}")
    if not torch.cuda.is_available() and processes > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                "--master_port", str(free_port()), "-m", module, str(job_path)]
    if config is None:
        config = ACCELERATE_DIR / ("multi_gpu.yaml" if processes > 1 else "single_gpu.yaml")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
           "--num_processes", str(processes)]
    if not torch.cuda.is_available():
        cmd.append("--cpu")
    return cmd + ["-m", module, str(job_path)]


_RANK_ERROR = re.compile(r"^(\[rank\d+\]:\s*)?[\w.]*(Error|Exception)\b.*:")


def run_launch(cmd: list[str]) -> None:
    """Run a launch command from the project root; on failure raise with each rank's exception
    line (the launcher's own summary hides them) and the last 40 output lines."""
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        lines = (r.stdout + r.stderr).splitlines()
        errors = list(dict.fromkeys(ln for ln in lines if _RANK_ERROR.match(ln)))
        tail = "\n".join(lines[-40:])
        raise RuntimeError(f"launch failed (exit {r.returncode}): {' '.join(cmd)}\n"
                           + "".join(f"{e}\n" for e in errors) + f"--- last lines ---\n{tail}")
