"""The OpenAI-compatible judge against a local server: strict parsing, one repair, bounded retries,
cache, accounting, the judging job (nothing lost, every failure recorded), no key in any output."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sairlib.interfaces import Analyzer, X2IInput
from sairlib.services import JudgeError, ServiceError, make_analyzer
from sairlib.services.jobs import judge_images
from fake_openai_server import FakeOpenAIServer

KEY = "sk-sair-test-3f9c2a7be1d04c55"


def img(v: int, size: int = 16) -> np.ndarray:
    a = np.zeros((size, size, 3), np.uint8)
    a[..., 0], a[..., 1] = v, 255 - v
    return a


def task(i: str, text: str, n_inputs: int = 0) -> X2IInput:
    return X2IInput(id=i, instruction=text, images=tuple(img(10 * k + 1) for k in range(n_inputs)))


@pytest.fixture()
def server():
    # a "timeout" answer comes after 2 s; clients give up after 1 s. A tighter 0.25 s once timed out an
    # ordinary answer on a loaded 2-core CI machine (attempts 3, hits 2), so leave room for the load.
    with FakeOpenAIServer(api_key=KEY, timeout_sleep_s=2.0) as srv:
        yield srv


@pytest.fixture()
def judge(server, tmp_path, monkeypatch):
    monkeypatch.setenv("SAIR_JUDGE_API_KEY", KEY)
    j = make_analyzer({"backend": "openai", "base_url": server.url, "model": "judge-vl",
                       "api_key_env": "SAIR_JUDGE_API_KEY", "concurrency": 4, "timeout_s": 1.0,
                       "max_retries": 2, "backoff_s": 0.01, "backoff_max_s": 0.02,
                       "cache_dir": str(tmp_path / "cache")})
    yield j
    j.close()


def test_assess_sends_labelled_images_and_counts_usage(judge, server):
    assert isinstance(judge, Analyzer)
    x = task("a", "make the square blue .", n_inputs=2)
    out = img(200)
    a = judge.assess(x, out)
    assert a.scores == {"instruction": 5, "consistency": 5, "quality": 5, "knowledge": 5} and a.passed
    assert a.reasons == ()
    [body] = server.requests
    parts = body["messages"][1]["content"]
    labels = [p["text"] for p in parts if p["type"] == "text" and p["text"].endswith(":")]
    assert labels == ["Input image 1 (given with the request):", "Input image 2 (given with the request):",
                      "Output image (the image to judge):"]
    urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    decoded = [np.asarray(Image.open(io.BytesIO(base64.b64decode(u.split(",", 1)[1])))) for u in urls]
    assert all(u.startswith("data:image/png;base64,") for u in urls)
    assert np.array_equal(decoded[0], x.images[0]) and np.array_equal(decoded[2], out)
    u = judge.usage()
    assert u["requests"] == 1 and u["prompt_tokens"] > 0 and u["completion_tokens"] == 7 and u["latency_s_total"] > 0
    low = judge.assess(task("b", "draw a blue square . #low"), out)
    assert not low.passed and low.scores["instruction"] == 2
    assert low.reasons == ("instruction 2: the blue square is missing",)
    assert "decision reflect" in judge.evaluation_text(low, "reflect")


@pytest.mark.parametrize("marker", ["#malformed-once", "#range-once"])
def test_one_repair_request_recovers(judge, server, marker):
    a = judge.assess(task("r", f"draw a circle . {marker}"), img(3))
    assert a.scores["instruction"] == 5
    assert len(server.requests) == 2 and "could not be used" in json.dumps(server.requests[1]["messages"][-1])
    assert judge.usage()["repairs"] == 1 and judge.usage()["judge_errors"] == 0


@pytest.mark.parametrize("marker,problem", [("#malformed-always", "not valid JSON"),
                                            ("#range-always", "instruction_score must be an integer 1-5, got 7")])
def test_unusable_answers_are_a_judge_error_never_a_guess(judge, server, marker, problem):
    with pytest.raises(JudgeError, match=problem) as e:
        judge.assess(task("j", f"draw a circle . {marker}"), img(3))
    assert e.value.method == "assess"
    assert len(server.requests) == 2  # the question and exactly one repair
    assert judge.usage()["judge_errors"] == 1


def test_retries_are_bounded_with_backoff(judge, server):
    assert judge.assess(task("t", "a circle #429-2"), img(1)).passed
    assert server.hits["#429-2"] == 3 and judge.usage()["retries"] == 2
    assert judge.assess(task("t2", "a circle #timeout-once"), img(1)).passed
    with pytest.raises(ServiceError) as e:
        judge.assess(task("f", "a circle #500-always"), img(1))
    assert e.value.kind == "http_500" and e.value.attempts == 3 and server.hits["#500-always"] == 3
    with pytest.raises(ServiceError, match="timeout after 3"):
        judge.assess(task("f2", "a circle #timeout-always"), img(1))
    u = judge.usage()
    assert u["retry_reasons"] == {"http_429": 2, "timeout": 3, "http_500": 2}
    assert u["failure_kinds"] == {"http_500": 1, "timeout": 1}


def test_cache_makes_reruns_free(server, tmp_path, monkeypatch):
    monkeypatch.setenv("SAIR_JUDGE_API_KEY", KEY)
    cfg = {"backend": "openai", "base_url": server.url, "model": "judge-vl", "api_key_env": "SAIR_JUDGE_API_KEY",
           "cache_dir": str(tmp_path / "c")}
    x = task("c", "draw a circle . #low")
    first = make_analyzer(cfg)
    a = first.assess(x, img(5))
    first.close()
    again = make_analyzer(cfg)
    b = again.assess(x, img(5))
    assert a == b and again.usage()["requests"] == 0 and again.usage()["cache_hits"] == 1
    assert len(server.requests) == 1
    other = make_analyzer({**cfg, "model": "another-judge"})
    other.assess(x, img(5))
    assert other.usage()["requests"] == 1  # another model is another question
    for j in (again, other):
        j.close()


def test_reflect_diagnose_decompose_step_and_text_judgement(judge):
    x = task("m", "draw a red circle and a blue square .")
    r = judge.reflect(x, img(9))
    assert judge.fix_instruction(r) == "add a small blue square" and r.startswith("the blue square is missing")
    assert judge.diagnose(x, img(9)) == "complex"
    assert judge.diagnose(task("k", "the colour of grass #knowledge"), img(9)) == "knowledge"
    assert judge.decompose(x) == ["draw a red circle", "add a small blue square"]
    assert judge.step_done(x, "draw a red circle", None, img(9)) is True
    assert judge.judge_text("E", "instruction 5 ...", {"task": x, "image": img(9)}) == 0.75
    with pytest.raises(ValueError, match="kind"):
        judge.judge_text("Q", "?", {"task": x})


def test_async_many_concurrent_inside_another_loop(judge):
    xs = [task(f"n{i}", f"draw {i} circles" + (" #low" if i % 2 else "")) for i in range(6)]

    async def main():  # the escalation pipeline calls the sync facade from its own loop; async works too
        sync_inside = judge.assess(xs[0], img(1))
        many = await judge.aassess_many(xs, [img(i) for i in range(6)])
        return sync_inside, many

    first, many = asyncio.run(main())
    assert first.passed and [a.passed for a in many] == [True, False] * 3


def test_judge_pickles_for_worker_processes(judge):
    import pickle

    x = task("p", "draw a circle . #low")
    first = judge.assess(x, img(4))
    twin = pickle.loads(pickle.dumps(judge))
    assert twin.assess(x, img(4)) == first and twin.usage()["cache_hits"] == 1
    twin.close()


def test_config_rejects_unknown_and_secret_keys(monkeypatch, server):
    base = {"backend": "openai", "base_url": server.url, "model": "m"}
    with pytest.raises(ValueError, match=r"analyzer\.concurency: unknown key"):
        make_analyzer({**base, "concurency": 2})
    with pytest.raises(ValueError, match=r"analyzer\.api_key: unknown key .*environment"):
        make_analyzer({**base, "api_key": "sk-123"})
    with pytest.raises(ValueError, match=r"analyzer\.backend: must be one of"):
        make_analyzer({"backend": "gpt"})
    with pytest.raises(ValueError, match=r"analyzer\.model: required"):
        make_analyzer({"backend": "openai", "base_url": server.url})
    from sairlib.world import WorldAnalyzer

    assert isinstance(make_analyzer({"backend": "world"}), WorldAnalyzer)
    monkeypatch.delenv("SAIR_NOT_SET", raising=False)
    j = make_analyzer({**base, "api_key_env": "SAIR_NOT_SET"})
    with pytest.raises(ServiceError, match="SAIR_NOT_SET is not set"):
        j.assess(task("x", "a"), img(1))
    j.close()


def test_judging_job_loses_nothing_records_failures_and_leaks_no_key(server, tmp_path, monkeypatch):
    monkeypatch.setenv("SAIR_JUDGE_API_KEY", KEY)
    out = tmp_path / "run"
    cfg = {"backend": "openai", "base_url": server.url, "model": "judge-vl", "api_key_env": "SAIR_JUDGE_API_KEY",
           "concurrency": 3, "timeout_s": 1.0, "max_retries": 2, "backoff_s": 0.01, "backoff_max_s": 0.02,
           "cache_dir": str(out / "cache")}
    markers = ["", "#low", "#malformed-once", "#malformed-always", "#range-always", "#429-1", "#500-always",
               "#timeout-once", "#echo-key", "#range-once"]
    items = [(task(f"s{i}", f"draw {i} circles . {m}", n_inputs=i % 2), img(i)) for i, m in enumerate(markers)]
    judge = make_analyzer(cfg)
    m = judge_images(judge, items, out / "judge")
    judge.close()
    rows = [json.loads(line) for line in (out / "judge" / "results.jsonl").read_text().splitlines()]
    by_id = {r["id"]: r for r in rows}
    assert sorted(by_id) == sorted(x.id for x, _ in items) and len(rows) == len(items)
    assert {i: by_id[f"s{i}"]["status"] for i in (3, 4, 6, 8)} == {3: "judge_error", 4: "judge_error",
                                                                  6: "service_error", 8: "service_error"}
    assert "http_400" in by_id["s8"]["error"] and "[redacted]" in by_id["s8"]["error"]
    assert all(r["error"] for r in rows if r["status"] != "ok")
    assert all(r["scores"] for r in rows if r["status"] == "ok")
    assert m["status"] == {"ok": 6, "judge_error": 2, "service_error": 2}
    assert m["usage"]["retries"] == 4 and m["usage"]["judge_errors"] == 2

    # the rerun asks again only for the failures; answered questions come from the cache
    n_before = len(server.requests)
    judge = make_analyzer(cfg)
    m2 = judge_images(judge, items, out / "judge")
    judge.close()
    assert m2["reused"] == 6 and m2["asked"] == 4 and m2["samples"] == 10
    new = [json.dumps(b) for b in server.requests[n_before:]]
    assert len(new) == 3 and all("#500-always" in b for b in new)  # judge errors' answers come from the cache
    assert m2["usage"]["requests"] == 4 and m2["status"] == m["status"]  # the 500s (3 tries) and the 400 again

    written = [p for p in out.rglob("*") if p.is_file()]
    assert len(written) > 10
    for p in written:
        assert KEY.encode() not in p.read_bytes(), p
    assert KEY not in json.dumps(m) + json.dumps(m2) + repr(judge.client.__dict__)
    assert server.auth_failures == 0 and os.environ["SAIR_JUDGE_API_KEY"] == KEY


def test_escalation_pipeline_runs_on_the_service_judge(server, tmp_path, monkeypatch):
    from sairlib.pipeline.build import build_trajectories
    from sairlib.pipeline.escalation import Backends, EscalationConfig, escalate
    from sairlib.pipeline.generators import WorldGenerator
    from sairlib.trajectory import load_jsonl
    from sairlib.world import make_tasks

    monkeypatch.setenv("SAIR_JUDGE_API_KEY", KEY)
    tasks = make_tasks(3, "train", seed=3, family="t2i")
    out = tmp_path / "01_pipeline"
    cfg = {"backend": "openai", "base_url": server.url, "model": "judge-vl", "api_key_env": "SAIR_JUDGE_API_KEY",
           "max_retries": 0, "backoff_s": 0.0, "cache_dir": str(out / "judge_cache")}
    judge = make_analyzer(cfg)
    b = Backends(analyzer=judge, direct=WorldGenerator(), redraw=WorldGenerator(), config=EscalationConfig())
    ts = build_trajectories(tasks, b, out, seed=0, concurrency=3, progress=False,
                            provenance={"analyzer": "openai:judge-vl"})
    assert [(t.status, t.mode) for t in ts] == [("kept", "direct")] * 3
    assert ts[0].segments[1].text.startswith("instruction 5") and len(load_jsonl(out)) == 3
    assert judge.usage()["requests"] == 3  # one assessment per task; E texts are written locally
    judge.close()
    for p in (f for f in tmp_path.rglob("*") if f.is_file()):
        assert KEY.encode() not in p.read_bytes(), p

    broken = make_analyzer({**cfg, "base_url": server.url.replace("/v1", "/nowhere"), "cache_dir": None})
    b = Backends(analyzer=broken, direct=WorldGenerator(), redraw=WorldGenerator(),
                 config=EscalationConfig(backend_retries=1))
    t = asyncio.run(escalate(tasks[0], b, seed=0))
    assert t.status == "error" and len(t.errors) == 2 and "http_404" in t.errors[0]
    broken.close()


def test_backend_snippets_are_valid_configs():
    import yaml

    from sairlib.services import check_config

    files = sorted((Path(__file__).parent.parent / "params" / "backends").glob("*.yml"))
    assert len(files) >= 5
    for f in files:
        doc = yaml.safe_load(f.read_text())
        [(role, cfg)] = doc.items()
        c = check_config(role, cfg)
        assert c["backend"] == cfg["backend"], f
        if c["backend"] == "openai":
            assert c["api_key_env"] and not any("sk-" in str(v) for v in cfg.values()), f
