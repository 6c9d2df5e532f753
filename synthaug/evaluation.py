"""Does the synthetic data help? Downstream classifiers per arm, their test metrics, and sample quality.

An *arm* is one way of composing a classifier's training data from the real training split (and the
synthetic images): ``real``, ``classic`` (real + augmentation), ``oversample``, ``smote``, ``synthetic``,
``real+synthetic``, ... Every arm trains the same classifier for exactly ``cfg.steps`` optimizer steps
(more data is not more compute), on the same seeds, and is scored once on the held-out test split.

Invariant (DESIGN §8): the test split never reaches any training. Model selection uses a validation
slice carved from the real training data only; test images are used for the final metrics alone.

Images everywhere are ``uint8`` arrays of shape ``(N, H, W, C)`` with ``C`` = 1 or 3; the classifiers
see them as float ``(N, C, H, W)`` in [-1, 1].
"""

from __future__ import annotations

import copy
import ctypes
import hashlib
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_f1_score,
    multiclass_recall,
)
from tqdm import tqdm

from synthaug.config import ARMS, EvaluateConfig
from synthaug.errors import EnvironmentFailure, SynthaugError
from synthaug.io import atomic_write_text, writing

SYNTHETIC_ARMS = tuple(arm for arm in ARMS if "synthetic" in arm)
BASELINE_ARMS = tuple(arm for arm in ARMS if "synthetic" not in arm)
VALIDATION_FRACTION = 0.1
EVALUATIONS_PER_RUN = 10  # validation checks per training run, for early selection
PREDICT_BATCH = 512


# ------------------------------------------------------------------------------------------------ data


@dataclass
class EvalData:
    """Labelled images for evaluation.

    Attributes:
        x: uint8 images, shape (N, H, W, C), C = 1 or 3.
        y: int64 labels, shape (N,).
        ids: int64 ids of the source rows, shape (N,), for leak checks. Real rows keep their dataset ids;
            synthetic rows use their own ids; rows that copy a real row (oversampling) repeat its id;
            rows interpolated by SMOTE have no single source and get negative ids.
        weight: float32 loss weight per row, shape (N,), or None for all 1 (synthetic rows may weigh less,
            ``evaluate.synthetic_weight``).
    """

    x: np.ndarray
    y: np.ndarray
    ids: np.ndarray
    weight: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.x.ndim != 4 or self.x.shape[-1] not in (1, 3) or self.x.dtype != np.uint8:
            raise SynthaugError(
                f"evaluation images must be uint8 (N, H, W, C) with C = 1 or 3, got {self.x.dtype} {self.x.shape}"
            )
        self.y = np.asarray(self.y, dtype=np.int64)
        self.ids = np.asarray(self.ids, dtype=np.int64)
        if not len(self.x) == len(self.y) == len(self.ids):
            raise SynthaugError(
                f"evaluation data has {len(self.x)} images, {len(self.y)} labels and {len(self.ids)} ids"
            )
        if self.weight is not None:
            self.weight = np.asarray(self.weight, dtype=np.float32)
            if self.weight.shape != self.y.shape:
                raise SynthaugError(f"evaluation data has {len(self.y)} labels and {len(self.weight)} weights")

    @property
    def weights(self) -> np.ndarray:
        """The loss weight of every row (1 where none was given)."""
        return self.weight if self.weight is not None else np.ones(len(self.y), dtype=np.float32)

    def __len__(self) -> int:
        return len(self.y)

    def take(self, index: np.ndarray) -> EvalData:
        weight = self.weight[index] if self.weight is not None else None
        return EvalData(self.x[index], self.y[index], self.ids[index], weight)

    @staticmethod
    def concat(*parts: EvalData) -> EvalData:
        weighted = any(p.weight is not None for p in parts)
        return EvalData(
            np.concatenate([p.x for p in parts]),
            np.concatenate([p.y for p in parts]),
            np.concatenate([p.ids for p in parts]),
            np.concatenate([p.weights for p in parts]) if weighted else None,
        )


def validation_split(
    y: np.ndarray, seed: int, fraction: float = VALIDATION_FRACTION
) -> tuple[np.ndarray, np.ndarray]:
    """A seeded stratified split of row indices into (fit, validation).

    Each class with at least 2 rows gives ``max(1, round(fraction * n))`` rows to validation; a class
    with a single row keeps it for training. Both index arrays are sorted.
    """
    rng = np.random.default_rng(seed)
    val: list[np.ndarray] = []
    for label in np.unique(y):
        rows = np.flatnonzero(y == label)
        if len(rows) >= 2:
            val.append(rng.choice(rows, size=max(1, round(fraction * len(rows))), replace=False))
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    fit_idx = np.setdiff1d(np.arange(len(y)), val_idx)
    return fit_idx, val_idx


def _random_oversample(data: EvalData, rng: np.random.Generator, target: int, labels=None) -> EvalData:
    """Append copies of randomly drawn rows (with replacement) until each class has ``target`` rows."""
    extra = []
    for label in np.unique(data.y) if labels is None else labels:
        rows = np.flatnonzero(data.y == label)
        if len(rows) < target:
            extra.append(rng.choice(rows, size=target - len(rows), replace=True))
    if not extra:
        return data
    return EvalData.concat(data, data.take(np.concatenate(extra)))


