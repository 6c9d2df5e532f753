"""Images: decode, convert, fit to size; the one ``uint8 ↔ [-1, 1]`` pair; PNG bytes; grids; the decode cache.

Images travel as ``datasets.Image(decode=False)`` cells (``{bytes, path}``) until decoded here, then as
uint8 arrays ``(N, H, W, C)``, C = 1 or 3. Models take float ``(N, C, H, W)`` in [-1, 1]
(``to_model_input``); their outputs come back with ``to_uint8``. ``to_array`` decodes a whole dataset,
optionally once into a memory-mapped cache keyed by content (``RunDir.decode_cache``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError

from synthaug.errors import SynthaugError
from synthaug.io import atomic_write_bytes, writing

# Decompression-bomb guard: refuse images over this many pixels instead of decoding them.
MAX_IMAGE_PIXELS = 64_000_000
# Part of every decode-cache key: bump it when decoding changes, so arrays decoded the old way are not reused.
DECODE_VERSION = 2  # 2: EXIF orientation applied
DIGEST_BYTES = 16
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}  # PIL modes that hold one channel


def _describe(cell: dict, row: int) -> str:
    return cell.get("path") or f"row {row}"


def _is_empty_file(path: str | None) -> bool:
    try:
        return bool(path) and os.path.getsize(path) == 0
    except OSError:
        return False


def open_image(cell: dict, row: int = 0) -> Image.Image:
    """Decode one ``datasets.Image(decode=False)`` cell, upright (EXIF orientation applied, as viewers
    show phone photos); corrupt files are named in the error."""
    where = _describe(cell, row)

    def too_large(pixels: str) -> SynthaugError:
        return SynthaugError(f"{where}: image of {pixels} pixels is too large; downscale it first")

    try:
        src = io.BytesIO(cell["bytes"]) if cell.get("bytes") else cell["path"]
        with warnings.catch_warnings():  # PIL warns (a second stderr line) where our own check refuses anyway
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(src)  # reads the header only
        if img.width * img.height > MAX_IMAGE_PIXELS:
            img.close()
            raise too_large(f"{img.width}×{img.height}")
        img.draft("RGB" if img.mode not in ("L", "I;16", "I", "F") else img.mode, (1024, 1024))  # JPEG: decode small
        img.load()
        ImageOps.exif_transpose(img, in_place=True)
        return img
    except SynthaugError:
        raise
    except Image.DecompressionBombError:  # PIL refuses over 2 × its own limit before we see the size
        raise too_large(f"more than {2 * Image.MAX_IMAGE_PIXELS}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        reason = "empty file" if _is_empty_file(cell.get("path")) else str(exc)
        raise SynthaugError(f"{where}: not a readable image ({reason}); remove or replace the file") from None


def convert_mode(img: Image.Image, channels: int) -> Image.Image:
    """Any PIL mode → 'L' or 'RGB'. Transparency is composited on white; 16-bit and float are rescaled."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        img = Image.fromarray(np.clip(arr / hi * 255.0, 0, 255).astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    return img.convert("L" if channels == 1 else "RGB")


