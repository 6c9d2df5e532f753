"""Data: sources → ``datasets.Dataset{image, label: ClassLabel, id}`` → split → subset → arrays → batches.

Every source becomes the same shape of ``datasets.Dataset``, held in memory (never cached beside a user's
files): an ``image`` column (``datasets.Image``, not decoded until needed, so a folder of 50,000 images
loads lazily), a ``label`` ``ClassLabel`` with the class names, and an ``id`` column that lets tests prove
the test split never reaches training. A source's ids are its row positions; a separate test source's
start at ``TEST_SOURCE_ID_OFFSET``, so no test id can equal a training id.

The held-out test split is carved from the source *before* ``subset`` simulates scarcity, so the test
set keeps every class at its natural size and macro-F1 on rare classes is measured on more than a
handful of images. Ids only tell rows apart; images whose decoded pixels are in both splits (duplicate
files) are found by content and, by default, dropped from the test split (``data.train_test_duplicates``).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from synthaug.config import DataConfig
from synthaug.errors import SynthaugError, did_you_mean
from synthaug.io import writing

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
# Decompression-bomb guard: refuse images over this many pixels instead of decoding them.
MAX_IMAGE_PIXELS = 64_000_000
# Far above any real label set; a wrong label column (file names, a stray huge id) is refused before it
# allocates a class per value.
MAX_CLASSES = 10_000
# Ids of a separate data.test_source's rows (synthetic rows start at stages.SYNTHETIC_ID_OFFSET = 10**12).
TEST_SOURCE_ID_OFFSET = 10**11
# Part of every decode-cache key: bump it when decoding changes, so arrays decoded the old way are not reused.
DECODE_VERSION = 2  # 2: EXIF orientation applied
DIGEST_BYTES = 16


@dataclass
class SourceReport:
    """What a source scan found beyond the images themselves (shown by ``synthaug data``)."""

    ignored_files: int = 0
    notes: list[str] = field(default_factory=list)


def _features(classes: Sequence[str]):
    import datasets

    return datasets.Features(
        {
            "image": datasets.Image(decode=False),
            "label": datasets.ClassLabel(names=list(classes)),
            "id": datasets.Value("int64"),
        }
    )


def _image_storage_type():
    import pyarrow as pa

    return pa.struct({"bytes": pa.binary(), "path": pa.string()})


def _dataset(images, labels: Sequence[int], classes: Sequence[str], first_id: int = 0):
    """Image cells (``{bytes, path}`` dicts or their Arrow storage) + labels → ``Dataset{image, label, id}``.

    The table is in memory (Arrow buffers of a saved dataset stay memory-mapped, zero-copy), so later
    ``select``s and casts never write cache files, least of all into the folder a dataset was loaded from.
    """
    import datasets
    import pyarrow as pa
    from datasets.fingerprint import generate_random_fingerprint
    from datasets.table import InMemoryTable

    if not isinstance(images, (pa.Array, pa.ChunkedArray)):
        images = pa.array(images, type=_image_storage_type())
    n = len(labels)
    table = pa.table({
        "image": images,
        "label": pa.array(np.asarray(labels, dtype=np.int64)),
        "id": pa.array(np.arange(first_id, first_id + n, dtype=np.int64)),
    })
    # A fingerprint given, not computed: datasets would hash every byte of the table (seconds per GB).
    return datasets.Dataset(InMemoryTable(table), info=datasets.DatasetInfo(features=_features(classes)),
                            fingerprint=generate_random_fingerprint())


def _image_column(ds):
    """The ``image`` column's Arrow storage, with any ``select`` applied."""
    return ds.with_format("arrow")["image"]


def _too_many_classes(where: str, found: str, fix: str) -> SynthaugError:
    return SynthaugError(f"{where}: {found}, more than the {MAX_CLASSES:,} classes synthaug supports; {fix}")


def _preview(names: Sequence[str], n: int = 8) -> str:
    shown = ", ".join(names[:n])
    return shown + (f", … ({len(names)} in all)" if len(names) > n else "")


