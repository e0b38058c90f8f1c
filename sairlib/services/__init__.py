"""Real judges and image generators behind the project's ``Analyzer`` and ``Generator`` interfaces.

    from sairlib.services import make_analyzer, make_generator
    judge = make_analyzer({"backend": "openai", "base_url": "http://localhost:8000/v1",
                           "model": "Qwen/Qwen3-VL-8B-Instruct", "api_key_env": "SAIR_JUDGE_API_KEY",
                           "concurrency": 8, "timeout_s": 60, "max_retries": 4,
                           "cache_dir": "outputs/run/judge_cache"})
    judge = make_analyzer({"backend": "world"})          # the exact shapes-world Analyzer
    gen = make_generator({"backend": "openai", "base_url": "http://localhost:8001/v1", "model": "m"})

Modules: ``config`` (allowed keys), ``client`` (HTTP: concurrency, retries, cache, accounting),
``prompts`` (prompts and strict parsing), ``judge`` (the Analyzer over any chat VLM),
``openai_chat`` / ``local_vlm`` (its backends), ``openai_images`` (the Generator), ``jobs``
(a resumable judging job that records every failure). See docs/real-models.md.
"""
from __future__ import annotations

from typing import Any

from .client import ServiceClient
from .config import check_config
from .errors import JudgeError, ServiceError
from .judge import VLMAnalyzer
from .openai_chat import OpenAIAnalyzer
from .openai_images import OpenAIImageGenerator, ServiceDrawer

__all__ = ["make_analyzer", "make_generator", "check_config", "ServiceClient", "VLMAnalyzer", "OpenAIAnalyzer",
           "OpenAIImageGenerator", "ServiceDrawer", "JudgeError", "ServiceError"]


def _client(c: dict[str, Any]) -> ServiceClient:
    return ServiceClient(c["base_url"], api_key_env=c["api_key_env"], concurrency=c["concurrency"],
                         timeout_s=c["timeout_s"], max_retries=c["max_retries"], backoff_s=c["backoff_s"],
                         backoff_max_s=c["backoff_max_s"], cache_dir=c["cache_dir"])


def make_analyzer(cfg: dict[str, Any]) -> Any:
    """An Analyzer from a parameter dict (``backend``: ``world``, ``openai`` or ``transformers``)."""
    c = check_config("analyzer", cfg)
    if c["backend"] == "world":
        from ..world import WorldAnalyzer

        kw = {k: c[k] for k in ("grid", "max_fix_ops")}
        return WorldAnalyzer(**kw, **({"thresholds": dict(c["thresholds"])} if c["thresholds"] else {}))
    if c["backend"] == "openai":
        return OpenAIAnalyzer(_client(c), c["model"], temperature=c["temperature"], max_tokens=c["max_tokens"],
                              thresholds=c["thresholds"])
    from .local_vlm import TransformersAnalyzer

    return TransformersAnalyzer.from_pretrained(c["model"], device=c["device"], dtype=c["dtype"],
                                                max_new_tokens=c["max_new_tokens"], thresholds=c["thresholds"])


def make_generator(cfg: dict[str, Any]) -> OpenAIImageGenerator:
    """A Generator from a parameter dict (``backend``: ``openai``)."""
    c = check_config("generator", cfg)
    return OpenAIImageGenerator(_client(c), c["model"], size=c["size"], response_format=c["response_format"],
                                resize_to=c["resize_to"], extra=c["extra"])
