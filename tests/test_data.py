"""The seeded split and subset, ``load_real_data``, the per-step training batches and ``build_augment``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from test_sources import IMAGES_PER_CLASS, grey

from synthaug.config import DataConfig
from synthaug.data import (
    StepBatches,
    build_augment,
    class_counts,
    load_real_data,
    stratified_split,
    subset_rows,
)
from synthaug.errors import SynthaugError

# --------------------------------------------------------------------------------------------- split


LABELS = [0] * 20 + [1] * 8 + [2] * 2 + [3] * 3


def test_stratified_split_counts_per_class():
    train, test = stratified_split(LABELS, ["a", "b", "c", "d"], fraction=0.25, seed=0)
    labels = np.asarray(LABELS)
    assert sorted(train + test) == list(range(len(LABELS)))
    assert not set(train) & set(test)
    assert train == sorted(train) and test == sorted(test)
    assert class_counts(labels[test], 4) == [5, 2, 1, 1]
    assert class_counts(labels[train], 4) == [15, 6, 1, 2]


def test_stratified_split_keeps_one_train_and_one_test_per_class():
    labels = [0] * 2 + [1] * 2 + [2] * 50
    for fraction in (0.01, 0.5, 0.99):
        train, test = stratified_split(labels, ["a", "b", "c"], fraction=fraction, seed=3)
        arr = np.asarray(labels)
        assert min(class_counts(arr[train], 3)) >= 1
        assert min(class_counts(arr[test], 3)) >= 1


def test_stratified_split_is_seeded():
    classes = ["a", "b", "c", "d"]
    first = stratified_split(LABELS, classes, 0.25, seed=0)
    assert stratified_split(LABELS, classes, 0.25, seed=0) == first
    assert stratified_split(LABELS, classes, 0.25, seed=1) != first


def test_stratified_split_single_image_class_is_an_error():
    with pytest.raises(SynthaugError, match="class 'lonely' has 1 image"):
        stratified_split([0, 0, 0, 1], ["many", "lonely"], 0.25, seed=0)


def test_stratified_split_empty_class_is_an_error():
    with pytest.raises(SynthaugError, match="class 'ghost' has no images"):
        stratified_split([0, 0, 0], ["many", "ghost"], 0.25, seed=0)


# --------------------------------------------------------------------------------------------- subset


def test_subset_per_class_caps():
    labels = np.asarray([0] * 10 + [1] * 5 + [2] * 3)
    rows = subset_rows(labels, 3, per_class=4, imbalance=None, seed=0)
    assert rows == sorted(rows)
    assert class_counts(labels[rows], 3) == [4, 4, 3]


def test_subset_nothing_to_do_keeps_every_row():
    labels = [0, 1, 1, 2]
    assert subset_rows(labels, 3, per_class=None, imbalance=None, seed=0) == [0, 1, 2, 3]


def test_subset_imbalance_formula():
    # n_max = 20 after the cap; class k keeps round(20 · 100^(−k/3)), at least 1: 20, 4.31→4, 0.93→1, 0.2→1.
    labels = np.repeat(np.arange(4), 30)
    rows = subset_rows(labels, 4, per_class=20, imbalance=100.0, seed=0)
    counts = class_counts(labels[rows], 4)
    assert counts == [20, 4, 1, 1]
    expected = [max(1, math.floor(20 * 100.0 ** (-k / 3) + 0.5)) for k in range(4)]
    assert counts == expected


def test_subset_imbalance_never_grows_a_small_class():
    labels = np.asarray([0] * 5 + [1] * 40 + [2] * 40)
    rows = subset_rows(labels, 3, per_class=None, imbalance=2.0, seed=0)
    # n_max = 40: targets 40, 28.3→28, 20; class 0 has only 5.
    assert class_counts(labels[rows], 3) == [5, 28, 20]


def test_subset_is_seeded():
    labels = np.repeat(np.arange(3), 50)
    first = subset_rows(labels, 3, per_class=10, imbalance=4.0, seed=0)
    assert subset_rows(labels, 3, per_class=10, imbalance=4.0, seed=0) == first
    assert subset_rows(labels, 3, per_class=10, imbalance=4.0, seed=1) != first


# --------------------------------------------------------------------------------------------- load_real_data


def test_load_real_data_end_to_end():
    full = load_real_data(DataConfig(source="builtin:digits", test_fraction=0.25), seed=0)
    cfg = DataConfig(source="builtin:digits", test_fraction=0.25, subset={"per_class": 30, "imbalance": 10.0})
    data = load_real_data(cfg, seed=0)
    assert data.classes == [str(i) for i in range(10)]
    train_ids, test_ids = set(data.train["id"]), set(data.test["id"])
    assert not train_ids & test_ids
    assert len(train_ids) == len(data.train) and len(test_ids) == len(data.test)
    # The test split is carved first and keeps every class at its natural size.
    assert data.test_counts == full.test_counts
    assert set(data.test["id"]) == set(full.test["id"])
    assert sum(full.test_counts) + sum(full.train_counts) == 1797
    # The subset is drawn from the training split only, with the long tail over the capped counts.
    assert train_ids <= set(full.train["id"])
    expected = [max(1, math.floor(30 * 10.0 ** (-k / 9) + 0.5)) for k in range(10)]
    assert data.train_counts == expected
    # Same seed, same data.
    again = load_real_data(cfg, seed=0)
    assert list(again.train["id"]) == list(data.train["id"])


def test_load_real_data_from_an_imagefolder(digits_png_folder):
    data = load_real_data(DataConfig(source=f"imagefolder:{digits_png_folder}", test_fraction=0.25), seed=0)
    assert data.classes == ["one", "two", "zero"]
    assert data.test_counts == [2, 2, 2]  # round(6 × 0.25)
    assert data.train_counts == [4, 4, 4]
    assert not set(data.train["id"]) & set(data.test["id"])


def test_load_real_data_with_a_separate_test_source(tmp_path, digits_png_folder):
    test_root = tmp_path / "test"
    for name in ("zero", "two"):
        (test_root / name).mkdir(parents=True)
        grey(200).save(test_root / name / "t.png")
    cfg = DataConfig(source=f"imagefolder:{digits_png_folder}", test_source=f"imagefolder:{test_root}")
    data = load_real_data(cfg, seed=0)
    assert len(data.train) == 3 * IMAGES_PER_CLASS  # nothing held out of the training source
    assert data.test.features["label"].names == data.classes
    # Labels are matched by name: test "two" → training label of "two".
    names = [data.classes[label] for label in data.test["label"]]
    paths = [Path(c["path"]).parent.name for c in data.test["image"]]
    assert names == paths


def test_load_real_data_test_source_with_unknown_class(tmp_path, digits_png_folder):
    test_root = tmp_path / "test"
    (test_root / "zer0").mkdir(parents=True)
    grey(200).save(test_root / "zer0" / "t.png")
    cfg = DataConfig(source=f"imagefolder:{digits_png_folder}", test_source=f"imagefolder:{test_root}")
    with pytest.raises(SynthaugError, match="did you mean 'zero'"):
        load_real_data(cfg, seed=0)


def test_load_real_data_needs_two_classes(tmp_path):
    (tmp_path / "only").mkdir()
    for i in range(4):
        grey(i).save(tmp_path / "only" / f"{i}.png")
    with pytest.raises(SynthaugError, match="at least 2"):
        load_real_data(DataConfig(source=f"imagefolder:{tmp_path}"), seed=0)


# --------------------------------------------------------------------------------------------- training batches


def labelled_images(counts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Images whose every pixel is 50 × label, so a batch shows which label each image had."""
    labels = np.repeat(np.arange(len(counts)), counts)
    images = np.broadcast_to(
        (labels * 50).astype(np.uint8)[:, None, None, None], (len(labels), 4, 4, 1)
    ).copy()
    return images, labels


