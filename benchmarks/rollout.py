"""Rollout throughput: constrained ``sairlib.generation.generate`` vs plain ``model.generate``, and a roofline.

    python benchmarks/rollout.py --quick                      # CPU, under a minute
    python benchmarks/rollout.py --device cuda --batch 512 --hidden 512 --layers 8 --heads 8 --new-tokens 256

Builds a random-init Llama policy over the world vocabulary (bf16 on CUDA, float32 on CPU),
left-padded random world prompts, and times our decoder in each KV-cache mode (``dynamic``,
``static``, ``compiled``: a fixed-shape step under ``torch.compile``, CUDA graphs on CUDA; its
first, compiling call timed apart) and plain ``model.generate`` on the same batch and budget,
interleaved, the median of ``--repeats`` kept. The headline ``tok_s`` is the best mode's.
Its logits get an ``<eos>`` bias (``--eos-bias``) so that rollouts run the whole budget, as
``min_new_tokens`` makes plain ``generate`` do. Decoding is memory bound: each step reads the
parameters and the KV cache, so the roofline is ``batch / ((param_bytes + kv_bytes) / bandwidth)``
with the bandwidth measured here by a large device-to-device copy (read + write bytes).
Writes ``benchmarks/results/rollout.json``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sairlib.generation import generate  # noqa: E402
from sairlib.sequence import Layout  # noqa: E402
from sairlib.tokenizers import build_tokenizer  # noqa: E402
from sairlib.world import make_tasks  # noqa: E402
from sairlib.world.grammar import vocabulary  # noqa: E402
from benchmarks.common import sync, write_result  # noqa: E402

MODES = ("dynamic", "static", "compiled")  # the KV-cache modes of sairlib.generation.generate
QUICK = dict(batch=8, hidden=64, layers=2, heads=4, new_tokens=48, codes=64, tokens_per_image=16, threads=1)


def parse_args(argv: list[str] | None = None, out: str = "rollout.json") -> argparse.Namespace:
    """Command-line options; ``--quick`` overrides the sizes with a small CPU-friendly run. ``out``: the
    default result file under ``benchmarks/results/`` (other scripts reuse these options)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=None, help="default: --heads")
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--codes", type=int, default=512, help="image codebook size")
    p.add_argument("--tokens-per-image", type=int, default=64)
    p.add_argument("--eos-bias", type=float, default=-20.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each decoder (interleaved); median kept")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--quick", action="store_true", help="small model and batch (CPU, < 1 min)")
    p.add_argument("--profile", default="", choices=["", *MODES],
                   help="after timing, profile one call of this mode and print its 15 costliest kernels")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / out))
    args = p.parse_args(argv)
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
    args.kv_heads = args.kv_heads or args.heads
    return args


# ----------------------------------------------------------------------------- setup
def build_layout(codes: int, tokens_per_image: int) -> Layout:
    """World-vocabulary tokenizer with ``codes`` image codes, as a :class:`Layout`."""
    return Layout.from_tokenizer(build_tokenizer(vocabulary(), n_image_codes=codes), tokens_per_image)


