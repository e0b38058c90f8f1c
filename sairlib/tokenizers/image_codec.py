"""Image codec: a learned vector-quantisation codebook over square image patches.

An image of shape ``[H, W, 3]`` (RGB, ``uint8``) is cut into non-overlapping
``patch_size x patch_size`` patches in row-major order; each patch is replaced by
the index of its nearest codebook entry (squared L2). Decoding pastes the codebook
patches back. World images are flat-colour shapes on a grid, so the set of distinct
patches is small: when it fits in the codebook the codec is lossless.

Usage::

    from sairlib.tokenizers import ImageCodec

    codec = ImageCodec.fit(train_images, patch_size=8, codebook_size=512, seed=0)
    codes = codec.encode(images)      # int64 [N, codec.tokens_per_image]
    recon = codec.decode(codes)       # uint8 [N, H, W, 3]
    codec.save("outputs/codec")
    codec = ImageCodec.load("outputs/codec")

A single image ``[H, W, 3]`` encodes to a 1-D code sequence and a 1-D code sequence
decodes to a single image. Codes are ordered by decreasing training frequency
(code 0 is the most common patch, usually the background).

Fitting deduplicates the patches and runs k-means++ initialisation followed by
Lloyd iterations weighted by patch counts, entirely in numpy with a seeded
generator, so the codebook is a deterministic function of (images, patch_size,
codebook_size, seed, iters). The codebook is stored as ``uint8`` so that
``decode`` is an exact lookup and ``encode(decode(codes))`` returns ``codes``
(up to duplicate entries: ``encode`` always picks the first nearest entry).

Invalid input raises ``ValueError`` (``TypeError`` for a non-array argument) with
a message naming the offending field; loading a missing file raises
``FileNotFoundError`` and a corrupt one ``ValueError``, both naming the file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ImageCodec"]

CONFIG_FILE = "codec.json"
CODEBOOK_FILE = "codebook.npy"
FORMAT_VERSION = 1

# Entries of one batched distance matrix (float64): 2**22 entries = 32 MiB.
_DIST_CHUNK = 1 << 22
# k-means++ seeding runs on at most this many distinct patches (times codebook_size).
_SEED_POOL_PER_CODE = 16
_SEED_POOL_MIN = 1 << 14


# ----------------------------------------------------------------------------- validation


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_image_array(name: str, arr: np.ndarray, ndim: int) -> None:
    if arr.dtype != np.uint8:
        raise ValueError(f"{name} must have dtype uint8, got {arr.dtype}")
    if arr.ndim != ndim:
        expected = "[N, H, W, 3] or [H, W, 3]" if ndim == 4 else "[H, W, 3]"
        raise ValueError(f"{name} must have shape {expected}, got shape {tuple(arr.shape)}")
    if arr.shape[-1] != 3:
        raise ValueError(f"{name} must have 3 channels (RGB) in the last axis, got {arr.shape[-1]}")


def _as_image_batch(images: Any, name: str = "images") -> tuple[np.ndarray, bool]:
    """Return ``(batch [N, H, W, 3] uint8, was_single_image)`` or raise."""
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ValueError(f"{name} is empty")
        arrays = []
        for i, img in enumerate(images):
            if not isinstance(img, np.ndarray):
                raise TypeError(f"{name}[{i}] must be a numpy array, got {type(img).__name__}")
            _check_image_array(f"{name}[{i}]", img, 3)
            if img.shape != images[0].shape:
                raise ValueError(
                    f"{name}[{i}] has shape {tuple(img.shape)} but {name}[0] has shape {tuple(images[0].shape)}"
                )
            arrays.append(img)
        batch, single = np.stack(arrays), False
    else:
        try:
            arr = np.asarray(images)
        except Exception as exc:  # noqa: BLE001 - any conversion failure is a type error here
            raise TypeError(f"{name} must be a uint8 array or a list of arrays, got {type(images).__name__}") from exc
        if arr.dtype == object:
            raise TypeError(f"{name} must be a uint8 array or a list of arrays, got {type(images).__name__}")
        if arr.ndim == 3:
            _check_image_array(name, arr, 3)
            batch, single = arr[None], True
        else:
            _check_image_array(name, arr, 4)
            batch, single = arr, False
    if batch.size == 0:
        raise ValueError(f"{name} is empty (shape {tuple(batch.shape)})")
    return batch, single


# ----------------------------------------------------------------------------- patches


def _to_patches(batch: np.ndarray, patch_size: int) -> np.ndarray:
    """``[N, H, W, 3]`` -> ``[N * (H/p) * (W/p), p*p*3]`` (row-major patch order)."""
    n, h, w, c = batch.shape
    p = patch_size
    x = batch.reshape(n, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return np.ascontiguousarray(x).reshape(n * (h // p) * (w // p), p * p * c)


def _from_patches(patches: np.ndarray, n: int, height: int, width: int, patch_size: int) -> np.ndarray:
    """Inverse of :func:`_to_patches`."""
    p = patch_size
    x = patches.reshape(n, height // p, width // p, p, p, 3).transpose(0, 1, 3, 2, 4, 5)
    return np.ascontiguousarray(x).reshape(n, height, width, 3)


def _unique_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct rows of a C-contiguous uint8 matrix: ``(unique, inverse, counts)``.

    Rows are compared as raw bytes, so the order is lexicographic and deterministic.
    """
    rows = np.ascontiguousarray(rows)
    keys = rows.view(np.dtype((np.void, rows.shape[1]))).ravel()
    uniq, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    return uniq.view(np.uint8).reshape(-1, rows.shape[1]), inverse.ravel(), counts


