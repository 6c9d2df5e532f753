"""Shared fixtures: a tiny image folder made from sklearn's digits, a recipe that trains in seconds, and the
smoke model and its synthetic set, made once a session. Helpers tests import are in tests/helpers.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import SMOKE, copy_run, invoke, snapshot
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


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One torch thread for a module of tiny models: they gain nothing from a second thread and lose much when
    another process holds the cores. Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


def _shared(run: Path) -> Iterator[Path]:
    """Yield ``run`` to every test of the session; at its end, fail if one of them changed it."""
    before = snapshot(run)
    yield run
    after = snapshot(run)
    changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    assert not changed, (f"a test changed the shared run {run} ({', '.join(changed[:5])}); "
                         "tests copy it with helpers.copy_run before they change anything")


@pytest.fixture(scope="session")
def smoke_model(tmp_path_factory) -> Iterator[Path]:
    """A run directory with the smoke model, made by ``synthaug train recipes/smoke.yaml``: recipe.yaml,
    model/, checkpoints/, logs/. Made once and shared by every module: read it, or copy it (``copy_run``)
    and change the copy."""
    run = tmp_path_factory.mktemp("smoke-model") / "run"
    result = invoke("train", SMOKE, "--out", run)
    assert result.exit_code == 0, result.output
    yield from _shared(run)


@pytest.fixture(scope="session")
def smoke_synthetic(smoke_model: Path, tmp_path_factory) -> Iterator[Path]:
    """``smoke_model`` plus its synthetic set (``synthaug generate``: 3 images per class, 10 classes), in a
    run directory of its own. Shared like ``smoke_model``: copy it before changing anything."""
    run = copy_run(smoke_model, tmp_path_factory.mktemp("smoke-synthetic") / "run")
    result = invoke("generate", run)
    assert result.exit_code == 0, result.output
    yield from _shared(run)
