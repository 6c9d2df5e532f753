"""Data: sources → ``datasets.Dataset{image, label: ClassLabel, id}`` → split → subset → arrays → batches.

Every source becomes the same shape of ``datasets.Dataset``: an ``image`` column (``datasets.Image``,
not decoded until needed, so a folder of 50,000 images loads lazily), a ``label`` ``ClassLabel`` with the
class names, and an ``id`` column (the row's position in the source) that lets tests prove the test split
never reaches training.

The held-out test split is carved from the source *before* ``subset`` simulates scarcity, so the test
set keeps every class at its natural size and macro-F1 on rare classes is measured on more than a
handful of images.
"""

from __future__ import annotations

import difflib
import io
import math
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from synthaug.config import DataConfig
from synthaug.errors import SynthaugError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
# Decompression-bomb guard: refuse images over this many pixels instead of decoding them.
MAX_IMAGE_PIXELS = 64_000_000


@dataclass
class SourceReport:
    """What a source scan found beyond the images themselves (shown by ``synthaug data``)."""

    ignored_files: int = 0


def _features(classes: Sequence[str]):
    import datasets

    return datasets.Features(
        {
            "image": datasets.Image(decode=False),
            "label": datasets.ClassLabel(names=list(classes)),
            "id": datasets.Value("int64"),
        }
    )


def _from_rows(images: list[Any], labels: list[int], classes: Sequence[str]):
    import datasets

    return datasets.Dataset.from_dict(
        {"image": images, "label": labels, "id": list(range(len(labels)))}, features=_features(classes)
    )


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
    return _from_rows(images, digits.target.astype(int).tolist(), [str(c) for c in range(10)]), SourceReport()


def load_imagefolder(root: str | Path):
    root = Path(root)
    if not root.is_dir():
        raise SynthaugError(f"imagefolder:{root}: no such folder; point data.source at a folder of class folders")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise SynthaugError(f"imagefolder:{root}: no class sub-folders; put each class's images in root/CLASS/")
    lowered = Counter(p.name.casefold() for p in class_dirs)
    clash = sorted(p.name for p in class_dirs if lowered[p.name.casefold()] > 1)
    if clash:
        raise SynthaugError(
            f"imagefolder:{root}: class folders {', '.join(map(repr, clash))} differ only in case; "
            "merge or rename them (they would collide on case-insensitive disks)"
        )
    paths: list[dict] = []
    labels: list[int] = []
    report = SourceReport()
    for label, class_dir in enumerate(class_dirs):
        found = 0
        for path in sorted(class_dir.rglob("*")):
            if not path.is_file() or path.name.startswith("."):
                continue
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                report.ignored_files += 1
                continue
            paths.append({"bytes": None, "path": str(path)})
            labels.append(label)
            found += 1
        if not found:
            raise SynthaugError(
                f"imagefolder:{root}: class folder {class_dir.name!r} has no images; add images or remove the folder"
            )
    return _from_rows(paths, labels, [p.name for p in class_dirs]), report


def load_csv(csv_path: str | Path, image_column: str, label_column: str):
    import pandas as pd

    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise SynthaugError(f"csv:{csv_path}: no such file")
    try:
        table = pd.read_csv(csv_path)
    except Exception as exc:  # pandas raises many types for malformed files
        raise SynthaugError(f"csv:{csv_path}: cannot parse the CSV ({exc.__class__.__name__}: {exc})") from None
    for column, key in ((image_column, "data.image_column"), (label_column, "data.label_column")):
        if column not in table.columns:
            raise SynthaugError(
                f"csv:{csv_path}: no {column!r} column (columns: {', '.join(map(str, table.columns))}); "
                f"add it or set {key}"
            )
    missing = table[[image_column, label_column]].isna().any(axis=1)
    if missing.any():
        rows = ", ".join(str(i + 2) for i in np.flatnonzero(missing.to_numpy())[:5])
        raise SynthaugError(f"csv:{csv_path}: empty image or label on line(s) {rows}; fill them in or drop the rows")
    raw_labels = table[label_column]
    if pd.api.types.is_integer_dtype(raw_labels):
        ids = sorted(set(int(v) for v in raw_labels))
        if ids[0] < 0:
            raise SynthaugError(f"csv:{csv_path}: label ids must be ≥ 0 (found {ids[0]})")
        classes = [str(i) for i in range(ids[-1] + 1)]
        labels = [int(v) for v in raw_labels]
    else:
        classes = sorted(set(str(v) for v in raw_labels))
        index = {c: i for i, c in enumerate(classes)}
        labels = [index[str(v)] for v in raw_labels]
    images = []
    for rel in table[image_column]:
        path = (csv_path.parent / str(rel)).resolve()
        if not path.is_file():
            raise SynthaugError(f"csv:{csv_path}: image {rel!r} not found (paths are relative to the CSV)")
        images.append({"bytes": None, "path": str(path)})
    return _from_rows(images, labels, classes), SourceReport()


