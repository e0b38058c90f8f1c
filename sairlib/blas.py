"""One BLAS thread per process for the CPU-bound world work that runs in many processes at once.

Numpy's BLAS (OpenBLAS in the wheels) starts as many threads as the machine has cores in every
process. Stage 00 builds its pretraining examples in one process per core, and the pipeline scores
trajectories in a pool of Analyzer processes; each would then run a core's worth of BLAS threads
over small matrices (perception's palette snap, the codec's nearest-codebook search), so 16
processes on 16 cores fight over 256 threads. The products involved are exact (small integers in
floating point), so the thread count never changes a result, only the time:

    with one_blas_thread():                    # this process, and the processes it forks inside
        examples = pretrain_examples(...)

    ProcessPoolExecutor(n, initializer=one_blas_thread_for_good)   # each spawned worker

Measured with ``benchmarks/pretrain_data.py`` (docs/LOG.md, eleventh session).
"""
from __future__ import annotations

from typing import Any

from threadpoolctl import threadpool_limits


def one_blas_thread() -> Any:
    """A context manager limiting the loaded BLAS libraries to one thread while it is open (forked
    children inherit the limit)."""
    return threadpool_limits(limits=1, user_api="blas")


def one_blas_thread_for_good() -> None:
    """Limit this process's BLAS libraries to one thread from now on (a pool worker's initializer).
    Numpy is imported first so that its BLAS is loaded and found."""
    import numpy  # noqa: F401

    threadpool_limits(limits=1, user_api="blas")


__all__ = ["one_blas_thread", "one_blas_thread_for_good"]
