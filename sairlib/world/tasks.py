"""X2I task generators for the shapes world, in three families mirroring the paper's benchmarks.

- ``t2i``     text-to-image, GenEval's six tags (single_object, two_object, counting, colors,
              position, color_attr) plus ``compositional`` prompts of 2..max_objects objects
              with relations, where one-pass generation breaks;
- ``edit``    editing one input image, KRIS-Bench's groups: factual (add, remove, recolour,
              resize, count, move), conceptual (fact, mix), procedural (multi, rule);
- ``compose`` composing subjects from several input images, OmniContext's SINGLE / MULTIPLE /
              SCENE x character / object.

Every task is built from a scene (the witness), so its hidden spec is exactly checkable, and is
verified on construction: the witness scores 5 on every dimension. Train and eval tasks are
disjoint by construction: a task's split is a hash of its content.

    >>> from sairlib.world.tasks import make_tasks
    >>> ts = make_tasks(5, split="train", seed=0, family="t2i")
    >>> len(ts), ts[0].meta["split"]
    (5, 'train')
"""
from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np

from ..interfaces import X2IInput
from . import facts
from .grammar import OpsRequest, TextToImage, say_request
from .ops import (Add, Cell, Colour, FactColour, ImageRef, MixColour, Move, Op, OpError, Place, Recolour,
                  RelTo, Remove, Resize, SetCount, apply, constraints)
from .palette import COLOURS, DIRECTIONS, RELATIONS, SHAPES, SIZES
from .render import render
from .scene import CHARACTER_BODIES, Obj, Part, Scene
from .spec import Count, Desc, Rel, TaskSpec, holds, satisfied, unique_desc

FAMILIES: dict[str, tuple[str, ...]] = {
    "t2i": ("single_object", "two_object", "counting", "colors", "position", "color_attr", "compositional"),
    "edit": ("add", "remove", "recolour", "resize", "count", "move", "fact", "mix", "multi", "rule"),
    "compose": ("SINGLE_character", "SINGLE_object", "MULTIPLE_character", "MULTIPLE_object",
                "SCENE_character", "SCENE_object"),
}
KRIS_GROUP: dict[str, str] = {"add": "factual", "remove": "factual", "recolour": "factual", "resize": "factual",
                              "count": "factual", "move": "factual", "fact": "conceptual", "mix": "conceptual",
                              "multi": "procedural", "rule": "procedural"}
SPLITS = ("train", "eval")


class TaskError(ValueError):
    """Bad arguments to a task generator (the message names the argument)."""


class _Retry(Exception):
    """This random draw did not give a valid task; draw again."""


@dataclass(frozen=True)
class WorldConfig:
    grid: int = 4
    image_size: int = 64
    max_objects: int = 8
    eval_fraction: float = 0.2


def split_of(key: str, eval_fraction: float) -> str:
    h = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "eval" if h < eval_fraction else "train"


# ------------------------------------------------------------------ random pieces
_COLOURS, _SIZES = tuple(COLOURS), tuple(SIZES)


def _pick(rng: np.random.Generator, items: Sequence[str]) -> str:
    return items[int(rng.integers(len(items)))]


def _rand_obj(rng: np.random.Generator, cell: tuple[int, int], size: str | None = None,
              character: bool = False) -> Obj:
    colour = _pick(rng, _COLOURS)
    if character:
        inner_colour = _pick(rng, [c for c in _COLOURS if c != colour])
        return Obj(_pick(rng, CHARACTER_BODIES), colour, "big", *cell, Part(_pick(rng, SHAPES), inner_colour))
    return Obj(_pick(rng, SHAPES), colour, size or _pick(rng, _SIZES), *cell)


