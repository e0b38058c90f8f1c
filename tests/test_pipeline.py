"""The escalation pipeline: modes, pruning, discards, resume after a kill, failing backends.

python -m pytest -q tests/test_pipeline.py
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from datasets import load_from_disk

from sairlib.modes import infer_mode
from sairlib.pipeline import (Backends, DrawRequest, EscalationConfig, PolicyGenerator, WorldGenerator,
                              build_trajectories, summarise_trajectories)
from sairlib.trajectory import from_dataset, load_jsonl
from sairlib.world import WorldAnalyzer, make_tasks, render
from sairlib.world.grammar import parse_evaluation

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_policy():
    import torch

    from sairlib.policy import Policy
    from sairlib.world import WorldConfig
    from sairlib.world_setup import build_tokenizers

    codec, tok, _ = build_tokenizers(WorldConfig(), 16, 64, 20, 5, seed=0)
    torch.set_num_threads(1)
    return Policy.create(tok, codec, {"hidden": 32, "layers": 2, "heads": 4}, seed=0)


class Blank:
    """A generator that always draws an empty canvas (never passes a non-empty request)."""

    name = "blank"

    def draw(self, requests):
        return [render_blank() for _ in requests]


def render_blank():
    from sairlib.world.scene import Scene

    return render(Scene((), 4))


class Echo:
    """A generator that hands back its canvas (or the first input image) unchanged."""

    name = "echo"

    def draw(self, requests):
        return [r.canvas if r.canvas is not None else (r.images[0] if r.images else render_blank()) for r in requests]


class Flaky:
    """Fails about half of its calls (deterministically, by call count), else draws like ``inner``."""

    name = "flaky"

    def __init__(self, inner, fail_every=2):
        self.inner, self.n, self.every = inner, 0, fail_every

    def draw(self, requests):
        self.n += 1
        if self.n % self.every:
            raise TimeoutError("backend timed out")
        return self.inner.draw(requests)


def _build(tmp_path, tasks, direct, redraw, **kw):
    b = Backends(WorldAnalyzer(), direct=direct, redraw=redraw, config=EscalationConfig(**kw))
    return build_trajectories(tasks, b, tmp_path, seed=0, progress=False), b


def test_an_ideal_generator_gives_direct_trajectories(tmp_path):
    tasks = make_tasks(12, "train", 3)
    ts, _ = _build(tmp_path, tasks, WorldGenerator(), WorldGenerator())
    assert [t.mode for t in ts] == ["direct"] * 12
    for t in ts:
        assert t.kinds == "GE" and t.passed and t.n_images == 1
        assert parse_evaluation(t.segments[1].text).decision == "done"


def test_reflection_keeps_rounds_in_order_and_rescores_the_original(tmp_path):
    tasks = [t for t in make_tasks(30, "train", 4, family="t2i") if t.complexity <= 3][:6]
    ts, _ = _build(tmp_path, tasks, Blank(), WorldGenerator())
    for t in ts:
        assert t.mode == "reflection" and t.kinds == "GERGE" and t.rounds == 1
        e1, e2 = (parse_evaluation(s.text) for s in t.segments if s.kind == "E")
        assert e1.decision == "reflect" and e2.decision == "done"
        assert WorldAnalyzer().assess(next(x for x in tasks if x.id == t.id), t.final_image).passed
        assert [d["stage"] for d in t.decisions] == ["direct", "reflect1"]


def test_overloaded_generator_escalates_to_multistep_with_pruning(tmp_path):
    tasks = [t for t in make_tasks(80, "train", 5, family="t2i") if t.complexity >= 6][:5]
    assert tasks
    ts, _ = _build(tmp_path, tasks, WorldGenerator(capacity=2), WorldGenerator(capacity=2))
    multi = [t for t in ts if t.mode == "multistep"]
    assert multi, [t.decisions for t in ts]
    for t in multi:
        assert infer_mode(t.kinds) == "multistep" and "R" not in t.kinds  # failed rounds pruned
        assert parse_evaluation(t.segments[1].text).decision == "plan"  # the failed direct try stays as context
        assert parse_evaluation(t.segments[-1].text).decision == "done"
        stages = [d["stage"] for d in t.decisions]
        assert stages[:5] == ["direct", "reflect1", "reflect2", "reflect3", "diagnose"] and stages[-1] == "verify"
        assert t.n_images == 1 + t.kinds.count("S")


def test_missing_knowledge_is_discarded(tmp_path):
    tasks = make_tasks(4, "train", 6, family="edit", categories=["fact"])
    ts, _ = _build(tmp_path, tasks, Echo(), Echo())
    for t in ts:
        assert t.status == "discarded" and t.discard_reason == "lacks knowledge" and t.mode is None
        assert t.decisions[-1] == {"stage": "diagnose", "decision": "knowledge", "why": "a knowledge constraint fails"}


def test_dataset_round_trip_and_summary(tmp_path):
    tasks = make_tasks(40, "train", 7)
    ts, _ = _build(tmp_path, tasks, WorldGenerator(capacity=2), WorldGenerator(capacity=2))
    back = from_dataset(load_from_disk(str(tmp_path / "dataset")))
    assert [t.id for t in back] == [x.id for x in tasks]
    for a, b in zip(ts, back):
        assert a.kinds == b.kinds and a.mode == b.mode and a.scores == b.scores and a.decisions == b.decisions
        assert all(np.array_equal(x, y) for x, y in zip(a.images, b.images))
    assert sorted(t.id for t in load_jsonl(tmp_path)) == sorted(x.id for x in tasks)  # stored as they finish
    s = summarise_trajectories(ts)
    assert s["kept"] + s["discarded"] + s["errors"] == 40 and sum(s["modes"].values()) == s["kept"]
    fc = s["mode_counts_by_family_complexity"]  # the counts split by family add up to both margins
    for c, counts in s["mode_counts_by_complexity"].items():
        assert counts == {m: sum(fc[f].get(c, {}).get(m, 0) for f in fc) for m in counts}
    for f, counts in s["by_family"].items():
        assert counts == {m: sum(v[m] for v in fc[f].values()) for m in counts}
    assert len(fc) >= 2


def test_a_failing_backend_is_retried_and_persistent_failures_are_recorded(tmp_path):
    tasks = make_tasks(16, "train", 8)
    clean, _ = _build(tmp_path / "clean", tasks, WorldGenerator(capacity=2), WorldGenerator(capacity=2))
    flaky, b = _build(tmp_path / "flaky", tasks, Flaky(WorldGenerator(capacity=2)), Flaky(WorldGenerator(capacity=2)),
                      backend_retries=3)
    assert b.calls["retries"] > 0
    for c, f in zip(clean, flaky):  # retries reach the same draws: the same trajectories
        assert (c.status, c.mode, c.kinds, c.scores) == (f.status, f.mode, f.kinds, f.scores)
    # with no retries, half the calls fail for good: those samples are errors, unscored, with the reason
    dead, _ = _build(tmp_path / "dead", tasks, Flaky(WorldGenerator(capacity=2), 2), WorldGenerator(capacity=2),
                     backend_retries=0)
    errs = [t for t in dead if t.status == "error"]
    assert errs and all(t.scores == {} and not t.passed and "TimeoutError" in t.errors[0] for t in errs)
    for c, d in zip(clean, dead):
        if d.status != "error":
            assert (c.mode, c.kinds, c.scores) == (d.mode, d.kinds, d.scores)


def test_policy_draws_do_not_depend_on_the_batch(tiny_policy):
    x = make_tasks(3, "train", 9, family="t2i")
    reqs = [DrawRequest(t, t.instruction, (), "direct", None, seed=100 + i) for i, t in enumerate(x)]
    gen = PolicyGenerator(tiny_policy, temperature=1.0)
    alone = gen.draw([reqs[1]])[0]
    together = gen.draw(reqs)
    assert np.array_equal(alone, together[1])


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_dataset(tmp_path):
    args = [sys.executable, "-m", "sairlib.pipeline", "--tasks", "60", "--capacity", "2", "--max-batch", "4",
            "--concurrency", "8"]
    ref = subprocess.run(args + ["--out", str(tmp_path / "ref")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen(args + ["--out", str(out), "--delay", "0.05"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    lines = out / "trajectories.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not lines.exists() or len(lines.read_text().splitlines()) < 15):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(lines.read_text().splitlines())
    assert 15 <= done_before < 60, "the kill should land mid-run"
    again = subprocess.run(args + ["--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    recs = [json.loads(l) for l in lines.read_text().splitlines()]
    assert len(recs) == 60 and len({r["id"] for r in recs}) == 60  # nothing lost, nothing duplicated
    a = from_dataset(load_from_disk(str(tmp_path / "ref" / "dataset")))
    b = from_dataset(load_from_disk(str(out / "dataset")))
    assert [t.id for t in a] == [t.id for t in b]
    for x, y in zip(a, b):
        assert (x.status, x.mode, x.kinds, x.scores, x.decisions, [s.text for s in x.segments]) == \
               (y.status, y.mode, y.kinds, y.scores, y.decisions, [s.text for s in y.segments])
        assert all(np.array_equal(p, q) for p, q in zip(x.images, y.images))


def test_parallel_workers_give_the_same_dataset(tmp_path):
    from sairlib.pipeline import BackendSpec, build_trajectories_parallel

    tasks = make_tasks(24, "train", 10)
    spec = BackendSpec(direct="world", redraw="world", capacity=2)
    one = build_trajectories_parallel(tasks, spec, tmp_path / "one", 0, workers=1, progress=False)
    two = build_trajectories_parallel(tasks, spec, tmp_path / "two", 0, workers=2, progress=False)
    assert [(t.id, t.mode, t.kinds, t.scores) for t in one] == [(t.id, t.mode, t.kinds, t.scores) for t in two]
    assert len(from_dataset(load_from_disk(str(tmp_path / "two" / "dataset")))) == 24


def test_analyzer_processes_give_the_same_dataset(tmp_path):
    from sairlib.pipeline import BackendSpec, build_trajectories_parallel

    tasks = make_tasks(16, "train", 11)
    inline = BackendSpec(direct="world", redraw="world", capacity=2)
    pooled = BackendSpec(direct="world", redraw="world", capacity=2, analyzer_workers=2, max_wait_s=0.01)
    a = build_trajectories_parallel(tasks, inline, tmp_path / "a", 0, progress=False)
    b = build_trajectories_parallel(tasks, pooled, tmp_path / "b", 0, progress=False)
    assert [(t.id, t.mode, t.kinds, t.scores, t.decisions) for t in a] == \
           [(t.id, t.mode, t.kinds, t.scores, t.decisions) for t in b]


def test_admission_order_changes_when_not_what(tmp_path):
    from sairlib.pipeline.escalation import admission_order

    tasks = make_tasks(30, "train", 12)
    order = admission_order(tasks)
    assert sorted(order) == list(range(30))
    cx = [tasks[i].complexity for i in order]
    assert cx == sorted(cx, reverse=True)
    assert all(order[k] < order[k + 1] for k in range(29) if cx[k] == cx[k + 1])  # ties keep task order
    assert admission_order(tasks, "given") == list(range(30))
    with pytest.raises(ValueError, match="admission"):
        admission_order(tasks, "shortest_first")
    runs = {}
    for adm in ("given", "complex_first"):
        b = Backends(WorldAnalyzer(), direct=WorldGenerator(capacity=2), redraw=WorldGenerator(capacity=2))
        runs[adm] = build_trajectories(tasks, b, tmp_path / adm, seed=0, progress=False, admission=adm)
    strip = lambda t: {k: v for k, v in t.to_record().items() if k not in ("images", "input_images")}
    assert [strip(t) for t in runs["given"]] == [strip(t) for t in runs["complex_first"]]


def test_returned_trajectories_equal_the_stored_ones_and_timing_is_written(tmp_path):
    tasks = make_tasks(20, "train", 13)
    ts, _ = _build(tmp_path, tasks, WorldGenerator(capacity=2), WorldGenerator(capacity=2))
    stored = {t.id: t for t in load_jsonl(tmp_path)}
    for t in ts:  # made in this run and returned from memory: the same as read back from the store
        s = stored[t.id]
        assert t.to_record().keys() == s.to_record().keys()
        assert {k: v for k, v in t.to_record().items() if k not in ("images", "input_images")} == \
               {k: v for k, v in s.to_record().items() if k not in ("images", "input_images")}
        assert all(np.array_equal(x, y) for x, y in zip(t.images, s.images))
    timing = json.loads((tmp_path / "timing.json").read_text())
    assert timing["tasks"] == 20 and timing["resumed"] == 0 and timing["finished_by_tenth"][-1] == 20
    assert timing["backends"]["draw"]["direct"]["requests"] >= 20
    assert timing["backends"]["analyzer"]["assess"]["calls"] >= 20
    again, _ = _build(tmp_path, tasks, WorldGenerator(capacity=2), WorldGenerator(capacity=2))  # all resumed
    assert json.loads((tmp_path / "timing.json").read_text())["resumed"] == 20
    assert [t.to_record()["segment_texts"] for t in again] == [t.to_record()["segment_texts"] for t in ts]


def test_compiled_policy_decoding_gives_the_same_trajectories(tmp_path, tiny_policy, monkeypatch):
    """pipeline.cache "compiled" (batches of varying size padded to a row bucket) builds the same
    trajectories as "dynamic" with the policy drawing and redrawing. The compiled steps are traced
    whole as in production but run by ``aot_eager`` (inductor's C++ build takes ~15 s per graph)."""
    import torch
    from torch._dynamo.utils import counters

    import sairlib.generation as generation
    from sairlib.pipeline import BackendSpec, build_trajectories_parallel, check_pipeline

    options = generation._compile_options(torch.device("cpu"))
    monkeypatch.setattr(generation, "_compile_options", lambda device: {**options, "backend": "aot_eager"})
    torch._dynamo.reset()
    counters.clear()
    base = tiny_policy.save(tmp_path / "base")
    tasks = make_tasks(6, "train", 14)
    runs, buckets, shapes = {}, [], set()
    row_bucket, compiled_step = generation.row_bucket, generation._compiled_step

    def spy_bucket(rows, batch_size):  # which row counts were padded to which bucket
        buckets.append((rows, row_bucket(rows, batch_size)))
        return buckets[-1][1]

    def spy_step(model, rows, width, device):  # which (rows, width) shapes ran compiled
        shapes.add((rows, width))
        return compiled_step(model, rows, width, device)

    monkeypatch.setattr(generation, "row_bucket", spy_bucket)
    monkeypatch.setattr(generation, "_compiled_step", spy_step)
    for cache in ("dynamic", "compiled"):
        p = check_pipeline({"direct": "policy", "redraw": "policy", "max_batch": 4, "cache": cache})
        spec = BackendSpec(direct=p["direct"], redraw=p["redraw"], policy_dir=str(base), max_batch=p["max_batch"],
                           cache=p["cache"])
        runs[cache] = build_trajectories_parallel(tasks, spec, tmp_path / cache, 0, concurrency=p["concurrency"],
                                                  progress=False)
    strip = lambda t: {k: v for k, v in t.to_record().items() if k not in ("images", "input_images")}
    assert [strip(t) for t in runs["dynamic"]] == [strip(t) for t in runs["compiled"]]
    for a, b in zip(runs["dynamic"], runs["compiled"]):
        assert len(a.images) == len(b.images) and all(np.array_equal(x, y) for x, y in zip(a.images, b.images))
    assert {b for _, b in buckets} == {4} and {n for n, _ in buckets} > {4}  # batches of several sizes, padded...
    assert {r for r, _ in shapes} == {4}  # every compiled step has 4 rows
    assert counters["stats"]["unique_graphs"] == len(shapes)  # one graph per cache width (prompts of 0-3 images)


def test_pipeline_parameters_are_checked_and_cache_defaults_to_auto(tmp_path, tiny_policy):
    import sairlib.generation as generation
    from sairlib.params import ParamsError, load_params, notebook_parameters, read_yaml
    from sairlib.pipeline import BackendSpec, check_pipeline
    from sairlib.pipeline.spec import CACHES, DEFAULT_PIPELINE

    assert CACHES == generation.CACHES
    assert notebook_parameters(ROOT / "notebooks" / "01_pipeline.ipynb")["pipeline"] == DEFAULT_PIPELINE
    assert check_pipeline({"max_batch": 8}) == {**DEFAULT_PIPELINE, "max_batch": 8}  # cache: "auto"
    for name, cache in (("ci", "auto"), ("default", "auto"), ("gpu", "dynamic")):
        assert check_pipeline(read_yaml(ROOT / "params" / f"{name}.yaml")["pipeline"])["cache"] == cache
    for bad in ("paged", "Compiled", 1, None):
        with pytest.raises(ValueError, match=r"pipeline\.cache: must be one of 'auto', 'dynamic', 'growing', 'static', 'compiled'"):
            check_pipeline({"cache": bad})
    with pytest.raises(ValueError, match=r"pipeline\.cahce: unknown key"):
        check_pipeline({"cahce": "compiled"})
    with pytest.raises(ValueError, match=r"pipeline\.direct"):
        check_pipeline({"direct": "dall-e"})
    with pytest.raises(ValueError, match=r"pipeline\.cache"):
        BackendSpec(cache="paged")
    with pytest.raises(ValueError, match="cache"):
        PolicyGenerator(tiny_policy, cache="paged")
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("pipeline: {direct: world, cache: compiled}\n")
    bad.write_text("pipeline: {direct: world, cache: 3}\n")
    assert load_params(good, notebooks)["pipeline"]["cache"] == "compiled"
    with pytest.raises(ParamsError, match=r"pipeline\.cache"):
        load_params(bad, notebooks)
