"""Images: decoding and converting every mode, fitting to size, EXIF orientation, the memory-mapped decode
cache, the one ``uint8 ↔ [-1, 1]`` pair, PNG bytes and grids.
"""

from __future__ import annotations

import io
import os
import time
import tracemalloc
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from test_sources import count_open_image, folder, grey, picture

from synthaug import images as images_module
from synthaug.config import DataConfig
from synthaug.data import load_real_data
from synthaug.errors import SynthaugError
from synthaug.images import (
    content_hashes,
    decode_image,
    decode_png,
    fit_arrays,
    grid_image,
    open_image,
    png_bytes,
    resize_crop,
    save_grid,
    to_array,
    to_model_input,
    to_pil,
    to_uint8,
)
from synthaug.sources import load_source


def encoded(img: Image.Image) -> bytes:
    """``img`` as PNG file bytes, whatever its mode."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def image_dataset(images: list[Image.Image]):
    """A dataset of one undecoded ``image`` column, the shape every source produces."""
    cells = [{"bytes": encoded(img), "path": None} for img in images]
    return datasets.Dataset.from_dict(
        {"image": cells}, features=datasets.Features({"image": datasets.Image(decode=False)})
    )


# --------------------------------------------------------------------------------------------- to_array


def test_to_array_rgba_is_composited_on_white():
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)  # fully transparent black
    rgba[0, 0] = (0, 0, 255, 255)  # one opaque blue pixel
    rgba[0, 1] = (255, 0, 0, 128)  # half-transparent red
    arr = to_array(image_dataset([Image.fromarray(rgba, mode="RGBA")]), image_size=8, channels=3)
    assert arr.shape == (1, 8, 8, 3)
    assert arr[0, 5, 5].tolist() == [255, 255, 255]
    assert arr[0, 0, 0].tolist() == [0, 0, 255]
    r, g, b = arr[0, 0, 1].tolist()
    assert r == 255 and 120 <= g <= 135 and g == b


def test_to_array_palette_image():
    img = Image.new("P", (8, 8), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    img.putpixel((3, 4), 1)  # red
    rgb = to_array(image_dataset([img]), image_size=8, channels=3)[0]
    assert rgb[4, 3].tolist() == [255, 0, 0] and rgb[0, 0].tolist() == [0, 0, 0]
    grey_arr = to_array(image_dataset([img]), image_size=8, channels=1)[0]
    assert grey_arr.shape == (8, 8, 1)
    assert grey_arr[4, 3, 0] == 76  # ITU-R 601 luma of pure red


def test_to_array_16_bit_is_rescaled():
    pixels = np.array([[0, 65535], [32768, 65535]], dtype=np.uint16).repeat(4, 0).repeat(4, 1)
    img = Image.fromarray(pixels)
    assert img.mode.startswith("I;16")
    arr = to_array(image_dataset([img]), image_size=8, channels=1)[0, :, :, 0]
    assert arr[0, 0] == 0 and arr[0, 7] == 255
    assert arr[7, 0] in (127, 128)


def test_to_array_grey_to_three_channels_and_rgb_to_grey():
    arr = to_array(image_dataset([grey(77)]), image_size=8, channels=3)
    assert arr.shape == (1, 8, 8, 3) and (arr == 77).all()
    rgb = Image.fromarray(np.full((8, 8, 3), (0, 255, 0), dtype=np.uint8), mode="RGB")
    arr = to_array(image_dataset([rgb]), image_size=8, channels=1)
    assert arr.shape == (1, 8, 8, 1) and (arr == 150).all()  # luma of pure green


def test_to_array_resizes_shorter_side_then_centre_crops():
    wide = np.zeros((20, 40), dtype=np.uint8)  # H=20, W=40
    wide[6:14, 16:24] = 255  # a bright square in the centre
    edge = np.zeros((20, 40), dtype=np.uint8)
    edge[:, 0:6] = 255  # a bright stripe at the left edge: outside the centre crop
    arr = to_array(image_dataset([Image.fromarray(wide), Image.fromarray(edge)]), image_size=10, channels=1)
    assert arr.shape == (2, 10, 10, 1)
    centred = arr[0, :, :, 0].astype(np.float64)
    ys, xs = np.indices(centred.shape)
    cy, cx = (ys * centred).sum() / centred.sum(), (xs * centred).sum() / centred.sum()
    assert abs(cy - 4.5) < 0.25 and abs(cx - 4.5) < 0.25
    assert centred[4:6, 4:6].min() > 200  # not squashed away
    assert centred[0, 0] < 20 and centred[-1, -1] < 20
    # Not squashed: the square stays square (a squash would halve its width).
    bright = centred > 128
    assert bright.any(axis=0).sum() == bright.any(axis=1).sum()
    assert arr[1].max() < 30  # the edge stripe was cropped away, not squeezed in


def test_to_array_upscales_small_images():
    arr = to_array(image_dataset([grey(9, size=(4, 4))]), image_size=16, channels=1)
    assert arr.shape == (1, 16, 16, 1) and (arr == 9).all()


def test_exif_orientation_is_applied(tmp_path: Path):
    img = picture(3, size=(8, 4))  # 8 wide, 4 high
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view"
    img.save(tmp_path / "phone.png", exif=exif)
    assert Image.open(tmp_path / "phone.png").getexif()[0x0112] == 6
    with open_image({"bytes": None, "path": str(tmp_path / "phone.png")}) as upright:
        assert upright.size == (4, 8)
        assert np.array_equal(np.asarray(upright), np.asarray(img.transpose(Image.Transpose.ROTATE_270)))


# --------------------------------------------------------------------------------------------- decode cache


def test_the_decode_cache_equals_the_in_memory_array_and_is_reused(tmp_path: Path, monkeypatch):
    root = folder(tmp_path / "imgs", 4, 0)
    ds, _ = load_source(f"imagefolder:{root}")
    in_memory = to_array(ds, 6, 3)
    opened = count_open_image(monkeypatch)
    cached = to_array(ds, 6, 3, cache_dir=tmp_path / "cache")
    assert isinstance(cached, np.memmap) and np.array_equal(cached, in_memory)
    assert len(opened) == 12
    again = to_array(ds, 6, 3, cache_dir=tmp_path / "cache")
    assert len(opened) == 12, "the second call decoded images"
    assert np.array_equal(again, in_memory)
    cache_file, = (tmp_path / "cache").iterdir()
    written = cache_file.read_bytes()
    again[0] = 0  # callers may write into their array; the cache stays as decoded
    assert cache_file.read_bytes() == written
    to_array(ds, 5, 3, cache_dir=tmp_path / "cache")  # another size is another array
    assert len(opened) == 24 and len(list((tmp_path / "cache").iterdir())) == 2


def test_a_changed_image_invalidates_the_decode_cache(tmp_path: Path):
    root = folder(tmp_path / "imgs", 2, 0)
    ds, _ = load_source(f"imagefolder:{root}")
    before = to_array(ds, 8, 1, cache_dir=tmp_path / "cache")
    changed = root / "dog" / "1.png"
    Image.fromarray(np.full((8, 8), 7, dtype=np.uint8)).save(changed)
    os.utime(changed, ns=(1, 1))  # not even a newer mtime: the size and mtime differ from what was cached
    after = to_array(ds, 8, 1, cache_dir=tmp_path / "cache")
    assert (after[3] == 7).all() and not (before[3] == 7).all()
    assert np.array_equal(after[:3], before[:3])


@pytest.mark.parametrize("failure", ["corrupt image", "Ctrl-C"])
def test_an_interrupted_decode_leaves_no_cache(failure: str, tmp_path: Path, monkeypatch):
    root = folder(tmp_path / "imgs", 4, 0)
    if failure == "corrupt image":
        (root / "dog" / "2.png").write_bytes(b"not a png")
        expected = SynthaugError
    else:
        opened = count_open_image(monkeypatch)
        real = images_module.open_image

        def interrupted(cell, row=0):
            if len(opened) == 6:
                raise KeyboardInterrupt
            return real(cell, row)

        monkeypatch.setattr(images_module, "open_image", interrupted)
        expected = KeyboardInterrupt
    ds, _ = load_source(f"imagefolder:{root}")
    with pytest.raises(expected):
        to_array(ds, 8, 1, cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_decoding_into_the_cache_keeps_memory_flat(tmp_path: Path):
    """1,500 images of 64×64×3 are 18 MB decoded; written row by row, the decode holds one at a time."""
    cells = [{"bytes": None, "path": str(tmp_path / "one.png")}] * 1500
    picture(0, mode="RGB").save(tmp_path / "one.png")
    ds = datasets.Dataset.from_dict({"image": cells}, features=datasets.Features({"image": datasets.Image(decode=False)}))
    for cache_dir in (None, tmp_path / "cache"):
        tracemalloc.start()
        try:
            arr = to_array(ds, 64, 3, cache_dir=cache_dir)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        if cache_dir is None:
            assert peak > 18 * 10**6  # what the cache avoids: the whole array in memory
            in_memory = arr
        else:
            assert peak < 4 * 2**20, f"decoding into the cache allocated {peak / 2**20:.1f} MB at its peak"
            assert np.array_equal(arr, in_memory)


def test_duplicate_digests_are_cached_with_the_arrays(tmp_path: Path, monkeypatch):
    root = folder(tmp_path / "imgs", 4, 0)
    cfg = DataConfig(source=f"imagefolder:{root}")
    first = load_real_data(cfg, seed=0, cache_dir=tmp_path / "cache")
    opened = count_open_image(monkeypatch)
    again = load_real_data(cfg, seed=0, cache_dir=tmp_path / "cache")
    assert not opened, "the second load decoded images to check duplicates"
    assert again.duplicates_train_test == first.duplicates_train_test == 0
    ds, _ = load_source(f"imagefolder:{root}")
    assert np.array_equal(content_hashes(ds, 1), content_hashes(ds, 1, tmp_path / "cache"))


def test_the_decode_cache_keeps_the_most_recently_used_arrays(tmp_path: Path, monkeypatch):
    ds, _ = load_source(f"imagefolder:{folder(tmp_path / 'imgs', 2, 0)}")
    cache = tmp_path / "cache"
    monkeypatch.setattr(images_module, "CACHE_KEEP", 3)

    def name(size: int) -> str:
        return f"images-{images_module.content_key(ds, 'images', size, 1)}.npy"

    def age(path: Path, hours: float) -> None:
        then = time.time_ns() - int(hours * 3600e9)
        os.utime(path, ns=(then, then))

    arrays = {size: to_array(ds, size, 1, cache_dir=cache) for size in (4, 5, 6)}
    for hours, size in ((4, 4), (3, 5), (2, 6)):  # written in this order, hours ago
        age(cache / name(size), hours)
    opened = count_open_image(monkeypatch)
    to_array(ds, 4, 1, cache_dir=cache)  # a hit: 4 is now the most recently used
    assert not opened
    partial_old, partial_new = cache / f".{name(9)}.x.tmp", cache / f".{name(10)}.y.tmp"
    for partial in (partial_old, partial_new):
        partial.write_bytes(b"interrupted")
    age(partial_old, 2)
    to_array(ds, 7, 1, cache_dir=cache)  # a fourth array: the least recently used one (5) goes
    assert sorted(p.name for p in cache.iterdir()) == sorted([*(name(size) for size in (4, 6, 7)), partial_new.name])
    assert np.array_equal(arrays[5], to_array(ds, 5, 1)), "an array mapped before the prune stays readable"
    age(cache / name(6), 0.5)
    to_array(ds, 8, 1, cache_dir=cache)  # every array beyond the count was used within the hour: none goes
    assert len(list(cache.glob("*.npy"))) == 4
    content_hashes(ds, 1, cache)  # digests share the cache and its limit
    assert any(cache.glob("pixels-*.npy"))


def test_a_cache_hit_stands_when_its_file_cannot_be_marked_used(tmp_path: Path, monkeypatch):
    ds, _ = load_source(f"imagefolder:{folder(tmp_path / 'imgs', 2, 0)}")
    first = to_array(ds, 4, 1, cache_dir=tmp_path / "cache")

    def refused(*args, **kwargs):
        raise PermissionError("another user's file")

    monkeypatch.setattr(images_module.os, "utime", refused)
    opened = count_open_image(monkeypatch)
    assert np.array_equal(to_array(ds, 4, 1, cache_dir=tmp_path / "cache"), first)
    assert not opened, "a refused touch threw the hit away and decoded again"


def test_decode_image_keeps_the_mode_and_size_unless_told():
    cells = [{"bytes": encoded(grey(40, size=(6, 4))), "path": None},
             {"bytes": encoded(Image.new("RGB", (5, 5), (10, 20, 30))), "path": None}]
    grey_arr, rgb_arr = (decode_image(cell, i, None, None) for i, cell in enumerate(cells))
    assert grey_arr.shape == (4, 6, 1) and (grey_arr == 40).all()
    assert rgb_arr.shape == (5, 5, 3) and rgb_arr[0, 0].tolist() == [10, 20, 30]
    assert grey_arr.flags.writeable, "torch.from_numpy warns on read-only arrays"
    assert decode_image(cells[1], 1, 3, 1).shape == (3, 3, 1)


# --------------------------------------------------------------------------------------------- uint8 ↔ [-1, 1]


def test_model_input_is_channels_first_in_minus_one_to_one():
    x = np.zeros((2, 3, 4, 1), dtype=np.uint8)
    x[0, 0, 0, 0], x[1, 2, 3, 0] = 255, 128
    out = to_model_input(x)
    assert out.shape == (2, 1, 3, 4) and out.dtype == torch.float32
    assert out[0, 0, 0, 0] == 1.0 and out[1, 0, 2, 3] == pytest.approx(128 / 127.5 - 1, abs=1e-6)
    assert out.min() == -1.0  # a black pixel


@pytest.mark.parametrize("channels", [1, 3])
def test_to_uint8_undoes_to_model_input_for_every_value(channels: int):
    values = np.arange(256, dtype=np.uint8)
    x = np.stack([np.roll(values, c) for c in range(channels)], axis=-1).reshape(4, 8, 8, channels)
    for given in (x, torch.from_numpy(x), x[:, ::-1]):  # an array, a tensor, a non-contiguous view
        expected = np.asarray(given)
        assert np.array_equal(to_uint8(to_model_input(given)), expected)


def test_to_uint8_clips_what_lies_outside_minus_one_to_one():
    x = torch.tensor([-3.0, -1.0, -1 / 255, 0.0, 1 / 255, 1.0, 2.5]).reshape(1, 1, 1, 7)
    assert to_uint8(x)[0, 0, :, 0].tolist() == [0, 0, 127, 128, 128, 255, 255]


# --------------------------------------------------------------------------------------------- PIL, PNG, grids


@pytest.mark.parametrize("channels", [1, 3])
def test_png_bytes_decode_to_the_same_array(channels: int):
    arr = np.random.default_rng(channels).integers(0, 256, (5, 7, channels), dtype=np.uint8)
    data = png_bytes(arr)
    assert data.startswith(b"\x89PNG")
    assert to_pil(arr).mode == ("L" if channels == 1 else "RGB")
    assert np.array_equal(decode_png(data), arr)


def test_fit_arrays_fits_each_image_as_real_images_are():
    arr = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    assert fit_arrays(arr, 8) is arr
    fitted = fit_arrays(arr, 5)
    assert fitted.shape == (3, 5, 5, 3)
    for image, out in zip(arr, fitted, strict=True):
        assert np.array_equal(out, np.asarray(resize_crop(Image.fromarray(image), 5)))
    assert fit_arrays(arr[..., :1], 4).shape == (3, 4, 4, 1)


def test_a_grid_places_each_image_in_its_row_and_column(tmp_path: Path):
    images = np.zeros((2, 3, 4, 4, 1), dtype=np.uint8)
    images[1, 2] = 200  # row 1, column 2
    grid = grid_image(images, scale=2, pad=2)
    assert grid.size == (3 * (4 * 2 + 2) + 2, 2 * (4 * 2 + 2) + 2) and grid.mode == "RGB"
    pixels = np.asarray(grid)
    top, left = 2 + 1 * 10, 2 + 2 * 10
    assert (pixels[top:top + 8, left:left + 8] == 200).all()
    assert (pixels[2:10, 2:10] == 0).all() and (pixels[0:2, :] == 255).all()
    labelled = grid_image(images, ["cat", "a dog"], scale=2)
    assert labelled.width == grid.width + 8 * len("a dog") + 6
    saved = save_grid(images, tmp_path / "grids" / "g.png", scale=2)
    assert np.array_equal(np.asarray(Image.open(saved)), pixels)
