"""Constrained generation: well-formed completions whatever the weights, forced flags, padding, CFG, inputs."""
from __future__ import annotations

import copy
import gc
import inspect
import weakref

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import LlamaConfig, LlamaForCausalLM

from sairlib.generation import LayoutConstraint, generate, sample_tokens
from sairlib.sequence import Layout
from sairlib.tokenizers import build_tokenizer
from sairlib.world import make_tasks
from sairlib.world.grammar import vocabulary

TPI = 16


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def layout() -> Layout:
    return Layout.from_tokenizer(build_tokenizer(vocabulary(), n_image_codes=64), tokens_per_image=TPI)


def tiny_model(layout: Layout, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(layout.tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                      pad_token_id=layout.pad, bos_token_id=layout.bos, eos_token_id=layout.eos)
    return LlamaForCausalLM(cfg).eval()


def biased(model: LlamaForCausalLM, ids, value: float = 30.0) -> LlamaForCausalLM:
    """A copy of ``model`` whose lm_head adds ``value`` to the logits of ``ids``."""
    m = copy.deepcopy(model)
    old = m.lm_head
    head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(old.weight)
        head.bias.zero_()
        head.bias[list(ids)] = value
    m.lm_head = head
    return m


@pytest.fixture(scope="module")
def model(layout):
    return tiny_model(layout)


@pytest.fixture(scope="module")
def prompts(layout) -> list[list[int]]:
    rng = np.random.default_rng(0)
    out = []
    for fam in ("t2i", "edit", "compose"):
        for x in make_tasks(4, "train", seed=1, family=fam):
            codes = [rng.integers(0, layout.n_codes, TPI) for _ in x.images]
            out.append(layout.prompt(x.instruction, codes))
    return out


@pytest.fixture(scope="module")
def stress_models(layout, model):
    """Models whose logits strongly prefer one kind of token, to push the constraint."""
    codes = range(layout.code_lo, layout.code_hi)
    words = range(layout.code_hi, len(layout.tokenizer))
    return {
        "random": model,
        "codes": biased(model, codes),
        "eos": biased(model, [layout.eos]),
        "boi": biased(model, [layout.boi]),
        "open": biased(model, layout.open_tag.values()),
        "words": biased(model, words),
        "forbidden": biased(model, [layout.pad, layout.bos, layout.user, layout.assistant, 1]),
    }


# ----------------------------------------------------------------------------- an independent oracle
def reference_allowed(layout: Layout, done: list[int], budget: int) -> set[int]:
    """Allowed next tokens after completion prefix ``done``, rebuilt in plain Python."""
    left = budget - len(done)
    mode, count = "out", 0
    opens = {v: k for k, v in layout.open_tag.items()}
    for t in done:
        if mode == "out":
            mode, count = ("img", 0) if t == layout.boi else ("eos", 0) if t == layout.eos else \
                (opens[t], 0) if t in opens else ("out", 0)
        elif mode == "img":
            mode, count = ("out", 0) if t == layout.eoi else ("img", count + 1)
        elif mode != "eos" and t == layout.close_tag[mode]:
            mode = "out"
    if mode == "eos":
        return {layout.pad}
    if mode == "img":
        return set(range(layout.code_lo, layout.code_hi)) if count < TPI else {layout.eoi}
    if mode == "out":
        ok = {layout.eos}
        if left >= 3:
            ok |= set(layout.open_tag.values())
        if left >= TPI + 3:
            ok.add(layout.boi)
        return ok
    if left <= 2:
        return {layout.close_tag[mode]}
    return set(range(layout.code_hi, len(layout.tokenizer))) | {layout.close_tag[mode]}


def assert_well_formed(layout: Layout, g, budget: int) -> None:
    assert g.parsed.ok, g.parsed.error
    assert g.parsed.ended and g.ids[-1] == layout.eos and g.ids.count(layout.eos) == 1
    assert 1 <= len(g.ids) <= budget and len(g.forced) == len(g.ids)
    assert all(len(s.codes) == TPI for s in g.parsed.segments if s.kind == "G")
    for i, t in enumerate(g.ids):
        allowed = reference_allowed(layout, g.ids[:i], budget)
        assert t in allowed, (i, t, allowed)
        assert g.forced[i] == (len(allowed) == 1), (i, t, g.forced[i], len(allowed))


# ----------------------------------------------------------------------------- well formed, always
@settings(max_examples=25)
@given(budget=st.integers(1, 60), seed=st.integers(0, 2**31 - 1), start=st.integers(0, 11),
       n=st.integers(1, 4), temperature=st.sampled_from([1.0, 1.5, 0.0]))
def test_random_model_completions_are_well_formed(layout, model, prompts, budget, seed, start, n, temperature):
    batch = [prompts[(start + i) % len(prompts)] for i in range(n)]
    for g, p in zip(generate(model, layout, batch, budget, temperature=temperature, seed=seed), batch):
        assert g.prompt == p
        assert_well_formed(layout, g, budget)


@pytest.mark.parametrize("kind", ["random", "codes", "eos", "boi", "open", "words", "forbidden"])
def test_stressed_models_stay_well_formed(layout, prompts, stress_models, kind):
    m = stress_models[kind]
    budgets = list(range(1, 26, 3)) + [TPI + 1, TPI + 2, TPI + 3, TPI + 4, TPI + 5, 2 * TPI + 6, 50]
    for i, budget in enumerate(budgets):
        outs = generate(m, layout, prompts[i % 6::3], budget, temperature=1.0, seed=i)
        for g in outs:
            assert_well_formed(layout, g, budget)
        if kind == "eos":
            assert all(g.ids == [layout.eos] for g in outs)


def test_image_preferring_model_fills_budget_exactly(layout, stress_models, prompts):
    boi = stress_models["boi"]
    for budget, n_images in [(TPI + 2, 0), (TPI + 3, 1), (2 * TPI + 4, 1), (2 * TPI + 5, 2)]:
        for g in generate(boi, layout, prompts[:3], budget, seed=1):
            assert sum(s.kind == "G" for s in g.parsed.segments) == n_images


# ----------------------------------------------------------------------------- forced tokens
def test_forced_marks_eoi_and_budget_tokens(layout, stress_models, prompts):
    g = generate(stress_models["boi"], layout, prompts[:1], TPI + 3, seed=0)[0]
    assert g.ids[0] == layout.boi and g.ids[-2:] == [layout.eoi, layout.eos]
    assert g.forced == [False] * (TPI + 1) + [True, True]  # <boi> and codes free; <eoi>, <eos> forced

    g = generate(stress_models["open"], layout, prompts[:1], 3, seed=0)[0]
    assert g.ids[0] in layout.open_tag.values()
    kind = next(k for k, v in layout.open_tag.items() if v == g.ids[0])
    assert g.ids[1:] == [layout.close_tag[kind], layout.eos]
    assert g.forced == [False, True, True]  # with 2 left the close tag is forced, with 1 the <eos>

    g = generate(stress_models["random"], layout, prompts[:1], 1)[0]
    assert g.ids == [layout.eos] and g.forced == [True]


def test_trace_replays_forced_flags(layout, model, prompts):
    outs = generate(model, layout, prompts[:4], 30, seed=3)
    con = LayoutConstraint(layout, model.config.vocab_size)
    width = max(len(g.ids) for g in outs)
    ids = torch.tensor([g.ids + [layout.pad] * (width - len(g.ids)) for g in outs])
    forced = (con.n_allowed[con.trace(ids, 30)] == 1).tolist()
    for g, f in zip(outs, forced):
        assert f[:len(g.ids)] == g.forced


# ----------------------------------------------------------------------------- decoding correctness
def test_left_padding_does_not_change_greedy_outputs(layout, model, prompts):
    lens = sorted({len(p) for p in prompts})
    assert lens[0] < lens[-1]
    batch = generate(model, layout, prompts, 40, temperature=0)
    for p, g in zip(prompts, batch):
        assert generate(model, layout, [p], 40, temperature=0)[0].ids == g.ids


def test_batch_size_and_static_cache_match(layout, model, prompts):
    ref = [g.ids for g in generate(model, layout, prompts, 30, temperature=0, cache="dynamic")]
    assert [g.ids for g in generate(model, layout, prompts, 30, temperature=0, batch_size=5)] == ref
    assert [g.ids for g in generate(model, layout, prompts, 30, temperature=0, cache="static")] == ref
    assert [g.ids for g in generate(model, layout, prompts, 30, temperature=0, cache="growing")] == ref
    assert [g.ids for g in generate(model, layout, prompts, 30, temperature=0)] == ref  # "auto": growing here
    seeded = [g.ids for g in generate(model, layout, prompts, 30, row_seeds=range(len(prompts)), cache="dynamic")]
    assert [g.ids for g in generate(model, layout, prompts, 30, row_seeds=range(len(prompts)))] == seeded


def test_growing_cache_layer_equals_concatenation_and_reallocates_rarely(layout):
    """Keys and values are those torch.cat would give; buffers double, so 300 one-token steps after
    a 40-token prefill reallocate a handful of times, and the returned keys are views of the buffer."""
    from sairlib.generation import _growing_cache

    cache = _growing_cache(tiny_model(layout).config)
    layer = cache.layers[0]
    k_ref = torch.randn(2, 4, 40, 8)
    k, _ = layer.update(k_ref, k_ref * 2)
    buffers = {layer._k.data_ptr()}
    for _ in range(300):
        step = torch.randn(2, 4, 1, 8)
        k_ref = torch.cat([k_ref, step], dim=-2)
        k, v = layer.update(step, step * 2)
        buffers.add(layer._k.data_ptr())
    assert torch.equal(k, k_ref) and torch.equal(v, k_ref * 2)
    assert layer.get_seq_length() == 340 and k.data_ptr() == layer._k.data_ptr()
    assert len(buffers) <= 5  # 64 -> 128 -> 256 -> 512 (40 + 300 tokens)


def test_auto_cache_is_growing_on_cpu_and_dynamic_elsewhere():
    from sairlib.generation import resolve_cache

    assert resolve_cache("auto", torch.device("cpu")) == "growing"
    assert resolve_cache("auto", torch.device("cuda")) == "dynamic"  # resolving needs no GPU
    assert [resolve_cache(c, torch.device("cpu")) for c in ("dynamic", "growing", "static", "compiled")] == \
        ["dynamic", "growing", "static", "compiled"]
    with pytest.raises(ValueError, match="cache: must be one of"):
        resolve_cache("paged", torch.device("cpu"))


def test_compiled_decoding_matches_dynamic_and_compiles_once_per_shape(layout, stress_models, prompts):
    """cache="compiled": the same tokens as the dynamic cache (greedy, per-row seeded sampling, CFG,
    chunks), one traced graph per (rows, rounded width), and a shape seen before is replayed."""
    from torch._dynamo.utils import counters

    from sairlib.generation import _GRAPHS, decode_width

    m = stress_models["boi"]  # starts images at once: guidance and the image rule both act
    batch, seeds = prompts[:4], [11, 12, 13, 14]
    uncond = [layout.prompt(".", [])] * 2
    torch._dynamo.reset()
    counters.clear()
    cases = (({"temperature": 0}, batch), ({"row_seeds": seeds}, batch),
             ({"temperature": 0, "cfg_scale": 3.0, "uncond_prompts": uncond}, batch[:2]))  # 2 x 2 rows
    for kw, ps in cases:
        ref = [g.ids for g in generate(m, layout, ps, 30, **kw)]
        got = generate(m, layout, ps, 30, cache="compiled", **kw)
        assert [g.ids for g in got] == ref, kw
        assert all(g.parsed.ok for g in got)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs == 1  # one shape: 4 rows (CFG doubles 2 prompts), one rounded width
    # other prompts of the same rows and rounded width: replayed, not traced again
    other = prompts[4:8]
    assert decode_width(max(map(len, other)), 30, "compiled") == decode_width(max(map(len, batch)), 30, "compiled")
    ref = [g.ids for g in generate(m, layout, other, 30, temperature=0)]
    assert [g.ids for g in generate(m, layout, other, 30, temperature=0, cache="compiled")] == ref
    assert counters["stats"]["unique_graphs"] == graphs
    assert set(_GRAPHS[m]) == {(4, decode_width(max(map(len, batch)), 30, "compiled"))}


class CompiledOlderSignature(torch.nn.Module):
    """transformers 5.17's forward (``past_key_values`` + ``cache_position``), traceable by torch.compile.

    It checks ``cache_position`` inside the graph: the widest prompt's position ids are the cache
    slots, so a wrong slot turns the logits into NaN (and the tokens into the fallback ones)."""

    def __init__(self, inner: LlamaForCausalLM) -> None:
        super().__init__()
        self.inner, self.config = inner, inner.config

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, use_cache=None,
                cache_position=None, logits_to_keep=0):
        out = self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         use_cache=use_cache, logits_to_keep=logits_to_keep, **{CACHE_KW: past_key_values})
        ok = (cache_position == position_ids.max(0).values).all()
        out.logits = out.logits + torch.where(ok, 0.0, float("nan"))
        return out


