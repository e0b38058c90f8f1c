"""One home for calling OpenAI-compatible services: bounded concurrency, retries with
exponential backoff, a response cache on disk, and latency / token accounting.

    client = ServiceClient("http://localhost:8000/v1", api_key_env="SAIR_JUDGE_API_KEY",
                           concurrency=8, timeout_s=60, max_retries=4, cache_dir="outputs/run/cache")
    body = client.call(client.post_json("/chat/completions", {"model": "m", "messages": [...]}))
    client.stats()   # {"requests": 1, "cache_hits": 0, "retries": 0, "latency_s_total": ..., ...}
    client.close()

Every request runs on the client's own event loop, in a background thread: ``call(coro)`` is the
sync facade (usable from plain code and from inside another event loop, such as the escalation
pipeline's, which calls its Analyzer synchronously), and ``await client.submit(coro)`` the async
one. At most ``concurrency`` requests are in flight (an ``asyncio.Semaphore``).

Retried, at most ``max_retries`` times with delays ``backoff_s * 2**attempt`` (capped at
``backoff_max_s``; a ``Retry-After`` header is honoured within the cap): timeouts, transport
errors, HTTP 429 and 5xx. Any other status fails at once. A final failure raises
:class:`~sairlib.services.errors.ServiceError`.

The API key is read from the environment variable named ``api_key_env`` at request time and only
ever placed in the ``Authorization`` header: it is not an attribute, not in the cache key, not in
any stored file, message or statistic.
"""
from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any, Coroutine

import httpx

from .cache import ResponseCache, content_hash
from .errors import ServiceError
from .loop import BackgroundLoop

RETRY_STATUSES = frozenset({408, 409, 429}) | frozenset(range(500, 600))


