"""The run directory: the one place that spells its names, and the files that carry a run between stages.

Layout (DESIGN §4)::

    run_dir/
      recipe.yaml            the resolved recipe (config.save_recipe)
      model/                 diffusers format + synthaug.json (diffusion.save_model; latent-text: LoRA and class
                             tokens on a named base, latent_text.LatentTextDiffusion.save_model)
      checkpoints/last.ckpt  Lightning checkpoints (resume training)
      logs/metrics.csv       Lightning's CSV log (the loss curve)
      cache/                 decoded real images, memory-mapped, keyed by content (images.to_array)
      synthetic.parts/       generation in progress: plan.json + shards (writers)
      synthetic/             the synthetic dataset; generation.json beside its card
      report/                metrics.json, index.html, plots; .runs/ caches arm runs; .complete marks it done
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthaug.errors import SynthaugError
from synthaug.io import atomic_write_text

MODEL, CHECKPOINTS, LOGS, CACHE, SYNTHETIC, REPORT = "model", "checkpoints", "logs", "cache", "synthetic", "report"
RECIPE_FILE, PARTS, GENERATION = "recipe.yaml", "synthetic.parts", "generation.json"
METRICS, LOSS_LOG, SAMPLE_GRIDS = "metrics.json", "metrics.csv", "samples"


@dataclass(frozen=True)
class RunDir:
    """Where each stage's outputs live below ``root`` (a recipe's ``run_dir``)."""

    root: Path

    @property
    def recipe(self) -> Path:
        """The resolved recipe: the run's provenance (config.save_recipe)."""
        return self.root / RECIPE_FILE

    @property
    def model(self) -> Path:
        return self.root / MODEL

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def logs(self) -> Path:
        return self.root / LOGS

    @property
    def loss_log(self) -> Path:
        return self.logs / LOSS_LOG

    @property
    def sample_grids(self) -> Path:
        """PNG grids drawn during training (``train.sample_every``)."""
        return self.logs / SAMPLE_GRIDS

    @property
    def decode_cache(self) -> Path:
        return self.root / CACHE

    @property
    def synthetic(self) -> Path:
        return self.root / SYNTHETIC

    @property
    def parts(self) -> Path:
        """``synthetic.parts/``: generation in progress (plan.json and one shard per finished batch)."""
        return self.root / PARTS

    @property
    def generation(self) -> Path:
        """``synthetic/generation.json``: counts, speed and settings of the finished generation."""
        return self.synthetic / GENERATION

    @property
    def report(self) -> Path:
        return self.root / REPORT

    @property
    def metrics(self) -> Path:
        return self.report / METRICS

    @property
    def arm_cache(self) -> Path:
        """Finished arm runs, keyed inside by the content they read (evaluation.run_arms)."""
        return self.report / ".runs"

    @property
    def evaluated(self) -> Path:
        """Written last by ``evaluate``, after metrics.json and the page: its presence marks the stage done."""
        return self.report / ".complete"