def test_step_batches_are_a_function_of_seed_and_step():
    images, labels = labelled_images([30, 20, 10])
    batches = StepBatches(images, labels, batch_size=32, seed=5)
    first = batches[7]
    assert first["images"].shape == (32, 1, 4, 4)
    assert first["images"].min() >= -1.0 and first["images"].max() <= 1.0
    again = StepBatches(images, labels, batch_size=32, seed=5)[7]
    assert np.array_equal(first["labels"].numpy(), again["labels"].numpy())
    assert np.array_equal(first["images"].numpy(), again["images"].numpy())
    assert not np.array_equal(first["labels"].numpy(), batches[8]["labels"].numpy())
    other_seed = StepBatches(images, labels, batch_size=32, seed=6)[7]
    assert not np.array_equal(first["labels"].numpy(), other_seed["labels"].numpy())
    # Images and labels stay paired.
    pixel = (first["images"][:, 0, 0, 0] + 1.0) * 127.5
    assert np.allclose(pixel.numpy(), first["labels"].numpy() * 50, atol=1e-3)


@pytest.mark.parametrize("class_balance", [0.0, 0.5, 1.0])
def test_step_batches_class_weights(class_balance):
    counts = np.array([100, 25, 4])
    images, labels = labelled_images(counts.tolist())
    batches = StepBatches(images, labels, batch_size=2000, seed=0, class_balance=class_balance)
    drawn = np.concatenate([batches[step]["labels"].numpy() for step in range(5)])
    freq = np.bincount(drawn, minlength=3) / len(drawn)
    # Each row weighs n_c^-b, so class c is drawn with probability ∝ n_c · n_c^-b.
    expected = counts ** (1.0 - class_balance)
    expected = expected / expected.sum()
    assert np.allclose(freq, expected, atol=0.03), (freq, expected)


