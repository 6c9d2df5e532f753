"""Lightning callbacks for diffusion training: a graceful stop on signals, and sample grids as it learns."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import torch
from pytorch_lightning.callbacks import Callback, TQDMProgressBar
from pytorch_lightning.plugins import TorchCheckpointIO

from synthaug.errors import Interrupted


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written beside their final path and renamed into place (``synthaug.io``).

    Lightning's own save goes through a temporary file in the system temp folder; across file systems
    the final move is a copy that a full disk or a kill cuts short, leaving a truncated checkpoint.
    """

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        import io

        from synthaug.io import atomic_write_bytes

        buf = io.BytesIO()
        torch.save(checkpoint, buf)
        atomic_write_bytes(path, buf.getvalue())


class GracefulStop(Callback):
    """Ctrl-C or SIGTERM stops at the next safe point, so what is on disk is a consistent state.

    A signal only sets a flag. Training stops after the step in flight (optimizer and EMA updated) and
    the caller saves the checkpoint that ``--resume`` continues from; generation stops after the batch
    in flight is written as a shard (put this callback after the writer). A second signal interrupts
    at once.
    """

    def __init__(self):
        self.requested = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def _install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)

    def on_train_start(self, trainer, pl_module) -> None:
        self._install()

    def on_predict_start(self, trainer, pl_module) -> None:
        self._install()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.requested:
            trainer.should_stop = True

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.requested:
            self._restore()
            raise Interrupted("generation stopped; finished batches are kept, rerun with --resume")

    def on_train_end(self, trainer, pl_module) -> None:
        self._restore()

    def on_predict_end(self, trainer, pl_module) -> None:
        self._restore()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore()

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


class SampleGrid(Callback):
    """Every ``every`` steps, save a grid of EMA samples (one row per class) as ``step-NNNNNN.png``, drawn
    with the sampler, steps and guidance the recipe generates with, so the grids show what ``generate`` makes."""

    def __init__(self, folder: Path, every: int, classes: list[str], per_class: int = 8, steps: int = 20,
                 guidance: float = 2.0, sampler: str = "dpmpp", seed: int = 0):
        self.folder, self.every, self.classes = Path(folder), every, classes
        self.per_class, self.steps, self.guidance, self.sampler, self.seed = per_class, steps, guidance, sampler, seed

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every or not trainer.is_global_zero:
            return
        from synthaug.images import save_grid
        from synthaug.sampling import Generator
        from synthaug.seeds import derive_seed

        unet = pl_module.sampling_unet().to(pl_module.device)
        gen = Generator(unet, pl_module.scheduler, {"classes": self.classes, "null_class_id": len(self.classes)},
                        device=pl_module.device)
        labels = [c for c in range(len(self.classes)) for _ in range(self.per_class)]
        seeds = [derive_seed(self.seed, c, i) for c in range(len(self.classes)) for i in range(self.per_class)]
        with torch.random.fork_rng():
            images = gen.sample_arrays(labels, seeds, guidance=self.guidance, steps=self.steps, sampler=self.sampler)
        save_grid(images.reshape(len(self.classes), self.per_class, *images.shape[1:]),
                  self.folder / f"step-{step:06d}.png", row_labels=self.classes)


class StageProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar named after the stage, ``train``, not ``Training`` / ``Epoch 0``: training here is
    one stream of steps (``data.StepBatches``), not epochs."""

    @property
    def train_description(self) -> str:
        return "train"

    def on_train_epoch_start(self, trainer, *args) -> None:
        # Lightning's own version also renames the bar "Epoch N" (and draws it once so).
        from pytorch_lightning.callbacks.progress.tqdm_progress import convert_inf

        if self._leave:
            self.train_progress_bar = self.init_train_tqdm()
        self.train_progress_bar.reset(convert_inf(self.total_train_batches))
        self.train_progress_bar.initial = 0
