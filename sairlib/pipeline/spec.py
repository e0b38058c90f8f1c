"""Backends from a plain, picklable description, so worker processes can build their own.

    spec = BackendSpec(direct="policy", redraw="world", policy_dir="outputs/run/00_world/base", capacity=2)
    spec = BackendSpec(..., analyzer=read_yaml("params/backends/judge_vllm.yml")["analyzer"])  # a served VLM judge
    backends = spec.build()           # in this process, or in each worker (spawned, own GPU context)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .escalation import Backends, EscalationConfig
from .generators import make_generator


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

    def build(self) -> Backends:
        from ..world import WorldAnalyzer

        policy = None
        if "policy" in (self.direct, self.redraw):
            if not self.policy_dir:
                raise ValueError("policy_dir: a 'policy' generator needs the saved base model")
            from ..policy import Policy, best_device

            policy = Policy.load(self.policy_dir, device=best_device())
        gen = lambda name: make_generator(name, policy, capacity=self.capacity, temperature=self.temperature,
                                          batch_size=self.max_batch, image_size=self.image_size, grid=self.grid)
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
