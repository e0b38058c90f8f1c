"""benchmarks/rollout_busy.py: the idle-time arithmetic, and its refusal to run without a GPU."""
import pytest

from benchmark_scripts import load


def test_overlapping_kernels_count_once_in_the_busy_time():
    busy = load("rollout_busy")
    assert busy.union_seconds([(20.0, 30.0), (0.0, 10.0), (5.0, 15.0)]) == pytest.approx(25e-6)
    assert busy.union_seconds([(0.0, 10.0), (2.0, 3.0)]) == pytest.approx(10e-6)  # one inside another
    assert busy.union_seconds([]) == 0.0


def test_a_cpu_device_is_refused_with_the_reason():
    busy = load("rollout_busy")
    with pytest.raises(SystemExit, match="--device must be a CUDA device"):
        busy.main(["--device", "cpu", "--quick"])
