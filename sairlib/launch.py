"""Launching a training job on several processes: ``accelerate launch`` on GPUs, ``torchrun`` on CPU.

A job is a dataclass (a :class:`JobFile`: ``to_json`` / ``load``) with an ``output_dir``, and a
module whose ``main`` takes the job file's path (``sairlib.sft_launch``, ``sairlib.grpo_launch``).
:func:`launch_job` runs a job in this process on one device, or writes ``launch.json`` into its
``output_dir``, launches the module on several processes and reads back ``history.json``, which
the job's main process writes there::

    history = launch_job(job, "sairlib.grpo_launch", run_here, processes=2)
    histories = launch_jobs({"a": job_a, "b": job_b}, "sairlib.sft_launch", run_here)  # at once on one GPU
    cmd = launch_command("sairlib.grpo_launch", "outputs/run/04_grpo/checkpoints/launch.json", 2)
    run_launch(cmd)     # raises RuntimeError naming the command and each rank's exception
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, ClassVar, TypeVar

import torch

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE_DIR = ROOT / "params" / "accelerate"
MEMORY_SHARE_ENV = "SAIR_GPU_MEMORY_SHARE"  # set for jobs sharing one GPU: the fraction each may hold
JOB_FILE = "launch.json"         # the job, written into its output_dir before a launch
HISTORY_FILE = "history.json"    # the trainer's log, written by the job's main process

J = TypeVar("J", bound="JobFile")


class JobFile:
    """Mixin for job dataclasses: JSON out, and back in with an error that names the file.

    ``KIND`` (e.g. ``"an SFT job"``) completes the message ``<path>: not <KIND> (...)``.
    """

    KIND: ClassVar[str] = "a job"

    def memory_hint(self) -> str:
        """What to change when this job runs out of accelerator memory (added to the launch error)."""
        return ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=1)

    @classmethod
    def load(cls: type[J], path: str | Path) -> J:
        try:
            return cls(**json.loads(Path(path).read_text()))
        except (TypeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not {cls.KIND} ({e})") from None


def free_port() -> int:
    """A TCP port free on this machine now (for the rendezvous of CPU ranks)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def visible_gpus() -> int:
    """CUDA devices this process can see (0 without CUDA): launched jobs run one process per GPU."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def launch_command(module: str, job_path: str | Path, processes: int, config: str | Path | None = None) -> list[str]:
    """The command line running ``python -m module job_path`` on ``processes`` processes.

    On GPUs: ``accelerate launch`` with ``config`` (default ``params/accelerate/multi_gpu.yaml``,
    or ``single_gpu.yaml`` for one process), one process per GPU: more processes than visible GPUs
    is an error (NCCL cannot put two ranks on one device). On CPU with more than one process:
    ``torchrun``, whose ranks join one gloo group (``accelerate launch --cpu`` starts a single process).
    """
    if processes < 1:
        raise ValueError(f"processes: must be at least 1, got {processes}")
    gpus = visible_gpus()
    if gpus and processes > gpus:
        raise ValueError(f"processes: {processes} need {processes} GPUs (one per process), {gpus} visible; "
                         "hide the GPUs (CUDA_VISIBLE_DEVICES=) to run the processes on CPU")
    if not gpus and processes > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                "--master_port", str(free_port()), "-m", module, str(job_path)]
    if config is None:
        config = ACCELERATE_DIR / ("multi_gpu.yaml" if processes > 1 else "single_gpu.yaml")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
           "--num_processes", str(processes)]
    if not gpus:
        cmd.append("--cpu")
    return cmd + ["-m", module, str(job_path)]


_RANK_ERROR = re.compile(r"^(\[rank\d+\]:\s*)?[\w.]*(Error|Exception)\b.*:")


def run_launch(cmd: list[str], memory_hint: str = "") -> None:
    """Run a launch command from the project root; on failure raise with each rank's exception
    line (the launcher's own summary hides them) and the last 40 output lines (and ``memory_hint``
    if a rank ran out of accelerator memory)."""
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"launch failed (exit {r.returncode}): {' '.join(cmd)}\n"
                           + _failure_lines(r.stdout + r.stderr, 40, memory_hint))


_OUT_OF_MEMORY = re.compile(r"OutOfMemoryError|CUDA out of memory")


def _failure_lines(output: str, tail: int, memory_hint: str = "") -> str:
    """Each rank's exception line (once), then ``memory_hint`` if the output shows the accelerator's
    memory ran out, then the last ``tail`` lines of a failed launch's output."""
    lines = output.splitlines()
    errors = dict.fromkeys(ln for ln in lines if _RANK_ERROR.match(ln))
    hint = f"out of memory: {memory_hint}\n" if memory_hint and _OUT_OF_MEMORY.search(output) else ""
    return "".join(f"{e}\n" for e in errors) + hint + "--- last lines ---\n" + "\n".join(lines[-tail:])


