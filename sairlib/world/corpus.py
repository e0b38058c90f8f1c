"""Image corpora of the world: what the image codec is fitted on and what its fidelity is measured on.

    from sairlib.world.corpus import task_images
    images = task_images(make_tasks(500, "train", seed=0))   # uint8 [N, S, S, 3]
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from ..interfaces import X2IInput
from .palette import COLOURS, SHAPES, SIZES
from .render import render
from .scene import CHARACTER_BODIES, Obj, Part, Scene


def task_images(tasks: Sequence[X2IInput], image_size: int = 64) -> np.ndarray:
    """Every input image and every target image of the tasks, stacked."""
    imgs = [im for t in tasks for im in t.images]
    imgs += [render(t.target.target, image_size) for t in tasks]
    return np.stack(imgs)


def all_looks() -> list[Obj]:
    """One object of every look the world can draw (plain objects and characters), at cell (0, 0)."""
    looks = [Obj(s, c, z, 0, 0) for s in SHAPES for c in COLOURS for z in SIZES]
    looks += [Obj(b, c, "big", 0, 0, Part(s, ic)) for b in CHARACTER_BODIES for c in COLOURS
              for s in SHAPES for ic in COLOURS if ic != c]
    return looks


def catalogue_images(grid: int = 4, image_size: int = 64) -> np.ndarray:
    """Every look drawn at least once, packed ``grid * grid`` to an image (so a codec sees them all)."""
    looks = all_looks()
    per = grid * grid
    imgs = []
    for i in range(0, len(looks), per):
        objs = [o.moved(j // grid, j % grid) for j, o in enumerate(looks[i:i + per])]
        imgs.append(render(Scene(tuple(objs), grid), image_size))
    return np.stack(imgs)


PERTURBATION_KINDS: tuple[str, ...] = ("target", "wrong_colour", "missing", "moved", "noise")


def perturbations(task: X2IInput, rng: np.random.Generator, image_size: int = 64) -> list[tuple[str, np.ndarray]]:
    """The task's target image, and versions with one thing wrong (colour, missing, moved, noise).

    Each comes with its kind, one of ``PERTURBATION_KINDS``, in that order (a kind the scene cannot
    have is left out: no object to change, no free cell to move it to)."""
    scene = task.target.target
    out = [("target", render(scene, image_size))]
    objs = list(scene.objects)
    if objs:
        i = int(rng.integers(len(objs)))
        o = objs[i]
        colours = [c for c in COLOURS if c != o.colour and (o.inner is None or c != o.inner.colour)]
        recoloured = objs.copy()
        recoloured[i] = dataclasses.replace(o, colour=str(rng.choice(colours)))
        out.append(("wrong_colour", render(scene.with_objects(recoloured), image_size)))
        out.append(("missing", render(scene.with_objects(objs[:i] + objs[i + 1:]), image_size)))
        free = scene.free_cells()
        if free:
            moved = objs.copy()
            moved[i] = o.moved(*free[int(rng.integers(len(free)))])
            out.append(("moved", render(scene.with_objects(moved), image_size)))
    noisy = render(scene, image_size).copy()
    cell = image_size // scene.grid
    r, c = (int(v) for v in rng.integers(0, scene.grid, 2))
    y, x = r * cell + cell // 4, c * cell + cell // 4
    noisy[y:y + cell // 2, x:x + cell // 2] = rng.integers(0, 256, (cell // 2, cell // 2, 3), dtype=np.uint8)
    out.append(("noise", noisy))
    return out


def draw_candidate(task: X2IInput, rng: np.random.Generator, image_size: int = 64,
                   weights: dict[str, float] | None = None) -> tuple[str, np.ndarray]:
    """One of :func:`perturbations`, with its kind: uniformly (``weights`` None), or by the weights of
    the kinds (``PERTURBATION_KINDS``) among those this task has."""
    kinds = perturbations(task, rng, image_size)
    if weights is None:
        return kinds[int(rng.integers(len(kinds)))]
    w = np.array([weights[k] for k, _ in kinds])
    return kinds[int(rng.choice(len(kinds), p=w / w.sum()))]


# Where an evaluator can read the right colour of an object of a task's target scene (see colour_source).
COLOUR_SOURCES: tuple[str, ...] = ("input_same_cell", "input_elsewhere", "request", "request_no_input")


def colour_source(task: X2IInput, obj: Obj) -> str:
    """Where the right colour of ``obj``, an object of ``task``'s target scene, can be read.

    ``input_same_cell``: the same object is in the same cell of an input image (a kept object: a
    cell-by-cell comparison of the two images finds a wrong colour); ``input_elsewhere``: the same
    object is in an input image, but in another cell or another image (moved, or brought in by a
    composition: the comparison has to find the object first); ``request``: no input holds it (an
    object the request adds or changes: the colour is in the request, or free);
    ``request_no_input``: the task has no input image (text-to-image). An object identical to one
    elsewhere in an input counts as ``input_elsewhere`` even when the request made it: its colour
    can be read there too."""
    inputs = [Scene.from_dict(d) for d in task.meta.get("inputs", [])]
    if not inputs:
        return "request_no_input"
    if any(s.at(obj.row, obj.col) == obj for s in inputs):
        return "input_same_cell"
    if any(dataclasses.replace(o, row=obj.row, col=obj.col) == obj for s in inputs for o in s.objects):
        return "input_elsewhere"
    return "request"


def recoloured_object(task: X2IInput, image: np.ndarray, image_size: int = 64) -> Obj | None:
    """The object of ``task``'s target scene whose cell alone differs between the target's rendering
    and ``image`` (a ``wrong_colour`` candidate of :func:`perturbations`); None unless exactly one
    cell differs and it holds an object."""
    scene = task.target.target
    cell = image_size // scene.grid
    diff = np.any(render(scene, image_size) != image, axis=-1)
    cells = {(int(y) // cell, int(x) // cell) for y, x in zip(*np.nonzero(diff))}
    if len(cells) != 1:
        return None
    return scene.at(*cells.pop())
