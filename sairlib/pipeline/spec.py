"""Backends from a plain, picklable description, so worker processes can build their own.

    spec = BackendSpec(direct="policy", redraw="world", policy_dir="outputs/run/00_world/base", capacity=2)
    spec = BackendSpec(..., analyzer=read_yaml("params/backends/judge_vllm.yml")["analyzer"])  # a served VLM judge
    backends = spec.build()           # in this process, or in each worker (spawned, own GPU context)

Notebook 01's ``pipeline`` parameters are checked (and missing keys filled) by :func:`check_pipeline`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from ..params import check_section
from .escalation import Backends, EscalationConfig
from .generators import make_generator

# the KV caches of sairlib.generation.generate (listed here so that this module does not import torch;
# tests/test_pipeline.py checks that the two agree)
CACHES: tuple[str, ...] = ("auto", "dynamic", "growing", "static", "compiled")
GENERATORS: tuple[str, ...] = ("policy", "world")
PIPELINE_KEYS: dict[str, type | tuple] = {
    "direct": GENERATORS, "redraw": GENERATORS, "capacity": int, "temperature": float, "concurrency": int,
    "max_batch": int, "max_wait_s": float, "workers": int, "analyzer_workers": int, "cache": CACHES}
DEFAULT_PIPELINE: dict[str, Any] = {
    "direct": "policy", "redraw": "policy", "capacity": 0, "temperature": 1.0, "concurrency": 512, "max_batch": 256,
    "max_wait_s": 0.0, "workers": 1, "analyzer_workers": 0, "cache": "auto"}


def check_pipeline(p: Mapping[str, Any], where: str = "pipeline") -> dict[str, Any]:
    """Validate notebook 01's ``pipeline`` parameters (an unknown key, a wrong type or value names
    ``pipeline.<key>``); missing keys get their defaults (``cache``: ``"auto"``: growing on the CPU,
    dynamic elsewhere).

    ``cache`` is the policy generator's decoding (see :func:`sairlib.generation.generate`):
    ``"compiled"`` pads each batch to a row bucket and replays compiled steps (CUDA graphs on CUDA).
    """
    out = {**DEFAULT_PIPELINE, **check_section(p, PIPELINE_KEYS, where)}
    for k in ("concurrency", "max_batch", "workers"):
        if out[k] < 1:
            raise ValueError(f"{where}.{k}: must be at least 1, got {out[k]!r}")
    return out


@dataclass(frozen=True)
class BackendSpec:
    direct: str = "policy"
    redraw: str = "policy"
    policy_dir: str | None = None
    capacity: int | None = None
    temperature: float = 1.0
    max_batch: int = 256
    max_wait_s: float = 0.0
    analyzer_workers: int = 0
    thresholds: dict[str, int] | None = None
    escalation: dict[str, int] = field(default_factory=dict)
    analyzer: dict[str, Any] | None = None  # a judge for sairlib.services.make_analyzer; None: the world's
    image_size: int = 64
    grid: int = 4
    cache: str = "auto"  # the policy generator's decoding: "auto", "dynamic", "growing", "static" or "compiled"

    def __post_init__(self) -> None:
        check_section({"cache": self.cache}, {"cache": CACHES}, "pipeline")

    def build(self) -> Backends:
        from ..world import WorldAnalyzer

        policy = None
        if "policy" in (self.direct, self.redraw):
            if not self.policy_dir:
                raise ValueError("policy_dir: a 'policy' generator needs the saved base model")
            from ..policy import Policy, best_device

            policy = Policy.load(self.policy_dir, device=best_device())
        gen = lambda name: make_generator(name, policy, capacity=self.capacity, temperature=self.temperature,
                                          batch_size=self.max_batch, image_size=self.image_size, grid=self.grid,
                                          cache=self.cache)
        if self.analyzer is not None:
            from ..services import make_analyzer

            analyzer = make_analyzer(dict(self.analyzer))
        elif self.thresholds:
            analyzer = WorldAnalyzer(thresholds=dict(self.thresholds), grid=self.grid)
        else:
            analyzer = WorldAnalyzer(grid=self.grid)
        return Backends(analyzer, direct=gen(self.direct), redraw=gen(self.redraw),
                        config=EscalationConfig(**self.escalation), max_batch=self.max_batch,
                        max_wait_s=self.max_wait_s, analyzer_workers=self.analyzer_workers)

    def describe(self) -> dict[str, Any]:
        return asdict(self)
