"""Several runs of the chain at once on one host: a queue of parameter files over its GPUs.

    python -m sairlib.sweep --gpus 0,1,2,3 --only 00 params/experiments/base_model/*.yaml
    python -m sairlib.sweep --gpus 0,1 --reuse gpu_30min --only 04 params/experiments/grpo/*.yaml
    python -m sairlib.sweep --gpus 0 --per-gpu 2 --only 00 a.yaml b.yaml   # two runs share one GPU
    python -m sairlib.sweep --cpu-jobs 2 params/ci.yaml other.yaml         # no GPU: two at a time

Each parameter file becomes one ``python -m sairlib.run --params FILE`` (see :mod:`sairlib.run`;
``--only``, ``--reuse``, ``--force``, ``--outputs`` and ``--notebooks`` are passed on). The run id is the file's
stem, so running the same sweep again resumes every run where it stopped, and a finished run is
skipped stage by stage. A run starts as soon as a slot is free: ``--per-gpu`` slots on each GPU of
``--gpus`` (the run sees only that GPU, through ``CUDA_VISIBLE_DEVICES``), or ``--cpu-jobs`` slots
and no GPU at all. Runs that share a GPU are not capped in memory; each stage's own twin jobs are
(:func:`sairlib.launch.launch_jobs`).

Into ``<outputs>/sweeps/<name>/`` (``--name``, default the UTC start time) go each run's console
output, ``<run-id>.log``, and ``sweep.json``: per run the parameter file, run id, device, exit
status, start, end and wall seconds; rewritten whenever a run starts or ends, so a killed sweep
leaves an accurate record. Exit status: 0 when every run succeeded, 1 when one failed (the others
still run to the end), 2 for a bad command line (a missing file, two files with the same stem).
Ctrl-C or a kill (SIGTERM) stops every run; each keeps its finished stages, and ``sweep.json`` marks
the runs stopped.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from sairlib.metrics import utc_now, write_json

SWEEP_FILE = "sweep.json"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


@dataclass
class SweepRun:
    """One parameter file's run in the sweep, and what became of it."""

    params_file: str
    run_id: str
    device: str = ""
    status: str = "queued"  # queued, running, ok, failed, stopped
    exit_code: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    wall_s: float | None = None


def plan_runs(params_files: Sequence[Path]) -> list[SweepRun]:
    """One queued run per parameter file; raises ValueError for a missing file or a repeated stem."""
    if not params_files:
        raise ValueError("no parameter files given")
    runs: list[SweepRun] = []
    seen: dict[str, Path] = {}
    for f in params_files:
        if not f.is_file():
            raise ValueError(f"{f}: no such parameter file")
        if f.stem in seen:
            raise ValueError(f"{seen[f.stem]} and {f}: same run id {f.stem!r} (the run id is the file's stem)")
        seen[f.stem] = f
        runs.append(SweepRun(str(f), f.stem))
    return runs


def slots(gpus: str | None, per_gpu: int, cpu_jobs: int) -> list[str]:
    """The device of each slot: GPU ids, each repeated ``per_gpu`` times, or ``cpu`` ``cpu_jobs`` times."""
    if per_gpu < 1 or cpu_jobs < 1:
        raise ValueError("--per-gpu and --cpu-jobs must be at least 1")
    if gpus is None:
        return ["cpu"] * cpu_jobs
    ids = [g.strip() for g in gpus.split(",") if g.strip()]
    if not ids or not all(g.isdigit() for g in ids) or len(set(ids)) != len(ids):
        raise ValueError(f"--gpus {gpus!r}: give distinct GPU numbers separated by commas, e.g. 0,1,2,3")
    return [g for g in ids for _ in range(per_gpu)]


def run_command(run: SweepRun, outputs: Path, only: str | None = None, reuse: str | None = None,
                force: bool = False, notebooks: Path | None = None) -> list[str]:
    """The runner command line of one run of the sweep."""
    cmd = [sys.executable, "-m", "sairlib.run", "--params", run.params_file, "--outputs", str(outputs)]
    if notebooks is not None:
        cmd += ["--notebooks", str(notebooks)]
    if only:
        cmd += ["--only", only]
    if reuse:
        cmd += ["--reuse", reuse]
    if force:
        cmd.append("--force")
    return cmd


def device_env(device: str) -> dict[str, str]:
    """The environment of a run on ``device``: only that GPU visible, or none (``cpu``)."""
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "" if device == "cpu" else device}


