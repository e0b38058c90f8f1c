"""Peak memory of a process tree, sampled while it runs.

The runner wraps each stage in :class:`PeakMemory` so that ``run.json`` and the stage's metrics
say how much memory the stage needed (the kernel, and every process it started: SFT ranks,
analyzer workers, nested ablation runs)::

    with PeakMemory() as peak:          # this process's descendants, sampled every 0.25 s
        papermill.execute_notebook(...)
    peak.peak_mb                       # the largest sum of their resident set sizes seen

The sum counts pages shared between processes once per process, so it is an upper bound of the
memory the tree held; a process shorter than the sampling interval may be missed.
"""
from __future__ import annotations

import os
import threading
from types import TracebackType

import psutil


def tree_rss_bytes(root_pid: int, include_root: bool = False) -> int:
    """Sum of the resident set sizes of ``root_pid``'s descendants (and of itself if asked).

    Processes that exit while being read are skipped.
    """
    try:
        root = psutil.Process(root_pid)
        procs = root.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    if include_root:
        procs.append(root)
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return total


class PeakMemory:
    """Context manager: the peak of :func:`tree_rss_bytes` over the block, in ``peak_mb``.

    ``root_pid`` defaults to this process; ``include_root`` adds the root's own memory.
    ``interval_s`` is the sampling period of a daemon thread.
    """

    def __init__(self, root_pid: int | None = None, include_root: bool = False, interval_s: float = 0.25) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s: must be > 0, got {interval_s!r}")
        self.root_pid = os.getpid() if root_pid is None else int(root_pid)
        self.include_root = include_root
        self.interval_s = float(interval_s)
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def peak_mb(self) -> float:
        return round(self.peak_bytes / 2**20, 1)

    def sample(self) -> int:
        """Read the tree once and update the peak; returns the current sum in bytes."""
        now = tree_rss_bytes(self.root_pid, self.include_root)
        self.peak_bytes = max(self.peak_bytes, now)
        return now

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> "PeakMemory":
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
