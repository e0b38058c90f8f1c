"""Tests for ``sairlib.memory``: the peak resident memory of a process tree.

    python -m pytest -q tests/test_memory.py
"""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from sairlib.memory import PeakMemory, tree_rss_bytes

# a child that holds 300 MiB of touched memory for a second, then exits
HOLD = "import time; b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(1.0)"


def test_peak_sees_a_child_that_has_exited_since():
    with PeakMemory(interval_s=0.05) as peak:
        subprocess.run([sys.executable, "-c", HOLD], check=True)
    assert peak.peak_mb > 300  # the child's buffer, plus its interpreter
    after = tree_rss_bytes(peak.root_pid) / 2**20
    assert after < peak.peak_mb - 250  # measured while it ran, not now


def test_nothing_running_means_no_children_and_root_only_when_asked():
    with PeakMemory(interval_s=0.05) as idle:
        time.sleep(0.15)
    with PeakMemory(interval_s=0.05, include_root=True) as own:
        time.sleep(0.15)
    assert own.peak_mb > idle.peak_mb + 20  # this test process itself holds tens of MB


def test_a_process_that_is_gone_counts_zero():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    assert tree_rss_bytes(p.pid, include_root=True) == 0


def test_bad_interval_names_the_argument():
    with pytest.raises(ValueError, match="interval_s"):
        PeakMemory(interval_s=0)