def test_compiled_decoding_chunks_older_signature_and_loud_failure(layout, model, prompts, monkeypatch):
    """cache="compiled" with a smaller last chunk (another shape), with transformers 5.17's forward
    arguments (cache slots checked in the graph), and a model that cannot be compiled whole: an error.

    The graphs are traced whole as in production (``fullgraph=True``, ``dynamic=False``) but run by
    the ``aot_eager`` backend: inductor's C++ build takes ~15 s per graph on 2 cores, and the test
    above already runs it."""
    import sairlib.generation as generation

    options = generation._compile_options(torch.device("cpu"))
    assert options["fullgraph"] and options["dynamic"] is False
    monkeypatch.setattr(generation, "_compile_options", lambda device: {**options, "backend": "aot_eager"})
    batch = prompts[:6]
    ref = [g.ids for g in generate(model, layout, batch, 20, temperature=0)]
    wrapped = CompiledOlderSignature(model)
    got = generate(wrapped, layout, batch, 20, temperature=0, cache="compiled", batch_size=4)  # 4 + 2 rows
    assert [g.ids for g in got] == ref
    gone = weakref.ref(wrapped)
    del wrapped
    gc.collect()
    assert gone() is None  # the compiled steps and caches kept for reuse do not keep a model alive
    breaking = GraphBreaking(model)
    with pytest.raises(RuntimeError, match="cache='compiled'"):  # a graph break: an error, not a quiet eager run
        generate(breaking, layout, batch[:2], 5, temperature=0, cache="compiled")
    assert breaking.calls == 1  # the eager prefill only: the failed step did not run eagerly instead


