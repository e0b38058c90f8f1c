"""The Analyzer on an OpenAI-compatible chat-completions endpoint (vLLM, SGLang, OpenAI, ...).

    import os; os.environ["SAIR_JUDGE_API_KEY"] = "..."      # or set it in the shell
    from sairlib.services import make_analyzer
    judge = make_analyzer({"backend": "openai", "base_url": "http://localhost:8000/v1",
                           "model": "Qwen/Qwen3-VL-8B-Instruct", "api_key_env": "SAIR_JUDGE_API_KEY",
                           "concurrency": 8, "cache_dir": "outputs/run/judge_cache"})
    a = judge.assess(x, image)       # Assessment, or JudgeError / ServiceError
    judge.usage()                    # requests, cache hits, retries, latency, tokens, repairs, judge errors

Requests go through :class:`~sairlib.services.client.ServiceClient` (bounded concurrency, retries
with backoff, disk cache keyed by the hash of model + messages + sampling settings); prompts and
parsing are :mod:`sairlib.services.prompts`, shared with the local transformers judge.
"""
from __future__ import annotations

from typing import Any, Coroutine

from .client import ServiceClient
from .errors import ServiceError
from .judge import VLMAnalyzer


class OpenAIAnalyzer(VLMAnalyzer):
    """A VLM judge behind ``POST {base_url}/chat/completions``."""

    def __init__(self, client: ServiceClient, model: str, *, temperature: float = 0.0, max_tokens: int = 1024,
                 thresholds: dict[str, int] | None = None) -> None:
        super().__init__(thresholds)
        if not isinstance(model, str) or not model:
            raise ValueError(f"model: must be a model name, got {model!r}")
        self.client, self.model = client, model
        self.temperature, self.max_tokens = float(temperature), int(max_tokens)

    async def _complete(self, messages: list[dict[str, Any]]) -> str:
        payload = {"model": self.model, "messages": messages, "temperature": self.temperature,
                   "max_tokens": self.max_tokens}
        body = await self.client.submit(self.client.post_json("/chat/completions", payload))
        try:
            content = body["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise ServiceError("POST /chat/completions", "bad_response", 1, "no choices[0].message.content") from None
        return content if isinstance(content, str) else ""

    def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.client.call(coro)

    def usage(self) -> dict[str, Any]:
        return {**self.client.stats(), **super().usage()}

    def close(self) -> None:
        self.client.close()