def _rand_cells(rng: np.random.Generator, grid: int, n: int) -> list[tuple[int, int]]:
    idx = rng.choice(grid * grid, size=n, replace=False)
    return [(int(i) // grid, int(i) % grid) for i in idx]


def _distinct_objs(rng: np.random.Generator, grid: int, n: int, character_p: float = 0.0) -> list[Obj]:
    """n objects with pairwise different looks, in random cells."""
    out: list[Obj] = []
    for cell in _rand_cells(rng, grid, n):
        for _ in range(50):
            o = _rand_obj(rng, cell, character=rng.random() < character_p)
            if all(o.looks() != p.looks() for p in out):
                out.append(o)
                break
        else:
            raise _Retry
    return out


def short_desc(o: Obj, scene: Scene) -> Desc:
    """The shortest description that picks out ``o`` alone in ``scene``; requests never name positions."""
    d = unique_desc(o, scene, locate=False)
    if d is None:
        raise _Retry
    return d


# ------------------------------------------------------------------ text-to-image
def _t2i(category: str, rng: np.random.Generator, cfg: WorldConfig):
    g = cfg.grid
    if category == "single_object":
        o = _rand_obj(rng, _rand_cells(rng, g, 1)[0])
        return TextToImage(((Desc(o.shape), 1),)), [o], 1
    if category == "colors":
        o = _rand_obj(rng, _rand_cells(rng, g, 1)[0])
        return TextToImage(((Desc(o.shape, o.colour), 1),)), [o], 1
    if category in ("two_object", "color_attr", "position"):
        a, b = _distinct_objs(rng, g, 2)
        if a.shape == b.shape or (category != "two_object" and a.colour == b.colour):
            raise _Retry
        if category == "two_object":
            da, db = Desc(a.shape), Desc(b.shape)
        else:
            da, db = Desc(a.shape, a.colour), Desc(b.shape, b.colour)
        rels: tuple = ()
        if category == "position":
            true = [r for r in RELATIONS if holds(r, a.cell, b.cell)]
            if not true:
                raise _Retry
            rels = ((da, str(rng.choice(true)), db),)
        return TextToImage(((da, 1), (db, 1)), rels), [a, b], 2 + len(rels)
    if category == "counting":
        n = int(rng.integers(2, 5))
        shape, colour = str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS)))
        objs = [Obj(shape, colour, str(rng.choice(list(SIZES))), *c) for c in _rand_cells(rng, g, n)]
        return TextToImage(((Desc(shape), n),)), objs, n
    if category == "compositional":
        k = int(rng.integers(2, cfg.max_objects + 1))
        objs = _distinct_objs(rng, g, k)
        descs = [Desc(o.shape, o.colour, o.size) for o in objs]
        n_rel = int(rng.integers(1, k))  # 1 .. k-1 relations
        rels = []
        pairs = [(i, j) for i in range(k) for j in range(k) if i != j]
        for pi in rng.permutation(len(pairs)):
            i, j = pairs[pi]
            true = [r for r in RELATIONS if holds(r, objs[i].cell, objs[j].cell)]
            if true and not any({i, j} == {a, b} for a, b, _ in rels):
                rels.append((i, j, str(rng.choice(true))))
            if len(rels) == n_rel:
                break
        req = TextToImage(tuple((d, 1) for d in descs), tuple((descs[i], r, descs[j]) for i, j, r in rels))
        return req, objs, k + len(rels)
    raise TaskError(f"category: unknown text-to-image category {category!r}")


def canonical_layout(objs: Sequence[Obj], relations: Sequence[tuple[Desc, str, Desc]], grid: int,
                     budget: int = 2000) -> list[Obj] | None:
    """A placement determined by the request alone: reading order, as early as the relations allow.

    Relations name single objects and are axis-separable (left/right order columns, above/below
    order rows). Objects are placed in the order the request mentions them, each in the first
    free cell (row-major) inside the bounds its relations leave: at least one past every object
    that must precede it (longest-path bounds), before every placed object it must precede.
    If that greedy pass gets stuck, a backtracking search of at most ``budget`` cells decides;
    ``None`` if both fail. Any placement satisfying the request passes; this one is what a model
    learns from, so that text-to-image targets are a function of the request.
    """
    index: dict[Desc, list[int]] = {}
    for i, o in enumerate(objs):
        for d in {Desc(o.shape), Desc(o.shape, o.colour), Desc(o.shape, o.colour, o.size), Desc.of(o)}:
            index.setdefault(d, []).append(i)
    # before[axis] = list of (i, j): coordinate of i < coordinate of j on that axis (0 rows, 1 cols)
    before: list[list[tuple[int, int]]] = [[], []]
    for a, rel, b in relations:
        (ia,), (ib,) = index[a], index[b]
        if rel in ("left", "above"):
            before[rel == "left"].append((ia, ib))
        else:
            before[rel == "right"].append((ib, ia))
    n = len(objs)

    def lower(axis: int) -> list[int]:
        lo = [0] * n
        for _ in range(n):
            for i, j in before[axis]:
                lo[j] = max(lo[j], lo[i] + 1)
        return lo

    lo = [lower(0), lower(1)]
    cells: list[tuple[int, int] | None] = [None] * n
    for i in range(n):
        bounds = []
        for axis in (0, 1):
            low = max([lo[axis][i]] + [cells[a][axis] + 1 for a, b in before[axis] if b == i and cells[a]])
            high = min([grid - 1] + [cells[b][axis] - 1 for a, b in before[axis] if a == i and cells[b]])
            bounds.append((low, high))
        free = [(r, c) for r in range(bounds[0][0], bounds[0][1] + 1) for c in range(bounds[1][0], bounds[1][1] + 1)
                if (r, c) not in cells]
        if not free:
            return _search_layout(objs, before, grid, budget)
        cells[i] = free[0]
        for axis in (0, 1):  # successors start after this object
            for a, b in before[axis]:
                if a == i:
                    lo[axis][b] = max(lo[axis][b], cells[i][axis] + 1)
    return [o.moved(*c) for o, c in zip(objs, cells)]


