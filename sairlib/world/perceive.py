"""Perception for the exact Analyzer: image -> the objects in it, with how cleanly each is drawn.

Works on any RGB uint8 image whose side is a multiple of the grid (rendered scenes, or images
decoded from model tokens):

1. palette snapping: every pixel takes the nearest world colour (or the background); a pixel
   farther than ``tol`` from all of them is off-palette (noise);
2. per grid cell, the foreground mask (every non-background pixel) is matched against the
   renderer's own shape templates by IoU, which gives shape and size; the most frequent palette
   colour gives the colour; pixels of a second colour inside form the inner part of a character;
3. a cell whose foreground matches no template is an artifact (noise); an object that matches
   imperfectly, or whose cell has off-palette or stray pixels, is detected but not clean.

    >>> from sairlib.world.scene import Obj, Scene
    >>> from sairlib.world.render import render
    >>> p = perceive(render(Scene((Obj("square", "blue", "small", 2, 3),))))
    >>> [(o.shape, o.colour, o.size, o.row, o.col, o.clean) for o in p.objects]
    [('square', 'blue', 'small', 2, 3, True)]
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .palette import BACKGROUND, COLOURS, SHAPES, SIZES
from .render import shape_mask
from .scene import CHARACTER_BODIES, Obj, Part, Scene

_NAMES = ("background",) + tuple(COLOURS)
_RGB = np.array([BACKGROUND] + list(COLOURS.values()), dtype=np.int32)
OFF_PALETTE = -1
DETECT_IOU = 0.5  # below this the foreground of a cell is not an object at all
CLEAN_IOU = 0.95  # at or above this (with nothing stray in the cell) the object is clean
TOL = 48  # max RGB distance for a pixel to snap to a palette colour


@dataclass(frozen=True)
class Seen:
    """A detected object: what it looks like, where, and how cleanly it is drawn."""

    shape: str
    colour: str
    size: str
    row: int
    col: int
    inner: Part | None
    iou: float
    clean: bool

    @property
    def cell(self) -> tuple[int, int]:
        return (self.row, self.col)

    def as_obj(self) -> Obj:
        return Obj(self.shape, self.colour, self.size, self.row, self.col, self.inner)

    def looks(self) -> tuple:
        return self.as_obj().looks()


@dataclass(frozen=True)
class Percept:
    """What the Analyzer sees in one image."""

    objects: tuple[Seen, ...]
    artifacts: tuple[tuple[int, int], ...]  # cells holding foreground that is no object
    grid: int

    def scene(self) -> Scene:
        """The detected objects as a scene (for symbolic checks of edits)."""
        return Scene(tuple(o.as_obj() for o in self.objects), self.grid)

    def at(self, row: int, col: int) -> Seen | None:
        for o in self.objects:
            if o.cell == (row, col):
                return o
        return None


def check_image(image: np.ndarray, grid: int, field: str = "image") -> np.ndarray:
    """Validate an RGB uint8 image whose side splits into ``grid`` cells; return it."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{field}: must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"{field}: must have dtype uint8, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{field}: must have shape (H, W, 3), got {image.shape}")
    h, w = image.shape[:2]
    if h != w or h % grid or h // grid < 8:
        raise ValueError(f"{field}: size {h}x{w} must be square and a multiple of grid={grid} (cells >= 8 px)")
    return image


@lru_cache(maxsize=None)
def _templates(cell: int) -> tuple[list[tuple[str, str]], np.ndarray]:
    keys = [(s, z) for s in SHAPES for z in SIZES]
    return keys, np.stack([shape_mask(s, z, cell).reshape(-1) for s, z in keys]).astype(np.float32)


@lru_cache(maxsize=None)
def _small_templates(cell: int) -> tuple[list[str], np.ndarray]:
    return list(SHAPES), np.stack([shape_mask(s, "small", cell).reshape(-1) for s in SHAPES]).astype(np.float32)


_RGB_F = _RGB.astype(np.float32)
_RGB_SQ = (_RGB_F ** 2).sum(-1)
_SNAP_BLOCK = 1 << 14  # pixels per block