@pytest.fixture
def aot_eager(monkeypatch):
    """Compiled steps traced whole as in production but run by ``aot_eager`` (no 15 s C++ build per graph),
    with dynamo's caches and counters reset; yields the counters."""
    import sairlib.generation as generation
    from torch._dynamo.utils import counters

    options = generation._compile_options(torch.device("cpu"))
    monkeypatch.setattr(generation, "_compile_options", lambda device: {**options, "backend": "aot_eager"})
    torch._dynamo.reset()
    counters.clear()
    yield counters
    torch._dynamo.reset()


def test_kv_buckets():
    from sairlib.generation import kv_buckets

    assert kv_buckets(128) == [128]
    assert kv_buckets(384) == [128, 256, 384]
    assert kv_buckets(512) == [128, 256, 384, 512]
    assert kv_buckets(640) == [256, 512, 640]
    assert kv_buckets(2048) == [512, 1024, 1536, 2048]
    for width in range(128, 8193, 128):
        b = kv_buckets(width)
        assert b[-1] == width and len(b) <= 4 and b == sorted(set(b)) and all(w % 128 == 0 for w in b)


def test_compiled_decoding_reads_the_cache_up_to_a_width_bucket(layout, stress_models, prompts, aot_eager,
                                                                  monkeypatch):
    """A 256-slot compiled cache is read through its first 128 slots while they hold every key, then
    whole: the tokens are the dynamic cache's (greedy and per-row seeds), one graph per bucket, and the
    views write the one cache (a second call on the same shape replays both graphs)."""
    from sairlib.generation import _CompiledStep, _GRAPHS, decode_width

    m = stress_models["boi"]  # opens image after image: the rows run to the token budget
    batch, new = prompts[:4], 160
    width = decode_width(max(map(len, batch)), new, "compiled")
    assert width == 256
    used = []
    cache_for = _CompiledStep.cache_for
    monkeypatch.setattr(_CompiledStep, "cache_for",
                        lambda self, written: (lambda out: used.append((written, out[1])) or out)(cache_for(self, written)))
    for kw in ({"temperature": 0}, {"row_seeds": [5, 6, 7, 8]}):
        ref = [g.ids for g in generate(m, layout, batch, new, **kw)]
        used.clear()
        got = generate(m, layout, batch, new, cache="compiled", **kw)
        assert [g.ids for g in got] == ref, kw
        assert max(len(g.ids) for g in got) > 128 - min(map(len, batch))  # some row wrote past slot 128
        assert {w for _, w in used} == {128, 256}
        assert all(written <= w and (w == 128 or written > 128) for written, w in used)
    assert aot_eager["stats"]["unique_graphs"] == 2  # one per bucket, replayed by the second call
    step = _GRAPHS[m][(4, 256)]
    view, w = step.cache_for(100)
    assert w == 128 and view is not step.cache
    for mine, full in zip(view.layers, step.cache.layers):
        assert mine.keys.data_ptr() == full.keys.data_ptr() and mine.keys.shape[2] == 128
        assert mine.cumulative_length is full.cumulative_length


