"""Torch and Lightning views of real + synthetic data: ``MixedDataModule`` trains a user's classifier on a
fixed per-batch mix; ``TorchView`` is a plain torch ``Dataset`` of ``(image, label)``.

Every training batch holds ``round(fraction × batch_size)`` synthetic rows and the rest real rows, drawn
with a seed derived from (seed, step, rank) only, so the batches of a step never depend on what ran before.
Batches are dicts, so a loss can down-weight synthetic samples::

    loss = (F.cross_entropy(model(b["image"]), b["label"], reduction="none") * b["weight"]).mean()
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from synthaug.data import build_augment
from synthaug.errors import SynthaugError
from synthaug.images import GREY_MODES, decode_image, open_image, to_array, to_model_input
from synthaug.mixing import align_labels, as_dataset, check_columns, mix
from synthaug.seeds import step_seed

DEFAULT_NORMALIZATION = {"mean": 0.5, "std": 0.5}  # uint8 → [−1, 1], as the diffusion model sees images


def _first_image_shape(ds) -> tuple[int, int]:
    """(size, channels) of the first image: its shorter side, and 1 for grey modes else 3."""
    with open_image(ds[0]["image"], 0) as img:
        return min(img.size), 1 if img.mode in GREY_MODES else 3


class MixedBatches(torch.utils.data.Dataset):
    """Item ``step`` is the whole batch of that optimizer step: real and synthetic rows in a fixed proportion.

    Within a batch, rows of each kind are drawn without replacement (with replacement only when a kind has
    fewer rows than the batch needs), then shuffled together.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, weights: np.ndarray, synthetic: np.ndarray,
                 batch_size: int, fraction: float, seed: int, augment=None, rank: int = 0, length: int = 0):
        self.images, self.labels, self.weights, self.synthetic = images, labels, weights, synthetic
        self.real_rows, self.synthetic_rows = np.flatnonzero(~synthetic), np.flatnonzero(synthetic)
        self.n_synthetic = int(round(fraction * batch_size))
        self.n_real = batch_size - self.n_synthetic
        self.seed, self.rank, self.augment, self.length = seed, rank, augment, length
        for kind, rows, n in (("real", self.real_rows, self.n_real), ("synthetic", self.synthetic_rows, self.n_synthetic)):
            if n and not len(rows):
                raise SynthaugError(f"MixedDataModule: batches need {n} {kind} rows but there are none; "
                                    "change fraction or give some data")

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng(step_seed(self.seed, step, self.rank, 0))
        picks = [rng.choice(rows, n, replace=n > len(rows)) for rows, n in
                 ((self.real_rows, self.n_real), (self.synthetic_rows, self.n_synthetic)) if n]
        rows = rng.permutation(np.concatenate(picks))
        batch = self.images[rows]
        if self.augment is not None:
            self.augment.set_random_seed(step_seed(self.seed, step, self.rank, 1) % 2**31)
            batch = np.stack([_augment_one(self.augment, img) for img in batch])
        return {
            "image": to_model_input(batch),
            "label": torch.from_numpy(self.labels[rows]),
            "weight": torch.from_numpy(self.weights[rows]),
            "synthetic": torch.from_numpy(self.synthetic[rows]),
        }


def _augment_one(augment, img: np.ndarray) -> np.ndarray:
    out = augment(image=img)["image"]
    if out.shape[:2] != img.shape[:2]:
        raise SynthaugError(f"MixedDataModule: transforms changed the image size {img.shape[:2]} → {out.shape[:2]}; "
                            "resize with image_size instead")
    return out.reshape(img.shape)


class EpochSteps(torch.utils.data.Sampler):
    """Yields the global step indices of one epoch; Lightning calls ``set_epoch`` so epochs differ."""

    def __init__(self, steps_per_epoch: int):
        self.steps_per_epoch, self.epoch = steps_per_epoch, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        start = self.epoch * self.steps_per_epoch
        return iter(range(start, start + self.steps_per_epoch))

    def __len__(self) -> int:
        return self.steps_per_epoch


