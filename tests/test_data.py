"""Data sources, image conversion, the seeded split and subset, and the per-step training batches."""

from __future__ import annotations

import io
import math
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from synthaug.config import DataConfig
from synthaug.data import (
    StepBatches,
    build_augment,
    class_counts,
    load_real_data,
    load_source,
    stratified_split,
    subset_rows,
    to_array,
)
from synthaug.errors import SynthaugError

IMAGES_PER_CLASS = 6  # what the digits_png_folder fixture writes per class


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def image_dataset(images: list[Image.Image]):
    """A dataset of one undecoded ``image`` column, the shape every source produces."""
    cells = [{"bytes": png_bytes(img), "path": None} for img in images]
    return datasets.Dataset.from_dict(
        {"image": cells}, features=datasets.Features({"image": datasets.Image(decode=False)})
    )


def grey(value: int, size=(8, 8)) -> Image.Image:
    return Image.fromarray(np.full(size[::-1], value, dtype=np.uint8), mode="L")


# --------------------------------------------------------------------------------------------- builtin


def test_builtin_digits():
    from sklearn.datasets import load_digits

    ds, report = load_source("builtin:digits")
    assert len(ds) == 1797
    label = ds.features["label"]
    assert isinstance(label, datasets.ClassLabel)
    assert label.names == [str(i) for i in range(10)]
    assert ds["id"][:] == list(range(1797))
    assert report.ignored_files == 0
    digits = load_digits()
    assert list(ds["label"][:]) == digits.target.tolist()
    # The pixels survive the PNG round trip (0..16 scaled to 0..255).
    arr = to_array(ds.select(range(5)), image_size=8, channels=1)
    assert arr.shape == (5, 8, 8, 1) and arr.dtype == np.uint8
    expected = np.rint(digits.images[:5] * (255.0 / 16.0)).astype(np.uint8)
    assert np.array_equal(arr[..., 0], expected)


def test_unknown_builtin_is_an_error():
    with pytest.raises(SynthaugError, match="builtin:digits"):
        load_source("builtin:mnist")


def test_unknown_scheme_is_an_error():
    with pytest.raises(SynthaugError, match="unknown source scheme 's3'"):
        load_source("s3:bucket")


# --------------------------------------------------------------------------------------------- imagefolder


def test_imagefolder_labels_come_from_folder_names(digits_png_folder):
    ds, report = load_source(f"imagefolder:{digits_png_folder}")
    names = ds.features["label"].names
    assert names == ["one", "two", "zero"]  # sorted folder names
    assert len(ds) == 3 * IMAGES_PER_CLASS
    assert report.ignored_files == 0
    assert ds["id"][:] == list(range(len(ds)))
    for cell, label in zip(ds["image"], ds["label"], strict=True):
        assert Path(cell["path"]).parent.name == names[label]


def test_imagefolder_ignores_and_counts_non_images(digits_png_folder):
    (digits_png_folder / "zero" / "notes.txt").write_text("not an image")
    (digits_png_folder / "one" / "labels.json").write_text("{}")
    (digits_png_folder / "two" / ".DS_Store").write_bytes(b"\0\0")  # hidden: skipped silently
    (digits_png_folder / "README.md").write_text("top-level files are not classes")
    ds, report = load_source(f"imagefolder:{digits_png_folder}")
    assert len(ds) == 3 * IMAGES_PER_CLASS
    assert ds.features["label"].names == ["one", "two", "zero"]
    assert report.ignored_files == 2
    assert all(Path(c["path"]).suffix == ".png" for c in ds["image"])


def test_imagefolder_empty_class_folder_is_an_error_naming_it(digits_png_folder):
    (digits_png_folder / "three").mkdir()
    (digits_png_folder / "three" / "readme.txt").write_text("no images here")
    with pytest.raises(SynthaugError, match="'three' has no images"):
        load_source(f"imagefolder:{digits_png_folder}")


def test_imagefolder_missing_folder(tmp_path):
    with pytest.raises(SynthaugError, match="no such folder"):
        load_source(f"imagefolder:{tmp_path / 'nope'}")


def test_imagefolder_without_class_folders(tmp_path):
    grey(10).save(tmp_path / "a.png")
    with pytest.raises(SynthaugError, match="no class sub-folders"):
        load_source(f"imagefolder:{tmp_path}")


def test_imagefolder_corrupt_image_named_when_decoded(digits_png_folder):
    bad = digits_png_folder / "two" / "99-bad.png"
    bad.write_bytes(b"this is not a png at all")
    ds, _ = load_source(f"imagefolder:{digits_png_folder}")  # lazy: loading does not decode
    with pytest.raises(SynthaugError) as info:
        to_array(ds, image_size=8, channels=1)
    assert str(bad) in str(info.value)
    assert "not a readable image" in str(info.value)


def test_imagefolder_empty_image_file_is_named(digits_png_folder):
    empty = digits_png_folder / "one" / "empty.png"
    empty.write_bytes(b"")
    ds, _ = load_source(f"imagefolder:{digits_png_folder}")
    with pytest.raises(SynthaugError, match="empty file") as info:
        to_array(ds, image_size=8, channels=1)
    assert str(empty) in str(info.value)