def _smote(data: EvalData, seed: int) -> EvalData:
    """SMOTE (Chawla et al. 2002) on flattened pixels, every class up to the largest class's count."""
    from imblearn.over_sampling import SMOTE

    labels, counts = np.unique(data.y, return_counts=True)
    target = counts.max()
    smote_labels = labels[(counts < target) & (counts >= 2)]
    # SMOTE interpolates between a row and one of its class neighbours, so a class with one image has
    # no neighbour to interpolate with: those classes fall back to random oversampling.
    single = labels[counts == 1]
    rng = np.random.default_rng(seed)
    data = _random_oversample(data, rng, target, labels=single)
    if len(smote_labels) == 0:
        return data
    n_min = counts[np.isin(labels, smote_labels)].min()
    sampler = SMOTE(
        sampling_strategy={int(label): int(target) for label in smote_labels},
        k_neighbors=int(min(5, n_min - 1)),
        random_state=seed,
    )
    flat = data.x.reshape(len(data), -1).astype(np.float32)
    x_res, y_res = sampler.fit_resample(flat, data.y)
    # imblearn returns the input rows first, then the new ones.
    new_x = np.clip(np.rint(x_res[len(data) :]), 0, 255).astype(np.uint8).reshape(-1, *data.x.shape[1:])
    new_y = np.asarray(y_res[len(data) :], dtype=np.int64)
    new_ids = -1 - np.arange(len(new_y), dtype=np.int64)
    return EvalData.concat(data, EvalData(new_x, new_y, new_ids))


def arm_training_set(
    arm: str, real: EvalData, synthetic: EvalData | None, seed: int, synthetic_weight: float = 1.0
) -> tuple[EvalData, bool]:
    """The training data of one arm and whether classic augmentation is applied to it.

    Args:
        arm: one of ``synthaug.config.ARMS``.
        real: the real training rows the arm may use (already without the validation slice).
        synthetic: generated rows, or None; arms with "synthetic" in their name need them.
        seed: seeds the random oversampling and SMOTE.
        synthetic_weight: the loss weight of synthetic rows beside real ones in ``real+synthetic`` arms
            (He et al. 2023 down-weight synthetic data); 1 treats them like real rows.

    Returns:
        (data, classic): the rows to train on (images (N, H, W, C)), and True for "+classic" arms.
    """
    if arm not in ARMS:
        raise SynthaugError(f"unknown arm {arm!r}; arms are {', '.join(ARMS)}")
    if "synthetic" in arm and (synthetic is None or len(synthetic) == 0):
        raise SynthaugError(f"arm {arm!r} needs synthetic images; generate them first or drop the arm")
    classic = arm in ("classic",) or arm.endswith("+classic")
    base = arm.removesuffix("+classic")
    if base in ("real", "classic"):
        return real, classic
    if base == "oversample":
        target = np.bincount(real.y).max()
        return _random_oversample(real, np.random.default_rng(seed), target), classic
    if base == "smote":
        return _smote(real, seed), classic
    if base == "synthetic":
        return synthetic, classic
    if base == "real+synthetic":
        if synthetic_weight != 1.0:
            synthetic = EvalData(synthetic.x, synthetic.y, synthetic.ids,
                                 np.full(len(synthetic), synthetic_weight, dtype=np.float32))
        return EvalData.concat(real, synthetic), classic
    raise AssertionError(f"arm {arm!r} has no composition")  # ARMS and this function disagree


def classic_augmentation(seed: int, flips: bool) -> A.Compose:
    """Affine jitter (shift ±10%, scale 0.9–1.1, rotate ±10°), plus horizontal flips only if ``flips``.

    The Compose owns its random state (seeded), so the augmented stream is the same on every run.
    """
    transforms = [A.Affine(translate_percent=(-0.1, 0.1), scale=(0.9, 1.1), rotate=(-10, 10), p=1.0)]
    if flips:
        transforms.append(A.HorizontalFlip(p=0.5))
    return A.Compose(transforms, seed=seed)


def to_model_input(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, C) array → float (N, C, H, W) tensor in [-1, 1]."""
    x = torch.as_tensor(x)
    return x.permute(0, 3, 1, 2).float() / 127.5 - 1.0


class _ImageDataset(Dataset):
    def __init__(self, data: EvalData, augment: A.Compose | None = None):
        self.data, self.augment = data, augment

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, float]:
        image = self.data.x[i]
        if self.augment is not None:
            image = self.augment(image=image)["image"]
        weight = 1.0 if self.data.weight is None else float(self.data.weight[i])
        return to_model_input(image[None])[0], int(self.data.y[i]), weight


class EndlessShuffle(Sampler[int]):
    """Indices of a fresh seeded permutation after another, forever: the step budget, not the data
    size, ends training. No ``__len__``, so Lightning treats the loader as infinite."""

    def __init__(self, n: int, seed: int):
        self.n = n
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[int]:
        while True:
            yield from torch.randperm(self.n, generator=self.generator).tolist()


# ---------------------------------------------------------------------------------------- classifiers


class ResidualBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus a (projected) shortcut, then ReLU (He et al. 2016)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResidualCNN(nn.Module):
    """A 3x3 stem, stages of residual blocks (each stage after the first halves the resolution),
    global average pooling and a linear head.

    ``features`` gives the pooled penultimate features (N, num_features); ``forward`` the logits (N, K).
    """

    def __init__(self, in_channels: int, num_classes: int, widths: tuple[int, ...], blocks_per_stage: int):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        blocks, width = [], widths[0]
        for i, out in enumerate(widths):
            for j in range(blocks_per_stage):
                blocks.append(ResidualBlock(width, out, stride=2 if (i > 0 and j == 0) else 1))
                width = out
        self.blocks = nn.Sequential(*blocks)
        self.num_features = width
        self.head = nn.Linear(width, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class SmallCNN(ResidualCNN):
    """Three stages of one residual block (16, 32, 64 channels): ~6 MFLOP per 16 px image, so an arm's
    few hundred steps take seconds on one CPU thread. Use ``resnet18`` for 32 px+ RGB images."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__(in_channels, num_classes, widths=(16, 32, 64), blocks_per_stage=1)