def test_step_batches_with_augment_are_deterministic():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(20, 8, 8, 1), dtype=np.uint8)
    labels = np.repeat([0, 1], 10)
    augment = build_augment([{"Affine": {"rotate": [-30, 30], "p": 1.0}}])
    a = StepBatches(images, labels, batch_size=8, seed=1, augment=augment)[3]
    b = StepBatches(
        images,
        labels,
        batch_size=8,
        seed=1,
        augment=build_augment([{"Affine": {"rotate": [-30, 30], "p": 1.0}}]),
    )[3]
    plain = StepBatches(images, labels, batch_size=8, seed=1)[3]
    assert a["images"].shape == plain["images"].shape == (8, 1, 8, 8)
    assert np.array_equal(a["labels"].numpy(), plain["labels"].numpy())
    assert np.array_equal(a["images"].numpy(), b["images"].numpy())
    assert not np.array_equal(a["images"].numpy(), plain["images"].numpy())


# --------------------------------------------------------------------------------------------- augment


def test_build_augment_valid_transform():
    import albumentations as A

    compose = build_augment([{"Affine": {"scale": [0.9, 1.1]}}, {"HorizontalFlip": None}])
    assert isinstance(compose, A.Compose)
    assert [type(t).__name__ for t in compose.transforms] == ["Affine", "HorizontalFlip"]
    image = np.zeros((8, 8, 1), dtype=np.uint8)
    assert compose(image=image)["image"].shape[:2] == (8, 8)


def test_build_augment_nothing_is_none():
    assert build_augment([]) is None


def test_build_augment_misspelt_transform_suggests_the_closest():
    with pytest.raises(SynthaugError) as info:
        build_augment([{"HorizontalFlp": {"p": 0.5}}])
    message = str(info.value)
    assert "'HorizontalFlp' is not an albumentations transform" in message
    assert "did you mean HorizontalFlip?" in message


def test_build_augment_rejects_non_transforms():
    with pytest.raises(SynthaugError, match="not an albumentations transform"):
        build_augment([{"Compose": None}])


def test_build_augment_invalid_parameters():
    with pytest.raises(SynthaugError, match=r"train.augment: RandomBrightnessContrast\(.*\) is invalid"):
        build_augment([{"RandomBrightnessContrast": {"p": 2}}])
