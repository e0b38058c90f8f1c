"""Hierarchical escalation: one request in, one trajectory (kept or discarded) out, as in the paper.

    direct try ──pass──> Direct            G1 E1
        │fail
    up to N reflection rounds (analysis + fix → redraw → re-score against the ORIGINAL request)
        ├─pass──> Self-Reflection          G1 E1 R1 G2 E2 ... R(K-1) GK EK
        │fail
    diagnose the last image
        ├─"knowledge"──> discard (the model lacks a fact)
        └─"complex"──> Multi-step: decompose; each step drawn, checked, retried; the final image
                       verified against the original request
                          ├─pass──> Multi-step  G1 E1 S1 G'1 E'1 ... Sn G'n E'n
                          └─fail──> discard

Pruning: a Multi-step trajectory keeps the failed direct try and its evaluation (decision
``plan``) as context and drops the failed reflection rounds and failed step attempts; a
Reflection trajectory keeps its rounds in order. Every decision is recorded with its reason.

The escalation of one task is a coroutine: backends are awaited through :class:`Backends`,
which batches concurrent draws and retries failing calls, so thousands of tasks escalate
together. Each draw carries a seed derived from (run seed, task id, what is drawn), so results
do not depend on batching or on the order tasks finish.
"""
from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..blas import one_blas_thread_for_good
from ..canvas import fresh_step, start_canvas
from ..interfaces import Assessment, X2IInput
from ..trajectory import Trajectory, TrajectorySegment
from .batching import Batcher
from .generators import BatchGenerator, DrawRequest


@dataclass(frozen=True)
class EscalationConfig:
    """The pipeline's knobs: reflection rounds, step retries, plan length, backend retries."""

    max_rounds: int = 3
    step_retries: int = 2
    max_steps: int = 16
    backend_retries: int = 2

    def __post_init__(self) -> None:
        for name, lo in (("max_rounds", 0), ("step_retries", 0), ("max_steps", 1), ("backend_retries", 0)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"escalation.{name}: must be an integer >= {lo}, got {v!r}")


class BackendError(RuntimeError):
    """A backend call failed on every retry; the sample is recorded with status ``error``."""


def request_seed(seed: int, task_id: str, what: str) -> int:
    """A 62-bit seed for one draw, from the run seed, the task and what is drawn."""
    h = hashlib.sha256(f"{seed}|{task_id}|{what}".encode()).digest()
    return int.from_bytes(h[:8], "little") >> 2