class ResNet18(ResidualCNN):
    """ResNet-18 (He et al. 2016) with the CIFAR stem (3x3 conv, no max-pool), for 32 px+ RGB images."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__(in_channels, num_classes, widths=(64, 128, 256, 512), blocks_per_stage=2)


BACKBONES = {"cnn": SmallCNN, "resnet18": ResNet18}


class LitClassifier(pl.LightningModule):
    """An image classifier (``SmallCNN`` or ``ResNet18``) trained with AdamW and a one-cycle schedule.

    Input (N, C, H, W) float in [-1, 1]; output logits (N, num_classes).
    """

    def __init__(
        self, in_channels: int, num_classes: int, arch: str = "cnn", lr: float = 2e-3, max_steps: int = 2000
    ):
        super().__init__()
        self.save_hyperparameters()
        self.net = BACKBONES[arch](in_channels, num_classes)
        self.images_seen = 0  # counted, not inferred, so tests can check every arm got the same compute
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)

    def _shared_step(self, batch, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        x, y, weight = batch
        logits = self(x)
        # A weighted mean: rows with weight w count w times as much as a real row (w = 1 everywhere: plain CE).
        weight = weight.to(logits.dtype)
        loss = (F.cross_entropy(logits, y, reduction="none") * weight).sum() / weight.sum()
        self.log(
            f"{stage}_loss", loss, on_step=stage == "train", on_epoch=stage != "train", batch_size=len(y)
        )
        return loss, logits

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, _ = self._shared_step(batch, "train")
        self.images_seen += len(batch[1])
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        _, logits = self._shared_step(batch, "val")
        self._val_outputs.append((logits.argmax(dim=1), batch[1]))

    def on_validation_epoch_end(self) -> None:
        preds = torch.cat([p for p, _ in self._val_outputs])
        target = torch.cat([t for _, t in self._val_outputs])
        self._val_outputs.clear()
        f1 = multiclass_f1_score(preds, target, self.hparams.num_classes, average="macro")
        self.log("val_macro_f1", f1)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=5e-4)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=self.hparams.lr, total_steps=self.hparams.max_steps
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class KeepBestWeights(pl.Callback):
    """Remember the weights with the best validation macro-F1 (ties: the lower validation loss)."""

    def __init__(self) -> None:
        self.best_score: tuple[float, float] | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_step: int | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        score = (float(metrics["val_macro_f1"]), -float(metrics["val_loss"]))
        if self.best_score is None or score > self.best_score:
            self.best_score = score
            self.best_state = copy.deepcopy(pl_module.state_dict())
            self.best_step = trainer.global_step


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Silence Lightning's per-fit banners and hints that do not apply here (loading is in-process on
    purpose: one seeded stream; the judge has no validation slice), and restore torch's
    deterministic-algorithms flag, which ``Trainer(deterministic=True)`` sets process-wide."""
    logger = logging.getLogger("pytorch_lightning")
    level, deterministic = logger.level, torch.are_deterministic_algorithms_enabled()
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*but have no `val_dataloader`.*")
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning internals vs new torch
            yield
    finally:
        logger.setLevel(level)
        torch.use_deterministic_algorithms(deterministic)


@contextmanager
def _one_thread() -> Iterator[None]:
    """Train on one torch thread: float sums depend on the thread count, so one thread gives the same
    model in-process, in a pool worker and on any machine; parallelism comes from processes instead."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_seeds(seed: int) -> dict[str, int]:
    """Independent child seeds for each random source of a run (validation split, weight init, batch
    order, augmentation), all derived from the run's seed: same seed, same run."""
    names = ("split", "init", "order", "augment")
    return dict(zip(names, np.random.SeedSequence(seed).generate_state(len(names)).tolist(), strict=True))


@dataclass
class FitResult:
    model: LitClassifier
    steps: int  # optimizer steps actually taken (trainer.global_step)
    images_seen: int
    best_step: int | None  # step of the kept weights; None = the final weights (no validation slice)


