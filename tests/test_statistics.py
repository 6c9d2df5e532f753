"""Arm-vs-baseline statistics: weighted macro-F1 against torchmetrics, bootstrap weights, the paired
seed × test-set interval (its verdicts, width and coverage of a known difference), long-tail groups, CAS."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import stats
from torchmetrics.functional.classification import multiclass_f1_score

from synthaug import statistics
from synthaug.statistics import (
    VERDICTS,
    bootstrap_weights,
    cas_ratio,
    group_accuracy,
    macro_f1_weighted,
    paired_difference,
    shot_groups,
    verdict,
)


def torchmetrics_f1(preds: np.ndarray, target: np.ndarray, k: int) -> float:
    return float(multiclass_f1_score(torch.as_tensor(preds), torch.as_tensor(target), k, average="macro"))


def random_case(rng: np.random.Generator, k: int = 6, n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Labels and predictions drawn from random subsets of the classes, so some classes are absent from
    both, some only from the predictions and some only from the labels."""
    t_classes = rng.choice(k, size=rng.integers(1, k + 1), replace=False)
    p_classes = rng.choice(k, size=rng.integers(1, k + 1), replace=False)
    target = rng.choice(t_classes, size=n)
    preds = np.where(rng.random(n) < 0.5, target, rng.choice(p_classes, size=n))
    return preds.astype(np.int64), target.astype(np.int64)


# ------------------------------------------------------------------------------------- macro-F1


def test_macro_f1_matches_torchmetrics_including_absent_classes():
    rng = np.random.default_rng(0)
    saw_absent = False
    for _ in range(200):
        preds, target = random_case(rng)
        saw_absent |= len(np.union1d(preds, target)) < 6
        assert macro_f1_weighted(preds, target, 6) == pytest.approx(torchmetrics_f1(preds, target, 6), abs=1e-6)
    assert saw_absent
    # Hand-made: class 3 absent (left out), class 2 only predicted (F1 0), class 1 never predicted (F1 0).
    preds, target = np.array([0, 0, 2, 0]), np.array([0, 0, 1, 1])
    assert macro_f1_weighted(preds, target, 4) == pytest.approx((0.8 + 0 + 0) / 3)
    assert torchmetrics_f1(preds, target, 4) == pytest.approx((0.8 + 0 + 0) / 3)


def test_weights_of_ones_and_integer_weights_are_the_unweighted_and_the_repeated_score():
    rng = np.random.default_rng(1)
    for _ in range(50):
        preds, target = random_case(rng)
        assert macro_f1_weighted(preds, target, 6, np.ones(40)) == pytest.approx(macro_f1_weighted(preds, target, 6))
        counts = rng.integers(0, 4, size=40)
        repeated = torchmetrics_f1(np.repeat(preds, counts), np.repeat(target, counts), 6)
        assert macro_f1_weighted(preds, target, 6, counts) == pytest.approx(repeated, abs=1e-6)


def test_a_batch_of_weightings_gives_what_a_loop_gives():
    rng = np.random.default_rng(2)
    preds, target = random_case(rng, n=60)
    weights = rng.integers(0, 3, size=(25, 60)).astype(float) * rng.random((25, 60))
    batch = macro_f1_weighted(preds, target, 6, weights)
    assert batch.shape == (25,)
    np.testing.assert_allclose(batch, [macro_f1_weighted(preds, target, 6, w) for w in weights], atol=1e-12)
    assert isinstance(macro_f1_weighted(preds, target, 6, weights[0]), float)


def test_macro_f1_rejects_bad_shapes_and_labels():
    with pytest.raises(ValueError, match="shape"):
        macro_f1_weighted(np.zeros(3, int), np.zeros(4, int), 2)
    with pytest.raises(ValueError, match="weights"):
        macro_f1_weighted(np.zeros(3, int), np.zeros(3, int), 2, np.ones(4))
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        macro_f1_weighted(np.array([0, 2]), np.array([0, 1]), 2)


# ----------------------------------------------------------------------------------- bootstrap


def test_bootstrap_weights_are_resampling_counts_fixed_by_the_seed():
    w = bootstrap_weights(50, 30, seed=3)
    assert w.shape == (30, 50) and np.issubdtype(w.dtype, np.integer) and (w >= 0).all()
    assert (w.sum(axis=1) == 50).all()
    assert (w == 0).any()  # resampling with replacement leaves images out
    np.testing.assert_array_equal(w, bootstrap_weights(50, 30, seed=3))
    assert not np.array_equal(w, bootstrap_weights(50, 30, seed=4))


# --------------------------------------------------------------------------- paired difference


