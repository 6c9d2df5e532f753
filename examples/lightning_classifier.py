"""Train a small CNN with Lightning on real + synthetic images, a fixed synthetic share per batch.

    python examples/lightning_classifier.py --run runs/digits-longtail --steps 500

Batches from ``MixedDataModule`` carry a per-sample ``weight`` (1 for real rows, ``--weight`` for synthetic
ones) that the loss multiplies in, so synthetic images can count for less than real ones.
"""

import argparse
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from synthaug.config import load_recipe
from synthaug.data import load_real_data
from synthaug.torch_data import MixedDataModule


class LitClassifier(pl.LightningModule):
    def __init__(self, channels: int, num_classes: int, lr: float = 2e-3):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes),
        )

    def _step(self, batch, stage: str):
        logits = self.net(batch["image"])
        loss = (F.cross_entropy(logits, batch["label"], reduction="none") * batch["weight"]).mean()
        self.log(f"{stage}_loss", loss)
        self.log(f"{stage}_acc", (logits.argmax(1) == batch["label"]).float().mean())
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a synthaug run directory")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--fraction", type=float, default=0.5, help="synthetic share of each batch")
    parser.add_argument("--weight", type=float, default=0.5, help="loss weight of a synthetic sample")
    args = parser.parse_args()

    recipe = load_recipe(args.run)
    real = load_real_data(recipe.data, recipe.seed)
    data = MixedDataModule(real.train, args.run / "synthetic", fraction=args.fraction, batch_size=64,
                           image_size=recipe.data.image_size, channels=recipe.data.channels,
                           weight=args.weight, val=real.test, seed=recipe.seed)
    model = LitClassifier(recipe.data.channels, data.num_classes)
    trainer = pl.Trainer(max_steps=args.steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         num_sanity_val_steps=0)
    trainer.fit(model, data)
    metrics = trainer.validate(model, data, verbose=False)[0]
    print(f"real test accuracy after {args.steps} steps: {metrics['val_acc']:.3f}")


if __name__ == "__main__":
    main()