def snap(images: np.ndarray) -> np.ndarray:
    """Palette labels per pixel of uint8 RGB ``images`` ``[..., 3]``: 0 background, 1..7 colours in
    palette order, -1 off-palette.

    Squared distances as |x|^2 - 2 x.p + |p|^2 with one small matrix product (3x faster than the
    pixel-by-colour difference array). Exact: every term is an integer below 2^24, so float32 holds
    them and their sums without rounding, and ties break to the first colour as before.
    """
    flat = images.reshape(-1, 3)
    lab = np.empty(len(flat), dtype=np.intp)
    for i in range(0, len(flat), _SNAP_BLOCK):  # blocks that stay in cache: large batches are no slower per image
        x = flat[i:i + _SNAP_BLOCK].astype(np.float32)
        d2 = (x * x).sum(-1, keepdims=True) - 2.0 * (x @ _RGB_F.T) + _RGB_SQ
        part = d2.argmin(-1)
        part[d2.min(-1) > TOL * TOL] = OFF_PALETTE
        lab[i:i + _SNAP_BLOCK] = part
    return lab.reshape(images.shape[:-1])


def _iou(masks: np.ndarray, templates: np.ndarray) -> np.ndarray:
    inter = masks @ templates.T
    union = masks.sum(1, keepdims=True) + templates.sum(1)[None] - inter
    return inter / np.maximum(union, 1)


def perceive_batch(images: np.ndarray, grid: int = 4) -> list[Percept]:
    """Perceive a batch of images [N, S, S, 3]; vectorised over images and cells."""
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = images[None]
    if not isinstance(images, np.ndarray) or images.ndim != 4:
        raise ValueError("images: must be a uint8 array of shape (N, S, S, 3)")
    for i in range(min(1, len(images))):
        check_image(images[i], grid, f"images[{i}]")
    n, s = images.shape[0], images.shape[1]
    c = s // grid
    lab = snap(images).reshape(n, grid, c, grid, c).transpose(0, 1, 3, 2, 4).reshape(n, grid, grid, c * c)
    fg = lab != 0
    keys, tmpl = _templates(c)
    skeys, stmpl = _small_templates(c)
    out = []
    for i in range(n):
        occupied = np.argwhere(fg[i].any(-1))
        objects, artifacts = [], []
        if len(occupied):
            cells_lab = lab[i, occupied[:, 0], occupied[:, 1]]  # [k, c*c]
            masks = (cells_lab != 0).astype(np.float32)
            ious = _iou(masks, tmpl)
            for j, (r, col) in enumerate(occupied):
                cl = cells_lab[j]
                best = int(ious[j].argmax())
                iou = float(ious[j, best])
                counts = np.bincount(cl[cl > 0], minlength=len(_NAMES))
                if iou < DETECT_IOU or counts.sum() == 0:
                    artifacts.append((int(r), int(col)))
                    continue
                colour_id = int(counts.argmax())
                shape, size = keys[best]
                off = int((cl == OFF_PALETTE).sum())
                inner, stray = None, 0
                others = (cl > 0) & (cl != colour_id)
                n_other = int(others.sum())
                if n_other:
                    other_ids = np.bincount(cl[others], minlength=len(_NAMES))
                    inner_id = int(other_ids.argmax())
                    stray = n_other - int(other_ids[inner_id])
                    inner_mask = (cl == inner_id).astype(np.float32)[None]
                    siou = _iou(inner_mask, stmpl)[0]
                    sb = int(siou.argmax())
                    if size == "big" and shape in CHARACTER_BODIES and siou[sb] >= DETECT_IOU:
                        inner = Part(skeys[sb], _NAMES[inner_id])
                        if siou[sb] < CLEAN_IOU:
                            stray += 1
                    else:
                        stray = n_other
                clean = iou >= CLEAN_IOU and off == 0 and stray == 0
                objects.append(Seen(shape, _NAMES[colour_id], size, int(r), int(col), inner, round(iou, 3), clean))
        out.append(Percept(tuple(objects), tuple(artifacts), grid))
    return out


def perceive(image: np.ndarray, grid: int = 4) -> Percept:
    """Perceive one image [S, S, 3]."""
    check_image(image, grid)
    return perceive_batch(image[None], grid)[0]


def percept_of(scene: Scene) -> Percept:
    """The percept of a perfectly drawn scene, without rendering (for symbolic checks)."""
    objs = tuple(Seen(o.shape, o.colour, o.size, o.row, o.col, o.inner, 1.0, True) for o in scene.objects)
    return Percept(objs, (), scene.grid)
