"""What the benchmark scripts share: where results go and how they are written, progress lines, device syncs,
relative errors.

The scripts put the repository root on ``sys.path`` and then ``from benchmarks.common import ...``,
so they run as ``python benchmarks/<script>.py`` from anywhere.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
T0 = time.perf_counter()


def log(msg: str) -> None:
    """Progress line with the seconds since start (flushed: GPU runs are watched live)."""
    print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


def write_result(path: str | Path, result: dict[str, Any]) -> Path:
    """Write a benchmark's result as indented JSON (making its folder), say where, and return the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}", flush=True)
    return out


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rel(a: float, b: float) -> float:
    """Relative difference of ``a`` from the reference ``b``."""
    return abs(a - b) / max(abs(b), 1e-12)


def policy_options(p: argparse.ArgumentParser) -> None:
    """The options of a policy trained in params/gpu.yaml's world: device, size (512 x 8 by default,
    gpu_30min.yaml's base model; gpu.yaml's is ``--hidden 640 --layers 12 --heads 10``), and the
    world's image tokenizer (8 px patches: 64 tokens per 64 px image; 2,048 codes)."""
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--patch-size", type=int, default=8, help="image patch size (8: 64 tokens per 64 px image)")
    p.add_argument("--codes", type=int, default=2048, help="image codebook size")


def matmul_tflops(device: torch.device, dtype: torch.dtype) -> tuple[float, int]:
    """Best dense matmul rate (TFLOP/s, 2*n^3 per product) over a few square sizes, and that size."""
    sizes = (4096, 8192, 16384) if device.type == "cuda" else (256, 512)
    best, best_n = 0.0, 0
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        reps = max(3, int(2e12 / (2 * n ** 3))) if device.type == "cuda" else 5
        for _ in range(3):
            a @ b
        sync(device)
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(reps):
                a @ b
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            for _ in range(reps):
                a @ b
            seconds = time.perf_counter() - t0
        rate = 2 * n ** 3 * reps / seconds / 1e12
        if rate > best:
            best, best_n = rate, n
        del a, b
    return best, best_n
