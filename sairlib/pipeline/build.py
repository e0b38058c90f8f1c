"""Build the trajectory dataset: escalate every task, resumably, and save it two ways.

    from sairlib.pipeline import Backends, EscalationConfig, WorldGenerator, build_trajectories
    b = Backends(WorldAnalyzer(), direct=PolicyGenerator(policy), redraw=WorldGenerator())
    trajectories = build_trajectories(tasks, b, "outputs/run/01_pipeline", seed=0)

Writes ``<out_dir>/trajectories.jsonl`` + ``images/`` as trajectories finish (the resume point),
then ``<out_dir>/dataset`` (``datasets.Dataset.save_to_disk``, ``Image`` features) in task order.
Running it again with the same tasks and seed skips what is stored and ends with the same data.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
from pathlib import Path
from typing import Any, Sequence

from ..interfaces import X2IInput
from ..trajectory import Trajectory, to_dataset
from .escalation import Backends, escalate_all
from .spec import BackendSpec
from .store import TrajectoryStore


def _run(coro: Any) -> Any:
    """``asyncio.run`` that also works inside a running loop (a Jupyter kernel)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _check_ids(tasks: Sequence[X2IInput]) -> list[str]:
    ids = [x.id for x in tasks]
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))
        raise ValueError(f"tasks: task id {dup!r} appears more than once")
    return ids


def _save_dataset(trajectories: list[Trajectory], out: Path) -> None:
    tmp = out / "dataset.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    to_dataset(trajectories).save_to_disk(str(tmp))
    shutil.rmtree(out / "dataset", ignore_errors=True)
    tmp.rename(out / "dataset")


def build_trajectories(tasks: Sequence[X2IInput], backends: Backends, out_dir: str | Path, seed: int, *,
                       concurrency: int = 512, progress: bool = True,
                       provenance: dict[str, Any] | None = None, save_dataset: bool = True) -> list[Trajectory]:
    """Escalate ``tasks`` (skipping those already stored in ``out_dir``); all trajectories in task order."""
    ids = _check_ids(tasks)
    out = Path(out_dir)
    store = TrajectoryStore(out)
    todo = [x for x in tasks if x.id not in store.done]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(tasks), initial=len(tasks) - len(todo), desc="escalation", unit="task")

    def on_done(_: int, t: Trajectory) -> None:
        store.add(t)
        if bar is not None:
            bar.update(1)

    try:
        if todo:
            _run(escalate_all(todo, backends, seed, concurrency, on_done, provenance))
    finally:
        store.close()
        if bar is not None:
            bar.close()
    trajectories = store.trajectories(ids)
    if save_dataset:
        _save_dataset(trajectories, out)
    return trajectories


def _worker(spec: BackendSpec, tasks: Sequence[X2IInput], out_dir: str, seed: int, concurrency: int,
            provenance: dict[str, Any] | None) -> int:
    import torch

    torch.set_num_threads(1)
    backends = spec.build()
    try:
        build_trajectories(tasks, backends, out_dir, seed, concurrency=concurrency, progress=False,
                           provenance=provenance, save_dataset=False)
    finally:
        backends.close()
    return len(tasks)


def build_trajectories_parallel(tasks: Sequence[X2IInput], spec: BackendSpec, out_dir: str | Path, seed: int, *,
                                workers: int = 1, concurrency: int = 512, progress: bool = True,
                                provenance: dict[str, Any] | None = None) -> list[Trajectory]:
    """:func:`build_trajectories` over ``workers`` processes (spawned; each builds its own backends
    from ``spec``), task ``i`` going to shard ``i % workers`` under ``<out_dir>/shards/<k>``.

    Every draw is seeded by its task, so the result is the same for any number of workers; each
    shard resumes on its own.
    """
    ids = _check_ids(tasks)
    out = Path(out_dir)
    if workers <= 1:
        backends = spec.build()
        try:
            return build_trajectories(tasks, backends, out, seed, concurrency=concurrency, progress=progress,
                                      provenance=provenance)
        finally:
            backends.close()
    import multiprocessing as mp

    shards = [(spec, list(tasks[k::workers]), str(out / "shards" / str(k)), seed, max(1, concurrency // workers),
               provenance) for k in range(workers)]
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        futs = [pool.submit(_worker, *s) for s in shards]
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(tasks), desc="escalation", unit="task")
        for f in concurrent.futures.as_completed(futs):
            n = f.result()
            if bar is not None:
                bar.update(n)
        if bar is not None:
            bar.close()
    by_id: dict[str, Trajectory] = {}
    for k in range(workers):
        store = TrajectoryStore(out / "shards" / str(k))
        store.close()
        for t in store.trajectories():
            by_id[t.id] = t
    trajectories = [by_id[i] for i in ids]
    _save_dataset(trajectories, out)
    return trajectories
