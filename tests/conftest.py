"""Shared fixtures: a tiny image folder made from sklearn's digits, and a recipe that trains in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Folder names sort differently from the digits they hold, so tests can tell name order from digit order.
DIGIT_FOLDERS = {0: "zero", 1: "one", 2: "two"}
IMAGES_PER_CLASS = 6


@pytest.fixture
def digits_png_folder(tmp_path: Path) -> Path:
    """``tmp_path/digits/{zero,one,two}/NN.png``: 3 classes × 6 grey 8×8 PNGs from ``load_digits()``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = tmp_path / "digits"
    for digit, folder in DIGIT_FOLDERS.items():
        class_dir = root / folder
        class_dir.mkdir(parents=True)
        rows = np.flatnonzero(digits.target == digit)[:IMAGES_PER_CLASS]
        for i, row in enumerate(rows):
            pixels = np.clip(np.rint(digits.images[row] * (255.0 / 16.0)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(class_dir / f"{i:02d}.png")
    return root


@pytest.fixture
def tiny_recipe(tmp_path: Path) -> dict:
    """The values of ``recipes/smoke.yaml`` (trains in seconds), writing below ``tmp_path/run``."""
    return {
        "name": "smoke",
        "seed": 0,
        "output_dir": str(tmp_path / "run"),
        "data": {"source": "builtin:digits", "image_size": 8, "subset": {"per_class": 20}},
        "model": {"block_out_channels": [8, 16], "attention": [False, False]},
        "train": {"max_steps": 20, "batch_size": 16, "warmup_steps": 2, "checkpoint_every": 10},
        "generate": {"quota": {"per_class": 3}, "steps": 4, "batch_size": 16},
        "evaluate": {"steps": 20, "seeds": [0], "judge_steps": 20, "workers": 1},
    }