def test_row_buckets():
    from sairlib.generation import row_bucket

    assert [row_bucket(n, 256) for n in (1, 8, 9, 100, 128, 129, 256)] == [8, 8, 16, 128, 128, 256, 256]
    assert [row_bucket(n, 2048) for n in (1, 64, 65, 1025, 2048)] == [64, 64, 128, 2048, 2048]  # from 2048 / 32
    assert [row_bucket(n, 1000) for n in (3, 600, 1000)] == [32, 1000, 1000]  # batch_size is itself a bucket
    assert [row_bucket(n, 5) for n in (1, 3, 5)] == [5, 5, 5]
    for size in (5, 100, 256, 1000, 2048, 4096):
        assert len({row_bucket(n, size) for n in range(1, size + 1)}) <= 6


def test_compiled_rows_padded_to_a_bucket_match_dynamic(layout, model, prompts, aot_eager):
    """Chunks of 8 and 3 rows (batch_size 8: the 3 padded with 5 dummy rows) give the dynamic cache's
    tokens, greedy, with per-row seeds, with the seeded generator and with CFG (3 + 1 padded prompts
    and their uncond twins: 8 rows too), and all run on one graph of 8 rows."""
    from sairlib.generation import _GRAPHS, decode_width

    m = biased(model, [layout.boi], 3.0)  # mostly starts with an image, so guidance acts; some text too
    ps, uncond = prompts[:11], [layout.prompt(".", [])] * 3
    width = decode_width(max(map(len, ps)), 24, "compiled")
    assert decode_width(max(map(len, ps[8:])), 24, "compiled") == width
    cases = (({"temperature": 0}, ps, 8), ({"row_seeds": list(range(50, 61))}, ps, 8), ({"seed": 4}, ps, 8),
             ({"temperature": 0, "cfg_scale": 3.0, "uncond_prompts": uncond}, ps[:3], 4))
    for kw, batch, size in cases:
        ref = [g.ids for g in generate(m, layout, batch, 24, batch_size=size, **kw)]
        got = generate(m, layout, batch, 24, batch_size=size, cache="compiled", **kw)
        assert [g.ids for g in got] == ref, kw
        assert [g.prompt for g in got] == batch and all(g.parsed.ok for g in got)
    assert aot_eager["stats"]["unique_graphs"] == 1
    assert set(_GRAPHS[m]) == {(8, width)}


