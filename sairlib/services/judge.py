"""The Analyzer protocol on top of any chat-style VLM: prompts, strict parsing, one repair.

:class:`VLMAnalyzer` implements ``sairlib.interfaces.Analyzer`` (plus ``fix_instruction``,
``step_done``, ``step_text`` and ``assess_many``, which the escalation pipeline and adaptive
inference use) for any backend that can answer a list of chat messages with a text:
a subclass provides ``async _complete(messages) -> str`` and ``_run(coro)`` (how the sync
facade runs a coroutine). :class:`~sairlib.services.openai_chat.OpenAIAnalyzer` talks to an
OpenAI-compatible endpoint; :class:`~sairlib.services.local_vlm.TransformersAnalyzer` to a local
``AutoModelForImageTextToText``.

Each question is asked once; an answer that fails :func:`~sairlib.services.prompts.parse_answer`
gets exactly one repair request; a second failure raises :class:`JudgeError` (the pipeline
records it on the sample, which ends with status ``error``). Async versions of every method
(``aassess``, ``areflect``, ...) run many samples concurrently.
"""
from __future__ import annotations

import asyncio
import threading
from typing import Any, Coroutine, Sequence

import numpy as np

from ..interfaces import DIMENSIONS, Assessment, X2IInput
from . import prompts as P
from .errors import JudgeError
from .loop import BackgroundLoop

DEFAULT_THRESHOLDS = {"instruction": 5, "consistency": 5, "quality": 4, "knowledge": 5}
FIX_MARK = "\nfix: "


def check_thresholds(thresholds: dict[str, Any]) -> dict[str, int]:
    if not isinstance(thresholds, dict):
        raise ValueError(f"thresholds: must be a mapping of dimension to 1..5, got {thresholds!r}")
    for d in thresholds:
        if d not in DIMENSIONS:
            raise ValueError(f"thresholds: unknown dimension {d!r} (known: {', '.join(DIMENSIONS)})")
    for d in DIMENSIONS:
        v = thresholds.get(d)
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 5:
            raise ValueError(f"thresholds.{d}: must be an integer in 1..5, got {v!r}")
    return dict(thresholds)