def load_hf(path_or_id: str, image_column: str, label_column: str):
    import datasets

    path = Path(path_or_id)
    try:
        if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
            ds = datasets.load_from_disk(str(path))
        else:
            ds = datasets.load_dataset(path_or_id)
    except FileNotFoundError as exc:
        raise SynthaugError(f"hf:{path_or_id}: not found ({exc}); give a saved dataset folder or a Hub id") from None
    except Exception as exc:  # connection errors, bad ids, unsupported layouts
        raise SynthaugError(f"hf:{path_or_id}: cannot load ({exc.__class__.__name__}: {str(exc).splitlines()[0]})") from None
    if isinstance(ds, datasets.DatasetDict):
        split = "train" if "train" in ds else next(iter(ds))
        ds = ds[split]
    for column, key in ((image_column, "data.image_column"), (label_column, "data.label_column")):
        if column not in ds.column_names:
            raise SynthaugError(
                f"hf:{path_or_id}: no {column!r} column (columns: {', '.join(ds.column_names)}); set {key}"
            )
    feature = ds.features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        classes, labels = list(feature.names), list(ds[label_column])
    else:
        values = ds[label_column]
        classes = sorted({str(v) for v in values})
        index = {c: i for i, c in enumerate(classes)}
        labels = [index[str(v)] for v in values]
    ds = ds.select_columns([image_column]).rename_column(image_column, "image") if image_column != "image" else ds.select_columns(["image"])
    ds = ds.cast_column("image", datasets.Image(decode=False))
    ds = ds.add_column("label", labels).cast_column("label", datasets.ClassLabel(names=classes))
    return ds.add_column("id", list(range(len(ds)))).cast(_features(classes)), SourceReport()


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


def open_image(cell: dict, row: int = 0) -> Image.Image:
    """Decode one ``datasets.Image(decode=False)`` cell; corrupt files are named in the error."""
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
        return img
    except SynthaugError:
        raise
    except Image.DecompressionBombError:  # PIL refuses over 2 × its own limit before we see the size
        raise too_large(f"more than {2 * Image.MAX_IMAGE_PIXELS}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        reason = "empty file" if cell.get("path") and Path(cell["path"]).stat().st_size == 0 else str(exc)
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


def to_array(ds, image_size: int, channels: int, progress: bool = False) -> np.ndarray:
    """Decode, convert and resize every image → uint8 array (N, H, W, C), one image in memory at a time."""
    out = np.empty((len(ds), image_size, image_size, channels), dtype=np.uint8)
    cells = ds.with_format(None)["image"] if len(ds) else []
    iterator = enumerate(cells)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, total=len(ds), desc="decode", unit="img", leave=False)
    for i, cell in iterator:
        with open_image(cell, i) as img:
            arr = np.asarray(resize_crop(convert_mode(img, channels), image_size))
        out[i] = arr.reshape(image_size, image_size, channels)
    return out


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
    """The real data of a run: class names, the training split (after subset) and the test split."""

    classes: list[str]
    train: Any  # datasets.Dataset{image, label, id}
    test: Any
    report: SourceReport

    @property
    def train_counts(self) -> list[int]:
        return class_counts(self.train["label"], len(self.classes))

    @property
    def test_counts(self) -> list[int]:
        return class_counts(self.test["label"], len(self.classes))


def _align_test(test, classes: list[str], spec: str):
    """Re-map a separate test source's labels onto the training class order (matched by name)."""
    names = test.features["label"].names
    # Only labels the rows use: CSV ids 0 and 7 make classes "0".."7", but "1".."6" name no row.
    unknown = sorted({names[v] for v in set(test["label"])} - set(classes))
    if unknown:
        hint = difflib.get_close_matches(unknown[0], classes, n=1)
        did = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise SynthaugError(f"{spec}: test classes {unknown} are not training classes{did}; rename them")
    mapping = {i: classes.index(n) for i, n in enumerate(names) if n in classes}
    labels = [mapping[v] for v in test["label"]]
    return test.remove_columns("label").add_column("label", labels).cast(_features(classes))


def load_real_data(cfg: DataConfig, seed: int) -> RealData:
    """Load the source, hold out the test split, then apply ``subset`` to the training split only."""
    source, report = load_source(cfg.source, cfg.image_column, cfg.label_column)
    classes = list(source.features["label"].names)
    if len(classes) < 2:
        raise SynthaugError(f"{cfg.source}: found {len(classes)} class; a classifier needs at least 2")
    if cfg.test_source:
        test, _ = load_source(cfg.test_source, cfg.image_column, cfg.label_column)
        test = _align_test(test, classes, cfg.test_source)
        train_rows = list(range(len(source)))
        counts = class_counts(source["label"], len(classes))
        for name, n in zip(classes, counts):
            if n == 0:
                raise SynthaugError(f"class {name!r} has no training images; add images or remove the class")
    else:
        train_rows, test_rows = stratified_split(source["label"], classes, cfg.test_fraction, seed)
        test = source.select(test_rows)
    train = source.select(train_rows)
    keep = subset_rows(train["label"], len(classes), cfg.subset.per_class, cfg.subset.imbalance, seed)
    if len(keep) != len(train):
        train = train.select(keep)
    return RealData(classes=classes, train=train, test=test, report=report)


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
            hint = difflib.get_close_matches(name, names, n=1)
            did = f"; did you mean {hint[0]}?" if hint else ""
            raise SynthaugError(f"train.augment: {name!r} is not an albumentations transform{did}")
        import inspect

        accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "args", "kwargs"}
        unknown = sorted(set(params or {}) - accepted)
        if unknown:
            hint = difflib.get_close_matches(unknown[0], accepted, n=1)
            did = f"; did you mean {hint[0]}?" if hint else ""
            raise SynthaugError(f"train.augment: {name} has no parameter {unknown[0]!r}{did}")
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
