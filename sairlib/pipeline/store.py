"""An append-only store of finished trajectories: the pipeline's resume point.

Each finished trajectory becomes one JSON line in ``<dir>/trajectories.jsonl``, written after
its PNGs and flushed to the OS at once (a killed process loses only the trajectories still in
flight) and fsynced at least every ``fsync_every_s`` (a crashed machine loses at most that long).
On restart, the ids already stored are skipped; a torn last line (the kill hit mid-write) is
dropped. ``records(order)`` returns them in task order, so an interrupted and resumed run ends
with the same dataset as an uninterrupted one::

    store = TrajectoryStore("outputs/run/01_pipeline")
    todo = [x for x in tasks if x.id not in store.done]
    store.add(trajectory)
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Sequence

from ..trajectory import Trajectory, trajectory_from_json, trajectory_to_json

FILE = "trajectories.jsonl"


class TrajectoryStore:
    def __init__(self, directory: str | os.PathLike, fsync_every_s: float = 1.0) -> None:
        self.fsync_every_s, self._synced = float(fsync_every_s), time.monotonic()
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / FILE
        self.done: dict[str, dict] = {}
        self._load()
        self._f = self.path.open("a")

    def _load(self) -> None:
        if not self.path.exists():
            return
        good: list[str] = []
        torn = False
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                torn = True  # a write cut short by a kill: that trajectory will be redone
                continue
            if rec.get("id") in self.done:
                continue
            self.done[rec["id"]] = rec
            good.append(line)
        if torn:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("".join(g + "\n" for g in good))
            tmp.replace(self.path)

    def add(self, t: Trajectory) -> None:
        if t.id in self.done:
            return  # never a duplicate
        rec = trajectory_to_json(t, self.dir)
        self._f.write(json.dumps(rec) + "\n")
        self._f.flush()  # in the OS from here: a killed process loses nothing
        now = time.monotonic()
        if now - self._synced >= self.fsync_every_s:  # on disk: a crashed machine loses at most this long
            os.fsync(self._f.fileno())
            self._synced = now
        self.done[t.id] = rec

    def close(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()

    def trajectories(self, order: Sequence[str] | None = None) -> list[Trajectory]:
        """Stored trajectories, in ``order`` (task ids) when given, else as stored."""
        ids = [i for i in order if i in self.done] if order is not None else list(self.done)
        return [trajectory_from_json(self.done[i], self.dir) for i in ids]
