"""Shared test settings: hypothesis profiles sized for 2 CPU cores."""
import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

import pytest


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models train and decode several times faster on one thread than on two busy cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cpu_ranks(monkeypatch):
    """Launched training processes run on CPU, as one gloo group, on any machine: the launcher sees no
    GPU and the children inherit ``CUDA_VISIBLE_DEVICES=""``. (Tests comparing several CPU ranks with
    one process run both sides through launches, so that a GPU in this process changes nothing.)"""
    from sairlib import launch

    monkeypatch.setattr(launch, "visible_gpus", lambda: 0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