def test_concurrent_compiled_calls_on_one_model_take_turns(layout, model, prompts, aot_eager):
    """Threads that decode the same model with cache="compiled" at once (the pipeline's direct and
    redraw batchers do) share its compiled step and StaticCache: each call must get the tokens it
    gets alone. Without the per-model lock the calls overwrite each other's cache."""
    import concurrent.futures

    m = copy.deepcopy(model)
    jobs = [list(range(100 * j, 100 * j + 8)) for j in range(6)]  # 8 rows each: one shape, other row seeds
    ref = [[g.ids for g in generate(m, layout, prompts[:8], 24, row_seeds=seeds, cache="dynamic")] for seeds in jobs]
    generate(m, layout, prompts[:8], 24, row_seeds=jobs[0], cache="compiled")  # traced once, before the threads
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        got = list(pool.map(lambda seeds: [g.ids for g in generate(m, layout, prompts[:8], 24, row_seeds=seeds,
                                                                   cache="compiled")], jobs))
    assert got == ref


def test_row_counts_in_one_bucket_share_a_graph(layout, model, prompts, aot_eager):
    """5 and then 7 prompts (batch_size 16): both padded to 8 rows, one graph traced."""
    from sairlib.generation import _GRAPHS, decode_width

    m = copy.deepcopy(model)
    for n in (5, 7):
        ref = [g.ids for g in generate(m, layout, prompts[:n], 10, temperature=0)]
        assert [g.ids for g in generate(m, layout, prompts[:n], 10, temperature=0, batch_size=16,
                                        cache="compiled")] == ref
    assert aot_eager["stats"]["unique_graphs"] == 1
    assert set(_GRAPHS[m]) == {(8, decode_width(max(map(len, prompts[:7])), 10, "compiled"))}