def _classes_from_values(values: Sequence[Any], where: str, row: Callable[[int], str]):
    """Label cells → (class names, label index per row, notes).

    Integer ids are classes in numeric order, only the ids rows use (ids 0, 2, 5 are three classes,
    not six with three empty); any other value is a class name, in sorted order.
    """
    integers = all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in values)
    keys = [int(v) for v in values] if integers else [str(v) for v in values]
    seen: set = set()
    for i, key in enumerate(keys):
        if integers and key < 0:
            raise SynthaugError(f"{where}: label {key} on {row(i)} is negative; class ids must be ≥ 0 "
                                "(-1 often marks an unlabelled row: drop those rows)")
        if key not in seen:
            if len(seen) == MAX_CLASSES:
                raise _too_many_classes(where, f"the label {values[i]!r} on {row(i)} makes {MAX_CLASSES + 1:,} "
                                        "different labels", "is data.label_column the class column?")
            seen.add(key)
    order = sorted(seen)
    index = {key: c for c, key in enumerate(order)}
    names = [str(key) for key in order]
    notes = []
    if integers and order != list(range(len(order))):
        notes.append(f"{where}: the integer labels {_preview(names)} are the classes, in numeric order "
                     "(ids no row uses are not classes)")
    return names, [index[key] for key in keys], notes


def _rows_text(rows: Sequence[int], row: Callable[[int], str]) -> str:
    return ", ".join(row(int(i)) for i in rows[:5]) + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")


# --------------------------------------------------------------------------------------------- sources