def _search_layout(objs: Sequence[Obj], before: list[list[tuple[int, int]]], grid: int,
                   budget: int) -> list[Obj] | None:
    """Backtracking in reading order, at most ``budget`` cells visited."""
    cells = [(r, c) for r in range(grid) for c in range(grid)]
    placed: list[tuple[int, int]] = []
    visits = 0

    def fits(i: int, cell: tuple[int, int]) -> bool:
        for axis in (0, 1):
            for a, b in before[axis]:
                if a == i and b < i and not cell[axis] < placed[b][axis]:
                    return False
                if b == i and a < i and not placed[a][axis] < cell[axis]:
                    return False
        return True

    def place(i: int) -> bool:
        nonlocal visits
        if i == len(objs):
            return True
        for cell in cells:
            if cell in placed:
                continue
            visits += 1
            if visits > budget:
                return False
            if fits(i, cell):
                placed.append(cell)
                if place(i + 1):
                    return True
                placed.pop()
        return False

    return [o.moved(*c) for o, c in zip(objs, placed)] if place(0) else None


def _t2i_task(category: str, rng: np.random.Generator, cfg: WorldConfig):
    req, objs, complexity = _t2i(category, rng, cfg)
    cons: list = [Count(d, n) for d, n in req.items]
    cons += [Rel(a, r, b) for a, r, b in req.relations]
    order = [o for d, _ in req.items for o in objs if d.matches(o)]  # mention order
    order = list(dict.fromkeys(order))
    witness = canonical_layout(order, req.relations, cfg.grid) or objs  # the drawn placement if the search gives up
    return req, (), TaskSpec(tuple(cons), (), Scene(tuple(witness), cfg.grid)), complexity, {}


# ------------------------------------------------------------------ editing
def _edit_op(category: str, scene: Scene, rng: np.random.Generator) -> tuple[Op, int]:
    objs = list(scene.objects)
    if not objs or not scene.free_cells():
        raise _Retry  # every edit needs an object to act on and room to act
    o = objs[int(rng.integers(len(objs)))]
    if category == "add":
        new = _rand_obj(rng, (0, 0))
        if any(p.looks() == new.looks() for p in objs):
            raise _Retry
        d = Desc(new.shape, new.colour, new.size)
        if rng.random() < 0.5:
            free = scene.free_cells()
            cell = free[int(rng.integers(len(free)))]
            return Add(d, Cell(*cell)), 1
        return Add(d, RelTo(str(rng.choice(RELATIONS)), short_desc(o, scene))), 1
    if category == "remove":
        return Remove(short_desc(o, scene)), 1
    if category == "recolour":
        colour = str(rng.choice([c for c in COLOURS if c != o.colour]))
        return Recolour(short_desc(o, scene), Colour(colour)), 1
    if category == "resize":
        if o.is_character:
            raise _Retry
        return Resize(short_desc(o, scene), "small" if o.size == "big" else "big"), 1
    if category == "move":
        if rng.random() < 0.5:
            return Move(short_desc(o, scene), str(rng.choice(list(DIRECTIONS)))), 1
        free = scene.free_cells()
        return Move(short_desc(o, scene), Cell(*free[int(rng.integers(len(free)))])), 1
    if category == "count":
        d = Desc(o.shape, o.colour)
        have = sum(d.matches(p) for p in objs)
        n = int(rng.choice([m for m in range(0, 5) if m != have]))
        return SetCount(d, n), abs(n - have)
    if category == "fact":
        thing = str(rng.choice(sorted(facts.THINGS)))
        if facts.colour_of(thing) == o.colour:
            raise _Retry
        return Recolour(short_desc(o, scene), FactColour(thing)), 1
    if category == "mix":
        a, b = sorted(next(iter([tuple(k) for k in [list(facts.MIXES)[int(rng.integers(len(facts.MIXES)))]]])))
        if facts.mix(a, b) == o.colour:
            raise _Retry
        return Recolour(short_desc(o, scene), MixColour(a, b)), 1
    if category == "rule":
        if rng.random() < 0.5:
            shape = o.shape
            colour = str(rng.choice([c for c in COLOURS if c != o.colour]))
            hit = [p for p in objs if p.shape == shape]
            return Recolour(Desc(shape), Colour(colour), every=True), sum(p.colour != colour for p in hit)
        hit = [p for p in objs if p.colour == o.colour]
        return Remove(Desc(colour=o.colour), every=True), len(hit)
    raise TaskError(f"category: unknown edit category {category!r}")


