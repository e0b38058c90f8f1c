"""Per-stage metrics files, written atomically.

Every notebook ends with::

    from sairlib.metrics import save_metrics
    save_metrics(stage_dir, {"accuracy": acc, "n_examples": n})

which writes ``<stage_dir>/metrics.json``. The runner (``python -m sairlib.run``)
then adds a ``"run"`` block (parameters, hash, provenance, wall time) to the
same file, so the key ``"run"`` is reserved. numpy and torch scalars (and
arrays/tensors, as nested lists) are converted to plain JSON values.

``write_json`` (and ``write_text``) are the atomic writers used for every
file of a run: the data goes to a temporary file in the same folder, which
then replaces the target with ``os.replace``, so a reader never sees a
half-written file.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.json"
RUN_KEY = "run"


def utc_now() -> str:
    """The current UTC time to the second, ISO 8601: how every record of a run is timestamped."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _to_jsonable(obj: Any) -> Any:
    """``json.dumps`` fallback for numpy/torch values, paths and sets."""
    if hasattr(obj, "tolist"):  # numpy scalar/array, torch tensor
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if isinstance(obj, (datetime.date, datetime.time)):  # YAML timestamps
        return obj.isoformat()
    raise TypeError(f"cannot store a value of type {type(obj).__name__} in JSON: {obj!r}")


def to_json(obj: Any) -> str:
    """``obj`` as indented JSON text, converting numpy/torch values."""
    return json.dumps(obj, indent=2, default=_to_jsonable) + "\n"


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically; return the path."""
    return write_text(path, to_json(obj))


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600 files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file written by ``write_json``."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def save_metrics(stage_dir: str | os.PathLike, metrics: dict[str, Any]) -> Path:
    """Write ``metrics`` to ``<stage_dir>/metrics.json`` (atomically); return its path.

    Keys must be strings; ``"run"`` is reserved for the runner.
    """
    if not isinstance(metrics, dict):
        raise TypeError(f"metrics must be a dict, got {type(metrics).__name__}")
    bad = [k for k in metrics if not isinstance(k, str)]
    if bad:
        raise TypeError(f"metric names must be strings, got {bad!r}")
    if RUN_KEY in metrics:
        raise ValueError(f"the metric name {RUN_KEY!r} is reserved for the runner")
    return write_json(Path(stage_dir) / METRICS_FILE, metrics)


def load_metrics(stage_dir: str | os.PathLike) -> dict[str, Any]:
    """Read ``<stage_dir>/metrics.json`` (FileNotFoundError when absent)."""
    data = read_json(Path(stage_dir) / METRICS_FILE)
    if not isinstance(data, dict):
        raise ValueError(f"{Path(stage_dir) / METRICS_FILE} does not hold a JSON object")
    return data
