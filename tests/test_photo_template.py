"""The photo template, ``recipes/imagefolder.yaml``, runs as shipped (only its sizes shrunk) on a folder of RGB
images: non-leaking augmentation in training, then variations of the real images (``generate.mode: variation``),
each row of the synthetic set naming the real training image it started from."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
from helpers import invoke
from PIL import Image

TEMPLATE = Path(__file__).resolve().parents[1] / "recipes" / "imagefolder.yaml"
SMALL = ["data.image_size=8", "model.block_out_channels=[8,8,16]", "train.max_steps=3", "train.batch_size=8",
         "generate.steps=5", "generate.batch_size=16", "evaluate.steps=5", "evaluate.judge_steps=5",
         "evaluate.seeds=[0]", "evaluate.workers=1"]


def photo_folder(root: Path, counts: dict[str, int]) -> Path:
    """``root/CLASS/i.png``: small RGB images, a colour per class with noise, no two alike."""
    rng = np.random.default_rng(0)
    for k, (name, n) in enumerate(counts.items()):
        (root / name).mkdir(parents=True)
        for i in range(n):
            base = np.array([60 + 80 * k, 200 - 60 * k, 90 + 40 * (i % 3)], dtype=np.int16)
            pixels = np.clip(base + rng.integers(-40, 40, (12, 12, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, "RGB").save(root / name / f"{i}.png")
    return root


def test_the_photo_template_varies_the_real_images(tmp_path: Path):
    root = photo_folder(tmp_path / "photos", {"fist": 10, "palm": 6, "thumb": 5})
    run = tmp_path / "run"
    sets = [a for o in [f"data.source=imagefolder:{root}", *SMALL] for a in ("--set", o)]
    result = invoke("run", TEMPLATE, *sets, "--out", run)
    assert result.exit_code == 0, result.output
    recipe = (run / "recipe.yaml").read_text()
    assert "mode: variation" in recipe and "strength: 0.4" in recipe and "p: 0.3" in recipe
    info = json.loads((run / "synthetic" / "generation.json").read_text())
    assert info["mode"] == "variation"
    synthetic = datasets.load_from_disk(str(run / "synthetic"))
    metrics = json.loads((run / "report" / "metrics.json").read_text())
    train_counts, made = metrics["dataset"]["train_counts"], metrics["generation"]["counts"]
    assert made["palm"] > 0 and made["thumb"] > 0  # the template tops the smaller classes up
    names = synthetic.features["label"].names
    for name in ("palm", "thumb"):  # every image started from one of its class's real training images
        sources = [s for s, label in zip(synthetic["source_index"], synthetic["label"]) if names[label] == name]
        assert len(sources) == made[name] and None not in sources
        assert len(set(sources)) == min(made[name], train_counts[name])