def test_compiled_steps_kept_within_count_and_memory(layout, model, monkeypatch):
    """Least recently used shapes are dropped beyond _GRAPHS_PER_MODEL or the cache budget; the newest
    is kept even alone over budget (steps are only built here, nothing is compiled)."""
    import sairlib.generation as generation

    m, cpu = copy.deepcopy(model), torch.device("cpu")
    per_row = generation._kv_bytes(m.config, 1, 128, torch.float32)
    assert per_row == 2 * 2 * 128 * 32 * 4  # keys and values, 2 layers, 128 slots, hidden 32, float32
    monkeypatch.setattr(generation, "_CACHE_BUDGET_CPU", 40 * per_row)
    for rows in (8, 16, 8):  # 8 x 128 used again: it becomes the most recent
        generation._compiled_step(m, rows, 128, cpu)
    assert list(generation._GRAPHS[m]) == [(16, 128), (8, 128)]
    generation._compiled_step(m, 32, 128, cpu)  # 16 + 8 + 32 rows > 40: the least recent (16) goes
    assert list(generation._GRAPHS[m]) == [(8, 128), (32, 128)]
    generation._compiled_step(m, 64, 128, cpu)  # over budget alone: kept, alone
    assert list(generation._GRAPHS[m]) == [(64, 128)]
    monkeypatch.setattr(generation, "_CACHE_BUDGET_CPU", 1 << 40)
    monkeypatch.setattr(generation, "_GRAPHS_PER_MODEL", 3)
    for rows in (8, 16, 32, 128):
        generation._compiled_step(m, rows, 128, cpu)
    assert list(generation._GRAPHS[m]) == [(16, 128), (32, 128), (128, 128)]


class GraphBreaking(torch.nn.Module):
    """A model whose forward cannot be traced whole (``fullgraph=True`` refuses it)."""

    def __init__(self, inner: LlamaForCausalLM) -> None:
        super().__init__()
        self.inner, self.config, self.calls = inner, inner.config, 0

    def forward(self, **kwargs):
        self.calls += 1
        torch._dynamo.graph_break()
        return self.inner(**kwargs)


def test_seed_determinism(layout, model, prompts):
    a = [g.ids for g in generate(model, layout, prompts, 40, seed=7)]
    assert a == [g.ids for g in generate(model, layout, prompts, 40, seed=7)]
    assert a != [g.ids for g in generate(model, layout, prompts, 40, seed=8)]


def full_logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, -1].float()


def masked_argmax(layout, logits: torch.Tensor, done: list[int], budget: int) -> int:
    allowed = torch.zeros_like(logits, dtype=torch.bool)
    allowed[list(reference_allowed(layout, done, budget))] = True
    return int(logits.masked_fill(~allowed, float("-inf")).argmax())


def test_greedy_equals_full_recomputation(layout, stress_models, prompts):
    m = stress_models["random"]
    batch = [prompts[0], prompts[5], prompts[9]]
    for p, g in zip(batch, generate(m, layout, batch, 25, temperature=0)):
        for i, t in enumerate(g.ids):
            assert t == masked_argmax(layout, full_logits(m, p + g.ids[:i]), g.ids[:i], 25), i