class VLMAnalyzer:
    """Analyzer methods over ``_complete(messages) -> text`` with strict parsing and one repair."""

    def __init__(self, thresholds: dict[str, int] | None = None) -> None:
        self.thresholds = check_thresholds(dict(thresholds or DEFAULT_THRESHOLDS))
        self.counts: dict[str, int] = {"questions": 0, "repairs": 0, "judge_errors": 0}
        self._count_lock = threading.Lock()  # sync and async callers may ask from different threads

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_count_lock", "_lock", "_bg")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._count_lock = threading.Lock()
        if hasattr(self, "model"):  # a local judge: its generation lock and loop
            self._lock, self._bg = threading.Lock(), BackgroundLoop("sair-local-judge")

    # -------------------------------------------------------------- backend hooks
    async def _complete(self, messages: list[dict[str, Any]]) -> str:
        raise NotImplementedError

    def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        raise NotImplementedError

    def usage(self) -> dict[str, Any]:
        """Question, repair and judge-error counts (backends add latency and tokens)."""
        with self._count_lock:
            return dict(self.counts)

    def _count(self, key: str) -> None:
        with self._count_lock:
            self.counts[key] = self.counts.get(key, 0) + 1

    # -------------------------------------------------------------- the one ask-parse-repair loop
    async def _ask(self, method: str, messages: list[dict[str, Any]], schema: dict[str, Any]) -> dict[str, Any]:
        self._count("questions")
        answer = await self._complete(messages)
        try:
            return P.parse_answer(answer, schema)
        except P.AnswerError as first:
            self._count("repairs")
            answer2 = await self._complete(P.repair_messages(messages, answer or "", str(first)))
            try:
                return P.parse_answer(answer2, schema)
            except P.AnswerError as second:
                self._count("judge_errors")
                raise JudgeError(method, f"{first}; after one repair request: {second}",
                                 answer2 if isinstance(answer2, str) else "") from None

    # -------------------------------------------------------------- async API
    async def aassess(self, x: X2IInput, image: np.ndarray) -> Assessment:
        data = await self._ask("assess", P.assess_messages(x, image), P.ASSESS_SCHEMA)
        scores = {d: int(data[f"{d}_score"]) for d in DIMENSIONS}
        reasoning = {d: str(data[f"{d}_reasoning"]).strip() for d in DIMENSIONS}
        reasons = tuple(f"{d} {scores[d]}: {reasoning[d]}" for d in DIMENSIONS if scores[d] < self.thresholds[d])
        passed = all(scores[d] >= self.thresholds[d] for d in DIMENSIONS)
        return Assessment(scores=scores, reasons=reasons, passed=passed, detail={"reasoning": reasoning})

    async def areflect(self, x: X2IInput, image: np.ndarray) -> str:
        data = await self._ask("reflect", P.reflect_messages(x, image), P.REFLECT_SCHEMA)
        return f"{' '.join(data['failure_analysis'].split())}{FIX_MARK}{' '.join(data['improvement_plan'].split())}"

    async def adiagnose(self, x: X2IInput, image: np.ndarray) -> str:
        return (await self._ask("diagnose", P.diagnose_messages(x, image), P.DIAGNOSE_SCHEMA))["diagnosis"]

    async def adecompose(self, x: X2IInput) -> list[str]:
        data = await self._ask("decompose", P.decompose_messages(x), P.DECOMPOSE_SCHEMA)
        return [" ".join(s.split()) for s in data["steps"]]

    async def astep_done(self, x: X2IInput, step: str, before: np.ndarray | None, after: np.ndarray) -> bool:
        return (await self._ask("step_done", P.step_done_messages(x, step, before, after), P.STEP_DONE_SCHEMA))["done"]

    async def ajudge_text(self, kind: str, text: str, context: dict[str, Any]) -> float:
        data = await self._ask("judge_text", P.judge_text_messages(kind, text, context), P.JUDGE_TEXT_SCHEMA)
        return (data["score"] - 1) / 4

    async def aassess_many(self, xs: Sequence[X2IInput], images: Sequence[np.ndarray],
                           return_exceptions: bool = False) -> list[Any]:
        """Assessments of many (request, image) pairs concurrently (the backend bounds concurrency)."""
        if len(xs) != len(images):
            raise ValueError(f"images: got {len(images)} for {len(xs)} tasks")
        return list(await asyncio.gather(*(self.aassess(x, im) for x, im in zip(xs, images)),
                                         return_exceptions=return_exceptions))

    # -------------------------------------------------------------- texts written locally
    def evaluation_text(self, assessment: Assessment, decision: str) -> str:
        """The E segment: the four scores, what falls short, and the decision."""
        scores = " ".join(f"{d} {assessment.scores[d]}" for d in DIMENSIONS)
        why = "; ".join(assessment.reasons) if assessment.reasons else "no errors"
        return f"{scores} . {why} . decision {decision}"

    def step_text(self, ok: bool, errors: Sequence[Any] = (), decision: str = "next") -> str:
        return f"step {'done' if ok else 'failed'} . decision {decision}"

    def fix_instruction(self, reflection: str) -> str:
        """The edit instruction a generator executes for a reflection written by :meth:`reflect`."""
        return reflection.rsplit(FIX_MARK, 1)[1].strip() if FIX_MARK in reflection else ""

    # -------------------------------------------------------------- sync facade (the Analyzer protocol)
    def assess(self, x: X2IInput, image: np.ndarray) -> Assessment:
        return self._run(self.aassess(x, image))

    def reflect(self, x: X2IInput, image: np.ndarray) -> str:
        return self._run(self.areflect(x, image))

    def diagnose(self, x: X2IInput, image: np.ndarray) -> str:
        return self._run(self.adiagnose(x, image))

    def decompose(self, x: X2IInput) -> list[str]:
        return self._run(self.adecompose(x))

    def step_done(self, x: X2IInput, step: str, before: np.ndarray | None, after: np.ndarray) -> bool:
        return self._run(self.astep_done(x, step, before, after))

    def judge_text(self, kind: str, text: str, context: dict[str, Any]) -> float:
        return self._run(self.ajudge_text(kind, text, context))

    def assess_many(self, xs: Sequence[X2IInput], images: Sequence[np.ndarray]) -> list[Assessment]:
        return self._run(self.aassess_many(xs, images))