def sweep(params_files: Sequence[Path], devices: Sequence[str], outputs: Path, name: str,
          only: str | None = None, reuse: str | None = None, force: bool = False,
          notebooks: Path | None = None, poll_s: float = 0.5) -> int:
    """Run every parameter file's chain, at most one run per slot at a time; return the exit status."""
    runs = plan_runs(params_files)
    sweep_dir = outputs / "sweeps" / name
    sweep_dir.mkdir(parents=True, exist_ok=True)
    info = {"name": name, "devices": list(devices), "only": only, "reuse": reuse, "force": force,
            "started_at": utc_now(), "finished_at": None}

    def save() -> None:
        write_json(sweep_dir / SWEEP_FILE, {**info, "runs": [asdict(r) for r in runs]})

    queue = list(runs)
    free = list(devices)
    running: dict[int, tuple[SweepRun, subprocess.Popen, float, object]] = {}
    print(f"sweep {name}: {len(runs)} runs on {len(devices)} slots ({', '.join(devices)}) -> {sweep_dir}",
          flush=True)
    try:
        while queue or running:
            while queue and free:
                run, device = queue.pop(0), free.pop(0)
                log = open(sweep_dir / f"{run.run_id}.log", "a")
                proc = subprocess.Popen(run_command(run, outputs, only, reuse, force, notebooks), env=device_env(device),
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
                run.device, run.status, run.started_at = device, "running", utc_now()
                running[proc.pid] = (run, proc, time.perf_counter(), log)
                print(f"[{run.run_id}] started on {device}", flush=True)
                save()
            time.sleep(poll_s)
            for pid, (run, proc, start, log) in list(running.items()):
                code = proc.poll()
                if code is None:
                    continue
                log.close()
                del running[pid]
                free.append(run.device)
                run.exit_code, run.finished_at = code, utc_now()
                run.wall_s = round(time.perf_counter() - start, 1)
                run.status = "ok" if code == 0 else "failed"
                print(f"[{run.run_id}] {run.status} (exit {code}) in {run.wall_s:.1f} s on {run.device}; "
                      f"log {sweep_dir / (run.run_id + '.log')}", flush=True)
                save()
    finally:  # interrupted: stop every run (each keeps its finished stages) and record it
        for run, proc, start, log in running.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait()
            log.close()
            run.status, run.exit_code, run.finished_at = "stopped", proc.returncode, utc_now()
            run.wall_s = round(time.perf_counter() - start, 1)
        info["finished_at"] = utc_now()
        save()
    failed = [r.run_id for r in runs if r.status != "ok"]
    print(f"sweep {name}: {len(runs) - len(failed)} of {len(runs)} runs ok"
          + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
    return EXIT_FAILED if failed else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sairlib.sweep",
                                description="Run several parameter files' chains at once, one per GPU slot.")
    p.add_argument("params", nargs="+", type=Path, help="parameter files; each run's id is the file's stem")
    p.add_argument("--gpus", help="GPU numbers to use, e.g. 0,1,2,3 (default: none, see --cpu-jobs)")
    p.add_argument("--per-gpu", type=int, default=1, help="runs sharing each GPU at once (default 1)")
    p.add_argument("--cpu-jobs", type=int, default=1, help="runs at once without --gpus (default 1)")
    p.add_argument("--outputs", type=Path, default=Path("outputs"), help="outputs folder (default: outputs)")
    p.add_argument("--notebooks", type=Path, default=Path("notebooks"), help="notebooks folder (default: notebooks)")
    p.add_argument("--name", help="the sweep's folder under <outputs>/sweeps/ (default: the UTC start time)")
    p.add_argument("--only", help="stages to run in every run, as for sairlib.run")
    p.add_argument("--reuse", metavar="RUN_ID", help="link each run's missing stages to this run's, as for sairlib.run")
    p.add_argument("--force", action="store_true", help="re-run the selected stages even when complete")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m sairlib.sweep``)."""
    args = build_parser().parse_args(argv)
    name = args.name or datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    try:
        devices = slots(args.gpus, args.per_gpu, args.cpu_jobs)
        plan_runs(args.params)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    # a kill (SIGTERM) unwinds like Ctrl-C, so the runs started in their own sessions are stopped too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return sweep(args.params, devices, args.outputs, name, args.only, args.reuse, args.force,
                     args.notebooks)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
