"""Fast samplers against many-step DDPM, in a judge classifier's eyes.

A small model is trained on 8×8 digits (a minute on 2 cores); a logistic-regression judge, fitted on the
real training split, decides which digit each sample shows. 20 steps of each fast sampler must score within
a few points of 250 DDPM steps on the same labels and per-image seeds.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import SMOKE
from sklearn.linear_model import LogisticRegression

from synthaug import stages
from synthaug.config import load_recipe
from synthaug.sampling import Generator
from synthaug.seeds import derive_seed

PER_CLASS = 20
POINTS = 0.05  # "within a few points": 5 points of judge accuracy, one image in 20 per class


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("samplers") / "run"
    recipe = load_recipe(SMOKE, out=run, overrides=[
        "data.subset.per_class=60", "model.block_out_channels=[16, 32]", "train.max_steps=600",
        "train.batch_size=32", "train.lr=2e-3", "train.warmup_steps=20", "train.checkpoint_every=600",
    ])
    stages.train(recipe, progress=False)
    x, y, _, data = stages.real_arrays(recipe)
    judge = LogisticRegression(max_iter=2000).fit(x.reshape(len(x), -1) / 255.0, y)
    test_x, test_y, _, _ = stages.real_arrays(recipe, split="test")
    judge_test_accuracy = judge.score(test_x.reshape(len(test_x), -1) / 255.0, test_y)
    return Generator.from_pretrained(run / "model"), judge, judge_test_accuracy, len(data.classes)


def judge_accuracy(trained, sampler: str, steps: int) -> float:
    generator, judge, _, k = trained
    labels = np.repeat(np.arange(k), PER_CLASS)
    seeds = [derive_seed(1, int(c), i % PER_CLASS) for i, c in enumerate(labels)]
    images = generator.sample_arrays(labels.tolist(), seeds, guidance=2.0, steps=steps, sampler=sampler)
    return float((judge.predict(images.reshape(len(images), -1) / 255.0) == labels).mean())


@pytest.fixture(scope="module")
def reference(trained) -> float:
    return judge_accuracy(trained, "ddpm", 250)


def test_the_judge_and_the_reference_are_meaningful(trained, reference):
    _, _, judge_test_accuracy, _ = trained
    assert judge_test_accuracy > 0.9
    assert reference > 0.7, "250 DDPM steps should make mostly recognisable digits"


@pytest.mark.parametrize("sampler", ["dpmpp", "ddim"])
def test_twenty_fast_steps_are_close_to_250_ddpm_steps(trained, reference, sampler):
    fast = judge_accuracy(trained, sampler, 20)
    print(f"{sampler} 20 steps: {fast:.3f}; ddpm 250 steps: {reference:.3f}")
    assert fast >= reference - POINTS