def load_builtin(name: str):
    if name != "digits":
        raise SynthaugError(f"builtin:{name}: unknown built-in dataset; the built-in is builtin:digits")
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 8×8 pixels in 0..16 → 0..255 grey PNGs, so builtin data travels the same road as a user's files.
    pixels = np.clip(np.rint(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    images = []
    for img in pixels:
        buf = io.BytesIO()
        Image.fromarray(img, mode="L").save(buf, format="PNG")
        images.append({"bytes": buf.getvalue(), "path": None})
    return _dataset(images, digits.target.astype(int).tolist(), [str(c) for c in range(10)]), SourceReport()


def shown_path(path: str | Path) -> str:
    """A path as text that can always be printed: bytes that are not UTF-8 appear as ``\\xff``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _utf8_path(path: Path, where: str) -> str:
    """``str(path)``, or a refusal naming it when its name is not valid UTF-8 (Arrow stores text as UTF-8)."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise SynthaugError(f"{where}: the name of '{shown_path(path)}' is not valid UTF-8; rename it") from None
    return text


def _is_link_above(path: Path, root: Path) -> bool:
    """A symlink to ``root`` or a folder above it: as a class it would hold every class's images again."""
    return path.is_symlink() and root.resolve().is_relative_to(path.resolve())


def load_imagefolder(root: str | Path):
    root = Path(root)
    where = f"imagefolder:{shown_path(root)}"
    if not root.is_dir():
        raise SynthaugError(f"{where}: no such folder; point data.source at a folder of class folders")
    _utf8_path(root, where)
    report = SourceReport()
    class_dirs = []
    for path in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if _is_link_above(path, root):
            report.notes.append(f"{where}: skipped {path.name!r}, a link to the dataset folder or a folder above it")
            continue
        _utf8_path(path, where)
        class_dirs.append(path)
    if not class_dirs:
        raise SynthaugError(f"{where}: no class sub-folders; put each class's images in root/CLASS/")
    if len(class_dirs) > MAX_CLASSES:
        raise _too_many_classes(where, f"{len(class_dirs):,} class folders",
                                "point data.source at the folder whose sub-folders are the classes")
    lowered = Counter(p.name.casefold() for p in class_dirs)
    clash = sorted(p.name for p in class_dirs if lowered[p.name.casefold()] > 1)
    if clash:
        raise SynthaugError(
            f"{where}: class folders {', '.join(map(repr, clash))} differ only in case; "
            "merge or rename them (they would collide on case-insensitive disks)"
        )
    paths: list[dict] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        found = 0
        for path in sorted(class_dir.rglob("*")):  # rglob does not descend into linked folders
            if not path.is_file() or path.name.startswith("."):
                continue
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                report.ignored_files += 1
                continue
            paths.append({"bytes": None, "path": _utf8_path(path, where)})
            labels.append(label)
            found += 1
        if not found:
            raise SynthaugError(f"{where}: class folder {class_dir.name!r} has no images; add images or remove the folder")
    return _dataset(paths, labels, [p.name for p in class_dirs]), report


def load_csv(csv_path: str | Path, image_column: str, label_column: str):
    import pandas as pd

    csv_path = Path(csv_path)
    where = f"csv:{shown_path(csv_path)}"
    if not csv_path.is_file():
        raise SynthaugError(f"{where}: no such file")
    try:
        table = pd.read_csv(csv_path)
    except Exception as exc:  # pandas raises many types for malformed files
        raise SynthaugError(f"{where}: cannot parse the CSV ({exc.__class__.__name__}: {exc})") from None
    for column, key in ((image_column, "data.image_column"), (label_column, "data.label_column")):
        if column not in table.columns:
            raise SynthaugError(
                f"{where}: no {column!r} column (columns: {', '.join(map(str, table.columns))}); "
                f"add it or set {key}"
            )
    missing = table[[image_column, label_column]].isna().any(axis=1)
    if missing.any():
        rows = ", ".join(str(i + 2) for i in np.flatnonzero(missing.to_numpy())[:5])
        raise SynthaugError(f"{where}: empty image or label on line(s) {rows}; fill them in or drop the rows")
    classes, labels, notes = _classes_from_values(table[label_column].tolist(), where, lambda i: f"line {i + 2}")
    images = []
    for rel in table[image_column]:
        path = (csv_path.parent / str(rel)).resolve()
        if not path.is_file():
            raise SynthaugError(f"{where}: image {rel!r} not found (paths are relative to the CSV)")
        images.append({"bytes": None, "path": _utf8_path(path, where)})
    return _dataset(images, labels, classes), SourceReport(notes=notes)


def _feature_name(feature) -> str:
    return getattr(feature, "dtype", None) or type(feature).__name__


def _hf_images(ds, column: str, where: str):
    """The image column as ``{bytes, path}`` Arrow storage; refuses columns that hold no images, and empty cells."""
    import datasets
    import pyarrow as pa
    import pyarrow.compute as pc

    feature = ds.features[column]
    text_or_bytes = isinstance(feature, datasets.Value) and feature.dtype in (
        "string", "large_string", "binary", "large_binary")
    if not (isinstance(feature, datasets.Image) or text_or_bytes):
        raise SynthaugError(f"{where}: column {column!r} holds {_feature_name(feature)} values, not images; "
                            f"set data.image_column to the image column (columns: {', '.join(ds.column_names)})")
    chunks = [datasets.Image().cast_storage(c) for c in ds.with_format("arrow")[column].chunks]
    empty = []
    for chunk in chunks:
        data, path = chunk.flatten()
        no_data = pc.fill_null(pc.equal(pc.binary_length(data), 0), True)
        no_path = pc.fill_null(pc.equal(pc.utf8_length(path), 0), True)
        empty.append(pc.or_(chunk.is_null(), pc.and_(no_data, no_path)).to_numpy(zero_copy_only=False))
    rows = np.flatnonzero(np.concatenate(empty)) if empty else []
    if len(rows):
        raise SynthaugError(f"{where}: no image on {_rows_text(rows, 'row {}'.format)} of column {column!r}; "
                            "drop those rows")
    return pa.chunked_array(chunks, type=_image_storage_type())


def _hf_labels(ds, column: str, where: str):
    """The label column → (class names, label per row, notes); refuses empty labels like CSV does."""
    import datasets

    feature = ds.features[column]
    if not isinstance(feature, (datasets.ClassLabel, datasets.Value)):
        raise SynthaugError(f"{where}: column {column!r} holds {_feature_name(feature)} values, not one class per "
                            "row; set data.label_column to the class column")
    values = ds.with_format("arrow")[column].to_pylist()
    row = "row {}".format
    empty = [i for i, v in enumerate(values) if v is None]
    if empty:
        raise SynthaugError(f"{where}: empty label on {_rows_text(empty, row)}; fill them in or drop the rows")
    if not isinstance(feature, datasets.ClassLabel):
        return _classes_from_values(values, where, row)
    unlabelled = [i for i, v in enumerate(values) if v < 0]
    if unlabelled:
        raise SynthaugError(f"{where}: no label (-1) on {_rows_text(unlabelled, row)}; a Hub test split is often "
                            "unlabelled: use a labelled split or drop those rows")
    if len(feature.names) > MAX_CLASSES:
        raise _too_many_classes(where, f"its ClassLabel names {len(feature.names):,} classes",
                                "is data.label_column the class column?")
    return list(feature.names), values, []


def load_hf(path_or_id: str, image_column: str, label_column: str):
    import datasets

    where = f"hf:{path_or_id}"
    path = Path(path_or_id)
    try:
        if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
            ds = datasets.load_from_disk(str(path))
        else:
            ds = datasets.load_dataset(path_or_id)
    except FileNotFoundError as exc:
        raise SynthaugError(f"{where}: not found ({exc}); give a saved dataset folder or a Hub id") from None
    except Exception as exc:  # connection errors, bad ids, unsupported layouts
        raise SynthaugError(f"{where}: cannot load ({exc.__class__.__name__}: {str(exc).splitlines()[0]})") from None
    if isinstance(ds, datasets.DatasetDict):
        split = "train" if "train" in ds else next(iter(ds))
        ds = ds[split]
    for column, key in ((image_column, "data.image_column"), (label_column, "data.label_column")):
        if column not in ds.column_names:
            raise SynthaugError(f"{where}: no {column!r} column (columns: {', '.join(ds.column_names)}); set {key}")
    images = _hf_images(ds, image_column, where)
    classes, labels, notes = _hf_labels(ds, label_column, where)
    # Rebuilt in memory: datasets' own cast/add_column would write cache-*.arrow files into the user's folder.
    return _dataset(images, labels, classes), SourceReport(notes=notes)


def load_source(spec: str, image_column: str = "image", label_column: str = "label"):
    """Load ``builtin:NAME | imagefolder:DIR | hf:PATH_OR_ID | csv:FILE`` → (Dataset, SourceReport)."""
    scheme, _, rest = spec.partition(":")
    if scheme == "builtin":
        return load_builtin(rest)
    if scheme == "imagefolder":
        return load_imagefolder(rest)
    if scheme == "csv":
        return load_csv(rest, image_column, label_column)
    if scheme == "hf":
        return load_hf(rest, image_column, label_column)
    raise SynthaugError(f"unknown source scheme {scheme!r}; use builtin:, imagefolder:, hf: or csv:")


# --------------------------------------------------------------------------------------------- images


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
        with open_image(cell, i) as img:
            arr = np.asarray(resize_crop(convert_mode(img, channels), image_size))
        yield arr.reshape(image_size, image_size, channels)


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


def _cached_npy(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The cache file memory-mapped copy-on-write (callers may write to the array; the file never
    changes), or None when it is absent or not what ``shape`` needs."""
    if not path.exists():
        return None
    try:
        arr = np.load(path, mmap_mode="c")
    except (OSError, ValueError):
        return None
    return arr if arr.shape == shape and arr.dtype == np.uint8 else None


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
    return np.load(path, mmap_mode="c")


def pixel_digest(img: Image.Image, channels: int) -> bytes:
    """A digest of an image's pixels, converted to ``channels`` at its own size: equal digests mean the
    same picture, whatever the file format or bytes."""
    converted = convert_mode(img, channels)
    h = hashlib.blake2b(f"{converted.width}x{converted.height}x{channels}".encode(), digest_size=DIGEST_BYTES)
    h.update(converted.tobytes())
    return h.digest()


def content_hashes(ds, channels: int, cache_dir: Path | None = None, progress: bool = False) -> np.ndarray:
    """``pixel_digest`` of every image → uint8 (N, DIGEST_BYTES). Decodes every image; with ``cache_dir``
    the digests are kept there (keyed like ``to_array``'s arrays), so a later call decodes nothing."""
    shape = (len(ds), DIGEST_BYTES)
    path = Path(cache_dir) / f"pixels-{content_key(ds, 'pixels', channels)}.npy" if cache_dir and len(ds) else None
    cached = _cached_npy(path, shape) if path is not None else None
    if cached is not None:
        return np.asarray(cached)
    digests = np.empty(shape, dtype=np.uint8)
    for i, cell in enumerate(_progress(_cells(ds), len(ds), "check duplicates", progress)):
        with open_image(cell, i) as img:
            digests[i] = np.frombuffer(pixel_digest(img, channels), dtype=np.uint8)
    if path is not None:
        _write_npy(path, shape, iter(digests))
    return digests


# --------------------------------------------------------------------------------------------- split and subset


def class_counts(labels: Sequence[int], num_classes: int) -> list[int]:
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    return counts.tolist()


def stratified_split(labels: Sequence[int], classes: Sequence[str], fraction: float, seed: int):
    """Seeded stratified split → (train_rows, test_rows), each sorted.

    Every class keeps ≥ 1 training and ≥ 1 test image; a class with one image cannot be split.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, 0x5EED])
    train, test = [], []
    for c, name in enumerate(classes):
        rows = np.flatnonzero(labels == c)
        if len(rows) == 0:
            raise SynthaugError(f"class {name!r} has no images; add images or remove the class")
        if len(rows) == 1:
            raise SynthaugError(
                f"class {name!r} has 1 image, too few to hold out a test image; add images or set data.test_source"
            )
        rows = rng.permutation(rows)
        n_test = min(max(1, round(len(rows) * fraction)), len(rows) - 1)
        test.extend(rows[:n_test].tolist())
        train.extend(rows[n_test:].tolist())
    return sorted(train), sorted(test)


def subset_rows(labels: Sequence[int], num_classes: int, per_class: int | None, imbalance: float | None, seed: int):
    """Rows kept by ``subset``: at most ``per_class`` per class, then a long tail of factor ``imbalance``.

    With the tail, class k (in label order) keeps ``n_max · imbalance^(−k/(K−1))`` images, at least 1.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, 0x50B5E7])
    by_class = [rng.permutation(np.flatnonzero(labels == c)) for c in range(num_classes)]
    if per_class is not None:
        by_class = [rows[:per_class] for rows in by_class]
    if imbalance is not None and num_classes > 1:
        n_max = max(len(rows) for rows in by_class)
        targets = [max(1, math.floor(n_max * imbalance ** (-k / (num_classes - 1)) + 0.5)) for k in range(num_classes)]
        by_class = [rows[: min(len(rows), t)] for rows, t in zip(by_class, targets)]
    return sorted(int(r) for rows in by_class for r in rows)


@dataclass
class RealData:
    """The real data of a run: class names, the training split (after subset) and the test split.

    ``report`` merges what the training and test sources' scans found, plus notes on the split (classes
    without test images, duplicates) for ``synthaug data``. ``duplicates_train_test`` counts test images
    whose pixels are also in the training split (before subset); None when the content check did not run.
    ``duplicate_test_ids`` are their ids (dropped from ``test`` unless ``data.train_test_duplicates: keep``).
    """

    classes: list[str]
    train: Any  # datasets.Dataset{image, label, id}
    test: Any
    report: SourceReport
    duplicates_train_test: int | None = None
    duplicate_test_ids: list[int] = field(default_factory=list)

    @property
    def train_counts(self) -> list[int]:
        return class_counts(self.train["label"], len(self.classes))

    @property
    def test_counts(self) -> list[int]:
        return class_counts(self.test["label"], len(self.classes))


def _align_test(test, classes: list[str], spec: str):
    """A separate test source → training class order (matched by name), ids from ``TEST_SOURCE_ID_OFFSET``."""
    names = test.features["label"].names
    labels = np.asarray(test["label"], dtype=np.int64)
    unknown = sorted({names[v] for v in set(labels.tolist())} - set(classes))
    if unknown:
        did = did_you_mean(unknown[0], classes, quoted=True)
        raise SynthaugError(f"{spec}: test classes {unknown} are not training classes{did}; rename them")
    mapping = np.asarray([classes.index(n) if n in classes else -1 for n in names], dtype=np.int64)
    return _dataset(_image_column(test), mapping[labels], classes, first_id=TEST_SOURCE_ID_OFFSET)


def _duplicate_rows(train_digests: np.ndarray, test_digests: np.ndarray) -> list[int]:
    """Positions of test rows whose pixels equal some training row's."""
    seen = {row.tobytes() for row in train_digests}
    return [i for i, row in enumerate(test_digests) if row.tobytes() in seen]


def _duplicates_note(n: int, policy: str) -> str:
    same = f"{n} image(s) are in both the training and the test split (same pixels)"
    if policy == "drop":
        return f"{same}; dropped from the test split (data.train_test_duplicates: keep to keep them)"
    return f"{same}; kept in the test split, so it scores images seen in training (data.train_test_duplicates: drop)"


def load_real_data(cfg: DataConfig, seed: int, *, cache_dir: Path | None = None, check_duplicates: bool = True,
                   progress: bool = False) -> RealData:
    """Load the source, hold out the test split, find images in both splits, then apply ``subset`` to the
    training split only.

    The duplicate check decodes every image (``content_hashes``; with ``cache_dir`` only the first call
    does); ``check_duplicates=False`` skips it, reading no image at all.
    """
    source, found = load_source(cfg.source, cfg.image_column, cfg.label_column)
    report = SourceReport(found.ignored_files, list(found.notes))
    classes = list(source.features["label"].names)
    if len(classes) < 2:
        raise SynthaugError(f"{cfg.source}: found {len(classes)} class; a classifier needs at least 2")
    if cfg.test_source:
        test, found = load_source(cfg.test_source, cfg.image_column, cfg.label_column)
        report.ignored_files += found.ignored_files
        report.notes += found.notes
        test = _align_test(test, classes, cfg.test_source)
        train_rows, test_rows = list(range(len(source))), None
        counts = class_counts(source["label"], len(classes))
        for name, n in zip(classes, counts):
            if n == 0:
                raise SynthaugError(f"class {name!r} has no training images; add images or remove the class")
    else:
        train_rows, test_rows = stratified_split(source["label"], classes, cfg.test_fraction, seed)
        test = source.select(test_rows)
    data = RealData(classes=classes, train=source.select(train_rows), test=test, report=report)
    if check_duplicates:
        _check_duplicates(data, source, test_rows, cfg, cache_dir, progress)
    keep = subset_rows(data.train["label"], len(classes), cfg.subset.per_class, cfg.subset.imbalance, seed)
    if len(keep) != len(data.train):
        data.train = data.train.select(keep)
    for name, n in zip(classes, data.test_counts):
        if n == 0:
            report.notes.append(f"class {name!r} has no test images, so the test split cannot measure it; "
                                "add test images of it")
    return data


def _check_duplicates(data: RealData, source, test_rows: list[int] | None, cfg: DataConfig,
                      cache_dir: Path | None, progress: bool) -> None:
    """Count (and under ``drop``, remove) test images whose pixels are in the training split."""
    digests = content_hashes(source, cfg.channels, cache_dir, progress)
    if test_rows is None:  # a separate test source
        train_digests, test_digests = digests, content_hashes(data.test, cfg.channels, cache_dir, progress)
    else:
        train_digests = np.delete(digests, test_rows, axis=0)
        test_digests = digests[test_rows]
    rows = _duplicate_rows(train_digests, test_digests)
    data.duplicates_train_test = len(rows)
    data.duplicate_test_ids = [int(i) for i in np.asarray(data.test["id"], dtype=np.int64)[rows]]
    if not rows:
        return
    data.report.notes.append(_duplicates_note(len(rows), cfg.train_test_duplicates))
    if cfg.train_test_duplicates == "drop":
        if len(rows) == len(data.test):
            raise SynthaugError("every test image is also in the training split (same pixels); use a test source of "
                                "other images, or data.train_test_duplicates: keep")
        data.test = data.test.select(sorted(set(range(len(data.test))) - set(rows)))


# --------------------------------------------------------------------------------------------- training batches


def build_augment(items: list[dict[str, dict | None]]):
    """``[{Affine: {scale: [0.9, 1.1]}}, ...]`` → an albumentations ``Compose`` (or None for no items)."""
    if not items:
        return None
    import albumentations as A

    transforms = []
    for item in items:
        (name, params), = item.items()
        cls = getattr(A, name, None)
        if not (isinstance(cls, type) and issubclass(cls, A.BasicTransform)):
            names = [n for n in dir(A) if isinstance(getattr(A, n), type) and issubclass(getattr(A, n), A.BasicTransform)]
            raise SynthaugError(f"train.augment: {name!r} is not an albumentations transform"
                                f"{did_you_mean(name, names)}")
        import inspect

        accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "args", "kwargs"}
        unknown = sorted(set(params or {}) - accepted)
        if unknown:
            raise SynthaugError(f"train.augment: {name} has no parameter {unknown[0]!r}"
                                f"{did_you_mean(unknown[0], accepted)}")
        try:
            transforms.append(cls(**(params or {})))
        except Exception as exc:
            raise SynthaugError(f"train.augment: {name}({params}) is invalid: {str(exc).splitlines()[0]}") from None
    return A.Compose(transforms)


def step_seed(seed: int, step: int, rank: int, stream: int) -> int:
    """A 63-bit seed for one (step, rank, stream): every random draw of a training step comes from here."""
    return int(np.random.SeedSequence([seed, step, rank, stream]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class StepBatches(torch.utils.data.Dataset):
    """Item ``i`` is the whole training batch of optimizer step ``i``.

    Batches depend only on (seed, step, rank), not on how many steps ran before: a resumed run sees
    exactly the batches an uninterrupted run would. Classes are drawn with weights ∝ n_c^−class_balance.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int,
                 class_balance: float = 0.5, augment=None, rank: int = 0):
        self.images = images  # uint8 (N, H, W, C)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.augment = augment
        counts = np.bincount(self.labels)
        weight = np.where(counts > 0, counts.astype(np.float64) ** -class_balance, 0.0)
        row_weight = weight[self.labels]
        self.cum = np.cumsum(row_weight / row_weight.sum())
        self.length = 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng(step_seed(self.seed, step, self.rank, 0))
        rows = np.minimum(np.searchsorted(self.cum, rng.random(self.batch_size), side="right"), len(self.cum) - 1)
        batch = self.images[rows]
        if self.augment is not None:
            self.augment.set_random_seed(step_seed(self.seed, step, self.rank, 1) % 2**31)
            batch = np.stack([self.augment(image=img)["image"].reshape(img.shape) for img in batch])
        x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        return {"images": x, "labels": torch.from_numpy(self.labels[rows]), "step": step}


class StepSampler(torch.utils.data.Sampler):
    """Yields step indices ``start..stop-1``; its length is ``stop``, the whole run's steps.

    Training is one epoch of ``max_steps`` batches. A resumed run restores Lightning's count of batches
    done in that epoch (``start``), so the epoch must still be ``stop`` long for Lightning to end it at
    ``max_steps`` rather than start a second pass over the same steps.
    """

    def __init__(self, start: int, stop: int):
        self.start, self.stop = start, stop

    def __iter__(self):
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop


try:
    import pytorch_lightning as pl
except ImportError:  # pragma: no cover - a hard dependency; keeps `synthaug data` importable in odd envs
    pl = None


class LabelledImageDataModule(pl.LightningDataModule):
    """Feeds diffusion training: seeded per-step batches of augmented images in [−1, 1], NCHW.

    ``start_step`` is where a resumed run picks up, so the resumed run draws the same batches.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, max_steps: int, seed: int,
                 class_balance: float = 0.5, augment: list | None = None, start_step: int = 0):
        super().__init__()
        self.images, self.labels = images, labels
        self.batch_size, self.max_steps, self.seed = batch_size, max_steps, seed
        self.class_balance, self.augment_items, self.start_step = class_balance, augment or [], start_step

    def train_dataloader(self):
        rank = self.trainer.global_rank if self.trainer is not None else 0
        dataset = StepBatches(self.images, self.labels, self.batch_size, self.seed, self.class_balance,
                              build_augment(self.augment_items), rank=rank)
        sampler = StepSampler(self.start_step, self.max_steps)
        dataset.length = self.max_steps
        return torch.utils.data.DataLoader(dataset, batch_size=None, sampler=sampler, num_workers=0)