def _edit_task(category: str, rng: np.random.Generator, cfg: WorldConfig):
    n0 = int(rng.integers(2 if category in ("rule", "multi") else 1, min(6, cfg.grid * cfg.grid - 2) + 1))
    scene = Scene(tuple(_distinct_objs(rng, cfg.grid, n0, character_p=0.15)), cfg.grid)
    if category == "rule":  # a rule must hit at least two objects
        o = scene.objects[int(rng.integers(n0))]
        twin = _rand_obj(rng, scene.free_cells()[int(rng.integers(len(scene.free_cells())))])
        twin = Obj(o.shape if rng.random() < 0.5 else twin.shape, o.colour if rng.random() < 0.5 else twin.colour,
                   twin.size, twin.row, twin.col)
        scene = scene.with_objects(scene.objects + (twin,))
    n_ops = int(rng.integers(2, 5)) if category == "multi" else 1
    ops, cons, complexity, cur = [], [], 0, scene
    touched_cells: set = set()
    for _ in range(n_ops):
        sub = str(rng.choice(FAMILIES["edit"][:6])) if category == "multi" else category
        op, cx = _edit_op(sub, cur, rng)
        nxt = apply(cur, op)
        changed = {o.cell for o in cur.objects if o not in nxt.objects} | {o.cell for o in nxt.objects if o not in cur.objects}
        if changed & touched_cells or not changed:
            raise _Retry  # operations of one request touch disjoint objects and all do something
        touched_cells |= changed
        cons += constraints(cur, op, nxt)
        ops.append(op)
        complexity += cx
        cur = nxt
    kept = tuple(o for o in scene.objects if o.cell not in touched_cells)
    spec = TaskSpec(tuple(cons), kept, cur)
    used = sorted({op.colour.thing for op in ops if isinstance(op, Recolour) and isinstance(op.colour, FactColour)})
    return OpsRequest(tuple(ops)), (scene,), spec, complexity, {"facts": used,
                                                               "group": KRIS_GROUP[category]}


# ------------------------------------------------------------------ composition
def _compose_task(category: str, rng: np.random.Generator, cfg: WorldConfig):
    kind, sub = category.split("_")
    character = sub == "character"
    g = cfg.grid
    n_subj = 1 if kind in ("SINGLE", "SCENE") else int(rng.integers(2, 4))
    subjects = []
    for _ in range(n_subj):
        for _ in range(50):
            s = _rand_obj(rng, _rand_cells(rng, g, 1)[0], size="big", character=character)
            if all(s.looks() != p.looks() for p in subjects):
                subjects.append(s)
                break
        else:
            raise _Retry
    inputs: list[Scene] = []
    canvas = Scene((), g)
    scene_from = None
    if kind == "SCENE":
        canvas = Scene(tuple(_distinct_objs(rng, g, int(rng.integers(2, 5)))), g)
        if any(o.looks() == s.looks() for o in canvas.objects for s in subjects):
            raise _Retry
        inputs.append(canvas)
        scene_from = 1
    first_k = len(inputs) + 1
    inputs += [Scene((s,), g) for s in subjects]
    refs = [ImageRef(first_k + i, character) for i in range(n_subj)]
    ops: list[Op] = []
    for i, ref in enumerate(refs):
        if kind == "SCENE":
            anchor = canvas.objects[int(rng.integers(len(canvas.objects)))]
            where = RelTo(str(rng.choice(RELATIONS)), short_desc(anchor, canvas))
        elif i == 0:
            where = Cell(*_rand_cells(rng, g, 1)[0])
        else:
            where = RelTo(str(rng.choice(RELATIONS)), refs[int(rng.integers(i))])
        ops.append(Place(ref, where))
    if kind == "SINGLE":  # one extra object related to the subject
        extra = _rand_obj(rng, (0, 0))
        if extra.looks() == subjects[0].looks():
            raise _Retry
        ops.append(Add(Desc(extra.shape, extra.colour, extra.size), RelTo(str(rng.choice(RELATIONS)), refs[0])))
    cur, cons = canvas, []
    for op in ops:
        nxt = apply(cur, op, inputs)
        cons += constraints(cur, op, nxt, inputs)
        cur = nxt
    spec = TaskSpec(tuple(cons), tuple(canvas.objects), cur)
    complexity = sum(2 if isinstance(op.where, RelTo) else 1 for op in ops)
    return OpsRequest(tuple(ops), scene_from), tuple(inputs), spec, complexity, {"group": kind, "subject": sub}


