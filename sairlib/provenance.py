"""Where a result came from: code version, library versions, device, time.

    python -c "import json, sairlib.provenance as p; print(json.dumps(p.provenance(), indent=2))"

The runner stores ``provenance()`` in each stage's ``metrics.json``. It holds
no host name, user name or environment variable. ``source_digest`` identifies the code that ran
even where git cannot: a dirty checkout, or a copy of a working tree whose ``.git`` is older than
its files; two results with the same digest ran the same library and notebooks. Anything that cannot be
determined (no git, a library not installed) is ``None``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from .metrics import utc_now

LIBRARIES = (
    "torch",
    "transformers",
    "trl",
    "peft",
    "accelerate",
    "datasets",
    "papermill",
    "numpy",
)

_PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_state(repo: str | os.PathLike | None = None) -> dict[str, Any]:
    """``{"sha": ..., "dirty": ...}`` of the git checkout holding ``repo``.

    ``repo`` defaults to the checkout holding this package. Both values are
    ``None`` outside a git repository or before its first commit. ``dirty``
    counts modified tracked files and untracked, not ignored, files.
    """
    cwd = Path(repo) if repo is not None else _PACKAGE_ROOT
    sha = _git(["rev-parse", "--verify", "HEAD"], cwd)
    if sha is None:
        return {"sha": None, "dirty": None}
    status = _git(["status", "--porcelain"], cwd)
    return {"sha": sha.strip(), "dirty": None if status is None else bool(status.strip())}


SOURCE_GLOBS = ("sairlib/**/*.py", "notebooks/*.ipynb")


def source_digest(root: str | os.PathLike | None = None) -> str | None:
    """SHA-256 over the library's and the notebooks' files (relative path and bytes, in path order).

    ``root`` defaults to the checkout holding this package; ``None`` when it holds no such file.
    """
    base = Path(root) if root is not None else _PACKAGE_ROOT
    files = sorted({f for g in SOURCE_GLOBS for f in base.glob(g) if f.is_file() and "__pycache__" not in f.parts})
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        rel = f.relative_to(base).as_posix().encode()
        data = f.read_bytes()
        h.update(len(rel).to_bytes(4, "big") + rel + len(data).to_bytes(8, "big") + data)
    return h.hexdigest()


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str | None]:
    """Version of each library, ``None`` when missing: the imported module's own ``__version__``
    where it is loaded (it names the build, e.g. torch's ``2.11.0+cu130``, which a distribution's
    metadata may leave out), else the installed distribution's."""
    versions: dict[str, str | None] = {}
    for name in names:
        loaded = getattr(sys.modules.get(name), "__version__", None)
        if isinstance(loaded, str):
            versions[name] = loaded
            continue
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _nvidia_driver_present() -> bool:
    """Cheap test that spares importing torch (seconds) on machines without a GPU."""
    return (
        "torch" in sys.modules
        or shutil.which("nvidia-smi") is not None
        or Path("/proc/driver/nvidia").exists()
        or Path("/dev/nvidiactl").exists()
    )


def device_info() -> dict[str, Any]:
    """CUDA device name and count when torch sees a GPU, else the CPU count."""
    if _nvidia_driver_present() and importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            return {
                "type": "cuda",
                "name": torch.cuda.get_device_name(0),
                "count": torch.cuda.device_count(),
                "cuda_version": torch.version.cuda,
            }
    return {"type": "cpu", "cpu_count": os.cpu_count()}


def provenance(repo: str | os.PathLike | None = None) -> dict[str, Any]:
    """Git SHA/dirty flag, the source digest, Python and library versions, device, UTC timestamp."""
    git = git_state(repo)
    return {
        "git_sha": git["sha"],
        "git_dirty": git["dirty"],
        "source_digest": source_digest(repo),
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": f"{platform.system()}-{platform.machine()}",
        "versions": library_versions(),
        "device": device_info(),
        "timestamp_utc": utc_now(),
    }
