"""Coalesce concurrent requests into batched backend calls.

Many escalations run as coroutines; each awaits ``batcher(request)``. The batcher waits until
every runnable coroutine has queued its next request (and, with ``max_wait_s``, up to that
long for a full batch), then calls ``fn(list_of_requests)`` once
(in a worker thread, so the event loop keeps serving other work meanwhile) and hands each caller
its own result. When a batched call raises, the requests are retried one by one, so one bad
request fails alone::

    draw = Batcher(generator.draw, max_batch=256)
    image = await draw(request)
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Generic, Sequence, TypeVar

Req = TypeVar("Req")
Res = TypeVar("Res")
_SETTLE_TICKS = 3  # loop iterations to let woken coroutines queue their next request


class Batcher(Generic[Req, Res]):
    def __init__(self, fn: Callable[[Sequence[Req]], Sequence[Res]], max_batch: int = 256,
                 max_wait_s: float = 0.0) -> None:
        if not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch: must be a positive integer, got {max_batch!r}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s: must be >= 0, got {max_wait_s!r}")
        self.fn, self.max_batch, self.max_wait_s = fn, max_batch, float(max_wait_s)
        self.pending: list[tuple[Req, asyncio.Future]] = []
        self.batches: list[int] = []  # sizes of the batched calls made
        self.busy_s = 0.0             # seconds spent inside ``fn``
        self._worker: asyncio.Task | None = None

    async def __call__(self, req: Req) -> Res:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        self.pending.append((req, fut))
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain())
        return await fut

    async def _call(self, reqs: list[Req]) -> list[Any]:
        out = await asyncio.get_running_loop().run_in_executor(None, self._timed, reqs)
        out = list(out)
        if len(out) != len(reqs):
            raise RuntimeError(f"backend returned {len(out)} results for {len(reqs)} requests")
        return out

    def _timed(self, reqs: list[Req]) -> Sequence[Res]:
        t0 = time.perf_counter()
        try:
            return self.fn(reqs)
        finally:
            self.busy_s += time.perf_counter() - t0

    def stats(self) -> dict[str, Any]:
        """Batched calls made, requests, mean batch size and seconds inside ``fn``."""
        n = len(self.batches)
        return {"calls": n, "requests": sum(self.batches), "mean_batch": round(sum(self.batches) / max(n, 1), 1),
                "busy_s": round(self.busy_s, 2)}

    async def _drain(self) -> None:
        while self.pending:
            for _ in range(_SETTLE_TICKS):
                await asyncio.sleep(0)
            waited = 0.0
            while len(self.pending) < self.max_batch and waited < self.max_wait_s:
                await asyncio.sleep(0.002)  # requests still on their way (e.g. from analyzer processes)
                waited += 0.002
            batch, self.pending = self.pending[:self.max_batch], self.pending[self.max_batch:]
            self.batches.append(len(batch))
            try:
                results = await self._call([r for r, _ in batch])
            except Exception:
                results = None
            if results is not None:
                for (_, fut), res in zip(batch, results):
                    if not fut.done():
                        fut.set_result(res)
                continue
            for req, fut in batch:  # isolate the failure
                try:
                    res = (await self._call([req]))[0]
                except Exception as e:
                    if not fut.done():
                        fut.set_exception(e)
                else:
                    if not fut.done():
                        fut.set_result(res)