def test_cfg_equals_full_recomputation(layout, stress_models, prompts):
    m = stress_models["boi"]  # starts an image at once, so guidance applies
    batch = [prompts[0], prompts[7]]
    uncond = [layout.prompt(".", []), layout.prompt(".", [])]
    scale, budget = 3.0, TPI + 5
    outs = generate(m, layout, batch, budget, temperature=0, cfg_scale=scale, uncond_prompts=uncond)
    for p, u, g in zip(batch, uncond, outs):
        assert_well_formed(layout, g, budget)
        for i, t in enumerate(g.ids):
            cond = full_logits(m, p + g.ids[:i])
            if 1 <= i <= TPI and g.ids[0] == layout.boi:
                unc = full_logits(m, u + g.ids[:i])
                cond = unc + scale * (cond - unc)
            assert t == masked_argmax(layout, cond, g.ids[:i], budget), i
    plain = generate(m, layout, batch, budget, temperature=0)
    assert [g.ids for g in plain] != [g.ids for g in outs]


def test_cfg_scale_one_is_plain_and_scale_three_is_well_formed(layout, stress_models, prompts):
    m, batch = stress_models["codes"], prompts[:6]
    uncond = [layout.prompt("draw", []) for _ in batch]
    plain = generate(m, layout, batch, 45, seed=2)
    same = generate(m, layout, batch, 45, seed=2, cfg_scale=1.0, uncond_prompts=uncond)
    assert [g.ids for g in plain] == [g.ids for g in same]
    for g in generate(m, layout, batch, 45, seed=2, cfg_scale=3.0, uncond_prompts=uncond):
        assert_well_formed(layout, g, 45)


# ----------------------------------------------------------------------------- sampling, codec, mode
def test_sample_tokens_filters(layout):
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(64, 10, generator=g)
    allowed = torch.rand(64, 10, generator=g) > 0.5
    allowed[:, 3] = True
    greedy = sample_tokens(scores, allowed, temperature=0)
    assert allowed.gather(1, greedy[:, None]).all()
    assert torch.equal(sample_tokens(scores, allowed, top_k=1, generator=g), greedy)
    assert torch.equal(sample_tokens(scores, allowed, top_p=1e-6, generator=g), greedy)
    drawn = sample_tokens(scores, allowed, temperature=2.0, generator=g)
    assert allowed.gather(1, drawn[:, None]).all()
    nan = torch.full_like(scores, float("-inf"))
    assert torch.equal(sample_tokens(nan, allowed, generator=g), allowed.to(torch.uint8).argmax(-1))


class FakeCodec:
    def decode(self, codes):
        codes = np.asarray(codes)
        assert codes.shape == (TPI,)
        return np.full((4, 4, 3), codes[0], dtype=np.uint8)


def test_codec_decodes_each_image(layout, stress_models, prompts):
    for g in generate(stress_models["boi"], layout, prompts[:3], 2 * TPI + 8, codec=FakeCodec()):
        gs = [s for s in g.parsed.segments if s.kind == "G"]
        assert len(g.images) == len(gs) == 2
        assert all(im.dtype == np.uint8 and im[0, 0, 0] == s.codes[0] for im, s in zip(g.images, gs))
    assert generate(stress_models["boi"], layout, prompts[:1], TPI + 3)[0].images == []


def test_training_mode_is_restored(layout, prompts):
    m = tiny_model(layout).train()
    generate(m, layout, prompts[:1], 3)
    assert m.training


# ----------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("kwargs, name", [
    (dict(prompts=[]), "prompts"),
    (dict(prompts="draw a circle"), "prompts"),
    (dict(prompts=["draw"]), "prompts"),
    (dict(prompts=[[2, 6, 1.5]]), "prompts"),
    (dict(prompts=[[]]), "prompts"),
    (dict(prompts=[[2, 10_000]]), "prompts"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(max_new_tokens=2.5), "max_new_tokens"),
    (dict(cfg_scale=2.0), "cfg_scale"),
    (dict(cfg_scale=2.0, uncond_prompts=[[2, 7]] * 3), "uncond_prompts"),
    (dict(uncond_prompts=[["x"]]), "uncond_prompts"),
    (dict(temperature=-1.0), "temperature"),
    (dict(top_k=-1), "top_k"),
    (dict(top_p=0.0), "top_p"),
    (dict(batch_size=0), "batch_size"),
    (dict(cache="paged"), "cache"),
])
def test_bad_inputs_name_the_argument(layout, model, kwargs, name):
    args = dict(prompts=[layout.prompt("draw a circle .", [])], max_new_tokens=5)
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        generate(model, layout, args.pop("prompts"), args.pop("max_new_tokens"), **args)


