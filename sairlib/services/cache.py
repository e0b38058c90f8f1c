"""A response cache on disk, keyed by a content hash of the request, so reruns cost nothing.

    cache = ResponseCache("outputs/run/judge_cache")
    key = cache.key({"model": "qwen3-vl", "messages": [...]})
    cache.get(key)            # None, or the stored JSON response
    cache.put(key, response)  # atomic write: <dir>/<key[:2]>/<key>.json

The key is the SHA-256 of the canonical JSON of what was asked (endpoint, model, messages or
prompt, images as their bytes' hashes, sampling settings); credentials are never part of it and
never stored. ``ResponseCache(None)`` caches nothing.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def content_hash(obj: Any) -> str:
    """SHA-256 hex digest of the canonical JSON of ``obj``."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class ResponseCache:
    """JSON responses on disk, one file per key; ``directory=None`` disables it."""

    def __init__(self, directory: str | os.PathLike | None) -> None:
        self.directory = Path(directory) if directory is not None else None

    @staticmethod
    def key(request: Any) -> str:
        return content_hash(request)

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> Any | None:
        if self.directory is None:
            return None
        p = self._path(key)
        if not p.exists():
            return None
        try:
            return json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):  # a torn write from a killed run: ask again
            return None

    def put(self, key: str, response: Any) -> None:
        if self.directory is None:
            return
        p = self._path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(response))
        tmp.replace(p)