def _nearest(points: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of (first) nearest centre and squared distance for every row of ``points``.

    Batched so that one distance matrix holds at most ``_DIST_CHUNK`` entries. Works in
    float64: with integer-valued inputs every distance is computed exactly.
    """
    centers = centers.astype(np.float64, copy=False)
    c_sq = np.einsum("ij,ij->i", centers, centers)
    n = points.shape[0]
    labels = np.empty(n, dtype=np.int64)
    dist = np.empty(n, dtype=np.float64)
    rows = max(1, _DIST_CHUNK // max(1, centers.shape[0]))
    for start in range(0, n, rows):
        x = points[start : start + rows].astype(np.float64)
        d = x @ centers.T
        d *= -2.0
        d += c_sq[None, :]
        d += np.einsum("ij,ij->i", x, x)[:, None]
        lab = d.argmin(axis=1)
        labels[start : start + rows] = lab
        dist[start : start + rows] = d[np.arange(len(lab)), lab]
    np.maximum(dist, 0.0, out=dist)
    return labels, dist


# ----------------------------------------------------------------------------- k-means


def _kmeans_pp(points: np.ndarray, weights: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Weighted k-means++ seeding; ``points`` has more than ``k`` distinct rows."""
    pool_cap = max(_SEED_POOL_PER_CODE * k, _SEED_POOL_MIN)
    if points.shape[0] > pool_cap:
        # Seed on a count-weighted sample of distinct patches (uniform weights inside it).
        idx = np.sort(rng.choice(points.shape[0], size=pool_cap, replace=False, p=weights / weights.sum()))
        pool, pool_w = points[idx].astype(np.float64), np.ones(pool_cap)
    else:
        pool, pool_w = points.astype(np.float64), weights.astype(np.float64)
    pool_sq = np.einsum("ij,ij->i", pool, pool)

    def pick(mass: np.ndarray) -> int:
        cum = np.cumsum(mass)
        i = int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))
        i = min(i, len(mass) - 1)
        return i if mass[i] > 0 else int(np.argmax(mass))

    centers = np.empty((k, pool.shape[1]), dtype=np.float64)
    first = pick(pool_w)
    centers[0] = pool[first]
    min_d = np.maximum(pool_sq - 2.0 * (pool @ pool[first]) + pool_sq[first], 0.0)
    for j in range(1, k):
        i = pick(pool_w * min_d)
        centers[j] = pool[i]
        np.minimum(min_d, np.maximum(pool_sq - 2.0 * (pool @ pool[i]) + pool_sq[i], 0.0), out=min_d)
    return centers