def fit_classifier(
    data: EvalData,
    val: EvalData | None,
    num_classes: int,
    cfg: EvaluateConfig,
    *,
    steps: int,
    seed: int,
    classic: bool,
) -> FitResult:
    """Train a fresh classifier for exactly ``steps`` optimizer steps on ``data``.

    Batches are drawn by ``EndlessShuffle`` so data size never limits the steps. With a non-empty
    ``val``, the model is checked every ``steps / 10`` steps and the best weights are kept.
    """
    seeds = run_seeds(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeds["init"])
        model = LitClassifier(data.x.shape[-1], num_classes, cfg.classifier, cfg.lr, steps)
    augment = classic_augmentation(seeds["augment"], cfg.flips) if classic else None
    train_loader = DataLoader(
        _ImageDataset(data, augment),
        batch_size=cfg.batch_size,
        sampler=EndlessShuffle(len(data), seeds["order"]),
    )
    has_val = val is not None and len(val) > 0
    val_loader = DataLoader(_ImageDataset(val), batch_size=PREDICT_BATCH) if has_val else None
    keep_best = KeepBestWeights()
    with _quiet_lightning():
        trainer = pl.Trainer(
            max_steps=steps,
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            deterministic=True,
            callbacks=[keep_best],
            val_check_interval=max(1, steps // EVALUATIONS_PER_RUN) if has_val else None,
            check_val_every_n_epoch=None,
            limit_val_batches=1.0 if has_val else 0,
            num_sanity_val_steps=0,
            use_distributed_sampler=False,
        )
        trainer.fit(model, train_dataloaders=train_loader, val_dataloaders=val_loader)
    if keep_best.best_state is not None:
        model.load_state_dict(keep_best.best_state)
    model.eval()
    return FitResult(model, trainer.global_step, model.images_seen, keep_best.best_step)


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """Class predictions (N,) for uint8 images (N, H, W, C)."""
    model.eval()
    preds = [
        model(to_model_input(x[i : i + PREDICT_BATCH])).argmax(dim=1) for i in range(0, len(x), PREDICT_BATCH)
    ]
    return torch.cat(preds).numpy() if preds else np.zeros(0, dtype=np.int64)


# -------------------------------------------------------------------------------------------- metrics


def classification_metrics(preds: np.ndarray, target: np.ndarray, num_classes: int) -> dict:
    """Accuracy (micro), macro-F1, balanced accuracy (= macro recall) and per-class F1.

    Args:
        preds, target: int class ids, shape (N,).

    Macro averages use torchmetrics' convention: a class absent from both ``preds`` and ``target``
    is left out of the average (test splits hold every class, so this does not arise there).
    """
    p = torch.as_tensor(np.asarray(preds), dtype=torch.int64)
    t = torch.as_tensor(np.asarray(target), dtype=torch.int64)
    return {
        "accuracy": float(multiclass_accuracy(p, t, num_classes, average="micro")),
        "macro_f1": float(multiclass_f1_score(p, t, num_classes, average="macro")),
        "balanced_accuracy": float(multiclass_recall(p, t, num_classes, average="macro")),
        "per_class_f1": multiclass_f1_score(p, t, num_classes, average="none").tolist(),
    }


@dataclass
class ArmRun:
    """One arm trained at one seed: its test metrics and what it was trained on."""

    arm: str
    seed: int
    metrics: dict  # classification_metrics on the test split
    steps: int
    images_seen: int
    best_step: int | None
    train_ids: np.ndarray  # ids of every training row (repeats for oversampled rows)
    val_ids: np.ndarray  # ids of the validation slice

    def to_json(self) -> dict:
        return {"arm": self.arm, "seed": self.seed, "metrics": self.metrics, "steps": self.steps,
                "images_seen": self.images_seen, "best_step": self.best_step,
                "train_size": len(self.train_ids), "val_ids": self.val_ids.tolist()}

    @classmethod
    def from_json(cls, d: dict) -> ArmRun:
        # Training ids are not kept in the cache (the leak check ran when the run was made).
        return cls(d["arm"], d["seed"], d["metrics"], d["steps"], d["images_seen"], d["best_step"],
                   np.zeros(d["train_size"], dtype=np.int64), np.asarray(d["val_ids"], dtype=np.int64))

    def summary(self) -> dict:
        return {
            "seed": self.seed,
            **{k: self.metrics[k] for k in ("accuracy", "macro_f1", "balanced_accuracy")},
            "steps": self.steps,
            "best_step": self.best_step,
            "train_size": len(self.train_ids),
        }


def run_arm(
    arm: str,
    seed: int,
    train: EvalData,
    test: EvalData,
    synthetic: EvalData | None,
    num_classes: int,
    cfg: EvaluateConfig,
) -> ArmRun:
    """Train one arm at one seed and score it on the test split.

    The validation slice comes from ``train`` (real rows) with a split that depends on the seed only,
    so every arm at a seed is selected on the same slice. Trains on one torch thread (``_one_thread``).
    """
    leaked = np.intersect1d(train.ids, test.ids)
    if len(leaked):
        raise SynthaugError(
            f"{len(leaked)} test images are also in the training split (ids {leaked[:5].tolist()}...)"
        )
    fit_idx, val_idx = validation_split(train.y, run_seeds(seed)["split"])
    real_fit, val = train.take(fit_idx), train.take(val_idx)
    data, classic = arm_training_set(arm, real_fit, synthetic, seed, cfg.synthetic_weight)
    with _one_thread():
        fit = fit_classifier(data, val, num_classes, cfg, steps=cfg.steps, seed=seed, classic=classic)
        metrics = classification_metrics(predict(fit.model, test.x), test.y, num_classes)
    return ArmRun(arm, seed, metrics, fit.steps, fit.images_seen, fit.best_step, data.ids, val.ids)


# --------------------------------------------------------------------------------------- the arm cache

CACHE_FORMAT = 2  # bump when ArmRun's JSON changes: entries of another format then sit in other folders
_HASH_CHUNK_BYTES = 1 << 24
# Settings no arm's result depends on: changing them must not retrain anything.
_NOT_ARM_SETTINGS = frozenset({"arms", "seeds", "workers", "judge_steps", "memorization_threshold"})


def _hash_array(h, a: np.ndarray) -> None:
    """Feed an array's dtype, shape and bytes to the hash ``h``, a few MB at a time, so a large or
    memory-mapped array is never copied whole."""
    a = np.atleast_1d(np.asarray(a))
    h.update(f"{a.dtype.str}{a.shape};".encode())
    rows = max(1, _HASH_CHUNK_BYTES // max(1, a[:1].nbytes))
    for i in range(0, len(a), rows):
        h.update(np.ascontiguousarray(a[i : i + rows]).data)


def arms_fingerprint(
    parts: tuple[EvalData, ...], num_classes: int, cfg: EvaluateConfig, *, synthetic: bool
) -> str:
    """A digest of the content of everything an arm reads: the images, labels, ids and weights of
    ``parts`` and the classifier settings (``synthetic_weight`` only for arms with synthetic data)."""
    exclude = set(_NOT_ARM_SETTINGS) | (set() if synthetic else {"synthetic_weight"})
    settings = {"format": CACHE_FORMAT, "classes": num_classes,
                "evaluate": cfg.model_dump(mode="json", exclude=exclude)}
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for data in parts:
        for array in (data.x, data.y, data.ids, data.weights):
            _hash_array(h, array)
    return h.hexdigest()[:16]


def _cache_paths(cache_dir, train, test, synthetic, num_classes, cfg) -> dict[tuple[str, int], Path]:
    """``{(arm, seed): cache file}``: ``cache_dir/FINGERPRINT/ARM@SEED.json``. Arms without synthetic
    data do not depend on it, so a new synthetic set reruns only the arms that use it."""
    if cache_dir is None:
        return {}
    folders = {False: arms_fingerprint((train, test), num_classes, cfg, synthetic=False)}
    if any("synthetic" in arm for arm in cfg.arms):
        folders[True] = arms_fingerprint((train, test, synthetic), num_classes, cfg, synthetic=True)
    return {(arm, seed): Path(cache_dir) / folders["synthetic" in arm] / f"{arm}@{seed}.json"
            for arm in cfg.arms for seed in cfg.seeds}


def _cached(path: Path | None, job: tuple[str, int]) -> ArmRun | None:
    if path is None or not path.exists():
        return None
    try:
        run = ArmRun.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError):
        return None  # a damaged cache entry is simply redone
    return run if (run.arm, run.seed) == job else None


# -------------------------------------------------------------------------------------- the worker pool

REIMPORT_EXIT = 86  # a worker that finds itself re-running its parent's script exits with this code
STOP_GRACE_SECONDS = 3.0  # a worker still alive this long after SIGTERM gets SIGKILL
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_PARTS = ("train", "test", "synthetic")
_SPILL_PREFIX = ".arm-inputs-"  # then the pid of the evaluation that spilled
_FIELDS = ("x", "y", "ids", "weight")
_WORKER_INPUTS: tuple | None = None


def exit_if_reimported_in_worker() -> None:
    """End this process quietly if it is a spawned worker that is re-running its parent's main script.

    A spawned process imports the parent's ``__main__`` before it runs its task; in a script without
    ``if __name__ == "__main__":`` that import starts synthaug again in every worker: repeated work,
    writes into the same run directory, then nested workers that multiprocessing refuses. Such a worker
    exits with ``REIMPORT_EXIT`` and no traceback; the pool's parent reports one line naming the fix.
    Entry points call this before doing anything.
    """
    # multiprocessing marks a process while it imports its parent's main module (its own
    # _check_not_importing_main reads the same mark).
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise SystemExit(REIMPORT_EXIT)


def _watch_parent(parent_pid: int) -> None:
    parent = multiprocessing.parent_process()
    # The parent's sentinel closes when it ends, on any platform; the pid check also catches a parent
    # whose forked children still hold the sentinel open.
    while os.getppid() == parent_pid and (parent is None or parent.is_alive()):
        time.sleep(0.5)
    os._exit(1)


def _die_with_parent(parent_pid: int, *, prctl: bool = True) -> None:
    """End this worker when its parent ends, however it ends (SIGKILL included): the kernel sends
    SIGKILL on Linux (``PR_SET_PDEATHSIG``); a thread that watches the parent does it anywhere."""
    if prctl and sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watching thread still ends the worker
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="synthaug-watch-parent", daemon=True).start()