# --------------------------------------------------------------------------------------------- csv


def make_csv_images(root: Path, values: list[int]) -> list[str]:
    (root / "imgs").mkdir(parents=True)
    rel = []
    for i, v in enumerate(values):
        grey(v).save(root / "imgs" / f"{i}.png")
        rel.append(f"imgs/{i}.png")
    return rel


def test_csv_label_names_and_paths_relative_to_the_csv(tmp_path, monkeypatch):
    data = tmp_path / "data"
    rel = make_csv_images(data, [0, 50, 100, 150])
    (data / "labels.csv").write_text(
        "image,label\n"
        + "".join(f"{p},{c}\n" for p, c in zip(rel, ["dog", "cat", "dog", "cat"], strict=True))
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative to the CSV, not to the working directory
    ds, _ = load_source(f"csv:{data / 'labels.csv'}")
    assert ds.features["label"].names == ["cat", "dog"]
    assert list(ds["label"][:]) == [1, 0, 1, 0]
    arr = to_array(ds, image_size=8, channels=1)
    assert arr[:, 0, 0, 0].tolist() == [0, 50, 100, 150]


def test_csv_label_ids(tmp_path):
    rel = make_csv_images(tmp_path, [0, 1, 2, 3])
    (tmp_path / "l.csv").write_text(
        "image,label\n" + "".join(f"{p},{c}\n" for p, c in zip(rel, [2, 0, 1, 2], strict=True))
    )
    ds, _ = load_source(f"csv:{tmp_path / 'l.csv'}")
    assert ds.features["label"].names == ["0", "1", "2"]
    assert list(ds["label"][:]) == [2, 0, 1, 2]


def test_csv_custom_columns(tmp_path):
    rel = make_csv_images(tmp_path, [0, 1])
    (tmp_path / "l.csv").write_text(
        "file,cls\n" + "".join(f"{p},{c}\n" for p, c in zip(rel, ["a", "b"], strict=True))
    )
    ds, _ = load_source(f"csv:{tmp_path / 'l.csv'}", image_column="file", label_column="cls")
    assert ds.features["label"].names == ["a", "b"]
    assert ds.column_names == ["image", "label", "id"]


def test_csv_without_label_column_names_the_column(tmp_path):
    rel = make_csv_images(tmp_path, [0, 1])
    (tmp_path / "l.csv").write_text("image,klass\n" + "".join(f"{p},a\n" for p in rel))
    with pytest.raises(SynthaugError) as info:
        load_source(f"csv:{tmp_path / 'l.csv'}")
    message = str(info.value)
    assert "no 'label' column" in message
    assert "klass" in message and "data.label_column" in message


def test_csv_rows_with_nan_are_an_error_naming_the_lines(tmp_path):
    rel = make_csv_images(tmp_path, [0, 1, 2])
    (tmp_path / "l.csv").write_text(f"image,label\n{rel[0]},a\n{rel[1]},\n{rel[2]},b\n")
    with pytest.raises(SynthaugError, match=r"line\(s\) 3\b"):
        load_source(f"csv:{tmp_path / 'l.csv'}")


def test_csv_missing_image_file(tmp_path):
    (tmp_path / "l.csv").write_text("image,label\nimgs/gone.png,a\n")
    with pytest.raises(SynthaugError, match="'imgs/gone.png' not found"):
        load_source(f"csv:{tmp_path / 'l.csv'}")


def test_csv_missing_file(tmp_path):
    with pytest.raises(SynthaugError, match="no such file"):
        load_source(f"csv:{tmp_path / 'nope.csv'}")


# --------------------------------------------------------------------------------------------- hf


@pytest.fixture
def saved_hf_dataset(tmp_path) -> Path:
    """A saved dataset with an ``img`` column, a ClassLabel ``cl`` and a plain string ``kind``."""
    values = [0, 40, 80, 120, 160, 200]
    features = datasets.Features(
        {
            "img": datasets.Image(),
            "kind": datasets.Value("string"),
            "cl": datasets.ClassLabel(names=["zebra", "yak", "ant"]),  # deliberately not sorted
        }
    )
    ds = datasets.Dataset.from_dict(
        {"img": [grey(v) for v in values], "kind": ["b", "a", "b", "a", "c", "c"], "cl": [1, 0, 1, 0, 2, 2]},
        features=features,
    )
    path = tmp_path / "hfds"
    ds.save_to_disk(str(path))
    return path


def test_hf_classlabel_column_keeps_its_names_and_order(saved_hf_dataset):
    ds, _ = load_source(f"hf:{saved_hf_dataset}", image_column="img", label_column="cl")
    assert ds.features["label"].names == ["zebra", "yak", "ant"]
    assert list(ds["label"][:]) == [1, 0, 1, 0, 2, 2]
    assert ds.column_names == ["image", "label", "id"]
    assert ds["id"][:] == list(range(6))
    assert to_array(ds, 8, 1)[:, 0, 0, 0].tolist() == [0, 40, 80, 120, 160, 200]


def test_hf_string_label_column(saved_hf_dataset):
    ds, _ = load_source(f"hf:{saved_hf_dataset}", image_column="img", label_column="kind")
    assert ds.features["label"].names == ["a", "b", "c"]
    assert list(ds["label"][:]) == [1, 0, 1, 0, 2, 2]


def test_hf_default_column_names(tmp_path):
    ds = datasets.Dataset.from_dict(
        {"image": [grey(1), grey(2)], "label": [1, 0]},
        features=datasets.Features(
            {"image": datasets.Image(), "label": datasets.ClassLabel(names=["p", "q"])}
        ),
    )
    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(tmp_path / "dd"))
    loaded, _ = load_source(f"hf:{tmp_path / 'dd'}")
    assert len(loaded) == 2  # the train split of a DatasetDict
    assert loaded.features["label"].names == ["p", "q"]
    assert list(loaded["label"][:]) == [1, 0]


