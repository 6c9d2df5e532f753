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
                 guidance: float = 2.0, sampler: str = "dpmpp", seed: int = 0,
                 guidance_interval: tuple[float, float] = (0.0, 1.0)):
        self.folder, self.every, self.classes = Path(folder), every, classes
        self.per_class, self.steps, self.guidance, self.sampler, self.seed = per_class, steps, guidance, sampler, seed
        self.guidance_interval = guidance_interval

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every or not trainer.is_global_zero:
            return
        from synthaug.images import save_grid
        from synthaug.loggers import log_grid
        from synthaug.sampling import Generator
        from synthaug.seeds import derive_seed

        unet = pl_module.sampling_unet().to(pl_module.device)
        gen = Generator(unet, pl_module.scheduler, {"classes": self.classes, "null_class_id": len(self.classes)},
                        device=pl_module.device)
        labels = [c for c in range(len(self.classes)) for _ in range(self.per_class)]
        seeds = [derive_seed(self.seed, c, i) for c in range(len(self.classes)) for i in range(self.per_class)]
        with torch.random.fork_rng():
            images = gen.sample_arrays(labels, seeds, guidance=self.guidance, steps=self.steps, sampler=self.sampler,
                                       guidance_interval=self.guidance_interval)
        path = self.folder / f"step-{step:06d}.png"
        save_grid(images.reshape(len(self.classes), self.per_class, *images.shape[1:]), path,
                  row_labels=self.classes)
        log_grid(trainer.loggers, "samples", path, step)  # TensorBoard, MLflow, W&B where train.logger has them


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


class KeepNovelBest(Callback):
    """``train.keep_best``: early stopping on novelty. Every ``cfg.every`` steps (and once at the end), the EMA
    weights draw ``cfg.per_class`` samples of each rare class, with fixed seeds and the recipe's sampler; a
    check scores, averaged over the rare classes, the share of samples the ``judge`` (trained on the real
    split) gives their label *and* whose nearest-neighbour ratio to the training images is at least
    ``threshold`` (no near-copy). The best check's weights (the later one on a tie) are what ``best_unet``
    returns; they travel in the checkpoint, so a resumed run keeps the same choice. Rank 0 checks alone.
    """

    def __init__(self, judge, train_x, rare: list[int], classes: list[str], cfg, generate, seed: int,
                 threshold: float):
        self.judge, self.train_x, self.rare, self.classes = judge, train_x, rare, classes
        self.cfg, self.generate, self.seed, self.threshold = cfg, generate, seed, threshold
        self.best_step: int | None = None
        self.best_score = -1.0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.checks: list[dict] = []

    def state_dict(self) -> dict:
        return {"best_step": self.best_step, "best_score": self.best_score, "best_state": self.best_state,
                "checks": self.checks}

    def load_state_dict(self, state: dict) -> None:
        self.best_step, self.best_score = state["best_step"], state["best_score"]
        self.best_state, self.checks = state["best_state"], state["checks"]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.cfg.every == 0:
            self.check(trainer, pl_module)

    def check(self, trainer, pl_module) -> None:
        import numpy as np

        from synthaug.sampling import Generator
        from synthaug.seeds import derive_seed

        step = trainer.global_step
        if not trainer.is_global_zero or (self.checks and self.checks[-1]["step"] == step):
            return
        unet = pl_module.sampling_unet().to(pl_module.device)
        gen = Generator(unet, pl_module.scheduler, {"classes": self.classes, "null_class_id": len(self.classes)},
                        device=pl_module.device)
        labels = np.repeat(self.rare, self.cfg.per_class)
        seeds = [derive_seed(self.seed, int(c), i) for c in self.rare for i in range(self.cfg.per_class)]
        g = self.generate
        with torch.random.fork_rng():
            images = gen.sample_arrays(labels.tolist(), seeds, guidance=g.guidance, steps=g.steps, sampler=g.sampler,
                                       guidance_interval=g.guidance_interval)
        ok = self.recognised_and_new(images, labels)
        per_class = {self.classes[c]: float(ok[labels == c].mean()) for c in self.rare}
        score = float(np.mean(list(per_class.values())))
        self.checks.append({"step": step, "score": score, "per_class": per_class})
        if trainer.logger is not None:
            trainer.logger.log_metrics({"rare_recognised_and_new": score}, step=step)
        if score >= self.best_score:
            self.best_step, self.best_score = step, score
            self.best_state = {k: v.detach().cpu().clone() for k, v in unet.state_dict().items()}

    def recognised_and_new(self, images, labels):
        """Per sample: the judge gives it its label and it is no near-copy of a training image → bool (N,)."""
        from synthaug.classifiers import predict
        from synthaug.quality import nearest_neighbour_ratio

        with torch.no_grad():
            recognised = predict(self.judge, images) == labels
        return recognised & (nearest_neighbour_ratio(images, self.train_x)[0] >= self.threshold)

    def best_unet(self, trainer, pl_module):
        """The UNet of the best check, after a last check of the final weights."""
        self.check(trainer, pl_module)
        unet = pl_module.sampling_unet()
        unet.load_state_dict(self.best_state)
        return unet


def keep_best_callback(recipe, x, y, ids, train_counts: list[int], classes: list[str]) -> KeepNovelBest | None:
    """The ``train.keep_best`` callback for training on ``x, y`` (the images at the model's size), or None when
    off; trains its judge on them first."""
    import numpy as np

    from synthaug.classifiers import train_judge
    from synthaug.evaluation import EvalData

    cfg = recipe.train.keep_best
    if cfg.every is None:
        return None
    counts = np.asarray(train_counts)
    rare = np.flatnonzero(counts < cfg.few).tolist() or np.argsort(counts, kind="stable")[: max(1, len(counts) // 3)].tolist()
    judge = train_judge(EvalData(x, y, ids), len(classes), recipe.evaluate, recipe.seed)
    return KeepNovelBest(judge, x, sorted(rare), classes, cfg, recipe.generate, recipe.seed,
                         recipe.evaluate.memorization_threshold)
