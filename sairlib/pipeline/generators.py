"""Generators the escalation pipeline draws with: the policy itself, or the world renderer.

Every generator takes a batch of :class:`DrawRequest` and returns one image each, and must give
the same image for the same request whatever else is in the batch (each request carries its own
``seed``): that is what makes the pipeline resumable with identical results.

- :class:`PolicyGenerator`: the base unified model (constrained decoding, one image per request,
  per-request seeds through ``generate(..., row_seeds=...)``).
- :class:`WorldGenerator`: the world's renderer executing the request exactly, an ideal external
  generator (the paper redrew with a stronger model). ``capacity`` optionally limits how many
  operations (or, for text-to-image, objects) one request may carry before the surplus is
  dropped and, per dropped unit, one drawn object is spoiled (recoloured): a generator that breaks
  down on complex requests while single edits succeed. With it a CPU-sized run shows all three
  modes without a trained model.

    gen = WorldGenerator(capacity=3)
    [img] = gen.draw([DrawRequest(task, "make the red circle blue .", [canvas], kind="fix", seed=7)])
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np

from ..interfaces import X2IInput
from ..world.grammar import GrammarError, OpsRequest, TextToImage, parse_op, parse_request
from ..world.ops import Draw, OpError, apply
from ..world.palette import COLOURS
from ..world.perceive import perceive
from ..world.render import render
from ..world.scene import Obj, Scene, SceneError
from ..world.tasks import canonical_layout, start_scene

DRAW_KINDS: tuple[str, ...] = ("direct", "fix", "step")


@dataclass(frozen=True)
class DrawRequest:
    """One image to draw: the instruction and the images shown with it, for a task.

    ``kind``: ``direct`` (the original request and its input images), ``fix`` (a reflection's fix
    applied to the previous image) or ``step`` (one plan step applied to the current canvas).
    ``canvas`` is the image the instruction edits (None for a fresh canvas). ``seed`` decides any
    sampling, per request.
    """

    task: X2IInput
    instruction: str
    images: tuple[np.ndarray, ...] = ()
    kind: str = "direct"
    canvas: np.ndarray | None = field(default=None, repr=False)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in DRAW_KINDS:
            raise ValueError(f"kind: must be one of {DRAW_KINDS}, got {self.kind!r}")


class BatchGenerator(Protocol):
    name: str

    def draw(self, requests: Sequence[DrawRequest]) -> list[np.ndarray]: ...


class PolicyGenerator:
    """The unified model draws: prompt = instruction + shown images, one constrained image out.

    A completion without an image (the model ended at once) counts as a blank canvas, which the
    Analyzer then scores as what it is. ``cache="compiled"`` decodes with compiled fixed-shape steps
    (each batch padded to a row bucket; the same images as ``"dynamic"`` up to float rounding).
    """

    name = "policy"

    def __init__(self, policy: Any, temperature: float = 1.0, top_k: int = 0, batch_size: int = 256,
                 cache: str = "auto") -> None:
        from ..generation import check_cache

        self.policy, self.temperature, self.top_k = policy, float(temperature), int(top_k)
        self.batch_size, self.cache = int(batch_size), check_cache(cache)

    def draw(self, requests: Sequence[DrawRequest]) -> list[np.ndarray]:
        from ..generation import generate

        if not requests:
            return []
        L, enc = self.policy.layout, self.policy.codec.encode
        prompts = [L.prompt(r.instruction, [enc(im) for im in r.images]) for r in requests]
        gens = generate(self.policy.model, L, prompts, L.tokens_per_image + 3, temperature=self.temperature,
                        top_k=self.top_k, batch_size=self.batch_size, codec=self.policy.codec, cache=self.cache,
                        row_seeds=[r.seed for r in requests])
        size = self.policy.codec.image_size
        blank = np.full((size[0], size[1], 3), 255, dtype=np.uint8)
        return [g.images[0] if g.images else blank for g in gens]


class WorldGenerator:
    """The world renderer as a generator: parses the request and executes it on what it sees.

    It perceives its input images (never the task's hidden target), applies the request's
    operations in order (an operation that cannot apply is skipped) or lays out a text-to-image
    request in reading order, and renders the result. With ``capacity`` set, a request carrying
    more than ``capacity`` units (operations; objects and relations for text-to-image) keeps a
    random ``capacity`` of them (seeded by the request), drops the rest, and for each dropped
    unit recolours one drawn object at random: overload spoils the draft, as it does for real
    one-pass generators.
    """

    name = "world"

    def __init__(self, capacity: int | None = None, image_size: int = 64, grid: int = 4) -> None:
        if capacity is not None and (not isinstance(capacity, int) or capacity < 1):
            raise ValueError(f"capacity: must be a positive integer or None, got {capacity!r}")
        self.capacity, self.image_size, self.grid = capacity, image_size, grid
        if capacity is not None:
            self.name = f"world(capacity={capacity})"

    def draw(self, requests: Sequence[DrawRequest]) -> list[np.ndarray]:
        return [self._draw_one(r) for r in requests]

    def _keep(self, n: int, seed: int) -> list[int]:
        if self.capacity is None or n <= self.capacity:
            return list(range(n))
        rng = np.random.default_rng(seed)
        return sorted(int(i) for i in rng.choice(n, self.capacity, replace=False))

    def _draw_one(self, r: DrawRequest) -> np.ndarray:
        try:
            scene = self._scene(_read(r.instruction), r)
        except (GrammarError, SceneError):
            scene = Scene((), self.grid)  # cannot read or draw it: draws nothing
        return render(scene, self.image_size)

    def _spoil(self, scene: Scene, n: int, seed: int) -> Scene:
        rng = np.random.default_rng(seed + 1)
        objs = list(scene.objects)
        for _ in range(n if objs else 0):
            i = int(rng.integers(len(objs)))
            o = objs[i]
            objs[i] = Obj(o.shape, str(rng.choice([c for c in COLOURS if c != o.colour])), o.size, o.row, o.col,
                          o.inner)
        return Scene(tuple(objs), scene.grid)

    def _scene(self, req: TextToImage | OpsRequest, r: DrawRequest) -> Scene:
        inputs = [perceive(im, self.grid).scene() for im in r.task.images]
        if isinstance(req, TextToImage):
            return self._layout(req, r.seed)
        if r.kind == "direct":
            scene = _start(r.task, inputs, self.grid)
        elif r.canvas is not None and not (req.ops and isinstance(req.ops[0], Draw)):
            scene = perceive(r.canvas, self.grid).scene()
        else:
            scene = Scene((), self.grid)
        keep = self._keep(len(req.ops), r.seed)
        for i in keep:
            try:
                scene = apply(scene, req.ops[i], inputs)
            except OpError:
                continue
        return self._spoil(scene, len(req.ops) - len(keep), r.seed)

    def _layout(self, req: TextToImage, seed: int) -> Scene:
        rng = np.random.default_rng(seed)
        objs: list[Obj] = []
        for d, n in req.items:
            for _ in range(n):
                colour = d.colour or str(rng.choice(list(COLOURS)))
                objs.append(Obj(d.shape or "circle", colour, d.size or "big", 0, 0, d.inner))
        units = len(objs) + len(req.relations)
        keep = set(self._keep(units, seed))
        kept = [o for i, o in enumerate(objs) if i in keep]
        rels = tuple(rel for j, rel in enumerate(req.relations) if len(objs) + j in keep)
        if len(kept) < len(objs):
            rels = ()  # relations name objects that may be gone
        placed = canonical_layout(kept, rels, self.grid) if len(kept) <= self.grid ** 2 else None
        if placed is None:
            cells = [(i // self.grid, i % self.grid) for i in range(min(len(kept), self.grid ** 2))]
            placed = [o.moved(*c) for o, c in zip(kept, cells)]
        return self._spoil(Scene(tuple(placed), self.grid), units - len(keep), seed)


def _read(text: str) -> TextToImage | OpsRequest:
    """A whole request, or one bare operation (a plan step is said without the closing period)."""
    try:
        return parse_request(text)
    except GrammarError:
        return OpsRequest((parse_op(text),))


def _start(task: X2IInput, inputs: Sequence[Scene], grid: int) -> Scene:
    """The canvas a request starts from, read from the perceived input images."""
    if not inputs:
        return Scene((), grid)
    return start_scene(X2IInput(task.id, task.instruction, (), {**task.meta, "inputs": [s.to_dict() for s in inputs]},
                                task.target))


def make_generator(name: str, policy: Any = None, *, capacity: int | None = None, temperature: float = 1.0,
                   batch_size: int = 256, image_size: int = 64, grid: int = 4,
                   cache: str = "auto") -> BatchGenerator:
    """``"policy"`` (needs ``policy``; ``cache`` is its decoding, see ``generate``) or ``"world"``."""
    if name == "policy":
        if policy is None:
            raise ValueError("generator: 'policy' needs the base model")
        return PolicyGenerator(policy, temperature=temperature, batch_size=batch_size, cache=cache)
    if name == "world":
        return WorldGenerator(capacity=capacity, image_size=image_size, grid=grid)
    raise ValueError(f"generator: unknown {name!r} (known: policy, world)")