def _end_on_sigterm(signum, frame) -> None:
    # Lightning's SIGTERM handler only notes the signal and trains on; it calls the handler it found
    # too, so this one still ends the worker, as SIGTERM's default action would.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _spill(folder: Path, parts: tuple[EvalData | None, ...]) -> None:
    """Write the arrays of ``parts`` (train, test, synthetic) to ``folder`` as .npy files for the workers.

    Not pickled into the workers' start: the parent writes that pickle into a pipe it also holds open,
    so a worker that died while starting (a script without a main guard) left it blocked forever once
    the data outgrew the pipe. Memory-mapped, the files are also one copy in memory for all workers.
    """
    with writing(folder):
        for name, data in zip(_PARTS, parts):
            for field in _FIELDS if data is not None else ():
                if getattr(data, field) is not None:
                    np.save(folder / f"{name}.{field}.npy", getattr(data, field))


def _unspill(folder: Path) -> list[EvalData | None]:
    def load(name: str) -> EvalData | None:
        files = {field: folder / f"{name}.{field}.npy" for field in _FIELDS}
        if not files["x"].exists():
            return None
        # Copy-on-write: shared pages, and writable arrays (torch warns about read-only ones).
        arrays = {field: np.load(path, mmap_mode="c") if path.exists() else None for field, path in files.items()}
        return EvalData(**arrays)

    return [load(name) for name in _PARTS]


def _remove_orphaned_spills(scratch: Path) -> None:
    """Remove the spill folders of evaluations whose process is gone (SIGKILLed before its cleanup)."""
    if os.name != "posix":
        return  # os.kill(pid, 0) would end the process on Windows
    for folder in scratch.glob(f"{_SPILL_PREFIX}*-*"):
        try:
            os.kill(int(folder.name[len(_SPILL_PREFIX):].split("-")[0]), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, OSError):
            continue  # not ours, or a live process of another user


@contextmanager
def _spilled(parts: tuple[EvalData | None, ...], scratch: Path | None) -> Iterator[Path]:
    """The arrays of ``parts`` in a temporary folder below ``scratch`` (default: the system's), removed
    after use (``_spill``)."""
    with writing(Path(scratch or tempfile.gettempdir())):
        if scratch is not None:
            Path(scratch).mkdir(parents=True, exist_ok=True)
            _remove_orphaned_spills(Path(scratch))
        folder = Path(tempfile.mkdtemp(prefix=f"{_SPILL_PREFIX}{os.getpid()}-", dir=scratch))
    try:
        _spill(folder, parts)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _init_worker(parent_pid: int, folder: str, num_classes: int, cfg: EvaluateConfig) -> None:
    """Pool initializer. The worker ends with its parent; ignores SIGINT, which a terminal's Ctrl-C
    sends to the whole process group (the parent stops the workers, and no worker prints a traceback);
    ends at once on SIGTERM; trains on one thread (two 1-thread processes out-run one 2-thread one,
    FINDINGS.md); and maps the data once per worker rather than receiving it once per task."""
    global _WORKER_INPUTS
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked while the parent started it
    signal.signal(signal.SIGTERM, _end_on_sigterm)
    torch.set_num_threads(1)
    _WORKER_INPUTS = (*_unspill(Path(folder)), num_classes, cfg)


