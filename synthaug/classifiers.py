"""The downstream image classifiers: the CNNs, their LightningModule, training for a fixed number of
steps, prediction, test metrics, and the judge that scores synthetic images.

Every classifier trains for exactly the steps it is given (``EndlessShuffle``: the step budget, not the
data size, ends training), on one torch thread (``one_thread``), from seeds derived from one run seed
(``run_seeds``): the same data and seed give the same model in-process, in a pool worker, on any machine.

Images are ``uint8`` arrays of shape ``(N, H, W, C)`` with ``C`` = 1 or 3; the networks see them as float
``(N, C, H, W)`` in [-1, 1] (``to_model_input``).
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

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

from synthaug.budget import resolve_steps
from synthaug.config import EvaluateConfig
from synthaug.images import to_model_input
from synthaug.seeds import run_seeds

if TYPE_CHECKING:  # evaluation.py builds on this module; EvalData is only named here, never built
    from synthaug.evaluation import EvalData

EVALUATIONS_PER_RUN = 10  # validation checks per training run, for early selection
PREDICT_BATCH = 512


# ------------------------------------------------------------------------------------------------ data


def classic_augmentation(seed: int, flips: bool) -> A.Compose:
    """Affine jitter (shift ±10%, scale 0.9–1.1, rotate ±10°), plus horizontal flips only if ``flips``.

    The Compose owns its random state (seeded), so the augmented stream is the same on every run.
    """
    transforms = [A.Affine(translate_percent=(-0.1, 0.1), scale=(0.9, 1.1), rotate=(-10, 10), p=1.0)]
    if flips:
        transforms.append(A.HorizontalFlip(p=0.5))
    return A.Compose(transforms, seed=seed)


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


class EndlessClassBalanced(Sampler[int]):
    """Indices drawn with replacement, every class equally likely and every row of a class too (a row
    weighs 1 / its class's count): class-balanced sampling (Kang et al. 2020), seeded, forever."""

    def __init__(self, y: np.ndarray, seed: int):
        self.weights = torch.as_tensor(1.0 / np.bincount(y)[y], dtype=torch.float64)
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[int]:
        while True:
            draws = torch.multinomial(self.weights, len(self.weights), True, generator=self.generator)
            yield from draws.tolist()


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

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # Lightning puts the whole model in train mode; frozen layers stay in eval mode, so their batch-norm
        # running statistics are frozen with their weights.
        for module in self.net.modules():
            own = list(module.parameters(recurse=False))
            if own and not any(p.requires_grad for p in own):
                module.eval()

    def configure_optimizers(self):
        trainable = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=self.hparams.lr, weight_decay=5e-4)
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
def one_thread() -> Iterator[None]:
    """Train on one torch thread: float sums depend on the thread count, so one thread gives the same
    model in-process, in a pool worker and on any machine; parallelism comes from processes instead."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass
class FitResult:
    model: LitClassifier
    steps: int  # optimizer steps actually taken (trainer.global_step)
    images_seen: int
    best_step: int | None  # step of the kept weights; None = the final weights (no validation slice)


def classifier_accelerator(accelerator: str = "auto") -> str:
    """The Lightning accelerator the classifiers train on: ``compute.accelerator``, with ``auto`` meaning a
    CUDA GPU when there is one, else the CPU (where arm runs go to one-thread worker processes)."""
    if accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return accelerator


def fit_classifier(
    data: EvalData,
    val: EvalData | None,
    num_classes: int,
    cfg: EvaluateConfig,
    *,
    steps: int,
    seed: int,
    classic: bool,
    accelerator: str = "cpu",
    start: LitClassifier | None = None,
    retrain_head: bool = False,
) -> FitResult:
    """Train a classifier for exactly ``steps`` optimizer steps on ``data``: a fresh one, or one that
    starts from a copy of the weights of ``start`` (fine-tuning; ``start`` itself is left as it is).

    Batches are drawn by ``EndlessShuffle`` so data size never limits the steps. With a non-empty
    ``val``, the model is checked every ``steps / 10`` steps and the best weights are kept. On a GPU
    (``accelerator="gpu"``) the same seeds give a deterministic model too, though not the CPU's.

    ``retrain_head``: classifier re-training (cRT, Kang et al. 2020, as SYNAuG, Ye-Bin et al. 2023, uses
    it): the last linear layer is reinitialised and trained alone on class-balanced batches
    (``EndlessClassBalanced``); every other weight and batch-norm statistic stays as it is.
    """
    if accelerator != "cpu":  # deterministic cuBLAS needs a fixed workspace (torch's reproducibility notes)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    seeds = run_seeds(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeds["init"])
        model = LitClassifier(data.x.shape[-1], num_classes, cfg.classifier, cfg.lr, steps)
        if start is not None:
            model.net.load_state_dict(start.net.state_dict())
        if retrain_head:
            model.net.requires_grad_(False)
            model.net.head.requires_grad_(True)
            model.net.head.reset_parameters()
    augment = classic_augmentation(seeds["augment"], cfg.flips) if classic else None
    order = seeds["order"]
    sampler = EndlessClassBalanced(data.y, order) if retrain_head else EndlessShuffle(len(data), order)
    train_loader = DataLoader(_ImageDataset(data, augment), batch_size=cfg.batch_size, sampler=sampler)
    has_val = val is not None and len(val) > 0
    val_loader = DataLoader(_ImageDataset(val), batch_size=PREDICT_BATCH) if has_val else None
    keep_best = KeepBestWeights()
    with _quiet_lightning():
        trainer = pl.Trainer(
            max_steps=steps,
            accelerator=accelerator,
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
    """Class predictions (N,) for uint8 images (N, H, W, C), on the device the model is on."""
    model.eval()
    device = next(model.parameters()).device
    preds = [model(to_model_input(x[i : i + PREDICT_BATCH]).to(device)).argmax(dim=1).cpu()
             for i in range(0, len(x), PREDICT_BATCH)]
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


# ---------------------------------------------------------------------------------------------- judge


def train_judge(
    train: EvalData, num_classes: int, cfg: EvaluateConfig, seed: int, accelerator: str = "cpu"
) -> torch.nn.Module:
    """A classifier trained on all real training images (classic augmentation, ``cfg.judge_steps``
    steps, final weights) that judges the synthetic images. Returns a ``LitClassifier`` in eval mode.

    One torch thread, like the arms: the same judge whatever the machine's core count.
    """
    cfg = resolve_steps(cfg, len(train))
    with one_thread():
        return fit_classifier(
            train, None, num_classes, cfg, steps=cfg.judge_steps, seed=seed, classic=True, accelerator=accelerator
        ).model
