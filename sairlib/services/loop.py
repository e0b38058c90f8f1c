"""A private event loop in a background thread: the bridge between sync and async callers.

    bg = BackgroundLoop()
    result = bg.run(some_coroutine())           # from plain code or from inside another loop
    result = await bg.submit(some_coroutine())  # from any event loop
    bg.close()

Service clients keep their semaphore and HTTP connections on this one loop, so they work the same
whether the caller is a notebook cell, a thread, or a coroutine of the escalation pipeline (which
calls its Analyzer synchronously from its own loop).
"""
from __future__ import annotations

import asyncio
import threading
from typing import Any, Awaitable, Callable, Coroutine


class BackgroundLoop:
    """An asyncio loop running forever in a daemon thread, started on first use."""

    def __init__(self, name: str = "sair-service-loop") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                t = threading.Thread(target=loop.run_forever, name=self.name, daemon=True)
                t.start()
                self._loop, self._thread = loop, t
            return self._loop

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coro`` on the loop and block until its result (never call this from the loop itself)."""
        loop = self.loop
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(f"{self.name}: run() called from its own loop; await submit() instead")
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    async def submit(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Await ``coro`` on the loop, from any event loop."""
        loop = self.loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    def close(self, before: Callable[[], Awaitable[None]] | None = None) -> None:
        """Run ``before()`` on the loop (e.g. closing connections), then stop the thread."""
        loop = self._loop
        if loop is None:
            return
        if before is not None:
            asyncio.run_coroutine_threadsafe(before(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join()
        loop.close()
        self._loop = self._thread = None
