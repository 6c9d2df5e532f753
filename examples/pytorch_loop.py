"""Train a small CNN in a plain PyTorch loop on ``mix()`` of real + synthetic images, through ``TorchView``.

    python examples/pytorch_loop.py --run runs/digits-longtail --steps 500

``TorchView`` normalises images as the run's model did (``model/synthaug.json``). The ``weight`` column of
``mix()`` drives a ``WeightedRandomSampler`` here: a synthetic image is drawn ``--weight`` times as often.
"""

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, WeightedRandomSampler

from synthaug import mix
from synthaug.config import load_recipe
from synthaug.data import load_real_data
from synthaug.torch_data import TorchView


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a synthaug run directory")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--weight", type=float, default=0.5, help="sampling weight of a synthetic image")
    args = parser.parse_args()

    recipe = load_recipe(args.run)
    real = load_real_data(recipe.data, recipe.seed)
    mixed = mix(real.train, args.run / "synthetic", weight=args.weight)
    train = TorchView(mixed, model_dir=args.run / "model")
    test = TorchView(real.test, model_dir=args.run / "model")

    generator = torch.Generator().manual_seed(recipe.seed)
    sampler = WeightedRandomSampler(mixed["weight"], num_samples=args.steps * 64, generator=generator)
    loader = DataLoader(train, batch_size=64, sampler=sampler)
    torch.manual_seed(recipe.seed)
    model = nn.Sequential(
        nn.Conv2d(recipe.data.channels, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, len(train.classes)),
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)

    model.train()
    for step, (x, y) in enumerate(loader):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0:
            print(f"step {step}: loss {loss.item():.3f}")

    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in DataLoader(test, batch_size=256):
            correct += int((model(x).argmax(1) == y).sum())
    print(f"real test accuracy after {args.steps} steps: {correct / len(test):.3f}")


if __name__ == "__main__":
    main()