class MixedDataModule(pl.LightningDataModule):
    """Train on real + synthetic images with a fixed synthetic share per batch.

    Batches are dicts: ``image`` float32 (B, C, H, W) in [−1, 1], ``label`` int64 (B,), ``weight`` float32
    (B,) (1.0 real, ``weight`` synthetic), ``synthetic`` bool (B,).

    Args:
        real: a ``datasets.Dataset`` (image, label ``ClassLabel``) or a path / source spec (see ``synthaug.mix``).
        synthetic: a ``datasets.Dataset`` or a path in any format ``generate`` writes; classes matched by name.
        fraction: share of synthetic rows in each training batch, 0–1: ``round(fraction × batch_size)`` rows.
        batch_size: rows per batch.
        image_size, channels: images are fitted to ``image_size × image_size`` with ``channels`` (1 or 3);
            default: the first real image's shorter side and mode.
        transforms: albumentations ``Compose``, or a recipe-style list (``[{HorizontalFlip: {p: 0.5}}]``),
            applied to uint8 HWC images of both kinds before normalisation; seeded per step.
        ratio, weight: passed to ``synthaug.mix`` (cap synthetic rows per class; synthetic sample weight).
        val: optional validation data (a Dataset or path), served in order as real rows of weight 1.
        seed: batches depend only on (seed, step, rank).
        steps_per_epoch: batches per epoch; default ``ceil((real + synthetic rows) / batch_size)``.
    """

    def __init__(self, real, synthetic, fraction: float = 0.5, batch_size: int = 32, image_size: int | None = None,
                 channels: int | None = None, transforms=None, ratio: float | None = None, weight: float = 1.0,
                 val=None, seed: int = 0, steps_per_epoch: int | None = None, num_workers: int = 0):
        super().__init__()
        if not 0.0 <= fraction <= 1.0:
            raise SynthaugError(f"MixedDataModule: fraction must be between 0 and 1, got {fraction}")
        if batch_size < 1:
            raise SynthaugError(f"MixedDataModule: batch_size must be ≥ 1, got {batch_size}")
        if channels not in (None, 1, 3):
            raise SynthaugError(f"MixedDataModule: channels must be 1 or 3, got {channels}")
        import datasets

        self.mixed = mix(real, synthetic, ratio=ratio, weight=weight).cast_column("image", datasets.Image(decode=False))
        self.classes = list(self.mixed.features["label"].names)
        self.val = None
        if val is not None:
            self.val = align_labels(as_dataset(val, "val"), self.classes, "val")
            self.val = self.val.select_columns(["image", "label"]).cast_column("image", datasets.Image(decode=False))
        if image_size is None or channels is None:
            size, mode_channels = _first_image_shape(self.mixed)
            image_size, channels = image_size or size, channels or mode_channels
        self.image_size, self.channels = image_size, channels
        self.augment = build_augment(transforms) if isinstance(transforms, (list, tuple)) else transforms
        self.fraction, self.batch_size, self.seed, self.num_workers = fraction, batch_size, seed, num_workers
        self.steps_per_epoch = steps_per_epoch or max(1, math.ceil(len(self.mixed) / batch_size))
        self._train: MixedBatches | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def setup(self, stage: str | None = None) -> None:
        if self._train is not None:
            return
        self._train = MixedBatches(
            to_array(self.mixed, self.image_size, self.channels),
            np.asarray(self.mixed["label"], dtype=np.int64),
            np.asarray(self.mixed["weight"], dtype=np.float32),
            np.asarray(self.mixed["synthetic"], dtype=bool),
            self.batch_size, self.fraction, self.seed, self.augment, length=self.steps_per_epoch,
        )

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        self.setup("fit")
        self._train.rank = self.trainer.global_rank if self.trainer is not None else 0  # setup may predate the trainer
        return torch.utils.data.DataLoader(self._train, batch_size=None, sampler=EpochSteps(self.steps_per_epoch),
                                           num_workers=self.num_workers)

    def val_dataloader(self):
        if self.val is None:
            return []
        images = to_model_input(to_array(self.val, self.image_size, self.channels))
        labels = torch.as_tensor(self.val["label"], dtype=torch.int64)
        rows = RealRows(images, labels)
        return torch.utils.data.DataLoader(rows, batch_size=self.batch_size, num_workers=self.num_workers)


class RealRows(torch.utils.data.Dataset):
    """Validation rows in the training batches' format: real, weight 1."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[i], "label": self.labels[i], "weight": torch.tensor(1.0),
                "synthetic": torch.tensor(False)}


class TorchView(torch.utils.data.Dataset):
    """A ``datasets.Dataset`` as a torch ``Dataset`` of ``(image, label)`` for a plain PyTorch loop.

    ``image`` is float32 (C, H, W) equal to ``(x / 255 − mean) / std`` with ``mean``/``std`` from the model's
    ``synthaug.json`` ``normalization`` when ``model_dir`` is given (also the default ``image_size`` and
    ``channels``), else mean = std = 0.5 (pixels in [−1, 1]). ``label`` is the int class id.

    Args:
        dataset: a ``datasets.Dataset`` with ``image`` and ``label`` (e.g. ``mix(...)``), or a path.
        model_dir: a trained model folder (``run_dir/model``).
        image_size: fit images to ``image_size × image_size`` (resize the short side, centre-crop);
            default: the model's size, or no resizing without a model.
        channels: 1 (grey) or 3 (RGB); default: the model's, or each image's own mode without a model.
    """

    def __init__(self, dataset, model_dir: str | Path | None = None, image_size: int | None = None,
                 channels: int | None = None):
        import datasets

        ds = as_dataset(dataset, "dataset")
        self.classes = check_columns(ds, "dataset")
        norm = DEFAULT_NORMALIZATION
        if model_dir is not None:
            from synthaug.diffusion import read_meta

            meta = read_meta(model_dir)
            image_size = image_size or int(meta["image_size"])
            channels = channels or int(meta["channels"])
            norm = meta.get("normalization", DEFAULT_NORMALIZATION)
        if channels not in (None, 1, 3):
            raise SynthaugError(f"TorchView: channels must be 1 or 3, got {channels}")
        self.image_size, self.channels = image_size, channels
        self.mean = torch.as_tensor(norm["mean"], dtype=torch.float32).reshape(-1, 1, 1)
        self.std = torch.as_tensor(norm["std"], dtype=torch.float32).reshape(-1, 1, 1)
        self.images = ds.select_columns(["image"]).cast_column("image", datasets.Image(decode=False))
        self.labels = np.asarray(ds["label"], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        arr = decode_image(self.images[int(i)]["image"], int(i), self.image_size, self.channels)
        x = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float().div_(255.0)
        return (x - self.mean) / self.std, int(self.labels[i])