def test_hf_missing_column_lists_the_columns(saved_hf_dataset):
    with pytest.raises(SynthaugError) as info:
        load_source(f"hf:{saved_hf_dataset}", image_column="img", label_column="label")
    assert "no 'label' column" in str(info.value) and "kind" in str(info.value)


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


# --------------------------------------------------------------------------------------------- to_array


def test_to_array_rgba_is_composited_on_white():
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)  # fully transparent black
    rgba[0, 0] = (0, 0, 255, 255)  # one opaque blue pixel
    rgba[0, 1] = (255, 0, 0, 128)  # half-transparent red
    arr = to_array(image_dataset([Image.fromarray(rgba, mode="RGBA")]), image_size=8, channels=3)
    assert arr.shape == (1, 8, 8, 3)
    assert arr[0, 5, 5].tolist() == [255, 255, 255]
    assert arr[0, 0, 0].tolist() == [0, 0, 255]
    r, g, b = arr[0, 0, 1].tolist()
    assert r == 255 and 120 <= g <= 135 and g == b


def test_to_array_palette_image():
    img = Image.new("P", (8, 8), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    img.putpixel((3, 4), 1)  # red
    rgb = to_array(image_dataset([img]), image_size=8, channels=3)[0]
    assert rgb[4, 3].tolist() == [255, 0, 0] and rgb[0, 0].tolist() == [0, 0, 0]
    grey_arr = to_array(image_dataset([img]), image_size=8, channels=1)[0]
    assert grey_arr.shape == (8, 8, 1)
    assert grey_arr[4, 3, 0] == 76  # ITU-R 601 luma of pure red


def test_to_array_16_bit_is_rescaled():
    pixels = np.array([[0, 65535], [32768, 65535]], dtype=np.uint16).repeat(4, 0).repeat(4, 1)
    img = Image.fromarray(pixels)
    assert img.mode.startswith("I;16")
    arr = to_array(image_dataset([img]), image_size=8, channels=1)[0, :, :, 0]
    assert arr[0, 0] == 0 and arr[0, 7] == 255
    assert arr[7, 0] in (127, 128)


def test_to_array_grey_to_three_channels_and_rgb_to_grey():
    arr = to_array(image_dataset([grey(77)]), image_size=8, channels=3)
    assert arr.shape == (1, 8, 8, 3) and (arr == 77).all()
    rgb = Image.fromarray(np.full((8, 8, 3), (0, 255, 0), dtype=np.uint8), mode="RGB")
    arr = to_array(image_dataset([rgb]), image_size=8, channels=1)
    assert arr.shape == (1, 8, 8, 1) and (arr == 150).all()  # luma of pure green


def test_to_array_resizes_shorter_side_then_centre_crops():
    wide = np.zeros((20, 40), dtype=np.uint8)  # H=20, W=40
    wide[6:14, 16:24] = 255  # a bright square in the centre
    edge = np.zeros((20, 40), dtype=np.uint8)
    edge[:, 0:6] = 255  # a bright stripe at the left edge: outside the centre crop
    arr = to_array(image_dataset([Image.fromarray(wide), Image.fromarray(edge)]), image_size=10, channels=1)
    assert arr.shape == (2, 10, 10, 1)
    centred = arr[0, :, :, 0].astype(np.float64)
    ys, xs = np.indices(centred.shape)
    cy, cx = (ys * centred).sum() / centred.sum(), (xs * centred).sum() / centred.sum()
    assert abs(cy - 4.5) < 0.25 and abs(cx - 4.5) < 0.25
    assert centred[4:6, 4:6].min() > 200  # not squashed away
    assert centred[0, 0] < 20 and centred[-1, -1] < 20
    # Not squashed: the square stays square (a squash would halve its width).
    bright = centred > 128
    assert bright.any(axis=0).sum() == bright.any(axis=1).sum()
    assert arr[1].max() < 30  # the edge stripe was cropped away, not squeezed in


def test_to_array_upscales_small_images():
    arr = to_array(image_dataset([grey(9, size=(4, 4))]), image_size=16, channels=1)
    assert arr.shape == (1, 16, 16, 1) and (arr == 9).all()


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