def start_scene(x: X2IInput) -> Scene:
    """The canvas a request starts from: the input image for edits and for scene composition,
    else an empty canvas."""
    inputs = [Scene.from_dict(d) for d in x.meta.get("inputs", [])]
    fam = x.meta.get("family")
    if fam == "edit" or (fam == "compose" and inputs and len(inputs[0].objects) != 1):
        return inputs[0]
    return Scene((), x.target.target.grid if x.target is not None else 4)


_BUILDERS: dict[str, Callable] = {"t2i": _t2i_task, "edit": _edit_task, "compose": _compose_task}


def make_task(family: str, category: str, rng: np.random.Generator, cfg: WorldConfig = WorldConfig(),
              max_tries: int = 200) -> X2IInput:
    """Draw one valid task of a family and category (retrying draws that do not fit the grid)."""
    if family not in FAMILIES:
        raise TaskError(f"family: unknown {family!r} (known: {', '.join(FAMILIES)})")
    if category not in FAMILIES[family]:
        raise TaskError(f"category: unknown {category!r} for family {family!r} (known: {', '.join(FAMILIES[family])})")
    for _ in range(max_tries):
        try:
            req, inputs, spec, complexity, extra = _BUILDERS[family](category, rng, cfg)
        except (_Retry, OpError):
            continue
        if not satisfied(spec, spec.target):
            continue  # the witness must score 5 everywhere: never emit an unsatisfiable task
        text = say_request(req)
        key = "|".join([family, text] + [s.to_json() for s in inputs])
        meta = {"family": family, "category": category, "group": extra.pop("group", category),
                "complexity": int(complexity), "split": split_of(key, cfg.eval_fraction),
                "inputs": [s.to_dict() for s in inputs], "target_scene": spec.target.to_dict(), **extra}
        tid = f"{family}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
        images = tuple(render(s, cfg.image_size) for s in inputs)
        return X2IInput(tid, text, images, meta, spec)
    raise TaskError(f"could not draw a valid {family}/{category} task in {max_tries} tries (grid too small?)")


