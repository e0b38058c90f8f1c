"""sairlib.blas: BLAS limited to one thread inside the context, in forked children, and for good in a worker."""
import multiprocessing as mp

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from sairlib.blas import one_blas_thread, one_blas_thread_for_good


def _blas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


def _child_threads(_: int) -> list[int]:
    return _blas_threads()


def _worker_threads(_: int) -> list[int]:
    return _blas_threads()


def test_blas_runs_one_thread_inside_the_context_and_in_the_processes_it_forks():
    np.ones((2, 2)) @ np.ones((2, 2))  # numpy's BLAS is loaded
    with threadpool_limits(limits=2, user_api="blas"):  # two threads to start from, whatever the machine
        assert set(_blas_threads()) == {2}
        with one_blas_thread():
            assert set(_blas_threads()) == {1}
            with mp.get_context("fork").Pool(1) as pool:
                assert set(pool.map(_child_threads, [0])[0]) == {1}
        assert set(_blas_threads()) == {2}  # restored on leaving


def test_a_spawned_worker_limits_itself_for_good():
    with mp.get_context("spawn").Pool(1, initializer=one_blas_thread_for_good) as pool:
        assert set(pool.map(_worker_threads, [0])[0]) == {1}
