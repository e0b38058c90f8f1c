"""Render scenes to RGB images with PIL, without anti-aliasing, so that pixels are exact.

    >>> from sairlib.world.scene import Obj, Scene
    >>> from sairlib.world.render import render
    >>> img = render(Scene((Obj("circle", "red", "big", 0, 0),)), image_size=64)
    >>> img.shape, img.dtype
    ((64, 64, 3), dtype('uint8'))

Each object is drawn centred in its grid cell; the shape masks produced here are also the
templates that ``perceive.py`` matches against, so rendering and perception agree by
construction.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from .palette import BACKGROUND, COLOURS, SHAPES, SIZES
from .scene import Scene, SceneError


def check_image_size(image_size: int, grid: int) -> int:
    """Validate that ``image_size`` splits into ``grid`` cells of at least 8 pixels."""
    if not isinstance(image_size, int) or isinstance(image_size, bool):
        raise SceneError(f"image_size: must be an integer, got {image_size!r}")
    if image_size % grid != 0 or image_size // grid < 8:
        raise SceneError(f"image_size: {image_size} must be a multiple of grid={grid} with cells of at least 8 px")
    return image_size


def _polygon(shape: str, c: float, h: float) -> list[tuple[float, float]] | None:
    if shape == "square":
        return [(c - h, c - h), (c + h - 1, c - h), (c + h - 1, c + h - 1), (c - h, c + h - 1)]
    if shape == "triangle":
        return [(c - 0.5, c - h), (c + h - 1, c + h - 1), (c - h, c + h - 1)]
    if shape == "diamond":
        return [(c - 0.5, c - h), (c + h - 1, c - 0.5), (c - 0.5, c + h - 1), (c - h, c - 0.5)]
    return None


@lru_cache(maxsize=None)
def shape_mask(shape: str, size: str, cell: int) -> np.ndarray:
    """Boolean ``cell`` x ``cell`` mask of a shape of a given size centred in a cell."""
    if shape not in SHAPES:
        raise SceneError(f"shape: unknown shape {shape!r}")
    if size not in SIZES:
        raise SceneError(f"size: unknown size {size!r}")
    im = Image.new("1", (cell, cell), 0)
    draw = ImageDraw.Draw(im)
    c = cell / 2
    h = max(2.0, round(SIZES[size] * cell))
    poly = _polygon(shape, c, h)
    if poly is None:  # circle
        draw.ellipse([c - h, c - h, c + h - 1, c + h - 1], fill=1)
    else:
        draw.polygon(poly, fill=1)
    mask = np.array(im, dtype=bool)
    mask.setflags(write=False)
    return mask


def render(scene: Scene, image_size: int = 64) -> np.ndarray:
    """Draw ``scene`` as an ``image_size`` x ``image_size`` RGB uint8 array."""
    if not isinstance(scene, Scene):
        raise SceneError(f"scene: must be a Scene, got {type(scene).__name__}")
    cell = check_image_size(image_size, scene.grid) // scene.grid
    img = np.empty((image_size, image_size, 3), dtype=np.uint8)
    img[:] = BACKGROUND
    for o in scene.objects:
        y0, x0 = o.row * cell, o.col * cell
        view = img[y0:y0 + cell, x0:x0 + cell]
        view[shape_mask(o.shape, o.size, cell)] = COLOURS[o.colour]
        if o.inner is not None:
            view[shape_mask(o.inner.shape, "small", cell)] = COLOURS[o.inner.colour]
    return img


def blank(image_size: int = 64) -> np.ndarray:
    """An empty canvas (background only)."""
    img = np.empty((image_size, image_size, 3), dtype=np.uint8)
    img[:] = BACKGROUND
    return img