def _check_count(n: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise TaskError(f"n: must be a non-negative integer, got {n!r}")


def _check_selection(split: str, family: str | None,
                     categories: Sequence[str] | None) -> list[tuple[str, str]]:
    """The (family, category) pairs a task stream cycles over; bad arguments name themselves."""
    if split not in SPLITS:
        raise TaskError(f"split: must be one of {SPLITS}, got {split!r}")
    fams = [family] if family else list(FAMILIES)
    for f in fams:
        if f not in FAMILIES:
            raise TaskError(f"family: unknown {f!r} (known: {', '.join(FAMILIES)})")
    pairs = [(f, c) for f in fams for c in FAMILIES[f] if categories is None or c in categories]
    if categories is not None:
        unknown = set(categories) - {c for f in fams for c in FAMILIES[f]}
        if unknown:
            raise TaskError(f"categories: unknown {sorted(unknown)[0]!r}")
    if not pairs:
        raise TaskError("categories: no category selected")
    return pairs


def _task_stream(pairs: Sequence[tuple[str, str]], split: str, seed: int, cfg: WorldConfig, distinct: bool,
                 max_misses: int) -> Iterator[X2IInput]:
    """Tasks of one split in a fixed order for ``seed``, cycling over ``pairs``: the order that
    :func:`make_tasks` and :func:`make_balanced_tasks` both take from (so the first ``n`` of a
    longer stream are the ``n`` of a shorter one). Raises :class:`TaskError` after ``max_misses``
    draws of the other split or of repeats."""
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    made = misses = 0
    while True:
        f, c = pairs[made % len(pairs)] if misses < 100 * len(pairs) else pairs[int(rng.integers(len(pairs)))]
        t = make_task(f, c, rng, cfg)
        if t.meta["split"] != split or (distinct and t.id in seen):
            misses += 1
            if misses > max_misses:
                raise TaskError(f"could not find enough distinct {split} tasks (the space is too small)")
            continue
        seen.add(t.id)
        made += 1
        yield t


def make_tasks(n: int, split: str, seed: int, family: str | None = None, categories: Sequence[str] | None = None,
               cfg: WorldConfig = WorldConfig(), distinct: bool = True) -> list[X2IInput]:
    """``n`` tasks of one split, cycling over the families' categories, seeded.

    The same (seed, arguments) always give the same tasks; a task's split depends only on its
    content, so train and eval sets never share a task whatever seeds are used. With
    ``distinct=False`` a request may repeat (with another witness image): training streams
    use that, since small categories (e.g. "draw a circle .") have few distinct requests.
    """
    _check_count(n)
    pairs = _check_selection(split, family, categories)
    stream = _task_stream(pairs, split, seed, cfg, distinct, max_misses=1000 * max(n, 1))
    return list(itertools.islice(stream, n))


# Complexity buckets (name, lowest, highest): the requests one pass handles (1-2), those where it starts
# to fail (3-5) and those that need planning (6+). Evaluations report per bucket (sairlib.sft_eval) and can
# draw their requests evenly over them (make_balanced_tasks).
COMPLEXITY_BUCKETS: tuple[tuple[str, int, int], ...] = (("1-2", 1, 2), ("3-5", 3, 5), ("6+", 6, 10 ** 9))


def complexity_bucket(complexity: int) -> str:
    """The name of the bucket holding ``complexity`` ("0" for none: a request without constraints)."""
    for name, lo, hi in COMPLEXITY_BUCKETS:
        if lo <= complexity <= hi:
            return name
    return "0"


def make_balanced_tasks(n: int, split: str, seed: int, cfg: WorldConfig = WorldConfig(),
                        max_draws_per_task: int = 200) -> list[X2IInput]:
    """``n`` distinct tasks of one split spread evenly over :data:`COMPLEXITY_BUCKETS`.

    The world's own mix is mostly simple (about 4% of requests have 6 or more constraints at
    ``max_objects`` 8), so an average over it mostly measures the simple requests. This takes the
    same stream as :func:`make_tasks` (same seed, same order) and keeps each task while its bucket
    is short of its share: ``n // 3`` each, the first ``n % 3`` buckets one more. Raises
    :class:`TaskError` naming the bucket when ``max_draws_per_task * n`` tasks do not fill it (e.g. no
    6+ requests exist with ``world.max_objects`` 3).

        >>> ts = make_balanced_tasks(6, "eval", seed=0)
        >>> sorted(complexity_bucket(t.complexity) for t in ts)
        ['1-2', '1-2', '3-5', '3-5', '6+', '6+']
    """
    _check_count(n)
    names = [b for b, _, _ in COMPLEXITY_BUCKETS]
    quota = {b: n // len(names) + (i < n % len(names)) for i, b in enumerate(names)}
    stream = _task_stream(_check_selection(split, None, None), split, seed, cfg, distinct=True,
                          max_misses=1000 * max(n, 1))
    out: list[X2IInput] = []
    for t in itertools.islice(stream, max_draws_per_task * n):
        b = complexity_bucket(t.complexity)
        if quota.get(b, 0) > 0:
            quota[b] -= 1
            out.append(t)
            if len(out) == n:
                break
    short = [b for b in names if quota[b] > 0]
    if short:
        raise TaskError(f"could not find {n} {split} tasks balanced over complexity: bucket {short[0]} is "
                        f"{quota[short[0]]} short after {max_draws_per_task * n} draws "
                        f"(world.max_objects={cfg.max_objects} may not allow such requests)")
    return out