def _run_in_worker(arm: str, seed: int) -> ArmRun:
    train, test, synthetic, num_classes, cfg = _WORKER_INPUTS
    return run_arm(arm, seed, train, test, synthetic, num_classes, cfg)


@contextmanager
def _sigint_blocked() -> Iterator[None]:
    """Hold SIGINT while workers start: they inherit the block (as the stdlib's resource tracker does),
    so a Ctrl-C while they import cannot print their tracebacks; this process takes it right after."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _stop_workers(processes: list) -> None:
    """SIGTERM every live worker, SIGKILL any still alive after ``STOP_GRACE_SECONDS``, and reap them.
    A second Ctrl-C while waiting skips the grace, not the kill."""
    alive = [p for p in processes if p.exitcode is None]
    for p in alive:
        p.terminate()
    try:
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for p in alive:
            p.join(max(0.0, deadline - time.monotonic()))
    finally:
        for p in alive:
            if p.exitcode is None:
                p.kill()
                p.join(1.0)


class _WorkerDied(Exception):
    """Workers of the pool ended on their own, with these ``exit_codes`` (None: unknown)."""

    def __init__(self, exit_codes: list[int | None]):
        super().__init__(exit_codes)
        self.exit_codes = exit_codes

    def describe(self) -> str:
        codes = [c for c in self.exit_codes if c is not None]
        if REIMPORT_EXIT in codes:
            return ("an evaluation worker process re-ran the script that started it (spawned workers import "
                    "the main script): put the script's code under `if __name__ == \"__main__\":`, "
                    "or set evaluate.workers=1")
        # SIGTERM: the pool stopping the other workers once one had died.
        own = [c for c in codes if c != -signal.SIGTERM] or codes
        if not own:  # it died before the pool knew it (a broken pipe while sending it the data)
            return ("an evaluation worker process ended while starting (if synthaug runs from a script, the "
                    "script needs `if __name__ == \"__main__\":`)")
        if own[0] >= 0:
            return f"an evaluation worker process ended unexpectedly with exit code {own[0]}"
        try:
            name = signal.Signals(-own[0]).name
        except ValueError:
            name = f"signal {-own[0]}"
        oom = (" (often the out-of-memory killer: set evaluate.workers=1 or free memory)"
               if name == "SIGKILL" else "")
        return f"an evaluation worker process was killed by {name}{oom}"


def _run_pool(todo: list[tuple[str, int]], inputs: tuple, workers: int, finished,
              scratch: Path | None = None) -> None:
    """Run ``todo`` on ``workers`` spawned one-thread processes, calling ``finished(job, run)`` as runs end.

    ``inputs``: (train, test, synthetic, num_classes, cfg); the arrays reach the workers as files in a
    temporary folder below ``scratch`` (``_spill``). However it ends (all done, a failed run, a dead
    worker, Ctrl-C, SIGTERM), no worker outlives it and every run that finished has been passed to
    ``finished``. A worker that died raises ``_WorkerDied``.
    """
    *parts, num_classes, cfg = inputs
    with _spilled(tuple(parts), scratch) as folder:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(os.getpid(), str(folder), num_classes, cfg))
        futures: dict = {}
        try:
            with _sigint_blocked():  # submit starts the workers
                for job in todo:
                    futures[pool.submit(_run_in_worker, *job)] = job
            for future in as_completed(futures):
                finished(futures.pop(future), future.result())
        except BaseException as exc:
            processes = list((getattr(pool, "_processes", None) or {}).values())
            # Which ended on their own, by their sentinels: the pool's thread may be reaping them right now.
            ended = [p for p in processes if multiprocessing.connection.wait([p.sentinel], timeout=0)]
            _stop_workers(processes)
            pool.shutdown(wait=True, cancel_futures=True)
            exit_codes = [p.exitcode for p in ended]  # final once the pool's thread has joined them all
            for future, job in futures.items():  # runs that ended while the loop was elsewhere are kept too
                if future.done() and not future.cancelled() and future.exception() is None:
                    finished(job, future.result())
            if isinstance(exc, (BrokenProcessPool, BrokenPipeError)):
                raise _WorkerDied(exit_codes) from None
            raise
        pool.shutdown()


def _mean_std(values: list[float]) -> dict:
    """Mean and sample standard deviation (ddof = 1; 0.0 for one value) over seeds."""
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0}


def aggregate_runs(runs: list[ArmRun]) -> dict:
    """Per-arm mean ± std over seeds (DESIGN §5 "arms" shape) plus the per-seed ``runs`` summaries."""
    result: dict = {}
    for arm in dict.fromkeys(run.arm for run in runs):
        mine = [run for run in runs if run.arm == arm]
        result[arm] = {
            key: _mean_std([run.metrics[key] for run in mine])
            for key in ("accuracy", "macro_f1", "balanced_accuracy")
        }
        result[arm]["per_class_f1"] = np.mean([run.metrics["per_class_f1"] for run in mine], axis=0).tolist()
        result[arm]["runs"] = [run.summary() for run in mine]
    return result


def run_arms(
    train: EvalData,
    test: EvalData,
    synthetic: EvalData | None,
    num_classes: int,
    cfg: EvaluateConfig,
    *,
    progress: bool = True,
    cache_dir: Path | None = None,
) -> dict:
    """Train and test every arm in ``cfg.arms`` at every seed in ``cfg.seeds``.

    With ``cache_dir``, each finished run is saved below it (atomically) in a folder named by the
    content of everything the run read (``arms_fingerprint``): an interrupted evaluation resumes without
    retraining the runs it finished, and changed data or settings are never answered from the cache.

    Runs are independent: with ``cfg.workers > 1`` they go to a pool of spawned one-thread processes
    (``_run_pool``: no worker outlives the call; a worker that dies raises ``EnvironmentFailure``, with
    the finished runs kept), else they run in this process. Results do not depend on completion order.

    Returns:
        ``{arm: {"accuracy": {"mean", "std"}, "macro_f1": {...}, "balanced_accuracy": {...},
        "per_class_f1": [mean per class], "runs": [per-seed summary]}}`` in ``cfg.arms`` order.
    """
    exit_if_reimported_in_worker()
    needs_synthetic = [arm for arm in cfg.arms if "synthetic" in arm]
    if needs_synthetic and (synthetic is None or len(synthetic) == 0):
        raise SynthaugError(
            f"arms {', '.join(needs_synthetic)} need synthetic images; run `synthaug generate` first "
            "or set evaluate.arms without them"
        )
    jobs = [(arm, seed) for arm in cfg.arms for seed in cfg.seeds]
    paths = _cache_paths(cache_dir, train, test, synthetic, num_classes, cfg)
    done: dict[tuple[str, int], ArmRun] = {job: run for job in jobs if (run := _cached(paths.get(job), job))}

    def finished(job: tuple[str, int], run: ArmRun) -> None:
        done[job] = run
        if job in paths:
            atomic_write_text(paths[job], json.dumps(run.to_json()))
        bar.update()

    todo = [job for job in jobs if job not in done]
    workers = min(cfg.workers, len(todo))
    with tqdm(total=len(jobs), initial=len(done), desc="arms x seeds", unit="run", disable=not progress) as bar:
        if workers <= 1:
            for arm, seed in todo:
                finished((arm, seed), run_arm(arm, seed, train, test, synthetic, num_classes, cfg))
        else:
            try:
                _run_pool(todo, (train, test, synthetic, num_classes, cfg), workers, finished, scratch=cache_dir)
            except _WorkerDied as died:
                kept = (f"; {len(done)} of {len(jobs)} arm runs finished and are kept in {cache_dir}, "
                        "rerun with --resume to continue") if paths else ""
                raise EnvironmentFailure(died.describe() + kept) from None
    return aggregate_runs([done[job] for job in jobs])


def compute_lift(arms: dict) -> dict:
    """DESIGN §5 "lift": what the synthetic data adds, in macro-F1 and accuracy means.

    ``macro_f1``/``accuracy``: real+synthetic minus real. ``vs_best_baseline_macro_f1``: the best arm
    using synthetic data minus the best arm without it (both named). Missing arms give None.
    """

    def mean(arm: str, key: str) -> float | None:
        return arms[arm][key]["mean"] if arm in arms else None

    def best(candidates: tuple[str, ...]) -> str | None:
        present = [arm for arm in candidates if arm in arms]
        return max(present, key=lambda arm: mean(arm, "macro_f1")) if present else None

    def diff(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else a - b

    best_baseline, best_synthetic = best(BASELINE_ARMS), best(SYNTHETIC_ARMS)
    return {
        "macro_f1": diff(mean("real+synthetic", "macro_f1"), mean("real", "macro_f1")),
        "accuracy": diff(mean("real+synthetic", "accuracy"), mean("real", "accuracy")),
        "best_baseline": best_baseline,
        "best_synthetic_arm": best_synthetic,
        "vs_best_baseline_macro_f1": diff(
            mean(best_synthetic, "macro_f1") if best_synthetic else None,
            mean(best_baseline, "macro_f1") if best_baseline else None,
        ),
    }


# -------------------------------------------------------------------------------------------- quality


def train_judge(train: EvalData, num_classes: int, cfg: EvaluateConfig, seed: int) -> torch.nn.Module:
    """A classifier trained on all real training images (classic augmentation, ``cfg.judge_steps``
    steps, final weights) that judges the synthetic images. Returns a ``LitClassifier`` in eval mode.

    One torch thread, like the arms: the same judge whatever the machine's core count.
    """
    with _one_thread():
        return fit_classifier(
            train, None, num_classes, cfg, steps=cfg.judge_steps, seed=seed, classic=True
        ).model


class JudgeFeatures(nn.Module):
    """uint8 (N, C, H, W) images → the judge's penultimate features (N, num_features), float32.

    The ``feature=`` module for torchmetrics' FID: FID in the judge's feature space, nothing downloaded.
    """

    def __init__(self, judge: LitClassifier):
        super().__init__()
        self.judge = judge
        self.num_features = judge.net.num_features

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.judge.eval()
        return self.judge.features(images.float() / 127.5 - 1.0)


def _features(extractor: JudgeFeatures, x: np.ndarray) -> torch.Tensor:
    nchw = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)
    return torch.cat([extractor(nchw[i : i + PREDICT_BATCH]) for i in range(0, len(x), PREDICT_BATCH)])


def _fid(extractor: JudgeFeatures, real: np.ndarray, fake: np.ndarray) -> float | None:
    """Fréchet distance (Heusel et al. 2017) between real and synthetic judge features."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if len(real) < 2 or len(fake) < 2:
        return None
    fid = FrechetInceptionDistance(feature=extractor, normalize=False)
    for images, is_real in ((real, True), (fake, False)):
        nchw = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        for i in range(0, len(nchw), PREDICT_BATCH):
            fid.update(nchw[i : i + PREDICT_BATCH], real=is_real)
    return float(fid.compute())


