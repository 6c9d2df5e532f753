"""The Lightning loggers of diffusion training (``train.logger``): the CSV log the report reads, always, plus any
of TensorBoard, MLflow and Weights & Biases, each with the recipe as hyperparameters, the loss, the learning rate
and the sample grids (``train.sample_every``) as images.

Where each writes: TensorBoard event files under ``run/logs/tensorboard``; MLflow to ``$MLFLOW_TRACKING_URI`` or
else a local file store ``run/mlruns`` (experiment = the recipe's name; ``mlflow ui --backend-store-uri`` shows
it); W&B to ``run/wandb``, offline unless
``WANDB_MODE`` says otherwise (``wandb sync`` uploads it later). A logger whose package is missing is refused
with the extra to install, before anything trains.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from synthaug.errors import SynthaugError

LOGGERS = ("csv", "tensorboard", "mlflow", "wandb")
_PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow"),
             "wandb": ("wandb", "wandb")}  # logger -> (module to import, synthaug extra)


def check_logger_packages(names: list[str]) -> None:
    """One line naming the extra to install for the first logger whose package is missing."""
    import importlib.util

    for name in names:
        if name in _PACKAGES and importlib.util.find_spec(_PACKAGES[name][0]) is None:
            module, extra = _PACKAGES[name]
            raise SynthaugError(f"train.logger={name} needs the {module} package; "
                                f'pip install "synthaug[{extra}]" (or drop {name} from train.logger)')


def training_loggers(recipe, logs_name: str) -> list:
    """The loggers of ``recipe.train.logger``: the CSV logger first (``run/<logs_name>/metrics.csv``)."""
    from pytorch_lightning.loggers import CSVLogger

    run_dir = Path(recipe.run_dir)
    names = [n for n in dict.fromkeys(recipe.train.logger) if n != "csv"]
    check_logger_packages(names)
    loggers = [CSVLogger(run_dir, name=logs_name, version="")]
    for name in names:
        if name == "tensorboard":
            from pytorch_lightning.loggers import TensorBoardLogger

            loggers.append(TensorBoardLogger(run_dir / logs_name, name="tensorboard", version="",
                                             default_hp_metric=False))
        elif name == "mlflow":
            from pytorch_lightning.loggers import MLFlowLogger

            uri = os.environ.get("MLFLOW_TRACKING_URI")
            if not uri:  # a local store beside the run; MLflow 3 wants an explicit yes for its file store
                uri = (run_dir / "mlruns").resolve().as_uri()
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            loggers.append(MLFlowLogger(experiment_name=recipe.name, run_name=run_dir.name, tracking_uri=uri))
        elif name == "wandb":
            from pytorch_lightning.loggers import WandbLogger

            (run_dir / "wandb").mkdir(parents=True, exist_ok=True)
            loggers.append(WandbLogger(project=recipe.name, name=run_dir.name, save_dir=str(run_dir),
                                       offline=os.environ.get("WANDB_MODE", "offline") == "offline"))
    return loggers


def log_hyperparameters(loggers: list, recipe) -> None:
    """The whole recipe as the run's hyperparameters (nested keys flattened by each logger)."""
    params: dict[str, Any] = recipe.model_dump(mode="json")
    for logger in loggers:
        logger.log_hyperparams(params)


def log_grid(loggers: list, key: str, path: Path, step: int) -> None:
    """A sample grid already saved as ``path`` (PNG) → every logger that shows images."""
    from PIL import Image
    from pytorch_lightning.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger

    image = None
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            image = image if image is not None else np.asarray(Image.open(path).convert("RGB"))
            logger.experiment.add_image(key, image, step, dataformats="HWC")
        elif isinstance(logger, MLFlowLogger):
            logger.experiment.log_artifact(logger.run_id, str(path), artifact_path=key)
        elif isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[str(path)], step=step)