def test_position_ids_count_from_each_prompt_start(layout, prompts):
    m, seen = tiny_model(layout), []
    hook = m.model.register_forward_pre_hook(lambda mod, args, kw: seen.append(kw["position_ids"].clone()),
                                             with_kwargs=True)
    try:
        batch = [prompts[0], prompts[-1]]
        generate(m, layout, batch, 4, temperature=0)
    finally:
        hook.remove()
    width = max(len(p) for p in batch)
    for row, p in enumerate(batch):
        assert seen[0][row, width - len(p):].tolist() == list(range(len(p)))
        assert [int(s[row, 0]) for s in seen[1:]] == list(range(len(p), len(p) + len(seen) - 1))


class OlderForwardSignature(torch.nn.Module):
    """A model whose forward takes ``past_key_values`` and ``cache_position`` (as transformers 5.17's does)."""

    def __init__(self, inner: LlamaForCausalLM) -> None:
        super().__init__()
        self.inner, self.config, self.cache_positions = inner, inner.config, []

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, use_cache=None,
                cache_position=None, logits_to_keep=0):
        self.cache_positions.append(cache_position.tolist())
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          use_cache=use_cache, logits_to_keep=logits_to_keep, **{CACHE_KW: past_key_values})


CACHE_KW = "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"


def test_older_forward_signature_gets_past_key_values_and_cache_position(layout, model, prompts):
    old = OlderForwardSignature(model)
    batch = [prompts[0], prompts[-1]]
    ref = generate(model, layout, batch, 12, temperature=0)
    got = generate(old, layout, batch, 12, temperature=0)
    assert [g.ids for g in got] == [g.ids for g in ref]
    width = max(len(p) for p in batch)
    assert old.cache_positions[0] == list(range(width))
    assert old.cache_positions[1:] == [[width + i] for i in range(len(old.cache_positions) - 1)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_bf16_is_well_formed_and_seeded(layout, prompts):
    m = biased(tiny_model(layout), [layout.boi], 3.0).to("cuda", torch.bfloat16)
    a = generate(m, layout, prompts, 50, seed=5)
    assert [g.ids for g in a] == [g.ids for g in generate(m, layout, prompts, 50, seed=5)]
    for g in a:
        assert_well_formed(layout, g, 50)
    for g in generate(m, layout, prompts, 50, temperature=0, cfg_scale=2.0, uncond_prompts=prompts[::-1]):
        assert_well_formed(layout, g, 50)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_compiled_decoding_replays_cuda_graphs(layout, prompts):
    """On CUDA, cache="compiled" (CUDA graphs): float32 greedy equals the dynamic cache, a bf16 rerun
    of the same shape replays without compiling again and gives the same (well-formed) tokens."""
    from torch._dynamo.utils import counters

    m = biased(tiny_model(layout), [layout.boi], 3.0).to("cuda")
    ref = [g.ids for g in generate(m, layout, prompts[:4], 40, temperature=0)]
    assert [g.ids for g in generate(m, layout, prompts[:4], 40, temperature=0, cache="compiled")] == ref
    m = m.to(torch.bfloat16)
    a = generate(m, layout, prompts, 50, seed=5, cache="compiled")
    graphs = counters["stats"]["unique_graphs"]
    b = generate(m, layout, prompts, 50, seed=5, cache="compiled")
    assert counters["stats"]["unique_graphs"] == graphs
    assert [g.ids for g in a] == [g.ids for g in b]
    for g in a:
        assert_well_formed(layout, g, 50)


def test_start_in_continues_an_open_text_segment(layout, model):
    """A prompt ending with <eval> is continued inside the evaluation, which is closed and parsed."""
    prompts = [layout.prompt("draw a red circle .", []) + [layout.open_tag["E"]] for _ in range(6)]
    for g in generate(model, layout, prompts, 12, seed=1, start_in="E"):
        assert g.parsed.ok and g.parsed.segments and g.parsed.segments[0].kind == "E"
        assert layout.open_tag["E"] not in g.ids and g.ids[-1] == layout.eos
    with pytest.raises(ValueError, match="start_in"):
        generate(model, layout, [layout.prompt("draw a red circle .", [])], 5, start_in="E")
    with pytest.raises(ValueError, match="start_in"):
        generate(model, layout, prompts, 5, start_in="G")
