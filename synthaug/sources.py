"""Sources: ``builtin:NAME | imagefolder:DIR | csv:FILE | hf:PATH_OR_ID`` → ``Dataset{image, label, id}``.

Every source becomes the same shape of ``datasets.Dataset``, held in memory (never cached beside a user's
files): an ``image`` column (``datasets.Image``, not decoded until needed, so a folder of 50,000 images
loads lazily), a ``label`` ``ClassLabel`` with the class names, and an ``id`` column that lets tests prove
the test split never reaches training. A source's ids are its row positions (``first_id`` shifts them).
Loading reads file names and labels only; ``synthaug.images`` decodes.
"""

from __future__ import annotations

import io
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from synthaug.errors import SynthaugError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
# Far above any real label set; a wrong label column (file names, a stray huge id) is refused before it
# allocates a class per value.
MAX_CLASSES = 10_000


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


def labelled_dataset(images, labels: Sequence[int], classes: Sequence[str], first_id: int = 0):
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
    labels = digits.target.astype(int).tolist()
    return labelled_dataset(images, labels, [str(c) for c in range(10)]), SourceReport()


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
    return labelled_dataset(paths, labels, [p.name for p in class_dirs]), report


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
    return labelled_dataset(images, labels, classes), SourceReport(notes=notes)


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
    return labelled_dataset(images, labels, classes), SourceReport(notes=notes)


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

