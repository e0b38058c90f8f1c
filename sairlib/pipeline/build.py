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
from .store import TrajectoryStore


def _run(coro: Any) -> Any:
    """``asyncio.run`` that also works inside a running loop (a Jupyter kernel)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def build_trajectories(tasks: Sequence[X2IInput], backends: Backends, out_dir: str | Path, seed: int, *,
                       concurrency: int = 512, progress: bool = True,
                       provenance: dict[str, Any] | None = None, save_dataset: bool = True) -> list[Trajectory]:
    """Escalate ``tasks`` (skipping those already stored in ``out_dir``); all trajectories in task order."""
    ids = [x.id for x in tasks]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"tasks: task id {dup!r} appears more than once")
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
        tmp = out / "dataset.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        to_dataset(trajectories).save_to_disk(str(tmp))
        shutil.rmtree(out / "dataset", ignore_errors=True)
        tmp.rename(out / "dataset")
    return trajectories