def resize_crop(img: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` (bicubic), then centre-crop to ``size × size``."""
    return ImageOps.fit(img, (size, size), method=Image.Resampling.BICUBIC, centering=(0.5, 0.5))


def decode_image(cell: dict, row: int, image_size: int | None, channels: int | None) -> np.ndarray:
    """One ``Image(decode=False)`` cell → uint8 (H, W, C): converted to ``channels`` (default: 1 for grey
    modes, else 3), fitted to ``image_size`` (default: its own size)."""
    with open_image(cell, row) as img:
        img = convert_mode(img, channels or (1 if img.mode in GREY_MODES else 3))
        if image_size is not None:
            img = resize_crop(img, image_size)
        arr = np.array(img, dtype=np.uint8)  # a writable copy: torch.from_numpy warns on read-only
    return arr[..., None] if arr.ndim == 2 else arr


# --------------------------------------------------------------------------------------------- arrays and tensors


def to_model_input(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, C), array or tensor → float32 (N, C, H, W) in [-1, 1]: what every model here takes."""
    x = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    return x.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) in [−1, 1] → uint8 (B, H, W, C): ``to_model_input`` undone; values outside are clipped."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def to_pil(array: np.ndarray) -> Image.Image:
    """uint8 (H, W, C) → a PIL image ('L' for one channel)."""
    return Image.fromarray(array[..., 0], mode="L") if array.shape[-1] == 1 else Image.fromarray(array, mode="RGB")


def fit_arrays(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (B, H, W, C) → (B, size, size, C), each image fitted as real images are (``resize_crop``)."""
    if images.shape[1:3] == (size, size):
        return images
    channels = images.shape[-1]
    return np.stack([np.asarray(resize_crop(to_pil(a), size)).reshape(size, size, channels) for a in images])


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    to_pil(array).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        arr = np.asarray(img)
    return arr[..., None] if arr.ndim == 2 else arr


# --------------------------------------------------------------------------------------------- the decode cache


def _cells(ds, batch_size: int = 256) -> Iterator[dict]:
    """The undecoded image cells in order, a batch at a time: the whole column at once would hold every
    image's bytes in memory."""
    for batch in ds.select_columns(["image"]).with_format(None).iter(batch_size=batch_size):
        yield from batch["image"]


def _progress(items, total: int, desc: str, progress: bool):
    if not progress:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, total=total, desc=desc, unit="img", leave=False)


def _decoded(ds, image_size: int, channels: int, progress: bool) -> Iterator[np.ndarray]:
    for i, cell in enumerate(_progress(_cells(ds), len(ds), "decode", progress)):
        yield decode_image(cell, i, image_size, channels)


def content_key(ds, *params) -> str:
    """A key for what decoding ``ds`` makes: every image cell's content (a file's path, size and mtime, or a
    hash of embedded bytes), in order, plus ``params`` (size, channels) and ``DECODE_VERSION``."""
    h = hashlib.sha256(repr((DECODE_VERSION, len(ds), params)).encode())
    for cell in _cells(ds):
        if cell.get("bytes"):
            h.update(b"b" + hashlib.blake2b(cell["bytes"], digest_size=DIGEST_BYTES).digest())
            continue
        try:
            st = os.stat(cell["path"])
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except (OSError, TypeError):
            stamp = "missing"  # decoding it will say what is wrong
        h.update(f"p{cell.get('path')}\0{stamp}\0".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:24]


# The decode cache keeps this many arrays, the most recently used. One run reads a handful (each split at each
# size a stage asks for, and the pixel digests); older ones are what an edited dataset or recipe left behind.
# An array used in the last CACHE_GRACE_S seconds is kept whatever the count (another process may be about to
# open it), as is a partial write as young (a decode in progress).
CACHE_KEEP = 12
CACHE_GRACE_S = 3600


def _cached_npy(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The cache file memory-mapped copy-on-write (callers may write to the array; the file never
    changes), or None when it is absent or not what ``shape`` needs. A hit marks the file as used."""
    if not path.exists():
        return None
    try:
        arr = np.load(path, mmap_mode="c")
    except (OSError, ValueError):
        return None
    if arr.shape != shape or arr.dtype != np.uint8:
        return None
    with contextlib.suppress(OSError):  # another user's file, a read-only disk: the hit stands
        os.utime(path)  # least recently used is what _prune_cache removes
    return arr


def _prune_cache(cache_dir: Path) -> None:
    """Remove all but the ``CACHE_KEEP`` most recently used cache arrays, and partial writes an interrupted
    decode left, none used in the last ``CACHE_GRACE_S`` seconds. Housekeeping: a file that cannot be
    removed stays. An array another process has mapped stays readable there on a local disk (the file is
    unlinked, not overwritten)."""
    stale_before = time.time_ns() - CACHE_GRACE_S * 10**9
    arrays, partial = [], []
    for path in Path(cache_dir).iterdir():
        try:
            used = path.stat().st_mtime_ns
        except OSError:  # removed meanwhile
            continue
        if path.name.startswith(("images-", "pixels-")) and path.suffix == ".npy":
            arrays.append((used, path))
        elif path.name.startswith((".images-", ".pixels-")) and path.name.endswith(".tmp"):
            partial.append((used, path))
    for used, path in sorted(arrays, reverse=True)[CACHE_KEEP:] + partial:
        if used < stale_before:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)


def _write_npy(path: Path, shape: tuple[int, ...], rows: Iterator[np.ndarray]) -> None:
    """Write uint8 ``rows`` as an ``.npy`` of ``shape``, one row at a time (memory stays flat), under a
    temporary name renamed into place only when complete: an interrupted decode leaves no cache."""
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with writing(path), os.fdopen(fd, "wb") as fh:
            np.lib.format.write_array_header_1_0(fh, {"descr": "|u1", "fortran_order": False, "shape": shape})
            written = 0
            for row in rows:
                fh.write(np.ascontiguousarray(row, dtype=np.uint8).tobytes())
                written += 1
            if written != shape[0]:
                raise RuntimeError(f"{path}: wrote {written} rows of {shape[0]}")
            fh.flush()
            os.fsync(fh.fileno())
        with writing(path):
            os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def to_array(ds, image_size: int, channels: int, progress: bool = False, cache_dir: Path | None = None) -> np.ndarray:
    """Decode, convert and resize every image → uint8 array (N, H, W, C), one image in memory at a time.

    With ``cache_dir`` the array is decoded once into an ``.npy`` there, keyed by ``content_key`` (a
    changed image, size or channel count makes a new one), and returned memory-mapped: memory stays flat
    however many images there are, and later stages read it without decoding.
    """
    shape = (len(ds), image_size, image_size, channels)
    if cache_dir is None or not len(ds):
        out = np.empty(shape, dtype=np.uint8)
        for i, arr in enumerate(_decoded(ds, image_size, channels, progress)):
            out[i] = arr
        return out
    path = Path(cache_dir) / f"images-{content_key(ds, 'images', image_size, channels)}.npy"
    cached = _cached_npy(path, shape)
    if cached is not None:
        return cached
    _write_npy(path, shape, _decoded(ds, image_size, channels, progress))
    arr = np.load(path, mmap_mode="c")
    _prune_cache(path.parent)
    return arr


def pixel_digest(img: Image.Image, channels: int) -> bytes:
    """A digest of an image's pixels, converted to ``channels`` at its own size: equal digests mean the
    same picture, whatever the file format or bytes."""
    converted = convert_mode(img, channels)
    h = hashlib.blake2b(f"{converted.width}x{converted.height}x{channels}".encode(), digest_size=DIGEST_BYTES)
    h.update(converted.tobytes())
    return h.digest()


def content_hashes(ds, channels: int, cache_dir: Path | None = None, progress: bool = False,
                   inspect: Callable[[int, Image.Image], None] | None = None) -> np.ndarray:
    """``pixel_digest`` of every image → uint8 (N, DIGEST_BYTES). Decodes every image; with ``cache_dir``
    the digests are kept there (keyed like ``to_array``'s arrays), so a later call decodes nothing.
    ``inspect(row, image)`` is called with every image decoded (none on a cache hit), so one pass can also
    look at them."""
    shape = (len(ds), DIGEST_BYTES)
    path = Path(cache_dir) / f"pixels-{content_key(ds, 'pixels', channels)}.npy" if cache_dir and len(ds) else None
    cached = _cached_npy(path, shape) if path is not None else None
    if cached is not None:
        return np.asarray(cached)
    digests = np.empty(shape, dtype=np.uint8)
    for i, cell in enumerate(_progress(_cells(ds), len(ds), "check duplicates", progress)):
        with open_image(cell, i) as img:
            digests[i] = np.frombuffer(pixel_digest(img, channels), dtype=np.uint8)
            if inspect is not None:
                inspect(i, img)
    if path is not None:
        _write_npy(path, shape, iter(digests))
        _prune_cache(path.parent)
    return digests


# --------------------------------------------------------------------------------------------- grids


def mosaic(rows: Sequence[Sequence[np.ndarray]], scale: int, pad: int = 2) -> tuple[np.ndarray, list[float]]:
    """Rows of uint8 (H, W, C) images, all one size (rows may be ragged or empty) → one uint8 RGB (Y, X, 3)
    canvas on white, each image upscaled ``scale``× (nearest neighbour), and the y pixel centre of each row
    (for labels). The sample grids and the report's figures are both drawn from it."""
    first = next(image for row in rows for image in row)
    h, w = first.shape[:2]
    cell_h, cell_w = h * scale + pad, w * scale + pad
    cols = max(1, max(len(row) for row in rows))
    canvas = np.full((len(rows) * cell_h + pad, cols * cell_w + pad, 3), 255, dtype=np.uint8)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
            y, x = pad + r * cell_h, pad + c * cell_w
            canvas[y : y + h * scale, x : x + w * scale] = rgb.repeat(scale, axis=0).repeat(scale, axis=1)
    return canvas, [pad + r * cell_h + h * scale / 2 for r in range(len(rows))]


def grid_image(images: np.ndarray, row_labels: Sequence[str] | None = None, scale: int | None = None,
               pad: int = 2) -> Image.Image:
    """uint8 (R, C, H, W, ch) → one RGB image, rows labelled on the left, upscaled nearest-neighbour."""
    rows, _, h, w, _ = images.shape
    scale = scale or max(1, 64 // max(h, w))
    tiles, centres = mosaic([list(row) for row in images], scale, pad)
    label_w = 8 * max((len(s) for s in row_labels), default=0) + 6 if row_labels else 0
    canvas = Image.new("RGB", (label_w + tiles.shape[1], tiles.shape[0]), "white")
    canvas.paste(Image.fromarray(tiles), (label_w, 0))
    if row_labels:
        draw = ImageDraw.Draw(canvas)
        for r in range(rows):
            draw.text((3, int(centres[r]) - 6), str(row_labels[r])[:24], fill="black")
    return canvas


def save_grid(images: np.ndarray, path: Path, row_labels: Sequence[str] | None = None, scale: int | None = None) -> Path:
    buf = io.BytesIO()
    grid_image(images, row_labels, scale).save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())
