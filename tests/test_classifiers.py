"""The downstream classifiers: their input scaling, the weighted loss, a fixed step budget, seeded
training on one thread, and the test metrics every arm is scored with."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from synthaug.classifiers import (
    LitClassifier,
    classification_metrics,
    fit_classifier,
    one_thread,
    predict,
)
from synthaug.config import EvaluateConfig
from synthaug.evaluation import EvalData


def test_the_classifier_loss_is_the_weighted_mean():
    model = LitClassifier(1, 3)
    x = torch.randn(4, 1, 8, 8)
    y = torch.tensor([0, 1, 2, 1])
    logits = model(x)
    ce = F.cross_entropy(logits, y, reduction="none")
    weighted, _ = model._shared_step((x, y, torch.tensor([1.0, 1.0, 0.5, 0.0])), "train")
    assert torch.allclose(weighted, (ce[0] + ce[1] + 0.5 * ce[2]) / 2.5, atol=1e-6)
    plain, _ = model._shared_step((x, y, torch.ones(4)), "train")
    assert torch.allclose(plain, ce.mean(), atol=1e-6)


def test_a_classifier_takes_exactly_its_steps_and_the_same_seed_gives_the_same_weights():
    rng = np.random.default_rng(0)
    data = EvalData(rng.integers(0, 256, size=(6, 8, 8, 1), dtype=np.uint8), np.arange(6) % 3, np.arange(6))
    cfg = EvaluateConfig(batch_size=4)

    def fit(seed: int):
        return fit_classifier(data, None, 3, cfg, steps=5, seed=seed, classic=True)

    first, again, other = fit(0), fit(0), fit(1)
    assert (first.steps, first.images_seen, first.best_step) == (5, 20, None)  # 20 > 6: data never ends training
    weights = first.model.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in again.model.state_dict().items())
    assert not all(torch.equal(weights[k], v) for k, v in other.model.state_dict().items())
    preds = predict(first.model, data.x)
    assert preds.shape == (6,) and set(preds.tolist()) <= {0, 1, 2}
    assert predict(first.model, data.x[:0]).shape == (0,)


def test_one_thread_restores_the_thread_count_even_after_an_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), one_thread():
        assert torch.get_num_threads() == 1
        raise RuntimeError("stop")
    assert torch.get_num_threads() == before


def test_classification_metrics_match_a_hand_computed_confusion_matrix():
    #            predicted 0  1  2
    # true 0:              4  1  1
    # true 1:              1  1  0
    # true 2:              0  0  2
    target = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2, 2])
    preds = np.array([0, 0, 0, 0, 1, 2, 1, 0, 2, 2])
    metrics = classification_metrics(preds, target, num_classes=3)
    f1 = [2 * 4 / (2 * 4 + 1 + 2), 2 * 1 / (2 * 1 + 1 + 1), 2 * 2 / (2 * 2 + 1 + 0)]  # 2TP / (2TP + FP + FN)
    assert metrics["accuracy"] == pytest.approx(7 / 10)
    assert metrics["per_class_f1"] == pytest.approx(f1)
    assert metrics["macro_f1"] == pytest.approx(sum(f1) / 3)
    assert metrics["balanced_accuracy"] == pytest.approx((4 / 6 + 1 / 2 + 2 / 2) / 3)
