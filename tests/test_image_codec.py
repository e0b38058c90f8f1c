"""Tests for sairlib.tokenizers.image_codec.ImageCodec."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from sairlib.tokenizers import ImageCodec

PALETTE = [(255, 255, 255), (220, 30, 30), (30, 160, 40), (40, 60, 220), (240, 200, 20), (20, 20, 20)]


def world_images(n: int, seed: int = 0, size: int = 64, cell: int = 16, circles: bool = True) -> np.ndarray:
    """Grid-aligned flat-colour squares and circles on a flat background (no anti-aliasing)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    cells = [(r, c) for r in range(size // cell) for c in range(size // cell)]
    for i in range(n):
        background = PALETTE[int(rng.integers(len(PALETTE)))]
        img = Image.new("RGB", (size, size), background)
        draw = ImageDraw.Draw(img)
        for k in rng.choice(len(cells), size=int(rng.integers(1, 5)), replace=False):
            r, c = cells[k]
            colour = PALETTE[int(rng.integers(len(PALETTE)))]
            box = (c * cell, r * cell, c * cell + cell - 1, r * cell + cell - 1)
            if not circles or rng.random() < 0.5:
                draw.rectangle(box, fill=colour)
            else:
                draw.ellipse(box, fill=colour)
        out[i] = np.asarray(img)
    return out


def n_unique_patches(images: np.ndarray, p: int) -> int:
    n, h, w, _ = images.shape
    patches = images.reshape(n, h // p, p, w // p, p, 3).transpose(0, 1, 3, 2, 4, 5).reshape(-1, p * p * 3)
    return len(np.unique(patches, axis=0))


def brute_force_codes(codebook: np.ndarray, image: np.ndarray, p: int) -> np.ndarray:
    """Independent nearest-code search: per patch, first index of the minimal squared distance."""
    h, w, _ = image.shape
    codes = []
    cb = codebook.astype(np.int64)
    for r in range(0, h, p):
        for c in range(0, w, p):
            patch = image[r : r + p, c : c + p].reshape(-1).astype(np.int64)
            codes.append(int(np.argmin(((cb - patch) ** 2).sum(axis=1))))
    return np.array(codes)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return world_images(48, seed=1)


@pytest.fixture(scope="module")
def codec(images: np.ndarray) -> ImageCodec:
    return ImageCodec.fit(images, patch_size=8, codebook_size=n_unique_patches(images, 8) + 5, seed=0)


# ----------------------------------------------------------------------------- lossless case


def test_lossless_round_trip(images: np.ndarray, codec: ImageCodec) -> None:
    codes = codec.encode(images)
    assert codes.shape == (len(images), 64) and codes.dtype == np.int64
    np.testing.assert_array_equal(codec.decode(codes), images)
    assert codec.tokens_per_image == 64 and codec.grid_shape == (8, 8)
    assert codec.image_size == (64, 64) and codec.patch_size == 8


def test_lossless_generalises_to_new_images_of_the_same_patch_set() -> None:
    # Squares aligned to the patch grid: every patch is a flat palette colour.
    train = world_images(40, seed=5, cell=8, circles=False)
    assert n_unique_patches(train, 8) == len(PALETTE)
    fitted = ImageCodec.fit(train, patch_size=8, codebook_size=len(PALETTE))
    test = world_images(10, seed=6, cell=8, circles=False)
    np.testing.assert_array_equal(fitted.reconstruct(test), test)


def test_lossless_codebook_is_unique_patches_padded(images: np.ndarray, codec: ImageCodec) -> None:
    n_unique = n_unique_patches(images, 8)
    book = codec.codebook
    assert book.dtype == np.uint8 and book.shape == (n_unique + 5, 8 * 8 * 3)
    assert len(np.unique(book[:n_unique], axis=0)) == n_unique
    # Padding repeats the most frequent patch, which is code 0 and is the one encode picks.
    assert (book[n_unique:] == book[0]).all()
    codes = codec.encode(images)
    assert codes.max() < n_unique
    counts = np.bincount(codes.ravel(), minlength=codec.codebook_size)
    assert counts[0] == counts.max()
    assert codec.fit_mse == (0.0,)


def test_exact_codebook_size_equal_to_unique_count(images: np.ndarray) -> None:
    fitted = ImageCodec.fit(images, patch_size=8, codebook_size=n_unique_patches(images, 8))
    np.testing.assert_array_equal(fitted.reconstruct(images), images)


def test_single_image_and_list_inputs(images: np.ndarray, codec: ImageCodec) -> None:
    one = codec.encode(images[3])
    assert one.shape == (64,)
    np.testing.assert_array_equal(one, codec.encode(images)[3])
    assert codec.decode(one).shape == (64, 64, 3)
    np.testing.assert_array_equal(codec.decode(one.tolist()), images[3])
    np.testing.assert_array_equal(codec.encode(list(images[:4])), codec.encode(images[:4]))
    from_list = ImageCodec.fit(list(images), patch_size=8, codebook_size=codec.codebook_size)
    np.testing.assert_array_equal(from_list.codebook, codec.codebook)


def test_non_square_images() -> None:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 3, size=(5, 8, 12, 3), dtype=np.uint8) * 100
    fitted = ImageCodec.fit(imgs, patch_size=4, codebook_size=400)
    assert fitted.grid_shape == (2, 3) and fitted.tokens_per_image == 6
    np.testing.assert_array_equal(fitted.reconstruct(imgs), imgs)


# ----------------------------------------------------------------------------- nearest code


def test_noisy_image_maps_to_nearest_patches(images: np.ndarray, codec: ImageCodec) -> None:
    rng = np.random.default_rng(7)
    noise = rng.integers(-40, 41, size=images[:3].shape)
    noisy = np.clip(images[:3].astype(np.int64) + noise, 0, 255).astype(np.uint8)
    codes = codec.encode(noisy)
    decoded = codec.decode(codes)
    for img, img_codes, img_decoded in zip(noisy, codes, decoded):
        expected = brute_force_codes(codec.codebook, img, 8)
        np.testing.assert_array_equal(img_codes, expected)
        for k, (r, c) in enumerate((r, c) for r in range(8) for c in range(8)):
            patch = img_decoded[r * 8 : r * 8 + 8, c * 8 : c * 8 + 8].reshape(-1)
            np.testing.assert_array_equal(patch, codec.codebook[expected[k]])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    p=st.sampled_from([1, 2, 4]),
    rows=st.integers(1, 3),
    cols=st.integers(1, 3),
    k=st.integers(1, 24),
    n=st.integers(1, 3),
    seed=st.integers(0, 2**31 - 1),
)
def test_encode_inverts_decode_for_distinct_codebooks(p: int, rows: int, cols: int, k: int, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    book = rng.integers(0, 256, size=(k, p * p * 3), dtype=np.uint8)
    assume(len(np.unique(book, axis=0)) == k)
    codec = ImageCodec(book, p, (rows * p, cols * p))
    codes = rng.integers(0, k, size=(n, rows * cols))
    images = codec.decode(codes)
    assert images.shape == (n, rows * p, cols * p, 3)
    np.testing.assert_array_equal(codec.encode(images), codes)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    p=st.sampled_from([1, 2, 4]),
    grid=st.integers(1, 4),
    n_colours=st.integers(1, 4),
    n=st.integers(1, 4),
    seed=st.integers(0, 2**31 - 1),
)
def test_fit_is_lossless_when_patches_fit(p: int, grid: int, n_colours: int, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, size=(n_colours, 3), dtype=np.uint8)
    imgs = colours[rng.integers(0, n_colours, size=(n, grid * p, grid * p))]
    n_unique = n_unique_patches(imgs, p)
    fitted = ImageCodec.fit(imgs, patch_size=p, codebook_size=n_unique + int(rng.integers(0, 3)), seed=seed % 7)
    np.testing.assert_array_equal(fitted.reconstruct(imgs), imgs)


# ----------------------------------------------------------------------------- lossy case


def test_lossy_fit_reduces_error(images: np.ndarray) -> None:
    k = 12
    assert n_unique_patches(images, 8) > k
    init_only = ImageCodec.fit(images, patch_size=8, codebook_size=k, seed=0, iters=0)
    trained = ImageCodec.fit(images, patch_size=8, codebook_size=k, seed=0, iters=20)
    assert trained.codebook_size == k
    codes = trained.encode(images)
    assert codes.min() >= 0 and codes.max() < k

    def mse(c: ImageCodec) -> float:
        return float(((c.reconstruct(images).astype(np.float64) - images) ** 2).mean())

    assert mse(trained) < mse(init_only)
    history = trained.fit_mse
    assert len(history) >= 3 and len(init_only.fit_mse) == 1
    assert history[0] == pytest.approx(init_only.fit_mse[0])
    lloyd = np.array(history[:-1])  # the last entry is the rounded uint8 codebook
    assert (np.diff(lloyd) <= 1e-9 * lloyd[0]).all()
    assert history[-1] < history[0]
    assert history[-1] == pytest.approx(mse(trained))


def test_determinism_and_seed(images: np.ndarray) -> None:
    a = ImageCodec.fit(images, patch_size=8, codebook_size=10, seed=3)
    b = ImageCodec.fit(images.copy(), patch_size=8, codebook_size=10, seed=3)
    np.testing.assert_array_equal(a.codebook, b.codebook)
    assert a.fit_mse == b.fit_mse
    codebooks = {ImageCodec.fit(images, patch_size=8, codebook_size=10, seed=s, iters=0).codebook.tobytes() for s in range(4)}
    assert len(codebooks) > 1


def test_many_unique_patches_uses_sampled_seeding() -> None:
    # More distinct patches than the k-means++ seeding pool: exercises the sampled path.
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(5, 128, 128, 3), dtype=np.uint8)
    a = ImageCodec.fit(imgs, patch_size=2, codebook_size=4, seed=1, iters=3)
    b = ImageCodec.fit(imgs, patch_size=2, codebook_size=4, seed=1, iters=3)
    np.testing.assert_array_equal(a.codebook, b.codebook)
    assert a.fit_mse[-1] < a.fit_mse[0]


