"""The launcher shared by SFT and GRPO jobs: command lines and failure reports.

    python -m pytest -q tests/test_launch.py
"""
from __future__ import annotations

import sys

import pytest
import torch

from sairlib import launch
from sairlib.launch import MEMORY_SHARE_ENV, claim_memory_share, launch_command, launch_jobs, run_launch


@pytest.mark.parametrize("gpus", [0, 1, 2])
def test_command_lines(monkeypatch, gpus):
    monkeypatch.setattr(launch, "visible_gpus", lambda: gpus)
    one = launch_command("sairlib.grpo_launch", "job.json", 1)
    assert one[-3:] == ["-m", "sairlib.grpo_launch", "job.json"]
    assert one[one.index("--config_file") + 1].endswith("single_gpu.yaml") and ("--cpu" in one) == (gpus == 0)
    if gpus == 1:  # two ranks on one GPU: refused with a message, not an NCCL error from inside the ranks
        with pytest.raises(ValueError, match="processes: 2 need 2 GPUs .* 1 visible"):
            launch_command("sairlib.grpo_launch", "job.json", 2)
    else:
        cmd = launch_command("sairlib.grpo_launch", "job.json", 2)
        assert cmd[-3:] == ["-m", "sairlib.grpo_launch", "job.json"]
        if gpus == 0:  # several CPU ranks: torchrun (accelerate --cpu starts one process)
            assert cmd[1:3] == ["-m", "torch.distributed.run"] and cmd[cmd.index("--nproc_per_node") + 1] == "2"
        else:
            assert cmd[1:3] == ["-m", "accelerate.commands.launch"] and "--cpu" not in cmd
            assert cmd[cmd.index("--config_file") + 1].endswith("multi_gpu.yaml")
    with pytest.raises(ValueError, match="processes"):
        launch_command("sairlib.grpo_launch", "job.json", 0)


def test_a_failing_job_reports_its_exception_line():
    code = "import sys; print('\\n'.join(f'noise {i}' for i in range(100))); raise ValueError('boom in a rank')"
    with pytest.raises(RuntimeError) as e:
        run_launch([sys.executable, "-c", code])
    msg = str(e.value)
    assert "exit 1" in msg and "ValueError: boom in a rank" in msg.split("--- last lines ---")[0]


def test_running_out_of_memory_adds_the_jobs_own_advice(tmp_path, monkeypatch):
    import sairlib.launch as launch
    from sairlib.grpo_job import GRPOJob
    from sairlib.sft import SFTJob

    oom = ("import sys; print('torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 294.00 MiB', "
           "file=sys.stderr); sys.exit(1)")
    other = "raise ValueError('not memory')"
    grpo = GRPOJob(base_dir="b", model_dir="m", output_dir=str(tmp_path / "g"), world={}, reward={},
                   grpo={"prompts_per_step": 16, "num_generations": 8, "grad_accum": 2})
    sft = SFTJob(base_dir="b", train_dir="t", model_dir="m", output_dir=str(tmp_path / "s"),
                 hparams={"batch_size": 32})
    assert "grpo.grad_accum is 2" in grpo.memory_hint() and "128 answers" in grpo.memory_hint()
    assert "sft.batch_size is 32" in sft.memory_hint()
    for code, hinted in ((oom, True), (other, False)):
        monkeypatch.setattr(launch, "launch_command", lambda module, path, n, config=None: [sys.executable, "-c", code])
        with pytest.raises(RuntimeError) as e:
            launch_jobs({"grpo": grpo, "sft": sft}, "unused", lambda j: [], concurrent=True)
        head = str(e.value)
        assert ("out of memory: grpo.grad_accum is 2" in head and "out of memory: sft.batch_size is 32" in head) == hinted
        with pytest.raises(RuntimeError) as e:
            launch.launch_job(grpo, "unused", lambda j: [], processes=1, subprocess_=True)
        assert ("out of memory: grpo.grad_accum" in str(e.value).split("--- last lines ---")[0]) == hinted


class _Job:
    def __init__(self, output_dir):
        self.output_dir = str(output_dir)

    def to_json(self) -> str:
        return "{}"


def test_concurrent_jobs_that_fail_are_each_named(tmp_path):
    jobs = {"first": _Job(tmp_path / "a"), "second": _Job(tmp_path / "b")}
    with pytest.raises(RuntimeError) as e:
        launch_jobs(jobs, "sairlib.no_such_module", lambda j: [], concurrent=True)
    msg = str(e.value)
    assert "first: exit" in msg and "second: exit" in msg and "no_such_module" in msg
    assert (tmp_path / "a" / "launch.log").is_file() and (tmp_path / "a" / "launch.json").is_file()


def test_jobs_run_in_order_when_not_concurrent(tmp_path):
    seen = []
    out = launch_jobs({"x": _Job(tmp_path / "x"), "y": _Job(tmp_path / "y")}, "unused",
                      lambda j: seen.append(j.output_dir) or [{"step": len(seen)}], concurrent=False)
    assert seen == [str(tmp_path / "x"), str(tmp_path / "y")] and out == {"x": [{"step": 1}], "y": [{"step": 2}]}


def test_memory_share_is_read_from_the_environment_and_checked(monkeypatch):
    monkeypatch.delenv(MEMORY_SHARE_ENV, raising=False)
    assert claim_memory_share() is None
    for bad in ("0", "1.5", "half"):
        monkeypatch.setenv(MEMORY_SHARE_ENV, bad)
        with pytest.raises(ValueError, match=MEMORY_SHARE_ENV):
            claim_memory_share()
    monkeypatch.setenv(MEMORY_SHARE_ENV, "0.45")
    assert claim_memory_share() == (0.45 if torch.cuda.is_available() else None)


def test_an_interrupted_launch_leaves_no_job_running(tmp_path, monkeypatch):
    import signal
    import subprocess

    import sairlib.launch as launch

    started = []

    class Recorded(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(launch.subprocess, "Popen", Recorded)
    monkeypatch.setattr(launch, "launch_command", lambda module, path, n: [sys.executable, "-c",
                                                                          "import time; time.sleep(120)"])

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    signal.alarm(2)
    try:
        with pytest.raises(KeyboardInterrupt):
            launch_jobs({"a": _Job(tmp_path / "a"), "b": _Job(tmp_path / "b")}, "unused", lambda j: [], concurrent=True)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert len(started) == 2 and all(p.returncode == -signal.SIGTERM for p in started)
