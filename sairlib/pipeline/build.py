"""Build the trajectory dataset: escalate every task, resumably, and save it two ways.

    from sairlib.pipeline import Backends, EscalationConfig, WorldGenerator, build_trajectories
    b = Backends(WorldAnalyzer(), direct=PolicyGenerator(policy), redraw=WorldGenerator())
    trajectories = build_trajectories(tasks, b, "outputs/run/01_pipeline", seed=0)

Writes ``<out_dir>/trajectories.jsonl`` + ``images/`` as trajectories finish (the resume point),
then ``<out_dir>/dataset`` (``datasets.Dataset.save_to_disk``, ``Image`` features) in task order,
and ``<out_dir>/timing.json``: seconds per phase, the backends' busy time (see
``Backends.stats``) and how many trajectories had finished at each tenth of the escalation.
Running it again with the same tasks and seed skips what is stored and ends with the same data.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

from ..blas import one_blas_thread_for_good
from ..interfaces import X2IInput
from ..trajectory import Trajectory, records_to_dataset, to_dataset
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


def _save_dataset(ds: Any, out: Path) -> None:
    tmp = out / "dataset.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    ds.save_to_disk(str(tmp))
    shutil.rmtree(out / "dataset", ignore_errors=True)
    tmp.rename(out / "dataset")


def _timeline(finished: list[float], start: float, end: float, parts: int = 10) -> list[int]:
    """How many of ``finished`` (monotonic times) had happened at each ``1/parts`` of ``start..end``."""
    span = max(end - start, 1e-9)
    return [sum(1 for f in finished if f - start <= span * (k + 1) / parts) for k in range(parts)]


def build_trajectories(tasks: Sequence[X2IInput], backends: Backends, out_dir: str | Path, seed: int, *,
                       concurrency: int = 512, progress: bool = True,
                       provenance: dict[str, Any] | None = None, save_dataset: bool = True,
                       admission: str = "complex_first") -> list[Trajectory]:
    """Escalate ``tasks`` (skipping those already stored in ``out_dir``); all trajectories in task order.

    ``admission`` (see :func:`~sairlib.pipeline.escalation.admission_order`) only changes when each
    trajectory is made, not what it holds."""
    ids = _check_ids(tasks)
    out = Path(out_dir)
    t_start = time.perf_counter()
    store = TrajectoryStore(out)
    todo = [x for x in tasks if x.id not in store.done]
    made: dict[str, Trajectory] = {}
    finished: list[float] = []
    timing: dict[str, Any] = {"tasks": len(tasks), "resumed": len(tasks) - len(todo), "store_s": 0.0}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(tasks), initial=len(tasks) - len(todo), desc="escalation", unit="task")

    def write(t: Trajectory) -> None:  # on the writer thread: PNG encoding there leaves the loop free
        t0 = time.perf_counter()
        store.add(t)
        timing["store_s"] += time.perf_counter() - t0

    writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="trajectory-store")
    writes: list[concurrent.futures.Future] = []

    def on_done(_: int, t: Trajectory) -> None:
        made[t.id] = t
        finished.append(time.perf_counter())
        writes.append(writer.submit(write, t))  # one thread: stored in the order they finished
        if bar is not None:
            bar.update(1)

    t_esc = time.perf_counter()
    try:
        if todo:
            _run(escalate_all(todo, backends, seed, concurrency, on_done, provenance, admission))
    finally:
        writer.shutdown(wait=True)  # what finished is stored, also when the run stops on an error
        store.close()
        if bar is not None:
            bar.close()
    for w in writes:
        w.result()  # a failed write is raised here
    t_end = time.perf_counter()
    timing.update(escalate_s=round(t_end - t_esc, 2), store_s=round(timing["store_s"], 2),
                  finished_by_tenth=_timeline(finished, t_esc, t_end), backends=backends.stats())
    trajectories = _in_order(ids, made, store)
    if save_dataset:
        t0 = time.perf_counter()
        _save_dataset(records_to_dataset((store.done[i] for i in ids), out), out)
        timing["dataset_s"] = round(time.perf_counter() - t0, 2)
    timing["total_s"] = round(time.perf_counter() - t_start, 2)
    (out / "timing.json").write_text(json.dumps(timing, indent=1))
    return trajectories


def _in_order(ids: list[str], made: dict[str, Trajectory], store: TrajectoryStore) -> list[Trajectory]:
    """Every task's trajectory in task order: those made now from memory, the rest from the store."""
    earlier = iter(store.trajectories([i for i in ids if i not in made]))
    return [made[i] if i in made else next(earlier) for i in ids]


def _worker(spec: BackendSpec, tasks: Sequence[X2IInput], out_dir: str, seed: int, concurrency: int,
            provenance: dict[str, Any] | None) -> int:
    import torch

    torch.set_num_threads(1)
    one_blas_thread_for_good()  # one of several worker processes (sairlib.blas)
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
    _save_dataset(to_dataset(trajectories), out)
    return trajectories
