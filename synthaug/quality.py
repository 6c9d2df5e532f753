"""Sample quality: how close the synthetic images are to the real training images, judged by a classifier
trained on the real ones (``classifiers.train_judge``), and whether any of them copies a training image.

- FID (Heusel et al. 2017) in the judge's feature space, through torchmetrics with ``feature=`` the judge:
  nothing is downloaded.
- Improved precision and recall (Kynkäänniemi et al. 2019) on k-NN manifolds of the same features.
- Memorization (after Carlini et al. 2023): the nearest / second-nearest training-image distance ratio in
  pixel space; generation's novelty filter uses the same test.

Images are ``uint8`` arrays of shape ``(N, H, W, C)`` with ``C`` = 1 or 3.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from synthaug.classifiers import PREDICT_BATCH, LitClassifier, one_thread, predict
from synthaug.errors import SynthaugError
from synthaug.evaluation import EvalData
from synthaug.images import to_model_input


class JudgeFeatures(nn.Module):
    """uint8 (N, C, H, W) images → the judge's penultimate features (N, num_features), float32.

    The ``feature=`` module for torchmetrics' FID: FID in the judge's feature space, nothing downloaded.
    """

    def __init__(self, judge: LitClassifier):
        super().__init__()
        self.judge = judge
        self.num_features = judge.net.num_features

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.judge.eval()
        return self.judge.features(to_model_input(images.permute(0, 2, 3, 1)))


def _features(extractor: JudgeFeatures, x: np.ndarray) -> torch.Tensor:
    nchw = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)
    return torch.cat([extractor(nchw[i : i + PREDICT_BATCH]) for i in range(0, len(x), PREDICT_BATCH)])


def _fid(extractor: JudgeFeatures, real: np.ndarray, fake: np.ndarray) -> float | None:
    """Fréchet distance (Heusel et al. 2017) between real and synthetic judge features."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if len(real) < 2 or len(fake) < 2:
        return None
    fid = FrechetInceptionDistance(feature=extractor, normalize=False)
    for images, is_real in ((real, True), (fake, False)):
        nchw = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        for i in range(0, len(nchw), PREDICT_BATCH):
            fid.update(nchw[i : i + PREDICT_BATCH], real=is_real)
    return float(fid.compute())


