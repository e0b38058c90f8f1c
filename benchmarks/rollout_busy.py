"""Where the compiled constrained decoder's time goes on CUDA: one profiled ``generate`` call.

    python benchmarks/rollout_busy.py --device cuda --batch 512 --hidden 640 --layers 12 --heads 10 --codes 2048 --new-tokens 256

Builds the same random-init policy and prompts as ``benchmarks/rollout.py`` (its arguments), warms
the ``compiled`` mode up (the first call compiles), times two more calls, then profiles one: its
wall time against the device time of its kernels (their sum, and the union of their intervals,
which counts overlapping kernels once), so ``1 - union / wall`` is the share of the call the GPU
sat idle. Prints the 20 kernels with the most device time and the 25 host operators with the
most host time; writes ``benchmarks/results/rollout_busy.json``. CUDA only: on a CPU there is no
separate device to be idle.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import rollout as R  # noqa: E402
from benchmarks.common import write_result  # noqa: E402


def union_seconds(spans: list[tuple[float, float]]) -> float:
    """Length of the union of ``(start, end)`` intervals (microseconds in, seconds out)."""
    total, cur = 0.0, None
    for s, e in sorted(spans):
        if cur is None or s > cur[1]:
            if cur is not None:
                total += cur[1] - cur[0]
            cur = [s, e]
        else:
            cur[1] = max(cur[1], e)
    if cur is not None:
        total += cur[1] - cur[0]
    return total / 1e6


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Profile one compiled call; print the tables and write the JSON; returns the result dict."""
    from torch.profiler import ProfilerActivity, profile

    args = R.parse_args(argv, out="rollout_busy.json")
    dev = torch.device(args.device)
    if dev.type != "cuda":
        raise SystemExit("rollout_busy.py: --device must be a CUDA device (it measures how long the GPU sits idle)")
    layout = R.build_layout(args.codes, args.tokens_per_image)
    model = R.build_policy(layout, args, dev)
    prompts = R.world_prompts(layout, args.batch, args.seed)
    def call() -> float:  # seconds of one compiled generate call, the device synchronised around it
        return R.run_constrained(model, layout, prompts, args.new_tokens, dev, args.seed, "compiled")[2]

    warm = call()
    walls = [call() for _ in range(2)]
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        wall = call()
    kernels = [e for e in prof.events() if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA]
    union = union_seconds([(e.time_range.start, e.time_range.end) for e in kernels])
    ka = prof.key_averages()
    r = {"device": torch.cuda.get_device_name(dev), "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
         "batch": args.batch, "new_tokens": args.new_tokens, "hidden": args.hidden, "layers": args.layers,
         "heads": args.heads, "first_call_s": warm, "wall_s_unprofiled": walls, "wall_s_profiled": wall,
         "kernel_sum_s": sum(e.device_time for e in kernels) / 1e6, "kernel_union_s": union,
         "gpu_busy_fraction": union / wall, "n_kernels": len(kernels),
         "cuda_top": [{"name": e.key[:120], "calls": e.count, "self_device_us": e.self_device_time_total}
                      for e in sorted(ka, key=lambda e: e.self_device_time_total, reverse=True)[:20]],
         "cpu_top": [{"name": e.key[:120], "calls": e.count, "self_cpu_us": e.self_cpu_time_total}
                     for e in sorted(ka, key=lambda e: e.self_cpu_time_total, reverse=True)[:25]],
         "torch": torch.__version__}
    print(f"{'wall (profiled) s':<28}{wall:>10.3f}\n{'kernels, union s':<28}{union:>10.3f}\n"
          f"{'GPU busy':<28}{union / wall:>10.1%}\n{'kernels':<28}{len(kernels):>10d}")
    print(ka.table(sort_by="self_cuda_time_total", row_limit=20))
    print(ka.table(sort_by="self_cpu_time_total", row_limit=25))
    write_result(args.out, r)
    return r


if __name__ == "__main__":
    main()
