"""What the evaluate stage measures beside the arms, read from a run directory: the synthetic set as arrays,
the class-balanced set the synthetic-only arm trains on (CAS), the judge's quality metrics and the report's
image assets (example grids, memorization pairs, diffusion strips).

``stages.evaluate`` calls these in order; ``evaluation.arm_runs`` then trains the arms on what they return.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from synthaug.config import Recipe
from synthaug.io import model_digest
from synthaug.runs import RunDir

SYNTHETIC_ID_OFFSET = 10**12  # synthetic rows get ids far from any real row's


def synthetic_arrays(path: Path, image_size: int, channels: int):
    """The synthetic dataset as (images uint8 NHWC, labels int64, ids int64)."""
    import datasets

    from synthaug.images import to_array

    ds = datasets.load_from_disk(str(path)).cast_column("image", datasets.Image(decode=False))
    x = to_array(ds, image_size, channels)
    return x, np.asarray(ds["label"], dtype=np.int64), SYNTHETIC_ID_OFFSET + np.arange(len(ds), dtype=np.int64)


def examples(x: np.ndarray, y: np.ndarray, num_classes: int, per_class: int = 8):
    """Up to ``per_class`` images of each class (the first ones), for grids."""
    rows = [np.flatnonzero(y == c)[:per_class] for c in range(num_classes)]
    keep = np.concatenate(rows) if rows else np.zeros(0, dtype=int)
    return x[keep], y[keep]


def generation_info(synthetic: Path) -> dict[str, Any] | None:
    """What metrics.json keeps of the synthetic set's generation.json (None without one)."""
    path = RunDir(synthetic.parent).generation
    if not path.exists():
        return None
    info = json.loads(path.read_text())
    return {"counts": info["counts"], "sampler": info["sampler"], "steps": info["steps"],
            "guidance": info["guidance"], "guidance_interval": info.get("guidance_interval", [0.0, 1.0]),
            "mode": info.get("mode"), "precision": info.get("precision"),
            "images_per_second": info["images_per_second"]}


def cas_set(recipe: Recipe, n_train: int, k: int, synthetic, progress: bool, accelerator: str):
    """The class-balanced synthetic set the synthetic-only arm trains on (CAS): the synthetic set's own images
    where its quota reached, the rest sampled from the run's model with the recipe's sampler settings, cached
    beside the arm runs; None without a model."""
    import hashlib

    import datasets

    from synthaug.evaluation import EvalData
    from synthaug.generation import cas_per_class, sample_cas_set
    from synthaug.sampling import Generator, resolve_precision, sampling_device

    out, g = RunDir(recipe.run_dir), recipe.generate
    if not out.model.exists():
        return None
    per_class = cas_per_class(n_train, k)
    device = sampling_device(accelerator)
    made_in = (generation_info(out.synthetic) or {}).get("precision")  # the precision the set's images had
    precision = made_in or resolve_precision(g.precision, device)[0]
    key = json.dumps([model_digest(out.model), recipe.seed, per_class, recipe.data.image_size, recipe.data.channels,
                      {**g.model_dump(mode="json", exclude={"batch_size", "formats"}), "precision": precision}])
    cache = out.arm_cache / f"cas-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    known = {}
    if g.mode == "sample":  # variations are not the plain samples the CAS set is made of
        columns = datasets.load_from_disk(str(out.synthetic)).select_columns(["label", "index"])
        known = {(int(label), int(index)): synthetic.x[row]
                 for row, (label, index) in enumerate(zip(columns["label"], columns["index"])) if index < per_class}
    generator = Generator.from_pretrained(out.model, device=device)
    x, y = sample_cas_set(generator, per_class, recipe.seed, g, cache, progress, known,
                          autocast=precision == "bf16-mixed")
    return EvalData(x, y, 2 * SYNTHETIC_ID_OFFSET + np.arange(len(y), dtype=np.int64))


def quality_and_assets(recipe: Recipe, cfg, train, synthetic, k: int, accelerator: str):
    """The judge's quality metrics of the synthetic set (None without one) and the report's image assets:
    example grids, memorization pairs, the forward/reverse diffusion strips."""
    from synthaug.classifiers import train_judge
    from synthaug.quality import quality_metrics
    from synthaug.sampling import Generator, diffusion_strips, sampling_device

    quality = None
    assets: dict[str, np.ndarray] = {}
    assets["real_x"], assets["real_y"] = examples(train.x, train.y, k)
    if synthetic is not None and len(synthetic):
        judge = train_judge(train, k, cfg, recipe.seed, accelerator)
        quality, pairs = quality_metrics(judge, train, synthetic, cfg.memorization_threshold)
        assets["synth_x"], assets["synth_y"] = examples(synthetic.x, synthetic.y, k)
        assets["mem_synthetic"], assets["mem_train"], assets["mem_ratio"] = (
            pairs["synthetic"], pairs["train"], np.asarray(pairs["ratio"]))
    model = RunDir(recipe.run_dir).model
    if model.exists():
        generator = Generator.from_pretrained(model, device=sampling_device(accelerator))
        first = [int(np.flatnonzero(train.y == c)[0]) for c in range(k)]
        g = recipe.generate
        assets["forward"], assets["reverse"] = diffusion_strips(
            generator, train.x[first], list(range(k)), steps=g.steps, guidance=g.guidance, sampler=g.sampler,
            seed=recipe.seed, guidance_interval=g.guidance_interval)
    return quality, assets