class ServiceClient:
    """An OpenAI-compatible HTTP client with the retry, cache and accounting machinery."""

    def __init__(self, base_url: str, *, api_key_env: str | None = None, concurrency: int = 8,
                 timeout_s: float = 60.0, max_retries: int = 4, backoff_s: float = 0.5,
                 backoff_max_s: float = 8.0, cache_dir: str | os.PathLike | None = None) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url: must be an http(s) URL, got {base_url!r}")
        for name, v, lo in (("concurrency", concurrency, 1), ("max_retries", max_retries, 0)):
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"{name}: must be an integer >= {lo}, got {v!r}")
        for name, v in (("timeout_s", timeout_s), ("backoff_s", backoff_s), ("backoff_max_s", backoff_max_s)):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name}: must be a number >= 0, got {v!r}")
        if api_key_env is not None and (not isinstance(api_key_env, str) or not api_key_env):
            raise ValueError(f"api_key_env: must be the name of an environment variable, got {api_key_env!r}")
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.concurrency, self.timeout_s, self.max_retries = concurrency, float(timeout_s), max_retries
        self.backoff_s, self.backoff_max_s = float(backoff_s), float(backoff_max_s)
        self.cache = ResponseCache(cache_dir)
        self._stats: dict[str, Any] = {
            "requests": 0, "cache_hits": 0, "retries": 0, "failures": 0, "latency_s_total": 0.0,
            "latency_s_max": 0.0, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0,
            "retry_reasons": {}, "failure_kinds": {}}
        self._transient()

    def _transient(self) -> None:
        self._lock = threading.Lock()
        self._bg = BackgroundLoop()
        self._http: httpx.AsyncClient | None = None
        self._sem: asyncio.Semaphore | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (to analyzer worker processes): settings and counts travel, connections do not."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_bg", "_http", "_sem")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._transient()

    # ------------------------------------------------------------ the client's own event loop
    def call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coro`` on the client's loop and wait for its result (the sync facade)."""
        return self._bg.run(coro)

    async def submit(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Await ``coro`` on the client's loop from any event loop (the async facade)."""
        return await self._bg.submit(coro)

    def close(self) -> None:
        """Close the HTTP connections and stop the loop thread."""

        async def shut() -> None:
            if self._http is not None:
                await self._http.aclose()

        self._bg.close(shut)
        self._http = self._sem = None

    def __enter__(self) -> "ServiceClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------ accounting
    def stats(self) -> dict[str, Any]:
        """Counts, latency and token usage so far (a JSON-able dict for a run's metrics)."""
        with self._lock:
            s = {k: (dict(v) if isinstance(v, dict) else v) for k, v in self._stats.items()}
        n = s["requests"]
        s["latency_s_mean"] = s["latency_s_total"] / n if n else 0.0
        return s

    def _count(self, key: str, by: float = 1, sub: str | None = None) -> None:
        with self._lock:
            if sub is None:
                self._stats[key] += by
            else:
                self._stats[key][sub] = self._stats[key].get(sub, 0) + 1

    def _usage(self, body: Any) -> None:
        u = body.get("usage") if isinstance(body, dict) else None
        if isinstance(u, dict):
            for k in ("prompt_tokens", "completion_tokens", "total_tokens"):
                v = u.get(k, u.get(k.replace("prompt", "input").replace("completion", "output")))
                if isinstance(v, int):
                    self._count(k, v)

    # ------------------------------------------------------------ requests
    def _headers(self) -> dict[str, str]:
        if self.api_key_env is None:
            return {}
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ServiceError("auth", "missing_api_key", 0, f"environment variable {self.api_key_env} is not set")
        return {"Authorization": f"Bearer {key}"}

    def _redact(self, text: str) -> str:
        """``text`` with the API key blanked out (a server may echo what it was sent)."""
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        return text.replace(key, "[redacted]") if key else text

    def _client(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        if self._http is None:
            self._http = httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout_s)
            self._sem = asyncio.Semaphore(self.concurrency)
        assert self._sem is not None
        return self._http, self._sem

    async def post_json(self, path: str, payload: dict[str, Any], cache_key: Any = None) -> dict[str, Any]:
        """POST a JSON body; the JSON answer (cached under ``cache_key``, default: path + payload)."""
        return await self._post(path, cache_key if cache_key is not None else {"path": path, "payload": payload},
                                json=payload)

    async def post_multipart(self, path: str, data: dict[str, Any], files: list[tuple[str, tuple[str, bytes, str]]],
                             cache_key: Any) -> dict[str, Any]:
        """POST a multipart form (``files`` as httpx takes them); cached under ``cache_key``."""
        return await self._post(path, cache_key, data=data, files=files)

    async def _post(self, path: str, cache_key: Any, **kwargs: Any) -> dict[str, Any]:
        key = content_hash({"base": self.base_url, "request": cache_key})
        hit = self.cache.get(key)
        if hit is not None:
            self._count("cache_hits")
            return hit
        headers = self._headers()
        http, sem = self._client()
        kind, detail = "", ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                self._count("retries")
                self._count("retry_reasons", sub=kind)
                await asyncio.sleep(self._delay(attempt - 1, detail if kind == "http_429" else None))
            async with sem:
                t0 = time.perf_counter()
                try:
                    r = await http.post(path, headers=headers, **kwargs)
                except httpx.TimeoutException:
                    kind, detail = "timeout", f"no answer within {self.timeout_s:g} s"
                    continue
                except httpx.TransportError as e:
                    kind, detail = "transport", type(e).__name__
                    continue
                finally:
                    dt = time.perf_counter() - t0
                    with self._lock:
                        self._stats["requests"] += 1
                        self._stats["latency_s_total"] += dt
                        self._stats["latency_s_max"] = max(self._stats["latency_s_max"], dt)
            if r.status_code in RETRY_STATUSES:
                kind, detail = f"http_{r.status_code}", r.headers.get("retry-after", "")
                continue
            if r.status_code >= 400:
                self._fail(f"http_{r.status_code}")
                raise ServiceError(f"POST {path}", f"http_{r.status_code}", attempt + 1, self._redact(r.text[:200]))
            try:
                body = r.json()
            except ValueError:
                self._fail("bad_response")
                raise ServiceError(f"POST {path}", "bad_response", attempt + 1, "the answer is not JSON") from None
            self._usage(body)
            self.cache.put(key, body)
            return body
        self._fail(kind)
        raise ServiceError(f"POST {path}", kind, self.max_retries + 1,
                           detail if kind != "http_429" else "rate limited")

    def _fail(self, kind: str) -> None:
        self._count("failures")
        self._count("failure_kinds", sub=kind)

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        d = self.backoff_s * 2 ** attempt
        if retry_after:
            try:
                d = max(d, float(retry_after))
            except ValueError:
                pass
        return min(d, self.backoff_max_s)
