"""Service settings from parameter dicts: allowed keys per backend, unknown keys rejected by name.

    cfg = check_config("analyzer", {"backend": "openai", "base_url": "http://localhost:8000/v1",
                                    "model": "Qwen/Qwen3-VL-8B-Instruct"})

Keys, by backend (defaults in brackets):

- analyzer ``world``: ``thresholds``, ``grid``, ``max_fix_ops`` (the exact ``WorldAnalyzer``).
- analyzer ``openai``: ``base_url``, ``model`` (required); ``api_key_env`` [None: no key sent],
  ``concurrency`` [8], ``timeout_s`` [60], ``max_retries`` [4], ``backoff_s`` [0.5],
  ``backoff_max_s`` [8], ``cache_dir`` [None], ``temperature`` [0], ``max_tokens`` [1024],
  ``thresholds`` [5/5/4/5].
- analyzer ``transformers``: ``model`` (a local path or hub id already in the cache, required);
  ``device`` ["cpu"], ``dtype`` ["float32"], ``max_new_tokens`` [256], ``thresholds``.
- generator ``openai``: the client keys above plus ``model`` (required), ``size``,
  ``response_format`` ["b64_json"], ``resize_to`` [None], ``extra`` [{}].

Secrets are never keys: ``api_key_env`` names the environment variable that holds the key.
"""
from __future__ import annotations

from typing import Any

CLIENT_KEYS = {"base_url": None, "api_key_env": None, "concurrency": 8, "timeout_s": 60.0, "max_retries": 4,
               "backoff_s": 0.5, "backoff_max_s": 8.0, "cache_dir": None}
ALLOWED: dict[tuple[str, str], dict[str, Any]] = {
    ("analyzer", "world"): {"thresholds": None, "grid": 4, "max_fix_ops": 12},
    ("analyzer", "openai"): {**CLIENT_KEYS, "model": None, "temperature": 0.0, "max_tokens": 1024, "thresholds": None},
    ("analyzer", "transformers"): {"model": None, "device": "cpu", "dtype": "float32", "max_new_tokens": 256,
                                   "thresholds": None},
    ("generator", "openai"): {**CLIENT_KEYS, "model": None, "size": None, "response_format": "b64_json",
                              "resize_to": None, "extra": None},
}
REQUIRED: dict[tuple[str, str], tuple[str, ...]] = {
    ("analyzer", "openai"): ("base_url", "model"), ("analyzer", "transformers"): ("model",),
    ("generator", "openai"): ("base_url", "model"),
}
SECRET_HINTS = ("api_key", "token", "secret", "password")


def check_config(role: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """The settings with defaults filled in; ``ValueError`` naming an unknown, missing or secret key."""
    if not isinstance(cfg, dict):
        raise ValueError(f"{role}: must be a mapping with a 'backend' key, got {type(cfg).__name__}")
    backend = cfg.get("backend")
    backends = sorted(b for r, b in ALLOWED if r == role)
    if (role, backend) not in ALLOWED:
        raise ValueError(f"{role}.backend: must be one of {backends}, got {backend!r}")
    allowed = ALLOWED[(role, backend)]
    for k, v in cfg.items():
        if k == "backend":
            continue
        if k not in allowed:
            hint = (" (keys come from environment variables: set api_key_env to the variable's name)"
                    if any(h in k.lower() for h in SECRET_HINTS) and k != "api_key_env" else "")
            raise ValueError(f"{role}.{k}: unknown key for backend {backend!r}{hint}; "
                             f"allowed: {', '.join(sorted(allowed))}")
    for k in REQUIRED.get((role, backend), ()):
        if not cfg.get(k):
            raise ValueError(f"{role}.{k}: required for backend {backend!r}")
    return {"backend": backend, **{k: cfg.get(k, d) for k, d in allowed.items()}}
