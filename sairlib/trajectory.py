"""Trajectories: one request and the interleaved answer that solved it, in one of the three modes.

A :class:`Trajectory` is model-agnostic: its images are RGB ``uint8`` arrays (a policy encodes
them with its own codec when masking), its texts plain strings. It serialises two ways:

- an HF ``datasets.Dataset`` with ``Image`` features (``to_dataset`` / ``from_dataset``;
  ``save_to_disk``, ``load_from_disk`` and ``push_to_hub`` then work as usual);
- JSON Lines + PNG files (``save_jsonl`` / ``load_jsonl``), one line per trajectory.

    from sairlib.trajectory import Trajectory, TrajectorySegment, to_dataset, from_dataset
    t = Trajectory(id="t2i-1", instruction="draw a red circle .", mode="direct",
                   segments=[TrajectorySegment("G", image=img), TrajectorySegment("E", text="...")])
    ds = to_dataset([t]); ds.save_to_disk("outputs/run/01_pipeline/dataset")
    back = from_dataset(datasets.load_from_disk("outputs/run/01_pipeline/dataset"))

Discarded samples are trajectories too (``status`` ``"discarded"`` or ``"error"``, with
``discard_reason`` / ``errors``): the pipeline records every decision, kept or not.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .interfaces import DIMENSIONS
from .modes import infer_mode, kinds_string

STATUSES: tuple[str, ...] = ("kept", "discarded", "error")
SEGMENT_KINDS: tuple[str, ...] = ("G", "E", "R", "S")


def _check_image(im: Any, where: str) -> np.ndarray:
    arr = np.asarray(im)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"{where}: an image must be an HxWx3 uint8 array, got {arr.dtype} {arr.shape}")
    return arr


@dataclass(frozen=True)
class TrajectorySegment:
    """One segment of an answer: an image (``kind == "G"``) or a text (E, R or S)."""

    kind: str
    text: str | None = None
    image: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in SEGMENT_KINDS:
            raise ValueError(f"kind: must be one of {SEGMENT_KINDS}, got {self.kind!r}")
        if self.kind == "G":
            if self.image is None:
                raise ValueError("image: a G segment needs its image")
            object.__setattr__(self, "image", _check_image(self.image, "image"))
        elif not isinstance(self.text, str):
            raise ValueError(f"text: a {self.kind} segment needs a text")


@dataclass
class Trajectory:
    """A request, its answer segments in order, the outcome, and how the pipeline got there.

    ``meta`` holds family, category, group, complexity and split (and the world's scene dicts);
    ``scores`` the Analyzer's 1-5 scores of the final image against the original request;
    ``rounds`` the reflection rounds kept (0 for Direct and Multi-step); ``decisions`` one dict per
    pipeline decision (``stage``, ``decision``, ``why``); ``provenance`` backends, thresholds, seed.
    """

    id: str
    instruction: str
    segments: list[TrajectorySegment] = field(default_factory=list)
    mode: str | None = None
    input_images: list[np.ndarray] = field(default_factory=list, repr=False)
    meta: dict[str, Any] = field(default_factory=dict)
    status: str = "kept"
    scores: dict[str, int] = field(default_factory=dict)
    passed: bool = False
    rounds: int = 0
    decisions: list[dict[str, Any]] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    discard_reason: str | None = None
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status: must be one of {STATUSES}, got {self.status!r}")
        self.input_images = [_check_image(im, f"input_images[{i}]") for i, im in enumerate(self.input_images)]
        for i, s in enumerate(self.segments):
            if not isinstance(s, TrajectorySegment):
                raise ValueError(f"segments[{i}]: must be a TrajectorySegment, got {type(s).__name__}")
        for d, v in self.scores.items():
            if d not in DIMENSIONS or not isinstance(v, int) or not 1 <= v <= 5:
                raise ValueError(f"scores.{d}: must be a known dimension with an integer score 1..5, got {v!r}")
        if self.status == "kept":
            got = infer_mode(self.kinds, max_rounds=max(3, self.rounds)) if self.segments else None
            if got is None or got != self.mode:
                raise ValueError(f"trajectory {self.id}: segments {self.kinds!r} are not a {self.mode!r} trajectory")

    # ------------------------------------------------------------ views
    @property
    def kinds(self) -> str:
        return kinds_string(s.kind for s in self.segments)

    @property
    def images(self) -> list[np.ndarray]:
        return [s.image for s in self.segments if s.kind == "G"]

    @property
    def n_images(self) -> int:
        return sum(1 for s in self.segments if s.kind == "G")

    @property
    def final_image(self) -> np.ndarray | None:
        ims = self.images
        return ims[-1] if ims else None

    @property
    def complexity(self) -> int:
        return int(self.meta.get("complexity", 0))

    # ------------------------------------------------------------ records
    def to_record(self) -> dict[str, Any]:
        """A flat dict: images as arrays, structured fields as JSON strings (one dataset row)."""
        return {
            "id": self.id, "instruction": self.instruction, "mode": self.mode or "", "status": self.status,
            "family": str(self.meta.get("family", "")), "category": str(self.meta.get("category", "")),
            "group": str(self.meta.get("group", "")), "complexity": self.complexity,
            "passed": bool(self.passed), "rounds": int(self.rounds), "n_images": self.n_images,
            **{f"score_{d}": int(self.scores.get(d, 0)) for d in DIMENSIONS},
            "segment_kinds": [s.kind for s in self.segments],
            "segment_texts": [s.text if s.kind != "G" else "" for s in self.segments],
            "images": self.images, "input_images": list(self.input_images),
            "decisions": json.dumps(self.decisions), "provenance": json.dumps(self.provenance, sort_keys=True),
            "meta": json.dumps(self.meta, sort_keys=True), "discard_reason": self.discard_reason or "",
            "errors": json.dumps(self.errors),
        }

    @staticmethod
    def from_record(r: dict[str, Any]) -> "Trajectory":
        where = f"record {r.get('id', '?')}"
        missing = [k for k in ("id", "instruction", "segment_kinds", "segment_texts", "images") if k not in r]
        if missing:
            raise ValueError(f"{where}: missing field {missing[0]!r}")
        images = iter([np.asarray(im.convert("RGB") if hasattr(im, "convert") else im, dtype=np.uint8)
                       for im in r["images"]])
        segs = []
        for i, (k, text) in enumerate(zip(r["segment_kinds"], r["segment_texts"])):
            if k == "G":
                try:
                    segs.append(TrajectorySegment("G", image=next(images)))
                except StopIteration:
                    raise ValueError(f"{where}: segment_kinds has more G than images") from None
            else:
                segs.append(TrajectorySegment(k, text=text))
        scores = {d: int(r[f"score_{d}"]) for d in DIMENSIONS if int(r.get(f"score_{d}", 0) or 0) > 0}
        inputs = [np.asarray(im.convert("RGB") if hasattr(im, "convert") else im, dtype=np.uint8)
                  for im in r.get("input_images") or []]
        return Trajectory(
            id=r["id"], instruction=r["instruction"], segments=segs, mode=r.get("mode") or None,
            input_images=inputs, meta=json.loads(r.get("meta") or "{}"), status=r.get("status", "kept"),
            scores=scores, passed=bool(r.get("passed", False)), rounds=int(r.get("rounds", 0)),
            decisions=json.loads(r.get("decisions") or "[]"), provenance=json.loads(r.get("provenance") or "{}"),
            discard_reason=r.get("discard_reason") or None, errors=json.loads(r.get("errors") or "[]"))


# ---------------------------------------------------------------- HF datasets
def dataset_features() -> Any:
    """The ``datasets.Features`` of a trajectory dataset (images as ``Image`` features)."""
    from datasets import Features, Image, List, Value

    f: dict[str, Any] = {
        "id": Value("string"), "instruction": Value("string"), "mode": Value("string"), "status": Value("string"),
        "family": Value("string"), "category": Value("string"), "group": Value("string"),
        "complexity": Value("int32"), "passed": Value("bool"), "rounds": Value("int32"), "n_images": Value("int32"),
        **{f"score_{d}": Value("int32") for d in DIMENSIONS},
        "segment_kinds": List(Value("string")), "segment_texts": List(Value("string")),
        "images": List(Image()), "input_images": List(Image()),
        "decisions": Value("string"), "provenance": Value("string"), "meta": Value("string"),
        "discard_reason": Value("string"), "errors": Value("string"),
    }
    return Features(f)


def to_dataset(trajectories: Iterable[Trajectory]) -> Any:
    """An HF ``Dataset`` of trajectories (images become PNG-encoded ``Image`` features)."""
    rows = []
    for t in trajectories:
        r = t.to_record()
        r["images"] = [_image_cell(png_bytes(im)) for im in r["images"]]
        r["input_images"] = [_image_cell(png_bytes(im)) for im in r["input_images"]]
        rows.append(r)
    return _dataset(rows)


def records_to_dataset(records: Iterable[dict[str, Any]], directory: str | Path) -> Any:
    """The :func:`to_dataset` of stored JSON records (:func:`trajectory_to_json`), built from the PNG
    files under ``directory`` as they are: nothing is decoded or encoded again."""
    d, rows = Path(directory), []
    for rec in records:
        r = dict(rec)
        r["images"] = [_image_cell((d / q).read_bytes()) for q in rec.get("images", [])]
        r["input_images"] = [_image_cell((d / q).read_bytes()) for q in rec.get("input_images", [])]
        rows.append(r)
    return _dataset(rows)


def _image_cell(png: bytes) -> dict[str, Any]:
    return {"bytes": png, "path": None}  # an ``Image`` feature's encoded form


def _dataset(rows: list[dict[str, Any]]) -> Any:
    from datasets import Dataset

    if not rows:
        return Dataset.from_dict({k: [] for k in dataset_features()}, features=dataset_features())
    return Dataset.from_list(rows, features=dataset_features())


def from_dataset(ds: Any) -> list[Trajectory]:
    """Trajectories back from a dataset made by :func:`to_dataset` (or loaded from disk / the hub)."""
    return [Trajectory.from_record(r) for r in ds]


# ---------------------------------------------------------------- JSON Lines + PNG
def png_bytes(im: np.ndarray) -> bytes:
    """An RGB uint8 image as PNG file bytes."""
    import io

    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(im).save(buf, format="PNG")
    return buf.getvalue()


def _png(path: Path, im: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(im))


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def trajectory_to_json(t: Trajectory, directory: str | Path) -> dict[str, Any]:
    """The JSON line of ``t``; its images are written as PNGs under ``directory/images/<id>/``."""
    d = Path(directory)
    r = t.to_record()
    sub = Path("images") / _safe(t.id)
    paths = []
    for i, im in enumerate(r["images"]):
        p = sub / f"g{i}.png"
        _png(d / p, im)
        paths.append(str(p))
    inputs = []
    for i, im in enumerate(r["input_images"]):
        p = sub / f"input{i}.png"
        _png(d / p, im)
        inputs.append(str(p))
    r["images"], r["input_images"] = paths, inputs
    return r


def save_jsonl(trajectories: Iterable[Trajectory], directory: str | Path, name: str = "trajectories.jsonl") -> Path:
    """Write ``directory/name`` (one JSON object per line) and the PNGs it points to."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / (name + ".tmp")
    with tmp.open("w") as f:
        for t in trajectories:
            f.write(json.dumps(trajectory_to_json(t, d)) + "\n")
    tmp.replace(d / name)
    return d / name


def trajectory_from_json(r: dict[str, Any], directory: str | Path) -> Trajectory:
    from PIL import Image as PILImage

    d = Path(directory)
    load = lambda p: np.asarray(PILImage.open(d / p).convert("RGB"), dtype=np.uint8)
    r = dict(r)
    r["images"] = [load(p) for p in r.get("images", [])]
    r["input_images"] = [load(p) for p in r.get("input_images", [])]
    return Trajectory.from_record(r)


def load_jsonl(directory: str | Path, name: str = "trajectories.jsonl") -> list[Trajectory]:
    """Read what :func:`save_jsonl` wrote; a bad line names the file and line number."""
    path = Path(directory) / name
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(trajectory_from_json(json.loads(line), directory))
        except (ValueError, KeyError, OSError) as e:
            raise ValueError(f"{path}:{n}: {e}") from e
    return out


def select(trajectories: Sequence[Trajectory], *, modes: Sequence[str] | None = None,
           status: str | None = "kept") -> list[Trajectory]:
    """Trajectories of the given status and modes (None: any)."""
    return [t for t in trajectories if (status is None or t.status == status)
            and (modes is None or t.mode in modes)]
