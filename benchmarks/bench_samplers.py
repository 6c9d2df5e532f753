"""Judge accuracy of samplers on a trained run: which sampler, steps and guidance make recognisable images.

    .venv/bin/python benchmarks/bench_samplers.py runs/digits-longtail

A judge classifier is trained on the run's real training split; 20 images per class are sampled with each
setting from the same per-image seeds. Prints the judge's accuracy on the real test split, then per setting
its accuracy on the samples (overall and per class) and the time taken, on one thread.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from synthaug import stages
from synthaug.config import load_recipe
from synthaug.evaluation import EvalData, predict, train_judge
from synthaug.sampling import Generator, derive_seed

SETTINGS = (("dpmpp", 20, 2.0), ("dpmpp", 20, 3.0), ("ddim", 20, 2.0), ("ddim", 25, 3.0), ("ddpm", 100, 2.0))


def main(run_dir: str, per_class: int = 20) -> None:
    torch.set_num_threads(1)
    recipe = load_recipe(run_dir, overrides=["evaluate.judge_steps=400"])
    x, y, ids, data = stages.real_arrays(recipe)
    k = len(data.classes)
    judge = train_judge(EvalData(x, y, ids), k, recipe.evaluate, recipe.seed)
    test_x, test_y = stages._to_test_array(recipe, data), np.asarray(data.test["label"])
    print(f"judge accuracy on the real test split: {(predict(judge, test_x) == test_y).mean():.3f}")
    generator = Generator.from_pretrained(f"{run_dir}/model")
    labels = np.repeat(np.arange(k), per_class)
    seeds = [derive_seed(recipe.seed, int(c), i % per_class) for i, c in enumerate(labels)]
    for sampler, steps, guidance in SETTINGS:
        started = time.perf_counter()
        images = generator.sample_arrays(labels.tolist(), seeds, guidance=guidance, steps=steps, sampler=sampler)
        hits = predict(judge, images) == labels
        per = np.round(hits.reshape(k, per_class).mean(1), 2)
        print(f"{sampler:6s} {steps:4d} steps guidance {guidance}: {hits.mean():.3f} {per.tolist()} "
              f"{time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/digits-longtail")
