"""Lightning callbacks for diffusion training: a checkpoint on interruption, and sample grids as it learns."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback


class CheckpointOnInterrupt(Callback):
    """On Ctrl-C or SIGTERM, save ``last.ckpt`` at the last finished step, so ``--resume`` loses nothing.

    Lightning turns SIGINT into a graceful ``KeyboardInterrupt`` shutdown; SIGTERM is routed here by the CLI.
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt) and trainer.global_step > 0:
            trainer.save_checkpoint(self.path)


class SampleGrid(Callback):
    """Every ``every`` steps, save a grid of EMA samples (one row per class) as ``step-NNNNNN.png``."""

    def __init__(self, folder: Path, every: int, classes: list[str], per_class: int = 8, steps: int = 20,
                 guidance: float = 2.0, seed: int = 0):
        self.folder, self.every, self.classes = Path(folder), every, classes
        self.per_class, self.steps, self.guidance, self.seed = per_class, steps, guidance, seed

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every or not trainer.is_global_zero:
            return
        from synthaug.grids import save_grid
        from synthaug.sampling import Generator, derive_seed

        unet = pl_module.sampling_unet().to(pl_module.device)
        gen = Generator(unet, pl_module.scheduler, {"classes": self.classes, "null_class_id": len(self.classes)},
                        device=pl_module.device)
        labels = [c for c in range(len(self.classes)) for _ in range(self.per_class)]
        seeds = [derive_seed(self.seed, c, i) for c in range(len(self.classes)) for i in range(self.per_class)]
        with torch.random.fork_rng():
            images = gen.sample_arrays(labels, seeds, guidance=self.guidance, steps=self.steps)
        save_grid(images.reshape(len(self.classes), self.per_class, *images.shape[1:]),
                  self.folder / f"step-{step:06d}.png", row_labels=self.classes)