def _kth_neighbour_radius(points: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each point (N, D) to its k-th nearest other point in the same set, shape (N,)."""
    radii = []
    for i in range(0, len(points), PREDICT_BATCH):
        d = torch.cdist(points[i : i + PREDICT_BATCH], points)
        radii.append(d.kthvalue(k + 1, dim=1).values)  # +1: the point itself is at distance 0
    return torch.cat(radii)


def _coverage(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> float:
    """Share of queries (M, D) inside at least one ball (centres (N, D), radii (N,))."""
    inside = []
    for i in range(0, len(queries), PREDICT_BATCH):
        d = torch.cdist(queries[i : i + PREDICT_BATCH], centres)
        inside.append((d <= radii[None]).any(dim=1))
    return float(torch.cat(inside).float().mean())


def manifold_precision_recall(
    real: torch.Tensor, fake: torch.Tensor, k: int = 3
) -> tuple[float | None, float | None]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) from features (N, D) and (M, D).

    Each set's manifold is the union of balls around its points with radius = distance to the k-th
    nearest neighbour. Precision: share of fake points inside the real manifold; recall: share of
    real points inside the fake manifold. ``k`` shrinks for tiny sets; None with < 2 points.
    """
    if len(real) < 2 or len(fake) < 2:
        return None, None
    precision = _coverage(fake, real, _kth_neighbour_radius(real, min(k, len(real) - 1)))
    recall = _coverage(real, fake, _kth_neighbour_radius(fake, min(k, len(fake) - 1)))
    return precision, recall


def nearest_neighbour_ratio(synthetic: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Memorization ratio test in pixel space (after Carlini et al. 2023, "Extracting training data
    from diffusion models": a generation is a copy when it is much closer to one training image
    than to the rest).

    Args:
        synthetic: uint8 (M, H, W, C); train: uint8 (N, H, W, C) with at least 2 distinct images.

    Returns:
        ratio (M,): L2 distance to the nearest training image divided by the distance to the second
        nearest *distinct* training image (exact duplicates in ``train`` are merged first, else a copy
        of a duplicated image would have ratio 0/0); 0 for an exact copy.
        nearest (M,): index into ``train`` of the nearest image.
    """
    flat_train = train.reshape(len(train), -1)
    _, first = np.unique(flat_train, axis=0, return_index=True)
    first = np.sort(first)
    if len(first) < 2:
        raise SynthaugError("the memorization test needs at least 2 distinct training images")
    refs = torch.from_numpy(flat_train[first].astype(np.float32))
    queries = torch.from_numpy(synthetic.reshape(len(synthetic), -1).astype(np.float32))
    ratios, nearest = [], []
    for i in range(0, len(queries), PREDICT_BATCH):
        # Direct differences, not the matrix-product shortcut, so an exact copy is at distance 0.
        d = torch.cdist(queries[i : i + PREDICT_BATCH], refs, compute_mode="donot_use_mm_for_euclid_dist")
        two = d.topk(2, dim=1, largest=False)
        ratios.append(two.values[:, 0] / two.values[:, 1])
        nearest.append(two.indices[:, 0])
    ratio = torch.cat(ratios).numpy() if ratios else np.zeros(0, dtype=np.float32)
    index = first[torch.cat(nearest).numpy()] if nearest else np.zeros(0, dtype=np.int64)
    return ratio, index


def quality_metrics(
    judge, train: EvalData, synthetic: EvalData, threshold: float, *, k: int = 3
) -> tuple[dict, dict]:
    """Sample quality of the synthetic images, judged against the real training images.

    Returns:
        quality: ``judge_accuracy`` (share of synthetic images the judge gives their own label),
        ``per_class_judge_accuracy`` (list, None for a class without synthetic images), ``fid_judge``
        (FID in judge features), ``precision``/``recall`` (k-NN manifolds in judge features),
        ``memorization_rate`` (share with nearest/second-nearest ratio < ``threshold``).
        pairs: the 8 synthetic images closest to copying: ``{"synthetic": uint8 (P, H, W, C),
        "train": uint8 (P, H, W, C) their nearest training images, "ratio": float (P,)}``, smallest first.
    """
    if train.x.shape[1:] != synthetic.x.shape[1:]:
        raise SynthaugError(
            f"synthetic images are {synthetic.x.shape[1:]} but training images are {train.x.shape[1:]}"
        )
    with one_thread():
        return _quality_metrics(judge, train, synthetic, threshold, k)


def _quality_metrics(
    judge, train: EvalData, synthetic: EvalData, threshold: float, k: int
) -> tuple[dict, dict]:
    num_classes = judge.hparams.num_classes
    correct = predict(judge, synthetic.x) == synthetic.y
    per_class = [
        float(correct[synthetic.y == c].mean()) if (synthetic.y == c).any() else None
        for c in range(num_classes)
    ]
    extractor = JudgeFeatures(judge)
    precision, recall = manifold_precision_recall(
        _features(extractor, train.x), _features(extractor, synthetic.x), k
    )
    ratio, nearest = nearest_neighbour_ratio(synthetic.x, train.x)
    closest = np.argsort(ratio, kind="stable")[:8]
    quality = {
        "judge_accuracy": float(correct.mean()) if len(correct) else None,
        "fid_judge": _fid(extractor, train.x, synthetic.x),
        "precision": precision,
        "recall": recall,
        "memorization_rate": float((ratio < threshold).mean()) if len(ratio) else None,
        "per_class_judge_accuracy": per_class,
    }
    pairs = {"synthetic": synthetic.x[closest], "train": train.x[nearest[closest]], "ratio": ratio[closest]}
    return quality, pairs