def arm_predictions(target: np.ndarray, accuracies, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Per accuracy (one per seed) predictions right on that fraction of images (a fixed random order,
    so seeds agree on which images are easy), wrong on the rest."""
    order = rng.permutation(len(target))
    wrong = (target + 1) % k
    out = []
    for acc in accuracies:
        right = np.zeros(len(target), dtype=bool)
        right[order[: round(acc * len(target))]] = True
        out.append(np.where(right, target, wrong))
    return out


def test_identical_arms_differ_by_nothing():
    rng = np.random.default_rng(4)
    target = rng.integers(0, 4, 400)
    preds = arm_predictions(target, [0.7, 0.72, 0.69], 4, rng)
    result = paired_difference(preds, [p.copy() for p in preds], target, 4, replicates=200)
    assert result["mean"] == 0 and result["test_se"] == 0 and result["seed_std"] == 0
    assert result["ci"][0] <= 0 <= result["ci"][1]
    assert result["verdict"] == "no clear difference"


def test_a_clearly_better_arm_helps_and_swapped_it_hurts():
    rng = np.random.default_rng(5)
    target = rng.integers(0, 4, 400)
    good = arm_predictions(target, 0.95 + rng.normal(0, 0.005, 5), 4, rng)
    poor = arm_predictions(target, 0.60 + rng.normal(0, 0.005, 5), 4, rng)
    helps = paired_difference(good, poor, target, 4, replicates=300)
    assert helps["verdict"] == "helps" and helps["ci"][0] > 0 and helps["mean"] > 0.3
    hurts = paired_difference(poor, good, target, 4, replicates=300)
    assert hurts["verdict"] == "hurts" and hurts["ci"][1] < 0
    assert hurts["mean"] == pytest.approx(-helps["mean"])
    assert json.loads(json.dumps(helps)) == helps
    assert set(helps) == {"mean", "ci", "n_seeds", "seed_std", "test_se", "verdict"} and helps["n_seeds"] == 5
    assert all(type(helps[key]) is float for key in ("mean", "seed_std", "test_se"))
    assert [type(x) for x in helps["ci"]] == [float, float]


def test_more_seed_noise_gives_a_wider_interval():
    rng = np.random.default_rng(6)
    target = rng.integers(0, 4, 400)
    base = arm_predictions(target, [0.7] * 5, 4, np.random.default_rng(7))

    def width(accuracies):
        arm = arm_predictions(target, accuracies, 4, np.random.default_rng(8))
        result = paired_difference(arm, base, target, 4, replicates=200)
        return result["ci"][1] - result["ci"][0], result["seed_std"]

    quiet, quiet_std = width([0.80, 0.81, 0.79, 0.80, 0.80])
    noisy, noisy_std = width([0.70, 0.90, 0.75, 0.85, 0.80])
    assert noisy_std > 5 * quiet_std and noisy > 1.3 * quiet


def test_one_seed_uses_the_test_set_alone():
    rng = np.random.default_rng(9)
    target = rng.integers(0, 4, 300)
    a, b = arm_predictions(target, [0.8], 4, rng), arm_predictions(target, [0.7], 4, rng)
    result = paired_difference(a, b, target, 4, replicates=300)
    assert result["n_seeds"] == 1 and result["seed_std"] is None
    half = (result["ci"][1] - result["ci"][0]) / 2
    assert half == pytest.approx(stats.norm.ppf(0.975) * result["test_se"]) and result["test_se"] > 0
    assert result["verdict"] in VERDICTS


def test_every_seed_sees_the_same_resampled_test_set():
    """Repeating one seed's predictions 5 times must not shrink the test-set error: the test set is
    shared, so resampling it independently per seed would wrongly average its error away."""
    rng = np.random.default_rng(13)
    target = rng.integers(0, 4, 300)
    a, b = arm_predictions(target, [0.8], 4, rng), arm_predictions(target, [0.7], 4, rng)
    once = paired_difference(a, b, target, 4, replicates=200, seed=2)
    five = paired_difference(a * 5, b * 5, target, 4, replicates=200, seed=2)
    assert five["test_se"] == pytest.approx(once["test_se"]) and five["seed_std"] == 0


def test_bootstrapping_in_chunks_changes_nothing(monkeypatch):
    rng = np.random.default_rng(10)
    target = rng.integers(0, 5, 200)
    a = arm_predictions(target, [0.8, 0.75, 0.82], 5, rng)
    b = arm_predictions(target, [0.7, 0.74, 0.71], 5, rng)
    whole = paired_difference(a, b, target, 5, replicates=100, seed=1)
    monkeypatch.setattr(statistics, "CHUNK_BYTES", 8 * 200 * 7)  # 7 replicates a chunk
    assert paired_difference(a, b, target, 5, replicates=100, seed=1) == whole


def test_mismatched_seeds_or_lengths_are_refused():
    target = np.zeros(10, dtype=np.int64)
    ok = [np.zeros(10, dtype=np.int64)] * 3
    with pytest.raises(ValueError, match="same seeds"):
        paired_difference(ok, ok[:2], target, 2)
    with pytest.raises(ValueError, match="same seeds"):
        paired_difference([], [], target, 2)
    with pytest.raises(ValueError, match="seed 1"):
        paired_difference(ok, [ok[0], np.zeros(9, dtype=np.int64), ok[2]], target, 2)
    with pytest.raises(ValueError, match="test labels"):
        paired_difference(ok, ok, target[:9], 2)
    with pytest.raises(ValueError, match="replicates"):
        paired_difference(ok, ok, target, 2, replicates=1)


def simulated_experiment(rng: np.random.Generator, seed_sd: float, n: int = 300, k: int = 4):
    """5 seeds of two arms whose chance of being right on image j at seed i is
    P(0.3·e_ij < alpha + z_j + u_j(arm) + s_i(arm)): z image difficulty, u the arm's own per-image
    effect (both shared by the seeds), s ~ N(0, seed_sd²) per seed and arm. Labels are uniform and
    errors go uniformly to the other classes, so every class's population F1 equals the arm's accuracy,
    Phi(alpha / sqrt(0.09 + 1 + 1 + seed_sd²)): the true difference is known."""
    target = rng.integers(0, k, n)
    z = rng.normal(size=n)
    arms = []
    for alpha in (1.0, 0.6):
        u = rng.normal(size=n)
        arms.append([
            np.where(0.3 * rng.normal(size=n) < alpha + z + u + rng.normal(0, seed_sd), target,
                     (target + rng.integers(1, k, n)) % k)
            for _ in range(5)
        ])
    scale = np.sqrt(0.09 + 2 + seed_sd**2)
    return target, arms, stats.norm.cdf(1.0 / scale) - stats.norm.cdf(0.6 / scale)


@pytest.mark.parametrize("seed_sd", [0.05, 0.6], ids=["test-set-dominated", "seed-dominated"])
def test_the_95_percent_interval_covers_a_known_difference(seed_sd):
    """Each regime fails without its variance term: dropping test_se covers ~60% when the test set
    dominates, dropping the seed term ~55% when seeds dominate."""
    rng = np.random.default_rng(11)
    covered = 0
    for i in range(100):
        target, (a, b), truth = simulated_experiment(rng, seed_sd)
        low, high = paired_difference(a, b, target, 4, replicates=150, seed=i)["ci"]
        covered += low <= truth <= high
    assert covered >= 88


def test_verdict_reads_the_interval():
    assert verdict([0.01, 0.2]) == "helps"
    assert verdict([-0.2, -0.01]) == "hurts"
    assert verdict([-0.01, 0.2]) == verdict([0.0, 0.1]) == "no clear difference"
    assert set(VERDICTS) == {"helps", "hurts", "no clear difference"}


# ------------------------------------------------------------------------------- long tail, CAS


def test_shot_groups_boundaries():
    groups = shot_groups([101, 100, 20, 19, 0, 500])
    assert groups == {"many": [0, 5], "medium": [1, 2], "few": [3, 4]}
    assert shot_groups([5, 6]) == {"many": [], "medium": [], "few": [0, 1]}


def test_group_accuracy_averages_per_class_recall():
    target = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2])
    preds = np.array([0, 0, 0, 1, 1, 2, 2, 2, 0])
    groups = {"many": [0, 1], "medium": [2], "few": [3], "empty": []}
    result = group_accuracy(preds, target, groups, 4)
    # Recalls 3/4, 1/2, 2/3; class 3 has no test images. Plain accuracy of "many" would be 4/6.
    assert result["many"] == pytest.approx((0.75 + 0.5) / 2)
    assert result["medium"] == pytest.approx(2 / 3)
    assert result["few"] is None and result["empty"] is None
    # On a class-balanced test set it is top-1 accuracy.
    rng = np.random.default_rng(12)
    target = np.repeat(np.arange(5), 20)
    preds = np.where(rng.random(100) < 0.6, target, rng.integers(0, 5, 100))
    everything = group_accuracy(preds, target, {"all": list(range(5))}, 5)["all"]
    assert everything == pytest.approx(np.mean(preds == target))


def test_cas_ratio():
    assert cas_ratio(0.4, 0.8) == pytest.approx(0.5)
    assert cas_ratio(0.0, 0.5) == 0.0
    assert cas_ratio(None, 0.8) is None and cas_ratio(0.4, None) is None and cas_ratio(0.4, 0.0) is None