def read_checkpoint(path: Path) -> dict:
    """Read a Lightning checkpoint safely (``weights_only=True``): a file that is not a checkpoint, or
    that would need arbitrary code to unpickle, is refused, never executed."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else exc.__class__.__name__
        raise SynthaugError(
            f"{path}: refused, not a safe Lightning checkpoint ({reason}); delete it and rerun with --overwrite"
        ) from None
    if not isinstance(ckpt, dict) or "global_step" not in ckpt or "state_dict" not in ckpt:
        raise SynthaugError(f"{path}: not a Lightning checkpoint; delete it and rerun with --overwrite")
    return ckpt


def checkpoint_step(path: Path) -> int:
    """The global step a checkpoint was saved at (read safely, see ``read_checkpoint``)."""
    return int(read_checkpoint(path)["global_step"])


# What the trained weights' shapes and meaning depend on: changing one makes a checkpoint or model of the run
# another model. ``data.image_size`` counts through ``model.sample_size`` when that is unset.
ARCHITECTURE_KEYS = ("model.backbone", "model.base", "model.block_out_channels", "model.layers_per_block",
                     "model.attention", "model.prediction_type", "model.sample_size", "data.channels",
                     # the latent-text backbone's adapter and the captions its class tokens learned from
                     "model.lora", "model.class_tokens", "model.prompt", "model.class_prompts",
                     "model.negative_prompt")


def _architecture(recipe) -> dict[str, Any]:
    values = {}
    for key in ARCHITECTURE_KEYS:
        section, name = key.split(".")
        values[key] = getattr(getattr(recipe, section), name)
    values["model.sample_size"] = recipe.model_size
    return values


def check_architecture(recipe, what: str) -> None:
    """Refuse to continue a run whose model keys changed since it was made (``what`` names what exists).

    The run's ``recipe.yaml`` is the model's provenance; nothing is written before this check.
    """
    from synthaug.config import validate_recipe
    from synthaug.recipe_yaml import read_yaml

    path = RunDir(recipe.run_dir).recipe
    if not path.is_file():
        return
    try:
        before = validate_recipe(read_yaml(path), origin=str(path))
    except SynthaugError:
        return  # a recipe this version cannot read: check_checkpoint_fits still guards resuming
    old, new = _architecture(before), _architecture(recipe)
    changed = [key for key in ARCHITECTURE_KEYS if old[key] != new[key]]
    if changed:
        key = changed[0]
        if key == "model.sample_size" and before.model.sample_size is None and recipe.model.sample_size is None:
            key = "data.image_size"  # the resolution came from the data size in both recipes
            old[key], new[key] = before.data.image_size, recipe.data.image_size
        raise SynthaugError(
            f"{recipe.run_dir}: {key} changed from {old[key]!r} to {new[key]!r} but the run's {what} was made "
            f"with {old[key]!r}; set it back, or rerun with --overwrite to start the model afresh"
        )


def check_checkpoint_fits(module, saved: dict, path: Path, num_classes: int) -> None:
    """Refuse a checkpoint whose classes or weights do not fit the model the recipe builds, naming the first
    mismatch (read with ``read_checkpoint``; ``module`` is the freshly built LightningModule)."""
    embeds = saved["state_dict"].get("unet.class_embedding.weight")
    if embeds is not None and embeds.shape[0] != num_classes + 1:
        raise SynthaugError(
            f"{path}: the checkpoint to resume has {embeds.shape[0] - 1} classes but the data "
            f"has {num_classes}; restore the data the run was trained on, or rerun with --overwrite"
        )
    mine = module.state_dict()
    theirs = saved["state_dict"]
    for name, tensor in mine.items():
        other = theirs.get(name)
        if other is None or tuple(other.shape) != tuple(tensor.shape):
            got = "missing" if other is None else f"shape {tuple(other.shape)}"
            raise SynthaugError(
                f"{path}: the checkpoint does not fit the model the recipe builds ({name}: {got}, the recipe "
                f"needs {tuple(tensor.shape)}); restore the run's model keys, or rerun with --overwrite"
            )


def read_log(path: Path, before_step: int) -> list[dict[str, str]]:
    """Rows of a Lightning CSV log for steps before ``before_step``."""
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return [row for row in csv.DictReader(fh) if row.get("step") and int(row["step"]) < before_step]


def prepend_log(path: Path, earlier: list[dict[str, str]]) -> None:
    """Put ``earlier`` rows before the rows of ``path`` (a resumed run's log), atomically.

    Lightning's ``CSVLogger`` starts ``metrics.csv`` afresh; a resumed run keeps the steps before this way.
    """
    later = read_log(path, before_step=2**62)
    fields = list(dict.fromkeys(k for row in earlier + later for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(earlier + later)
    atomic_write_text(path, buf.getvalue())


def loss_rows(logs: Path) -> str:
    """Lightning's CSV log → ``step,train_loss`` lines (rows without a loss are dropped)."""
    out = io.StringIO()
    out.write("step,train_loss\n")
    for path in sorted(logs.rglob(LOSS_LOG)):
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                if row.get("train_loss"):
                    out.write(f"{row['step']},{row['train_loss']}\n")
    return out.getvalue()