@dataclass
class Backends:
    """The analyzer and generators, behind retries; draws batched across concurrent tasks."""

    analyzer: Any
    direct: BatchGenerator
    redraw: BatchGenerator
    config: EscalationConfig = field(default_factory=EscalationConfig)
    max_batch: int = 256
    max_wait_s: float = 0.0
    analyzer_workers: int = 0
    calls: dict[str, int] = field(default_factory=lambda: {"draw": 0, "analyzer": 0, "retries": 0})
    analyzer_s: dict[str, list] = field(default_factory=dict)  # method -> [calls, seconds awaited]

    def __post_init__(self) -> None:
        self._batchers = {"direct": Batcher(self.direct.draw, self.max_batch, self.max_wait_s),
                          "redraw": Batcher(self.redraw.draw, self.max_batch, self.max_wait_s)}
        self._pool = None
        if self.analyzer_workers > 0:  # the analyzer in processes of its own: the event loop only orchestrates
            import concurrent.futures
            import multiprocessing as mp

            self._pool = concurrent.futures.ProcessPoolExecutor(
                self.analyzer_workers, mp_context=mp.get_context("spawn"), initializer=_init_analyzer,
                initargs=(self.analyzer,))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    async def _retry(self, what: str, fn: Callable[[], Any], errors: list[str]) -> Any:
        for attempt in range(self.config.backend_retries + 1):
            if attempt:
                self.calls["retries"] += 1
            try:
                return await fn()
            except Exception as e:  # a backend failure: retried, then recorded on the sample
                errors.append(f"{what} (attempt {attempt + 1}): {type(e).__name__}: {e}")
        raise BackendError(f"{what}: failed {self.config.backend_retries + 1} times")

    async def draw(self, which: str, req: DrawRequest, errors: list[str]) -> np.ndarray:
        self.calls["draw"] += 1
        return await self._retry(f"{which} draw", lambda: self._batchers[which](req), errors)

    def stats(self) -> dict[str, Any]:
        """Where the time went: each generator's batched calls and busy seconds, and each analyzer
        method's calls and seconds awaited (queueing for a worker included)."""
        return {"draw": {k: b.stats() for k, b in self._batchers.items()},
                "analyzer": {m: {"calls": n, "awaited_s": round(t, 2)} for m, (n, t) in sorted(self.analyzer_s.items())},
                "calls": dict(self.calls)}

    async def ask(self, method: str, errors: list[str], *args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await self._ask(method, errors, *args)
        finally:
            n_t = self.analyzer_s.setdefault(method, [0, 0.0])
            n_t[0] += 1
            n_t[1] += time.perf_counter() - t0

    async def _ask(self, method: str, errors: list[str], *args: Any) -> Any:
        self.calls["analyzer"] += 1
        native = getattr(self.analyzer, "a" + method, None)  # a remote judge's own coroutine: requests overlap
        if self._pool is None and native is not None and asyncio.iscoroutinefunction(native):
            return await self._retry(f"analyzer.{method}", lambda: native(*args), errors)

        async def call() -> Any:
            if self._pool is not None:
                return await asyncio.get_running_loop().run_in_executor(self._pool, _analyzer_call, method, args)
            return getattr(self.analyzer, method)(*args)

        return await self._retry(f"analyzer.{method}", call, errors)


_ANALYZER: Any = None


def _init_analyzer(analyzer: Any) -> None:
    global _ANALYZER
    one_blas_thread_for_good()  # one of many Analyzer processes: no BLAS threads of its own (sairlib.blas)
    _ANALYZER = analyzer


def _analyzer_call(method: str, args: tuple) -> Any:
    return getattr(_ANALYZER, method)(*args)


def _shown(x: X2IInput, canvas: np.ndarray | None) -> tuple[np.ndarray, ...]:
    """Images shown with a fix or a step: the canvas (unless fresh), then composition subjects."""
    shown = [] if canvas is None else [canvas]
    if x.meta.get("family") == "compose":
        shown += [im for im, s in zip(x.images, x.meta.get("inputs", [])) if len(s.get("objects", [])) == 1]
    elif "inputs" not in x.meta:  # a request from outside the world: show its inputs too
        shown += list(x.images)
    return tuple(shown)


def _reasons(a: Assessment) -> str:
    return "; ".join(a.reasons) if a.reasons else "all dimensions pass"


async def escalate(x: X2IInput, b: Backends, seed: int, provenance: dict[str, Any] | None = None) -> Trajectory:
    """Run the escalation for one request; never raises for backend failures (status ``error``)."""
    errors: list[str] = []
    decisions: list[dict[str, Any]] = []
    base = dict(id=x.id, instruction=x.instruction, input_images=list(x.images), meta=dict(x.meta),
                provenance=dict(provenance or {}), decisions=decisions, errors=errors)
    try:
        return await _escalate(x, b, seed, base, decisions, errors)
    except BackendError as e:
        decisions.append({"stage": "backend", "decision": "error", "why": str(e)})
        return Trajectory(**base, status="error", discard_reason=f"backend error: {e}")


async def _escalate(x: X2IInput, b: Backends, seed: int, base: dict[str, Any], decisions: list[dict[str, Any]],
                    errors: list[str]) -> Trajectory:
    A, cfg = b.analyzer, b.config
    G = lambda im: TrajectorySegment("G", image=im)
    T = lambda kind, text: TrajectorySegment(kind, text=text)

    def kept(mode: str, segs: list[TrajectorySegment], a: Assessment, rounds: int = 0) -> Trajectory:
        return Trajectory(**base, segments=segs, mode=mode, status="kept", scores=dict(a.scores), passed=True,
                          rounds=rounds)

    def discard(why: str, a: Assessment | None) -> Trajectory:
        return Trajectory(**base, status="discarded", discard_reason=why, scores=dict(a.scores) if a else {},
                          passed=False)

    # 1. the direct try
    g1 = await b.draw("direct", DrawRequest(x, x.instruction, tuple(x.images), "direct", None,
                                            request_seed(seed, x.id, "direct")), errors)
    a1 = await b.ask("assess", errors, x, g1)
    decisions.append({"stage": "direct", "decision": "pass" if a1.passed else "fail", "why": _reasons(a1)})
    if a1.passed:
        return kept("direct", [G(g1), T("E", await b.ask("evaluation_text", errors, a1, "done"))], a1)

    # 2. reflection rounds, each re-scored against the original request
    history: list[tuple[np.ndarray, Assessment]] = [(g1, a1)]
    reflections: list[str] = []
    img, a = g1, a1
    for k in range(1, cfg.max_rounds + 1):
        r_text = await b.ask("reflect", errors, x, img)
        fix = A.fix_instruction(r_text) if hasattr(A, "fix_instruction") else r_text
        if not fix:
            decisions.append({"stage": f"reflect{k}", "decision": "no fix", "why": "the reflection found no fix"})
            break
        req = DrawRequest(x, fix, _shown(x, img), "fix", img, request_seed(seed, x.id, f"fix{k}"))
        img = await b.draw("redraw", req, errors)
        a = await b.ask("assess", errors, x, img)
        reflections.append(r_text)
        history.append((img, a))
        decisions.append({"stage": f"reflect{k}", "decision": "pass" if a.passed else "fail", "why": _reasons(a)})
        if a.passed:
            segs = [G(g1)]
            for i, r in enumerate(reflections):
                segs += [T("E", await b.ask("evaluation_text", errors, history[i][1], "reflect")), T("R", r),
                         G(history[i + 1][0])]
            segs.append(T("E", await b.ask("evaluation_text", errors, a, "done")))
            return kept("reflection", segs, a, rounds=k)

    # 3. diagnosis of the last image
    diagnosis = await b.ask("diagnose", errors, x, img)
    decisions.append({"stage": "diagnose", "decision": diagnosis,
                      "why": "a knowledge constraint fails" if diagnosis == "knowledge" else "too complex for one pass"})
    if diagnosis == "knowledge":
        return discard("lacks knowledge", a)

    # 4. multi-step: decompose, draw each step with checks and retries, verify the end result
    steps = list(await b.ask("decompose", errors, x))
    if not steps:
        return discard("empty plan", a)
    if len(steps) > cfg.max_steps:
        return discard(f"plan of {len(steps)} steps exceeds max_steps={cfg.max_steps}", a)
    canvas = start_canvas(x)
    segs = [G(g1), T("E", await b.ask("evaluation_text", errors, a1, "plan"))]
    for i, step in enumerate(steps):
        before = None if fresh_step(step) else canvas
        done = False
        for attempt in range(cfg.step_retries + 1):
            req = DrawRequest(x, step, _shown(x, before), "step", before, request_seed(seed, x.id, f"step{i}.{attempt}"))
            drawn = await b.draw("redraw", req, errors)
            done = await b.ask("step_done", errors, x, step, before, drawn)
            if done:
                break
        decisions.append({"stage": f"step{i + 1}", "decision": "done" if done else "failed",
                          "why": f"{attempt + 1} attempt(s): {step}"})
        if not done:
            return discard(f"step {i + 1} failed after {cfg.step_retries + 1} attempts", a)
        canvas = drawn
        last = i == len(steps) - 1
        segs += [T("S", step), G(drawn)]
        if not last:
            segs.append(T("E", await b.ask("step_text", errors, True)))
    final = await b.ask("assess", errors, x, canvas)
    decisions.append({"stage": "verify", "decision": "pass" if final.passed else "fail", "why": _reasons(final)})
    if not final.passed:
        return discard("multi-step result fails the original request", final)
    segs.append(T("E", await b.ask("evaluation_text", errors, final, "done")))
    return kept("multistep", segs, final)


ADMISSIONS = ("complex_first", "given")


def admission_order(tasks: Sequence[X2IInput], admission: str = "complex_first") -> list[int]:
    """The order in which tasks enter the pipeline: indices into ``tasks``.

    ``"complex_first"`` (default): by descending ``complexity`` (ties keep task order). Complex
    requests escalate through the longest chains (reflection rounds, then many plan steps, each a
    round trip to the generator), so admitting them first keeps the batches full while they run
    instead of leaving a tail of half-empty batches at the end (longest-processing-time-first
    scheduling). ``"given"``: task order. The order changes only when each trajectory is made,
    never what it holds: every draw is seeded by its task.
    """
    if admission not in ADMISSIONS:
        raise ValueError(f"admission: must be one of {ADMISSIONS}, got {admission!r}")
    if admission == "given":
        return list(range(len(tasks)))
    return sorted(range(len(tasks)), key=lambda i: -tasks[i].complexity)


async def escalate_all(tasks: Sequence[X2IInput], b: Backends, seed: int, concurrency: int,
                       on_done: Callable[[int, Trajectory], None], provenance: dict[str, Any] | None = None,
                       admission: str = "complex_first") -> None:
    """Escalate every task with at most ``concurrency`` in flight, admitted in :func:`admission_order`;
    ``on_done(index, trajectory)`` as each ends (``index`` into ``tasks``)."""
    order = admission_order(tasks, admission)
    sem = asyncio.Semaphore(max(1, concurrency))  # FIFO: waiters enter in the order they were created

    async def one(i: int, x: X2IInput) -> None:
        async with sem:
            t = await escalate(x, b, seed, provenance)
        on_done(i, t)

    await asyncio.gather(*(one(i, tasks[i]) for i in order))