def _kth_neighbour_radius(points: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each point (N, D) to its k-th nearest other point in the same set, shape (N,)."""
    radii = []
    for i in range(0, len(points), PREDICT_BATCH):
        d = torch.cdist(points[i : i + PREDICT_BATCH], points)
        radii.append(d.kthvalue(k + 1, dim=1).values)  # +1: the point itself is at distance 0
    return torch.cat(radii)


def _coverage(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> float:
    """Share of queries (M, D) inside at least one ball (centres (N, D), radii (N,))."""
    inside = []
    for i in range(0, len(queries), PREDICT_BATCH):
        d = torch.cdist(queries[i : i + PREDICT_BATCH], centres)
        inside.append((d <= radii[None]).any(dim=1))
    return float(torch.cat(inside).float().mean())


def manifold_precision_recall(
    real: torch.Tensor, fake: torch.Tensor, k: int = 3
) -> tuple[float | None, float | None]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) from features (N, D) and (M, D).

    Each set's manifold is the union of balls around its points with radius = distance to the k-th
    nearest neighbour. Precision: share of fake points inside the real manifold; recall: share of
    real points inside the fake manifold. ``k`` shrinks for tiny sets; None with < 2 points.
    """
    if len(real) < 2 or len(fake) < 2:
        return None, None
    precision = _coverage(fake, real, _kth_neighbour_radius(real, min(k, len(real) - 1)))
    recall = _coverage(real, fake, _kth_neighbour_radius(fake, min(k, len(fake) - 1)))
    return precision, recall


def nearest_neighbour_ratio(synthetic: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Memorization ratio test in pixel space (after Carlini et al. 2023, "Extracting training data
    from diffusion models": a generation is a copy when it is much closer to one training image
    than to the rest).

    Args:
        synthetic: uint8 (M, H, W, C); train: uint8 (N, H, W, C) with at least 2 distinct images.

    Returns:
        ratio (M,): L2 distance to the nearest training image divided by the distance to the second
        nearest *distinct* training image (exact duplicates in ``train`` are merged first, else a copy
        of a duplicated image would have ratio 0/0); 0 for an exact copy.
        nearest (M,): index into ``train`` of the nearest image.
    """
    flat_train = train.reshape(len(train), -1)
    _, first = np.unique(flat_train, axis=0, return_index=True)
    first = np.sort(first)
    if len(first) < 2:
        raise SynthaugError("the memorization test needs at least 2 distinct training images")
    refs = torch.from_numpy(flat_train[first].astype(np.float32))
    queries = torch.from_numpy(synthetic.reshape(len(synthetic), -1).astype(np.float32))
    ratios, nearest = [], []
    for i in range(0, len(queries), PREDICT_BATCH):
        # Direct differences, not the matrix-product shortcut, so an exact copy is at distance 0.
        d = torch.cdist(queries[i : i + PREDICT_BATCH], refs, compute_mode="donot_use_mm_for_euclid_dist")
        two = d.topk(2, dim=1, largest=False)
        ratios.append(two.values[:, 0] / two.values[:, 1])
        nearest.append(two.indices[:, 0])
    ratio = torch.cat(ratios).numpy() if ratios else np.zeros(0, dtype=np.float32)
    index = first[torch.cat(nearest).numpy()] if nearest else np.zeros(0, dtype=np.int64)
    return ratio, index


def quality_metrics(
    judge, train: EvalData, synthetic: EvalData, threshold: float, *, k: int = 3
) -> tuple[dict, dict]:
    """Sample quality of the synthetic images, judged against the real training images.

    Returns:
        quality: ``judge_accuracy`` (share of synthetic images the judge gives their own label),
        ``per_class_judge_accuracy`` (list, None for a class without synthetic images), ``fid_judge``
        (FID in judge features), ``precision``/``recall`` (k-NN manifolds in judge features),
        ``memorization_rate`` (share with nearest/second-nearest ratio < ``threshold``).
        pairs: the 8 synthetic images closest to copying: ``{"synthetic": uint8 (P, H, W, C),
        "train": uint8 (P, H, W, C) their nearest training images, "ratio": float (P,)}``, smallest first.
    """
    if train.x.shape[1:] != synthetic.x.shape[1:]:
        raise SynthaugError(
            f"synthetic images are {synthetic.x.shape[1:]} but training images are {train.x.shape[1:]}"
        )
    with _one_thread():
        return _quality_metrics(judge, train, synthetic, threshold, k)


def _quality_metrics(
    judge, train: EvalData, synthetic: EvalData, threshold: float, k: int
) -> tuple[dict, dict]:
    num_classes = judge.hparams.num_classes
    correct = predict(judge, synthetic.x) == synthetic.y
    per_class = [
        float(correct[synthetic.y == c].mean()) if (synthetic.y == c).any() else None
        for c in range(num_classes)
    ]
    extractor = JudgeFeatures(judge)
    precision, recall = manifold_precision_recall(
        _features(extractor, train.x), _features(extractor, synthetic.x), k
    )
    ratio, nearest = nearest_neighbour_ratio(synthetic.x, train.x)
    closest = np.argsort(ratio, kind="stable")[:8]
    quality = {
        "judge_accuracy": float(correct.mean()) if len(correct) else None,
        "fid_judge": _fid(extractor, train.x, synthetic.x),
        "precision": precision,
        "recall": recall,
        "memorization_rate": float((ratio < threshold).mean()) if len(ratio) else None,
        "per_class_judge_accuracy": per_class,
    }
    pairs = {"synthetic": synthetic.x[closest], "train": train.x[nearest[closest]], "ratio": ratio[closest]}
    return quality, pairs
