"""Does an arm really beat a baseline? Paired intervals over seeds and test images, long-tail groups, CAS.

Every arm is trained at the same seeds and scored on one shared held-out test set, so two arms are
compared *paired*: per seed, the difference of their test macro-F1. That difference varies for two
reasons that add up: the seed (initialisation, batch order, augmentation draws) and the finite test set
(another sample of test images would give another score). Seed variance comes from the spread of the
per-seed differences; test-set variance from a bootstrap over test images (Efron & Tibshirani 1993,
"An Introduction to the Bootstrap") that resamples the same images for every seed and both arms.

Classes are also split by how many real training images they have, into many-shot (> 100), medium-shot
(20–100) and few-shot (< 20) groups (Liu et al. 2019, "Large-scale long-tailed recognition in an open
world"), and the Classification Accuracy Score of a synthetic-only arm is reported relative to the real
arm (CAS, Ravuri & Vinyals 2019, "Classification accuracy score for conditional generative models").

Predictions and targets everywhere are int class ids, shape (N,), in ``[0, num_classes)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from scipy import sparse, stats

VERDICTS = ("helps", "hurts", "no clear difference")
# Bootstrap weights are made and used this many bytes (of float64) at a time, whatever B × N is.
CHUNK_BYTES = 16_000_000


def _check_labels(preds: np.ndarray, target: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(preds, dtype=np.int64)
    t = np.asarray(target, dtype=np.int64)
    if p.ndim != 1 or p.shape != t.shape:
        raise ValueError(f"preds and target must both have shape (N,), got {p.shape} and {t.shape}")
    for name, a in (("preds", p), ("target", t)):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} must hold class ids in [0, {num_classes}), got {a.min()}..{a.max()}")
    return p, t


def macro_f1_weighted(
    preds: np.ndarray, target: np.ndarray, num_classes: int, weights: np.ndarray | None = None
) -> np.ndarray | float:
    """Macro-F1 with a weight per test image, for one weighting or B of them at once.

    Args:
        preds, target: int class ids, shape (N,).
        weights: float or int weight (e.g. bootstrap count) per image, shape (N,) or (B, N); None for all 1.

    Returns:
        A float for ``weights`` None or (N,), a float64 array (B,) for (B, N).

    Same convention as torchmetrics' ``multiclass_f1_score(average="macro")``: a class with no images and
    no predictions (under the weights) is left out of the average; a class with one but not the other
    scores 0. The weighted confusion counts (true positives, support, predictions per class) come from one
    sparse product, so memory is O(B × num_classes), not O(B × num_classes²).
    """
    p, t = _check_labels(preds, target, num_classes)
    w = np.ones(len(t)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape[-1:] != t.shape or w.ndim not in (1, 2):
        raise ValueError(f"weights must have shape (N,) or (B, N) with N = {len(t)}, got {w.shape}")
    n, k = len(t), num_classes
    correct = np.flatnonzero(p == t)
    # Columns: [support per class | predictions per class | true positives per class].
    rows = np.concatenate([np.arange(n), np.arange(n), correct])
    cols = np.concatenate([t, k + p, 2 * k + t[correct]])
    onehot = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, 3 * k))
    counts = np.asarray(onehot.T @ np.atleast_2d(w).T).T  # (B, 3K)
    support, predicted, tp = counts[:, :k], counts[:, k : 2 * k], counts[:, 2 * k :]
    denom = support + predicted  # 2 tp + fp + fn
    present = denom > 0
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(denom), where=present)
    n_present = present.sum(axis=1)
    score = np.divide(f1.sum(axis=1), n_present, out=np.zeros(len(f1)), where=n_present > 0)
    return float(score[0]) if w.ndim == 1 else score


def bootstrap_weights(n: int, replicates: int, seed: int) -> np.ndarray:
    """Multinomial resampling counts, int64 (replicates, n): how often each of n images is drawn in each
    bootstrap replicate of n draws with replacement; every row sums to n."""
    return next(_bootstrap_chunks(n, replicates, seed, rows=replicates))


def _bootstrap_chunks(n: int, replicates: int, seed: int, rows: int) -> Iterator[np.ndarray]:
    """``bootstrap_weights(n, replicates, seed)`` in blocks of at most ``rows`` rows (the same numbers)."""
    rng = np.random.default_rng(seed)
    pvals = np.full(n, 1.0 / n)
    for start in range(0, replicates, rows):
        yield rng.multinomial(n, pvals, size=min(rows, replicates - start))


def _differences(preds_a, preds_b, target, num_classes, weights=None) -> np.ndarray:
    """F1(a_i) - F1(b_i) per seed: shape (n_seeds,), or (n_seeds, B) for weights (B, N)."""
    return np.array(
        [macro_f1_weighted(a, target, num_classes, weights) - macro_f1_weighted(b, target, num_classes, weights)
         for a, b in zip(preds_a, preds_b)]
    )


def verdict(ci: Sequence[float]) -> str:
    """``"helps"`` if the interval lies above 0, ``"hurts"`` if below, else ``"no clear difference"``."""
    low, high = ci
    return VERDICTS[0] if low > 0 else VERDICTS[1] if high < 0 else VERDICTS[2]


def paired_difference(
    preds_a: Sequence[np.ndarray],
    preds_b: Sequence[np.ndarray],
    target: np.ndarray,
    num_classes: int,
    *,
    replicates: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Macro-F1 of arm a minus arm b, with an interval that counts seed and test-set variance.

    Args:
        preds_a, preds_b: per seed (the same seeds, in the same order) the test predictions, shape (N,).
        target: the test labels, shape (N,).
        replicates: bootstrap replicates B of the test images; seed seeds them.
        level: the interval's coverage.

    Returns:
        ``{"mean", "ci": [low, high], "n_seeds", "seed_std", "test_se", "verdict"}``: the mean over seeds
        of d_i = F1(a_i) - F1(b_i); d ± q·sqrt(seed_std²/n + test_se²); seed_std = std of d_i (ddof 1;
        None for one seed); test_se = std over B replicates of the seed-mean difference, each replicate
        resampling the same images for all seeds and both arms.

    Why not just bootstrap everything: 3–5 seeds are too few to resample (the bootstrap of a tiny sample
    underestimates its spread), so seed variance uses a Student t quantile with n - 1 degrees of freedom.
    The test set is shared by all seeds, so its sampling error does not average out over seeds and does
    not show in the spread of the d_i: it is added as a separate variance. One seed: normal quantile, se only.
    The sum is a little conservative: test_se also holds the per-image noise of each seed, which seed_std
    already counts.
    """
    n_seeds = len(preds_a)
    if n_seeds == 0 or len(preds_b) != n_seeds:
        raise ValueError(f"need predictions for the same seeds (at least one), got {n_seeds} and {len(preds_b)}")
    if replicates < 2 or not 0 < level < 1:
        raise ValueError(f"need replicates >= 2 and 0 < level < 1, got {replicates} and {level}")
    t = np.asarray(target, dtype=np.int64)
    if t.ndim != 1 or len(t) == 0:
        raise ValueError(f"target must be a non-empty (N,) array, got shape {t.shape}")
    for i, (a, b) in enumerate(zip(preds_a, preds_b)):
        if np.shape(a) != t.shape or np.shape(b) != t.shape:
            raise ValueError(f"seed {i}: predictions {np.shape(a)} and {np.shape(b)}, test labels {t.shape}")
        _check_labels(a, t, num_classes)
        _check_labels(b, t, num_classes)

    diffs = _differences(preds_a, preds_b, t, num_classes)  # (n_seeds,)
    rows = max(1, CHUNK_BYTES // (8 * len(t)))
    boot = [
        _differences(preds_a, preds_b, t, num_classes, w.astype(np.float64)).mean(axis=0)
        for w in _bootstrap_chunks(len(t), replicates, seed, rows)
    ]
    se = float(np.std(np.concatenate(boot), ddof=1))
    mean = float(diffs.mean())
    if n_seeds >= 2:
        seed_std = float(diffs.std(ddof=1))
        half = stats.t.ppf((1 + level) / 2, n_seeds - 1) * np.sqrt(seed_std**2 / n_seeds + se**2)
    else:
        seed_std = None
        half = stats.norm.ppf((1 + level) / 2) * se
    ci = [float(mean - half), float(mean + half)]
    return {"mean": mean, "ci": ci, "n_seeds": n_seeds, "seed_std": seed_std, "test_se": se,
            "verdict": verdict(ci)}


def shot_groups(train_counts: Sequence[int], many: int = 100, few: int = 20) -> dict[str, list[int]]:
    """Class ids by real training images per class (``train_counts``, shape (K,)): ``"many"`` (> many),
    ``"medium"`` (few..many inclusive), ``"few"`` (< few). All three keys are always present."""
    counts = np.asarray(train_counts)
    return {
        "many": np.flatnonzero(counts > many).tolist(),
        "medium": np.flatnonzero((counts >= few) & (counts <= many)).tolist(),
        "few": np.flatnonzero(counts < few).tolist(),
    }


def group_accuracy(
    preds: np.ndarray, target: np.ndarray, groups: dict[str, list[int]], num_classes: int
) -> dict[str, float | None]:
    """Per group, the mean over its classes of per-class recall (classes without test images skipped).

    That is top-1 accuracy on a test set with equally many images per class; used instead of plain
    accuracy because this project's test splits may be long-tailed, where plain accuracy would mostly
    measure the many-shot classes. None for a group with no class that has test images.
    """
    p, t = _check_labels(preds, target, num_classes)
    support = np.bincount(t, minlength=num_classes)
    hits = np.bincount(t[p == t], minlength=num_classes)
    out: dict[str, float | None] = {}
    for name, classes in groups.items():
        classes = [c for c in classes if support[c] > 0]
        out[name] = float(np.mean(hits[classes] / support[classes])) if classes else None
    return out


def cas_ratio(synthetic_only_score: float | None, real_score: float | None) -> float | None:
    """The synthetic-only arm's score over the real arm's (CAS, Ravuri & Vinyals 2019): 1 means synthetic
    data alone trains as good a classifier as real data. None when either is missing or real is 0."""
    if synthetic_only_score is None or real_score is None or real_score == 0:
        return None
    return float(synthetic_only_score) / float(real_score)
