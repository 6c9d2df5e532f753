"""Sample quality: the memorization ratio test, manifold precision/recall, and the whole quality report
of a judge on copies and fresh images (sklearn's digits, the ``digits`` fixture of test_evaluation.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_evaluation import NUM_CLASSES, _cfg, digits  # noqa: F401 (digits: a fixture)

from synthaug.classifiers import train_judge
from synthaug.errors import SynthaugError
from synthaug.evaluation import EvalData
from synthaug.quality import manifold_precision_recall, nearest_neighbour_ratio, quality_metrics


def _pixels(*values: int) -> np.ndarray:
    """One-pixel grey images, so distances are differences of values."""
    return np.asarray(values, dtype=np.uint8).reshape(-1, 1, 1, 1)


def test_the_memorization_ratio_is_nearest_over_second_nearest_distinct_image():
    train = _pixels(10, 10, 50, 200)  # the first image twice: a copy of it must still be at ratio 0
    ratio, nearest = nearest_neighbour_ratio(_pixels(10, 30, 60), train)
    assert ratio.tolist() == pytest.approx([0 / 40, 20 / 20, 10 / 50])
    assert nearest[0] == 0 and nearest[2] == 2
    with pytest.raises(SynthaugError, match="at least 2 distinct training images"):
        nearest_neighbour_ratio(_pixels(10), _pixels(7, 7, 7))


def test_manifold_precision_and_recall_on_points_on_a_line():
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0]])  # k = 1: every real ball has radius 1
    fake = torch.tensor([[0.5], [10.0]])  # k = 1: both fake balls have radius 9.5
    precision, recall = manifold_precision_recall(real, fake, k=1)
    assert precision == pytest.approx(0.5)  # 0.5 lies in the real manifold, 10 does not
    assert recall == pytest.approx(1.0)  # every real point lies within 9.5 of 0.5
    assert manifold_precision_recall(real, fake[:1]) == (None, None)


def test_memorization_flags_copies_and_passes_fresh_images(digits):  # noqa: F811 (the fixture)
    train, fresh = digits["train"], digits["fresh"]
    # A duplicated training image: its copy must still be flagged (distance 0 to the nearest).
    train = EvalData.concat(train, train.take(np.array([3])))
    copies = train.take(np.array([0, 3]))
    synthetic = EvalData.concat(copies, fresh)
    judge = train_judge(train, NUM_CLASSES, _cfg(), seed=0)
    quality, pairs = quality_metrics(judge, train, synthetic, threshold=1 / 3)

    assert quality["memorization_rate"] == pytest.approx(2 / len(synthetic))
    assert pairs["ratio"][:2].tolist() == [0.0, 0.0]
    assert pairs["ratio"][2] >= 1 / 3  # the closest fresh digit is not a copy
    assert np.array_equal(pairs["synthetic"][:2], pairs["train"][:2])
    assert len(pairs["ratio"]) == len(pairs["synthetic"]) == len(pairs["train"]) == 8

    for key in ("judge_accuracy", "precision", "recall"):
        assert 0.0 <= quality[key] <= 1.0, key
    assert np.isfinite(quality["fid_judge"]) and quality["fid_judge"] >= 0
    assert len(quality["per_class_judge_accuracy"]) == NUM_CLASSES