# ----------------------------------------------------------------------------- persistence


def test_save_load_round_trip(tmp_path, images: np.ndarray, codec: ImageCodec) -> None:
    lossy = ImageCodec.fit(images, patch_size=8, codebook_size=9, seed=0, iters=5)
    for original in (codec, lossy):
        out = original.save(tmp_path / f"codec_{original.codebook_size}")
        config = json.loads((out / "codec.json").read_text())
        assert config["patch_size"] == 8 and config["image_size"] == [64, 64]
        assert config["codebook_size"] == original.codebook_size and config["format_version"] == 1
        loaded = ImageCodec.load(out)
        np.testing.assert_array_equal(loaded.codebook, original.codebook)
        assert loaded.image_size == original.image_size and loaded.patch_size == original.patch_size
        assert loaded.fit_mse == original.fit_mse
        np.testing.assert_array_equal(loaded.encode(images), original.encode(images))


def test_load_errors_name_the_file(tmp_path, codec: ImageCodec) -> None:
    with pytest.raises(FileNotFoundError, match="codec.json"):
        ImageCodec.load(tmp_path / "nowhere")
    out = codec.save(tmp_path / "c")
    (out / "codebook.npy").unlink()
    with pytest.raises(FileNotFoundError, match="codebook.npy"):
        ImageCodec.load(out)
    (out / "codebook.npy").write_bytes(b"not a numpy file")
    with pytest.raises(ValueError, match="codebook.npy"):
        ImageCodec.load(out)
    np.save(out / "codebook.npy", np.zeros((3, 192), dtype=np.uint8))
    with pytest.raises(ValueError, match="codebook.npy"):
        ImageCodec.load(out)
    (out / "codec.json").write_text("{ not json")
    with pytest.raises(ValueError, match="codec.json"):
        ImageCodec.load(out)
    (out / "codec.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(ValueError, match="format_version"):
        ImageCodec.load(out)
    (out / "codec.json").write_text(json.dumps({"format_version": 1, "patch_size": 8}))
    with pytest.raises(ValueError, match="image_size"):
        ImageCodec.load(out)


# ----------------------------------------------------------------------------- bad input


def test_encode_input_errors(images: np.ndarray, codec: ImageCodec) -> None:
    with pytest.raises(ValueError, match="uint8"):
        codec.encode(images.astype(np.float32))
    with pytest.raises(ValueError, match=r"images must have shape"):
        codec.encode(images[0, :, :, 0])
    with pytest.raises(ValueError, match=r"images must have shape"):
        codec.encode(images[None])
    with pytest.raises(ValueError, match="3 channels"):
        codec.encode(np.zeros((2, 64, 64, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="image of size 32x32 but the codec was fitted on 64x64"):
        codec.encode(np.zeros((2, 32, 32, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="empty"):
        codec.encode(np.zeros((0, 64, 64, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="empty"):
        codec.encode([])
    with pytest.raises(ValueError, match=r"images\[1\] has shape"):
        codec.encode([images[0], images[1][:32]])
    with pytest.raises(ValueError, match=r"images\[1\] must have dtype uint8"):
        codec.encode([images[0], images[1].astype(np.int64)])
    with pytest.raises(TypeError, match=r"images\[0\]"):
        codec.encode([[1, 2, 3]])


def test_decode_input_errors(codec: ImageCodec) -> None:
    good = np.zeros((2, 64), dtype=np.int64)
    bad = good.copy()
    bad[1, 5] = codec.codebook_size
    with pytest.raises(ValueError, match=rf"code {codec.codebook_size} is out of range"):
        codec.decode(bad)
    bad[1, 5] = -3
    with pytest.raises(ValueError, match="code -3 is out of range"):
        codec.decode(bad)
    with pytest.raises(ValueError, match="64 codes per image, got 63"):
        codec.decode(good[:, :63])
    with pytest.raises(ValueError, match="integers"):
        codec.decode(good.astype(np.float32))
    with pytest.raises(ValueError, match="empty"):
        codec.decode([])
    with pytest.raises(ValueError, match="codes must have shape"):
        codec.decode(good[None])


def test_fit_and_constructor_errors(images: np.ndarray) -> None:
    with pytest.raises(ValueError, match="patch_size"):
        ImageCodec.fit(images, patch_size=7, codebook_size=8)
    with pytest.raises(ValueError, match="patch_size"):
        ImageCodec.fit(images, patch_size=0, codebook_size=8)
    with pytest.raises(ValueError, match="codebook_size"):
        ImageCodec.fit(images, patch_size=8, codebook_size=0)
    with pytest.raises(ValueError, match="iters"):
        ImageCodec.fit(images, patch_size=8, codebook_size=8, iters=-1)
    with pytest.raises(ValueError, match="seed"):
        ImageCodec.fit(images, patch_size=8, codebook_size=8, seed=-1)
    with pytest.raises(TypeError, match="patch_size"):
        ImageCodec.fit(images, patch_size=8.0, codebook_size=8)
    with pytest.raises(ValueError, match="uint8"):
        ImageCodec.fit(images.astype(np.float64), patch_size=8, codebook_size=8)
    with pytest.raises(ValueError, match="empty"):
        ImageCodec.fit(images[:0], patch_size=8, codebook_size=8)
    with pytest.raises(ValueError, match="codebook must have shape"):
        ImageCodec(np.zeros((4, 10), dtype=np.uint8), 8, (64, 64))
    with pytest.raises(ValueError, match="codebook must have dtype uint8"):
        ImageCodec(np.zeros((4, 192)), 8, (64, 64))
    with pytest.raises(ValueError, match="width 60 is not divisible by patch_size 8"):
        ImageCodec(np.zeros((4, 192), dtype=np.uint8), 8, (64, 60))
    with pytest.raises(ValueError, match="image_size"):
        ImageCodec(np.zeros((4, 192), dtype=np.uint8), 8, (64,))


def test_codebook_is_read_only(codec: ImageCodec) -> None:
    with pytest.raises(ValueError):
        codec.codebook[0, 0] = 1


def test_residual_images_fill_spare_codes_and_keep_exact_patches():
    rng = np.random.default_rng(0)
    clean = np.zeros((4, 16, 16, 3), dtype=np.uint8)
    clean[1, :8, :8] = 200
    clean[2, 8:, 8:] = (10, 20, 30)
    noisy = rng.integers(0, 256, (20, 16, 16, 3), dtype=np.uint8)
    plain = ImageCodec.fit(clean, 8, 16, seed=0)
    codec = ImageCodec.fit(clean, 8, 16, seed=0, residual=noisy)
    assert np.array_equal(codec.reconstruct(clean), clean)  # exact patches stay exact
    assert len({r.tobytes() for r in codec.codebook}) > len({r.tobytes() for r in plain.codebook})
    err = lambda c: np.abs(c.reconstruct(noisy).astype(int) - noisy).mean()
    assert err(codec) < err(plain)
    with pytest.raises(ValueError, match="residual"):
        ImageCodec.fit(clean, 8, 16, residual=np.zeros((2, 8, 8, 3), dtype=np.uint8))