def build_policy(layout: Layout, args: argparse.Namespace, device: torch.device) -> LlamaForCausalLM:
    """Random-init Llama over the layout's vocabulary, lm_head biased by ``args.eos_bias`` on ``<eos>``."""
    torch.manual_seed(args.seed)
    cfg = LlamaConfig(vocab_size=len(layout.tokenizer), hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                      num_hidden_layers=args.layers, num_attention_heads=args.heads,
                      num_key_value_heads=args.kv_heads, max_position_embeddings=4096,
                      pad_token_id=layout.pad, bos_token_id=layout.bos, eos_token_id=layout.eos)
    model = LlamaForCausalLM(cfg)
    head = torch.nn.Linear(args.hidden, cfg.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.copy_(model.lm_head.weight)
        head.bias.zero_()
        head.bias[layout.eos] = args.eos_bias
    model.lm_head = head
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return model.to(device=device, dtype=dtype).eval()


def world_prompts(layout: Layout, n: int, seed: int) -> list[list[int]]:
    """``n`` prompts from world tasks of every family (input images as random codes)."""
    rng = np.random.default_rng(seed)
    tasks = make_tasks(min(n, 64), "train", seed=seed)
    out = []
    for i in range(n):
        x = tasks[i % len(tasks)]
        out.append(layout.prompt(x.instruction, [rng.integers(0, layout.n_codes, layout.tokens_per_image)
                                                 for _ in x.images]))
    return out


def left_pad(prompts: list[list[int]], pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and attention mask for ``model.generate``."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    return ids.to(device), mask.to(device)


# ----------------------------------------------------------------------------- measurements
def timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    """``(fn(), seconds)`` with the device synchronised around it."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def bandwidth_gbps(device: torch.device, repeats: int = 5) -> float:
    """Device memory bandwidth in GB/s from a copy of 2 GiB (GPU) or 256 MiB (CPU), read + write bytes."""
    n = (2 << 30) if device.type == "cuda" else (256 << 20)
    src = torch.ones(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    _, t = timed(lambda: [dst.copy_(src) for _ in range(repeats)], device)
    del src, dst
    return 2 * n * repeats / t / 1e9


def run_constrained(model, layout, prompts, new_tokens, device, seed,
                    cache="dynamic") -> tuple[int, int, float, float, float]:
    """Positions decoded, useful tokens, seconds, fraction well formed and seconds of parsing (host
    work inside ``generate``, timed again on its outputs) for ``sairlib.generation.generate``."""
    fn = lambda: generate(model, layout, prompts, new_tokens, temperature=1.0, seed=seed, cache=cache)
    outs, t = timed(fn, device)
    steps = max(len(g.ids) for g in outs)
    ok = sum(g.parsed.ok and g.parsed.ended for g in outs) / len(outs)
    t0 = time.perf_counter()
    for g in outs:
        layout.parse(g.ids)
    return steps * len(prompts), sum(len(g.ids) for g in outs), t, ok, time.perf_counter() - t0


def run_hf(model, layout, prompts, new_tokens, device, seed) -> tuple[int, float]:
    """Tokens generated and seconds for plain ``model.generate`` (dynamic cache, sampling)."""
    ids, mask = left_pad(prompts, layout.pad, device)
    torch.manual_seed(seed)
    fn = lambda: model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens,
                                min_new_tokens=new_tokens, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                                pad_token_id=layout.pad, eos_token_id=layout.eos)
    with torch.inference_mode():
        out, t = timed(fn, device)
    return int(out.shape[0] * (out.shape[1] - ids.shape[1])), t


def roofline(model, args, prompts, bw_gbps: float, dtype_bytes: int) -> dict[str, float]:
    """Memory-bound tokens/s: each step reads every parameter and the KV cache at the mean context."""
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    head_dim = args.hidden // args.heads
    avg_context = max(len(p) for p in prompts) + (args.new_tokens + 1) / 2  # the padded cache is what is read
    kv_bytes = 2 * args.layers * args.kv_heads * head_dim * avg_context * args.batch * dtype_bytes
    step_s = (param_bytes + kv_bytes) / (bw_gbps * 1e9)
    return dict(param_bytes=param_bytes, kv_bytes_per_step=kv_bytes, avg_context=avg_context,
                roofline_tok_s=args.batch / step_s)


# ----------------------------------------------------------------------------- report
def table(r: dict[str, Any]) -> str:
    rows = [("device", r["device"]), ("params (M)", f"{r['params_M']:.2f}"), ("batch", r["batch"]),
            ("new tokens", r["new_tokens"]),
            ("generate, dynamic cache tok/s", f"{r['dynamic_cache_tok_s']:.0f}"),
            ("generate, static cache tok/s", f"{r['static_cache_tok_s']:.0f}"),
            ("generate, compiled (CUDA graphs on GPU) tok/s", f"{r['compiled_tok_s']:.0f}"),
            ("  first call (compiles) s", f"{r['compiled_warmup_s']:.1f}"),
            ("  compiled / HF generate", f"{r['compiled_speedup_vs_hf']:.2f}x"),
            ("  compiled fraction of roofline", f"{r['compiled_fraction_of_roofline']:.3f}"),
            ("  compiled well formed", f"{r['compiled_well_formed']:.3f}"),
            (f"best mode ({r['best_mode']}) tok/s", f"{r['tok_s']:.0f}"),
            ("  of which before <eos> tok/s", f"{r['useful_tok_s']:.0f}"),
            ("  without Layout.parse tok/s", f"{r['tok_s_without_parse']:.0f}"),
            ("HF generate (dynamic) tok/s", f"{r['hf_dynamic_tok_s']:.0f}"),
            ("speedup (best / HF)", f"{r['speedup']:.2f}x"),
            ("bandwidth GB/s", f"{r['bandwidth_GBps']:.1f}"), ("roofline tok/s", f"{r['roofline_tok_s']:.0f}"),
            ("fraction of roofline (best)", f"{r['fraction_of_roofline']:.3f}"),
            ("well formed", f"{r['well_formed']:.3f}"), ("torch / transformers", f"{r['torch']} / {r['transformers']}")]
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


def profile_top(model, layout, prompts, new_tokens, device, seed, mode: str, n: int = 15) -> list[dict[str, Any]]:
    """The ``n`` operators with the most device time (self time) in one ``generate`` call of ``mode``."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        run_constrained(model, layout, prompts, new_tokens, device, seed, mode)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=n))
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    rows = sorted(prof.key_averages(), key=lambda e: getattr(e, attr, 0.0), reverse=True)[:n]
    return [{"name": e.key, "calls": e.count, "self_us": getattr(e, attr, 0.0)} for e in rows]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table and write the JSON; returns the result dict."""
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    layout = build_layout(args.codes, args.tokens_per_image)
    model = build_policy(layout, args, device)
    prompts = world_prompts(layout, args.batch, args.seed)
    bw = bandwidth_gbps(device)
    # full-length warm-up of each: the allocator grows its pools for the largest KV cache once;
    # the compiled mode's first call traces, compiles and records its graph (timed on its own)
    run_constrained(model, layout, prompts, args.new_tokens, device, args.seed)
    run_constrained(model, layout, prompts, args.new_tokens, device, args.seed, cache="static")
    compile_s = run_constrained(model, layout, prompts, args.new_tokens, device, args.seed, cache="compiled")[2]
    run_hf(model, layout, prompts, args.new_tokens, device, args.seed)
    runs: dict[str, list] = {m: [] for m in MODES}
    hf = []
    for i in range(args.repeats):  # interleaved, so that drifting machine load hits all alike
        for mode in MODES:
            runs[mode].append(run_constrained(model, layout, prompts, args.new_tokens, device, args.seed + i, mode))
        hf.append(run_hf(model, layout, prompts, args.new_tokens, device, args.seed + i))
    med = {m: sorted(v, key=lambda o: o[2])[len(v) // 2] for m, v in runs.items()}
    rate = {m: o[0] / o[2] for m, o in med.items()}
    best = max(rate, key=rate.get)
    positions, useful, t_ours, ok, parse_s = med[best]
    hf_tokens, t_hf = sorted(hf, key=lambda o: o[1])[len(hf) // 2]
    hf_rate = hf_tokens / t_hf
    dtype_bytes = next(model.parameters()).element_size()
    roof = roofline(model, args, prompts, bw, dtype_bytes)
    r = dict(device=torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} thread(s))",
             params_M=sum(p.numel() for p in model.parameters()) / 1e6, batch=args.batch, new_tokens=args.new_tokens,
             hidden=args.hidden, layers=args.layers, heads=args.heads, kv_heads=args.kv_heads,
             dtype=str(next(model.parameters()).dtype).replace("torch.", ""), prompt_width=max(len(p) for p in prompts),
             best_mode=best, tok_s=rate[best], useful_tok_s=useful / t_ours, seconds=t_ours, parse_seconds=parse_s,
             tok_s_without_parse=positions / (t_ours - parse_s),
             dynamic_cache_tok_s=rate["dynamic"], static_cache_tok_s=rate["static"], compiled_tok_s=rate["compiled"],
             compiled_warmup_s=compile_s, hf_dynamic_tok_s=hf_rate, hf_seconds=t_hf, speedup=rate[best] / hf_rate,
             compiled_speedup_vs_hf=rate["compiled"] / hf_rate,
             bandwidth_GBps=bw, fraction_of_roofline=rate[best] / roof["roofline_tok_s"],
             compiled_fraction_of_roofline=rate["compiled"] / roof["roofline_tok_s"],
             well_formed=ok, **{f"{m}_well_formed": med[m][3] for m in MODES}, repeats=args.repeats,
             all_tok_s={m: [o[0] / o[2] for o in v] for m, v in runs.items()},
             all_hf_tok_s=[o[0] / o[1] for o in hf], torch=torch.__version__, transformers=transformers.__version__, quick=args.quick, **roof)
    if args.profile:
        r["profile"] = {"mode": args.profile,
                        "top": profile_top(model, layout, prompts, args.new_tokens, device, args.seed, args.profile)}
    print(table(r))
    write_result(args.out, r)
    return r


if __name__ == "__main__":
    main()
