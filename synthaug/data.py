"""Data: the real data of a run, split and subset, and the seeded per-step batches that train the model.

``load_real_data`` loads the source (``synthaug.sources``), holds out the test split, then simulates
scarcity with ``subset``. The held-out test split is carved from the source *before* ``subset``, so the
test set keeps every class at its natural size and macro-F1 on rare classes is measured on more than a
handful of images. A separate test source's ids start at ``TEST_SOURCE_ID_OFFSET``, so no test id can
equal a training id. Ids only tell rows apart; images whose decoded pixels are in both splits (duplicate
files) are found by content (``images.content_hashes``) and, by default, dropped from the test split
(``data.train_test_duplicates``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image

from synthaug.config import DataConfig
from synthaug.errors import SynthaugError, did_you_mean
from synthaug.images import content_hashes, to_model_input
from synthaug.seeds import step_seed
from synthaug.sources import SourceReport, labelled_dataset, load_source

# Ids of a separate data.test_source's rows (synthetic rows start at evaluation_inputs.SYNTHETIC_ID_OFFSET = 10**12).
TEST_SOURCE_ID_OFFSET = 10**11


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


def _image_column(ds):
    """The ``image`` column's Arrow storage, with any ``select`` applied."""
    return ds.with_format("arrow")["image"]


def _align_test(test, classes: list[str], spec: str):
    """A separate test source → training class order (matched by name), ids from ``TEST_SOURCE_ID_OFFSET``."""
    names = test.features["label"].names
    labels = np.asarray(test["label"], dtype=np.int64)
    unknown = sorted({names[v] for v in set(labels.tolist())} - set(classes))
    if unknown:
        did = did_you_mean(unknown[0], classes, quoted=True)
        raise SynthaugError(f"{spec}: test classes {unknown} are not training classes{did}; rename them")
    mapping = np.asarray([classes.index(n) if n in classes else -1 for n in names], dtype=np.int64)
    return labelled_dataset(_image_column(test), mapping[labels], classes, first_id=TEST_SOURCE_ID_OFFSET)


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
                   progress: bool = False, inspect: Callable[[int, Image.Image], None] | None = None) -> RealData:
    """Load the source, hold out the test split, find images in both splits, then apply ``subset`` to the
    training split only.

    The duplicate check decodes every image (``content_hashes``; with ``cache_dir`` only the first call
    does), and calls ``inspect(id, image)`` with each it decodes (every image of the source and test source,
    before ``subset``; so none with a ``cache_dir`` that already has the digests); ``check_duplicates=False``
    skips it, reading no image at all.
    """
    if inspect is not None and (cache_dir is not None or not check_duplicates):
        raise ValueError("inspect needs the duplicate check's pass over every image: no cache_dir, check_duplicates")
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
        _check_duplicates(data, source, test_rows, cfg, cache_dir, progress, inspect)
    keep = subset_rows(data.train["label"], len(classes), cfg.subset.per_class, cfg.subset.imbalance, seed)
    if len(keep) != len(data.train):
        data.train = data.train.select(keep)
    for name, n in zip(classes, data.test_counts):
        if n == 0:
            report.notes.append(f"class {name!r} has no test images, so the test split cannot measure it; "
                                "add test images of it")
    return data


def _by_id(ds, inspect):
    """``inspect(id, image)`` called as ``content_hashes`` calls it, with a row number of ``ds``."""
    if inspect is None:
        return None
    ids = np.asarray(ds["id"], dtype=np.int64)
    return lambda row, image: inspect(int(ids[row]), image)


def _check_duplicates(data: RealData, source, test_rows: list[int] | None, cfg: DataConfig,
                      cache_dir: Path | None, progress: bool, inspect) -> None:
    """Count (and under ``drop``, remove) test images whose pixels are in the training split."""
    digests = content_hashes(source, cfg.channels, cache_dir, progress, _by_id(source, inspect))
    if test_rows is None:  # a separate test source
        train_digests = digests
        test_digests = content_hashes(data.test, cfg.channels, cache_dir, progress, _by_id(data.test, inspect))
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
        # rows: where the batch's images are in `images` (the latent-text backbone reads their cached latents)
        return {"images": to_model_input(batch), "labels": torch.from_numpy(self.labels[rows]),
                "rows": torch.from_numpy(rows), "step": step}


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