def _memory_hint(job: Any) -> str:
    """The job's own advice for running out of memory (``JobFile.memory_hint``), if it has any."""
    hint = getattr(job, "memory_hint", None)
    return hint() if callable(hint) else ""


def _history(job: Any) -> list[dict[str, Any]]:
    """The trainer's log that a launched job's main process wrote into its output folder."""
    return json.loads((Path(job.output_dir) / HISTORY_FILE).read_text())


def _job_path(job: Any) -> Path:
    """Write ``job`` into its output folder for a launched process (and hand this process's cached
    GPU memory back first: an evaluation just before can hold most of the accelerator)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    out = Path(job.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / HISTORY_FILE).unlink(missing_ok=True)
    job_path = out / JOB_FILE
    job_path.write_text(job.to_json())
    return job_path


def claim_memory_share() -> float | None:
    """In a launched job: cap this process's GPU memory at its share (``SAIR_GPU_MEMORY_SHARE``).

    Jobs that share one GPU each get a fraction; at its cap a process's caching allocator hands
    back its unused blocks and retries instead of growing into the memory its neighbour needs
    (a decoder's growing key/value tensors leave many freed blocks of other sizes behind).
    Returns the share applied, or ``None`` where none is set or there is no GPU.
    """
    raw = os.environ.get(MEMORY_SHARE_ENV)
    if not raw:
        return None
    try:
        share = float(raw)
    except ValueError:
        share = -1.0
    if not 0 < share <= 1:
        raise ValueError(f"{MEMORY_SHARE_ENV}: must be a fraction in (0, 1], got {raw!r}")
    if not torch.cuda.is_available():
        return None
    torch.cuda.set_per_process_memory_fraction(share)
    return share


def launch_job(job: Any, module: str, run_here: Callable[[Any], list[dict[str, Any]]],
               processes: int | None = None, config: str | Path | None = None,
               subprocess_: bool | None = None) -> list[dict[str, Any]]:
    """Run ``job`` and return the trainer's log history.

    In this process (``run_here(job)``) on one device; through :func:`launch_command` when more
    than one GPU is visible (``processes``, default: the GPU count), a ``config`` is given, or
    ``subprocess_`` is True: then the job is written to ``<output_dir>/launch.json`` and the
    history read back from ``<output_dir>/history.json``.
    """
    n = processes if processes is not None else max(1, visible_gpus())
    if n < 1:
        raise ValueError(f"processes: must be at least 1, got {n}")
    use_sub = subprocess_ if subprocess_ is not None else (n > 1 or config is not None)
    if not use_sub:
        return run_here(job)
    run_launch(launch_command(module, _job_path(job), n, config), _memory_hint(job))
    return _history(job)


def launch_jobs(jobs: dict[str, Any], module: str, run_here: Callable[[Any], list[dict[str, Any]]],
                concurrent: bool | None = None) -> dict[str, list[dict[str, Any]]]:
    """Run independent jobs (a twin run beside the main one); return each one's log history.

    ``concurrent`` (default: exactly one GPU visible) starts every job at once, each as its own
    single-process launch on that GPU: a small policy leaves most of an accelerator idle between
    its kernels, so two runs share it for little more than the time of one. Otherwise the jobs run
    one after another through :func:`launch_job`. Jobs at once each hold at most 0.9 / len(jobs) of
    the GPU's memory (:func:`claim_memory_share`). Results do not depend on the choice: each job
    seeds itself. A failed job raises after all have ended, naming every failed job.
    """
    if concurrent is None:
        concurrent = visible_gpus() == 1
    if not concurrent or len(jobs) < 2:
        return {name: launch_job(job, module, run_here) for name, job in jobs.items()}
    running = {}
    env = {**os.environ, MEMORY_SHARE_ENV: f"{0.9 / len(jobs):.4f}"}  # the rest for this process
    for name, job in jobs.items():
        cmd = launch_command(module, _job_path(job), 1)
        log = open(Path(job.output_dir) / "launch.log", "w")
        running[name] = (cmd, log, subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                    text=True, start_new_session=True))
    failed = []
    try:
        codes = {name: proc.wait() for name, (_, _, proc) in running.items()}
    finally:  # interrupted (a kernel stop, an exception): no job is left running on its own
        for _, log, proc in running.values():
            if proc.poll() is None:  # the launcher and the job it started: one process group
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait()
            log.close()
    for name, (cmd, log, proc) in running.items():
        code = codes[name]
        if code != 0:
            failed.append(f"{name}: exit {code}: {' '.join(cmd)}\n"
                          + _failure_lines(Path(log.name).read_text(errors="replace"), 20, _memory_hint(jobs[name])))
    if failed:
        raise RuntimeError("launch failed for " + "\n".join(failed))
    return {name: _history(job) for name, job in jobs.items()}