def _lloyd_update(
    points: np.ndarray, weights: np.ndarray, labels: np.ndarray, dist: np.ndarray, k: int
) -> np.ndarray:
    """Weighted means of the clusters; empty clusters move to the worst-served points."""
    dim = points.shape[1]
    wsum = np.bincount(labels, weights=weights, minlength=k)
    sums = np.zeros((k, dim), dtype=np.float64)
    rows = max(1, _DIST_CHUNK // max(1, dim))
    for start in range(0, points.shape[0], rows):
        sl = slice(start, start + rows)
        np.add.at(sums, labels[sl], points[sl].astype(np.float64) * weights[sl, None])
    empty = np.flatnonzero(wsum == 0)
    nonempty = wsum > 0
    centers = np.empty_like(sums)
    centers[nonempty] = sums[nonempty] / wsum[nonempty, None]
    if len(empty):
        worst = np.argsort(-(weights * dist), kind="stable")[: len(empty)]
        centers[empty] = points[worst].astype(np.float64)
    return centers


def _weighted_mse(dist: np.ndarray, weights: np.ndarray, dim: int) -> float:
    return float((weights * dist).sum() / (weights.sum() * dim))


# ----------------------------------------------------------------------------- codec


class ImageCodec:
    """VQ codec mapping ``[H, W, 3]`` uint8 images to ``(H/p)*(W/p)`` integer codes.

    Build one with :meth:`fit` or :meth:`load`; the constructor takes a ready
    ``uint8`` codebook of shape ``[codebook_size, patch_size*patch_size*3]`` whose rows
    are patches flattened in (row, column, channel) order.
    """

    def __init__(
        self,
        codebook: np.ndarray,
        patch_size: int,
        image_size: Sequence[int],
        *,
        fit_mse: Sequence[float] = (),
    ) -> None:
        patch_size = _check_int("patch_size", patch_size, 1)
        if not isinstance(image_size, (tuple, list)) or len(image_size) != 2:
            raise ValueError(f"image_size must be a pair (H, W), got {image_size!r}")
        height = _check_int("image_size[0]", image_size[0], 1)
        width = _check_int("image_size[1]", image_size[1], 1)
        for label, side in (("height", height), ("width", width)):
            if side % patch_size:
                raise ValueError(f"image {label} {side} is not divisible by patch_size {patch_size}")
        if not isinstance(codebook, np.ndarray):
            raise TypeError(f"codebook must be a numpy array, got {type(codebook).__name__}")
        if codebook.dtype != np.uint8:
            raise ValueError(f"codebook must have dtype uint8, got {codebook.dtype}")
        dim = patch_size * patch_size * 3
        if codebook.ndim != 2 or codebook.shape[0] < 1 or codebook.shape[1] != dim:
            raise ValueError(f"codebook must have shape [codebook_size, {dim}], got {tuple(codebook.shape)}")
        self._codebook = np.ascontiguousarray(codebook).copy()
        self._codebook.setflags(write=False)
        # Exact patches are looked up, not searched: the first index of each distinct row, which
        # is what the nearest-neighbour search would pick too (distance 0, lowest index).
        self._exact: dict[bytes, int] = {}
        for i, row in enumerate(self._codebook):
            self._exact.setdefault(row.tobytes(), i)
        self._patch_size = patch_size
        self._image_size = (height, width)
        self.fit_mse: tuple[float, ...] = tuple(float(v) for v in fit_mse)
        """Training MSE per value (0..255 scale): after seeding, after each Lloyd step,
        and for the final uint8 codebook. Empty for a codec built directly."""

    # -- properties ------------------------------------------------------------------

    @property
    def codebook(self) -> np.ndarray:
        """Read-only ``uint8`` array ``[codebook_size, patch_size*patch_size*3]``."""
        return self._codebook

    @property
    def codebook_size(self) -> int:
        """Number of codes (vocabulary size of the image tokens)."""
        return int(self._codebook.shape[0])

    @property
    def patch_size(self) -> int:
        """Side of the square patches, in pixels."""
        return self._patch_size

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the images this codec encodes."""
        return self._image_size

    @property
    def grid_shape(self) -> tuple[int, int]:
        """``(H/p, W/p)``: the patch grid; codes are its cells in row-major order."""
        return self._image_size[0] // self._patch_size, self._image_size[1] // self._patch_size

    @property
    def tokens_per_image(self) -> int:
        """Number of codes per image, ``(H/p) * (W/p)``."""
        rows, cols = self.grid_shape
        return rows * cols

    def __repr__(self) -> str:
        h, w = self._image_size
        return (
            f"ImageCodec(image_size={h}x{w}, patch_size={self._patch_size}, "
            f"codebook_size={self.codebook_size}, tokens_per_image={self.tokens_per_image})"
        )

    # -- fitting ---------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        images: np.ndarray | Sequence[np.ndarray],
        patch_size: int,
        codebook_size: int,
        seed: int = 0,
        iters: int = 20,
        residual: np.ndarray | Sequence[np.ndarray] | None = None,
    ) -> ImageCodec:
        """Learn a codebook from ``images`` (uint8 ``[N, H, W, 3]`` or a list of ``[H, W, 3]``).

        If the number of distinct patches is at most ``codebook_size`` the codebook is
        exactly those patches (most frequent first), so the codec is lossless on them; the
        spare codes are k-means centroids of the ``residual`` images' other patches (e.g.
        corrupted images, so that artifacts stay representable), or, without a residual
        corpus, copies of the most frequent patch. Otherwise weighted k-means
        (k-means++ seeding, then at most ``iters`` Lloyd steps, stopping early once the
        assignment is stable) is run on the distinct patches weighted by their counts.
        """
        patch_size = _check_int("patch_size", patch_size, 1)
        codebook_size = _check_int("codebook_size", codebook_size, 1)
        seed = _check_int("seed", seed, 0)
        iters = _check_int("iters", iters, 0)
        batch, _ = _as_image_batch(images)
        _, height, width, _ = batch.shape
        for label, side in (("height", height), ("width", width)):
            if side % patch_size:
                raise ValueError(f"image {label} {side} is not divisible by patch_size {patch_size}")

        patches, _, counts = _unique_rows(_to_patches(batch, patch_size))
        weights = counts.astype(np.float64)
        dim = patches.shape[1]

        rng = np.random.default_rng(seed)
        if patches.shape[0] <= codebook_size:
            order = np.argsort(-counts, kind="stable")
            codebook = patches[order]
            pad = codebook_size - codebook.shape[0]
            if pad:
                codebook = np.concatenate([codebook, cls._spare_codes(codebook, pad, residual, patch_size, (height, width), rng, iters)])
            return cls(codebook, patch_size, (height, width), fit_mse=(0.0,))

        centers = _kmeans_pp(patches, weights, codebook_size, rng)
        labels, dist = _nearest(patches, centers)
        history = [_weighted_mse(dist, weights, dim)]
        for _ in range(iters):
            centers = _lloyd_update(patches, weights, labels, dist, codebook_size)
            new_labels, dist = _nearest(patches, centers)
            history.append(_weighted_mse(dist, weights, dim))
            stable = np.array_equal(new_labels, labels)
            labels = new_labels
            if stable:
                break

        codebook = np.clip(np.rint(centers), 0, 255).astype(np.uint8)
        labels, dist = _nearest(patches, codebook)
        if iters:
            history.append(_weighted_mse(dist, weights, dim))
        # Most used codes first (stable, so ties keep their k-means order).
        usage = np.bincount(labels, weights=weights, minlength=codebook_size)
        codebook = codebook[np.argsort(-usage, kind="stable")]
        return cls(codebook, patch_size, (height, width), fit_mse=history)

    @staticmethod
    def _spare_codes(exact: np.ndarray, n: int, residual: Any, patch_size: int, size: tuple[int, int],
                     rng: np.random.Generator, iters: int) -> np.ndarray:
        """``n`` extra codes: k-means of the residual patches not already exact, else padding."""
        pad = np.repeat(exact[:1], n, axis=0)
        if residual is None:
            return pad
        batch, _ = _as_image_batch(residual, "residual")
        if batch.shape[1:3] != size:
            raise ValueError(f"residual: images of size {batch.shape[1]}x{batch.shape[2]} but images are {size[0]}x{size[1]}")
        rows, _, counts = _unique_rows(_to_patches(batch, patch_size))
        known = {r.tobytes() for r in exact}
        keep = np.array([r.tobytes() not in known for r in rows], dtype=bool)
        rows, weights = rows[keep], counts[keep].astype(np.float64)
        if rows.shape[0] == 0:
            return pad
        if rows.shape[0] <= n:
            return np.concatenate([rows, pad[: n - rows.shape[0]]])
        centers = _kmeans_pp(rows, weights, n, rng)
        labels, dist = _nearest(rows, centers)
        for _ in range(iters):
            centers = _lloyd_update(rows, weights, labels, dist, n)
            new_labels, dist = _nearest(rows, centers)
            if np.array_equal(new_labels, labels):
                break
            labels = new_labels
        return np.clip(np.rint(centers), 0, 255).astype(np.uint8)

    # -- encode / decode -------------------------------------------------------------

    def encode(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Codes of ``images``: int64 ``[N, tokens_per_image]``, or ``[tokens_per_image]``
        for a single ``[H, W, 3]`` image. Each patch maps to its nearest codebook entry
        (squared L2; the lowest index among equally near entries)."""
        batch, single = _as_image_batch(images)
        n, height, width, _ = batch.shape
        if (height, width) != self._image_size:
            h0, w0 = self._image_size
            raise ValueError(f"image of size {height}x{width} but the codec was fitted on {h0}x{w0}")
        uniq, inverse, _ = _unique_rows(_to_patches(batch, self._patch_size))
        labels = np.fromiter((self._exact.get(r.tobytes(), -1) for r in uniq), dtype=np.int64, count=len(uniq))
        miss = labels < 0
        if miss.any():
            labels[miss] = _nearest(uniq[miss], self._codebook)[0]
        codes = labels[inverse].reshape(n, self.tokens_per_image)
        return codes[0] if single else codes

    def decode(self, codes: np.ndarray | Sequence[int] | Sequence[Sequence[int]]) -> np.ndarray:
        """Images for ``codes``: uint8 ``[N, H, W, 3]`` for ``[N, tokens_per_image]`` codes,
        ``[H, W, 3]`` for one sequence of ``tokens_per_image`` codes."""
        arr = np.asarray(codes)
        if arr.size == 0:
            raise ValueError(f"codes is empty (shape {tuple(arr.shape)})")
        if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"codes must be integers, got dtype {arr.dtype}")
        if arr.ndim not in (1, 2):
            raise ValueError(f"codes must have shape [N, T] or [T], got shape {tuple(arr.shape)}")
        single = arr.ndim == 1
        batch = arr[None] if single else arr
        if batch.shape[1] != self.tokens_per_image:
            raise ValueError(f"codes must have {self.tokens_per_image} codes per image, got {batch.shape[1]}")
        bad = (batch < 0) | (batch >= self.codebook_size)
        if bad.any():
            value = batch[bad][0]
            raise ValueError(f"code {value} is out of range [0, {self.codebook_size})")
        height, width = self._image_size
        images = _from_patches(self._codebook[batch.astype(np.int64)], batch.shape[0], height, width, self._patch_size)
        return images[0] if single else images

    def reconstruct(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """``decode(encode(images))``: the nearest-patch reconstruction of ``images``."""
        return self.decode(self.encode(images))

    # -- persistence -----------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write ``codebook.npy`` and ``codec.json`` into ``directory`` (created if needed)."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / CODEBOOK_FILE, np.asarray(self._codebook), allow_pickle=False)
        config = {
            "format_version": FORMAT_VERSION,
            "patch_size": self._patch_size,
            "image_size": list(self._image_size),
            "codebook_size": self.codebook_size,
            "fit_mse": list(self.fit_mse),
        }
        (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        return out

    @classmethod
    def load(cls, directory: str | Path) -> ImageCodec:
        """Read a codec written by :meth:`save`."""
        src = Path(directory)
        config_path = src / CONFIG_FILE
        if not config_path.is_file():
            raise FileNotFoundError(f"codec config file not found: {config_path}")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"corrupt codec config file {config_path}: {exc}") from exc
        if not isinstance(config, dict):
            raise ValueError(f"corrupt codec config file {config_path}: expected a JSON object")
        if config.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"codec config file {config_path} has format_version {config.get('format_version')!r}, "
                f"expected {FORMAT_VERSION}"
            )
        missing = [key for key in ("patch_size", "image_size", "codebook_size") if key not in config]
        if missing:
            raise ValueError(f"codec config file {config_path} is missing {', '.join(missing)}")

        codebook_path = src / CODEBOOK_FILE
        if not codebook_path.is_file():
            raise FileNotFoundError(f"codebook file not found: {codebook_path}")
        try:
            codebook = np.load(codebook_path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise ValueError(f"corrupt codebook file {codebook_path}: {exc}") from exc
        if not isinstance(codebook, np.ndarray) or codebook.shape[:1] != (config["codebook_size"],):
            raise ValueError(
                f"codebook file {codebook_path} has shape {getattr(codebook, 'shape', None)}, "
                f"but {config_path} says codebook_size={config['codebook_size']}"
            )
        try:
            return cls(
                codebook,
                config["patch_size"],
                tuple(config["image_size"]) if isinstance(config["image_size"], list) else config["image_size"],
                fit_mse=config.get("fit_mse", ()),
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"invalid codec in {src}: {exc}") from exc
