"""Sources: builtin, imagefolder, CSV and ``hf:`` loaders, separate test sources of every kind, duplicates
between the splits found by their pixels, integer CSV labels, ``hf:`` folders that are never written into,
names that are not UTF-8, and links back to the dataset folder.
"""

from __future__ import annotations

import json
import os
import shutil
import tracemalloc
from pathlib import Path

import datasets
import numpy as np
import pytest
from helpers import SMOKE, assert_one_line, invoke
from PIL import Image

from synthaug import images as images_module
from synthaug.config import DataConfig
from synthaug.data import TEST_SOURCE_ID_OFFSET, load_real_data
from synthaug.errors import SynthaugError
from synthaug.images import to_array
from synthaug.sources import MAX_CLASSES, load_source

CLASSES = ("cat", "dog", "eel")
IMAGES_PER_CLASS = 6  # what the digits_png_folder fixture writes per class


def picture(seed: int, size: tuple[int, int] = (8, 8), mode: str = "L") -> Image.Image:
    """A random picture: every seed gives other pixels, so no two seeds make duplicates."""
    rng = np.random.default_rng(seed)
    shape = size[::-1] + ((3,) if mode == "RGB" else ())
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


def folder(root: Path, per_class: int, first_seed: int, classes=CLASSES) -> Path:
    """``root/CLASS/i.png``; image seeds start at ``first_seed`` and never repeat within the folder."""
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            picture(first_seed + 100 * c + i).save(root / name / f"{i}.png")
    return root


def csv_source(root: Path, per_class: int, first_seed: int, classes=CLASSES) -> Path:
    """``root/labels.csv`` with ``image,label`` rows for images in ``root/img/``."""
    (root / "img").mkdir(parents=True)
    rows = ["image,label"]
    for c, name in enumerate(classes):
        for i in range(per_class):
            picture(first_seed + 100 * c + i).save(root / "img" / f"{name}-{i}.png")
            rows.append(f"img/{name}-{i}.png,{name}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


def hf_source(root: Path, per_class: int, first_seed: int, classes=CLASSES) -> Path:
    """A ``save_to_disk`` dataset with an ``image`` column and a ClassLabel ``label``."""
    images, labels = [], []
    for c in range(len(classes)):
        for i in range(per_class):
            images.append(picture(first_seed + 100 * c + i))
            labels.append(c)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(classes))})
    datasets.Dataset.from_dict({"image": images, "label": labels}, features=features).save_to_disk(str(root))
    return root


def files_below(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def count_open_image(monkeypatch) -> list[int]:
    opened: list[int] = []
    real = images_module.open_image

    def counting(cell, row=0):
        opened.append(row)
        return real(cell, row)

    monkeypatch.setattr(images_module, "open_image", counting)
    return opened


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


# --------------------------------------------------------------------------------------------- separate test sources


def sources(kind: str, tmp: Path) -> tuple[str, str]:
    """(data.source, data.test_source) of one kind; training and test images differ."""
    if kind == "imagefolder":
        return f"imagefolder:{folder(tmp / 'train', 6, 0)}", f"imagefolder:{folder(tmp / 'test', 3, 50)}"
    if kind == "csv":
        return f"csv:{csv_source(tmp / 'train', 6, 0)}", f"csv:{csv_source(tmp / 'test', 3, 50)}"
    if kind == "hf":
        return f"hf:{hf_source(tmp / 'train', 6, 0)}", f"hf:{hf_source(tmp / 'test', 3, 50)}"
    assert kind == "mixed"
    return f"imagefolder:{folder(tmp / 'train', 6, 0)}", f"csv:{csv_source(tmp / 'test', 3, 50)}"


@pytest.mark.parametrize("kind", ["imagefolder", "csv", "hf", "mixed"])
def test_run_with_a_separate_test_source(kind: str, tmp_path: Path):
    """Each source numbers its rows from 0; the test source's ids must not collide with training ids."""
    train, test = sources(kind, tmp_path)
    result = invoke("run", SMOKE, "--set", f"data.source={train}", "--set", f"data.test_source={test}",
                    "--set", "evaluate.arms=[real, real+synthetic]", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "report" / "metrics.json").read_text())
    assert metrics["dataset"]["train_counts"] == dict.fromkeys(CLASSES, 6)
    assert metrics["dataset"]["test_counts"] == dict.fromkeys(CLASSES, 3)
    assert set(metrics["arms"]) == {"real", "real+synthetic"}


def test_test_source_ids_never_equal_training_ids(tmp_path: Path):
    train, test = sources("mixed", tmp_path)
    data = load_real_data(DataConfig(source=train, test_source=test), seed=0)
    assert list(data.train["id"]) == list(range(18))
    assert list(data.test["id"]) == list(range(TEST_SOURCE_ID_OFFSET, TEST_SOURCE_ID_OFFSET + 9))


# --------------------------------------------------------------------------------------------- duplicates


@pytest.fixture
def shared_test_folder(tmp_path: Path) -> tuple[Path, Path]:
    """A training folder and a test folder holding 4 new images and 2 training images: ``cat/0.png`` copied
    byte for byte, and ``dog/1.png`` re-encoded as BMP (other bytes, the same pixels)."""
    train = folder(tmp_path / "train", 4, 0)
    test = folder(tmp_path / "test", 2, 500, classes=("cat", "dog"))
    shutil.copy(train / "cat" / "0.png", test / "cat" / "copied.png")
    Image.open(train / "dog" / "1.png").save(test / "dog" / "re-encoded.bmp")
    assert (test / "dog" / "re-encoded.bmp").read_bytes() != (train / "dog" / "1.png").read_bytes()
    return train, test


def test_duplicates_in_a_test_source_are_counted_and_dropped(shared_test_folder):
    train, test = shared_test_folder
    cfg = DataConfig(source=f"imagefolder:{train}", test_source=f"imagefolder:{test}")
    data = load_real_data(cfg, seed=0)
    assert data.duplicates_train_test == 2
    kept = sorted(Path(c["path"]).name for c in data.test["image"])
    assert kept == ["0.png", "0.png", "1.png", "1.png"]
    assert len(data.duplicate_test_ids) == 2 and not set(data.duplicate_test_ids) & set(data.test["id"])
    assert any("2 image(s) are in both the training and the test split (same pixels); dropped" in n
               for n in data.report.notes)

    kept_too = load_real_data(cfg.model_copy(update={"train_test_duplicates": "keep"}), seed=0)
    assert kept_too.duplicates_train_test == 2
    assert len(kept_too.test) == 6
    assert set(kept_too.duplicate_test_ids) <= set(kept_too.test["id"])
    assert any("kept in the test split" in n for n in kept_too.report.notes)


def test_duplicate_files_within_one_source_are_dropped_from_the_test_split(tmp_path: Path):
    """Every image has a twin file (the same picture as PNG and BMP); the split puts some twins on both sides."""
    root = folder(tmp_path / "imgs", 10, 0)
    for path in list(root.rglob("*.png")):
        Image.open(path).save(path.with_suffix(".bmp"))
    cfg = DataConfig(source=f"imagefolder:{root}", test_fraction=0.4, train_test_duplicates="keep")
    kept = load_real_data(cfg, seed=0)
    train_stems = {Path(c["path"]).with_suffix("").as_posix() for c in kept.train["image"]}
    test_cells = list(zip(kept.test["id"], (Path(c["path"]).with_suffix("").as_posix() for c in kept.test["image"])))
    twinned = sorted(i for i, stem in test_cells if stem in train_stems)
    assert twinned, "the split put no twins on both sides; the case tests nothing"
    assert kept.duplicates_train_test == len(twinned) and sorted(kept.duplicate_test_ids) == twinned

    dropped = load_real_data(cfg.model_copy(update={"train_test_duplicates": "drop"}), seed=0)
    assert dropped.duplicates_train_test == len(twinned)
    assert sorted(dropped.test["id"]) == sorted(set(kept.test["id"]) - set(twinned))
    assert list(dropped.train["id"]) == list(kept.train["id"])


def test_a_test_source_that_is_the_training_data_is_refused_when_dropping(tmp_path: Path):
    root = folder(tmp_path / "imgs", 3, 0)
    cfg = DataConfig(source=f"imagefolder:{root}", test_source=f"imagefolder:{root}")
    with pytest.raises(SynthaugError, match="every test image is also in the training split"):
        load_real_data(cfg, seed=0)
    assert load_real_data(cfg.model_copy(update={"train_test_duplicates": "keep"}), seed=0).duplicates_train_test == 9


def test_the_duplicate_check_decodes_each_image_once(tmp_path: Path, monkeypatch):
    root = folder(tmp_path / "imgs", 5, 0)
    opened = count_open_image(monkeypatch)
    data = load_real_data(DataConfig(source=f"imagefolder:{root}"), seed=0)
    assert len(opened) == 15 and data.duplicates_train_test == 0
    opened.clear()
    load_real_data(DataConfig(source=f"imagefolder:{root}"), seed=0, check_duplicates=False)
    assert not opened


def test_run_reports_duplicates_in_metrics(shared_test_folder, tmp_path: Path):
    """Needs stages.evaluate to write dataset.duplicates_train_test (the lead's change)."""
    train, test = shared_test_folder
    result = invoke("run", SMOKE, "--set", f"data.source=imagefolder:{train}", "--set",
                    f"data.test_source=imagefolder:{test}", "--set", "evaluate.arms=[real]", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    dataset = json.loads((tmp_path / "run" / "report" / "metrics.json").read_text())["dataset"]
    assert dataset["duplicates_train_test"] == 2
    assert dataset["test_counts"] == {"cat": 2, "dog": 2, "eel": 0}


# --------------------------------------------------------------------------------------------- CSV integer labels


def test_csv_integer_labels_are_the_ids_that_occur_in_numeric_order(tmp_path: Path):
    (tmp_path / "img").mkdir()
    labels = [5, 0, 2, 10, 2, 0]
    for i in range(len(labels)):
        picture(i).save(tmp_path / "img" / f"{i}.png")
    (tmp_path / "l.csv").write_text("image,label\n" + "".join(f"img/{i}.png,{v}\n" for i, v in enumerate(labels)))
    ds, report = load_source(f"csv:{tmp_path / 'l.csv'}")
    assert ds.features["label"].names == ["0", "2", "5", "10"]  # numeric order, not "10" < "2"
    assert list(ds["label"]) == [2, 0, 1, 3, 1, 0]
    assert report.notes == [f"csv:{tmp_path / 'l.csv'}: the integer labels 0, 2, 5, 10 are the classes, "
                            "in numeric order (ids no row uses are not classes)"]


def test_one_huge_csv_label_id_makes_one_class_not_a_hundred_million(tmp_path: Path):
    (tmp_path / "l.csv").write_text("image,label\n" + "".join(f"{i}.png,{v}\n" for i, v in enumerate([0, 1, 100000000])))
    for i in range(3):
        picture(i).save(tmp_path / f"{i}.png")
    tracemalloc.start()
    try:
        ds, _ = load_source(f"csv:{tmp_path / 'l.csv'}")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert ds.features["label"].names == ["0", "1", "100000000"]
    assert peak < 50 * 2**20, f"loading three rows allocated {peak / 2**20:.0f} MB"


def too_many_classes(kind: str, tmp: Path) -> tuple[str, str]:
    n = MAX_CLASSES + 1
    if kind == "csv":
        (tmp / "l.csv").write_text("image,label\n" + "".join(f"x.png,{i}\n" for i in range(n)))
        return f"csv:{tmp / 'l.csv'}", f"the label {MAX_CLASSES} on line {n + 1} makes 10,001 different labels"
    if kind == "imagefolder":
        for i in range(n):
            (tmp / "imgs" / f"c{i}").mkdir(parents=True)
        return f"imagefolder:{tmp / 'imgs'}", "10,001 class folders"
    names = [f"c{i}" for i in range(n)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    datasets.Dataset.from_dict({"image": [picture(0)], "label": [0]}, features=features).save_to_disk(str(tmp / "hf"))
    return f"hf:{tmp / 'hf'}", "its ClassLabel names 10,001 classes"


@pytest.mark.parametrize("kind", ["csv", "imagefolder", "hf"])
def test_more_classes_than_the_bound_are_refused(kind: str, tmp_path: Path):
    spec, named = too_many_classes(kind, tmp_path)
    result = invoke("data", SMOKE, "--set", f"data.source={spec}")
    assert_one_line(result, 2, named, "more than the 10,000 classes synthaug supports")


# --------------------------------------------------------------------------------------------- hf: sources


def test_a_read_only_hf_folder_loads_and_is_never_written_into(tmp_path: Path):
    train = hf_source(tmp_path / "train", 4, 0)
    test = hf_source(tmp_path / "test", 2, 50)
    before = {root: files_below(root) for root in (train, test)}
    for root in (train, test):
        for path in [root, *root.iterdir()]:
            path.chmod(0o555)
    try:
        split = load_real_data(DataConfig(source=f"hf:{train}", test_fraction=0.5), seed=0)
        separate = load_real_data(DataConfig(source=f"hf:{train}", test_source=f"hf:{test}"), seed=0)
        assert to_array(split.test, 8, 1).shape == (6, 8, 8, 1)
        assert len(separate.test) == 6 and separate.duplicates_train_test == 0
        result = invoke("data", SMOKE, "--set", f"data.source=hf:{train}", "--set", f"data.test_source=hf:{test}")
        assert result.exit_code == 0, result.output
    finally:
        for root in (train, test):
            for path in [root, *root.iterdir()]:
                path.chmod(0o755)
    assert {root: files_below(root) for root in (train, test)} == before


def test_hf_image_paths_and_integer_labels(tmp_path: Path):
    """An image column of file paths, integer labels that are not a ClassLabel: ids in numeric order."""
    paths = []
    for i in range(4):
        picture(i).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    spec = save_hf(tmp_path / "hf", {"file": paths, "y": [10, 2, 10, 2]})
    ds, report = load_source(spec, image_column="file", label_column="y")
    assert ds.features["label"].names == ["2", "10"] and list(ds["label"]) == [1, 0, 1, 0]
    assert report.notes and "the integer labels 2, 10 are the classes, in numeric order" in report.notes[0]
    assert np.array_equal(to_array(ds, 8, 1)[..., 0], np.stack([np.asarray(picture(i)) for i in range(4)]))


def save_hf(path: Path, columns: dict, features: dict | None = None) -> str:
    ds = datasets.Dataset.from_dict(columns, features=datasets.Features(features) if features else None)
    ds.save_to_disk(str(path))
    return f"hf:{path}"


def hf_int_images(tmp: Path):
    spec = save_hf(tmp / "hf", {"image": [1, 2, 3, 4], "label": ["a", "b", "a", "b"]})
    return spec, ("column 'image' holds int64 values, not images; set data.image_column",)


def hf_none_labels(tmp: Path):
    spec = save_hf(tmp / "hf", {"image": [picture(i) for i in range(4)], "label": ["a", None, "b", None]},
                   {"image": datasets.Image(), "label": datasets.Value("string")})
    return spec, ("empty label on row 1, row 3; fill them in or drop the rows",)


def hf_unlabelled_classlabel(tmp: Path):
    spec = save_hf(tmp / "hf", {"image": [picture(i) for i in range(3)], "label": [0, -1, 1]},
                   {"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    return spec, ("no label (-1) on row 1", "use a labelled split or drop those rows")


def hf_missing_image(tmp: Path):
    spec = save_hf(tmp / "hf", {"image": [picture(0), None, picture(2)], "label": ["a", "b", "a"]},
                   {"image": datasets.Image(), "label": datasets.Value("string")})
    return spec, ("no image on row 1 of column 'image'; drop those rows",)


def non_utf8_class_folder(tmp: Path):
    root = folder(tmp / "imgs", 3, 0)
    bad = os.fsencode(str(root)) + b"/\xff\xfe"
    os.mkdir(bad)
    picture(9).save(os.fsdecode(bad + b"/0.png"))
    return f"imagefolder:{root}", (f"the name of '{root}/\\xff\\xfe' is not valid UTF-8; rename it",)


def non_utf8_file_name(tmp: Path):
    root = folder(tmp / "imgs", 3, 0)
    picture(9).save(os.fsdecode(os.fsencode(str(root / "cat")) + b"/\xe9t\xe9.png"))
    return f"imagefolder:{root}", (f"the name of '{root}/cat/\\xe9t\\xe9.png' is not valid UTF-8; rename it",)


REFUSED = {
    "hf image column of ints": hf_int_images,
    "hf labels that are None": hf_none_labels,
    "hf ClassLabel -1 (unlabelled)": hf_unlabelled_classlabel,
    "hf image that is None": hf_missing_image,
    "class folder name not UTF-8": non_utf8_class_folder,
    "file name not UTF-8": non_utf8_file_name,
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_bad_sources_exit_2_with_one_line(case: str, tmp_path: Path):
    spec, expected = REFUSED[case](tmp_path)
    assert_one_line(invoke("data", SMOKE, "--set", f"data.source={spec}"), 2, *expected)


# --------------------------------------------------------------------------------------------- oddities


@pytest.mark.parametrize("target", ["root", "ancestor"])
def test_a_link_to_the_dataset_folder_is_skipped_with_a_note(target: str, tmp_path: Path):
    root = folder(tmp_path / "data" / "imgs", 3, 0)
    (root / "loop").symlink_to(root if target == "root" else root.parent, target_is_directory=True)
    (root / "cat" / "inner").symlink_to(root, target_is_directory=True)  # inside a class: not followed
    ds, report = load_source(f"imagefolder:{root}")
    assert ds.features["label"].names == list(CLASSES)
    assert len(ds) == 9
    assert report.notes == [f"imagefolder:{root}: skipped 'loop', a link to the dataset folder or a folder above it"]


def test_a_link_to_another_folder_is_still_a_class(tmp_path: Path):
    elsewhere = folder(tmp_path / "elsewhere", 2, 70, classes=("fox",))
    root = folder(tmp_path / "imgs", 2, 0)
    (root / "fox").symlink_to(elsewhere / "fox", target_is_directory=True)
    ds, report = load_source(f"imagefolder:{root}")
    assert ds.features["label"].names == [*CLASSES, "fox"] and len(ds) == 8 and not report.notes


def test_a_test_source_without_a_training_class_is_noted(tmp_path: Path):
    train = folder(tmp_path / "train", 3, 0)
    test = folder(tmp_path / "test", 2, 50, classes=("cat", "eel"))
    data = load_real_data(DataConfig(source=f"imagefolder:{train}", test_source=f"imagefolder:{test}"), seed=0)
    assert data.test_counts == [2, 0, 2]
    assert "class 'dog' has no test images, so the test split cannot measure it; add test images of it" in data.report.notes


def test_synthaug_data_decodes_every_image_once(tmp_path: Path, monkeypatch):
    root = folder(tmp_path / "imgs", 4, 0)
    opened = count_open_image(monkeypatch)
    result = invoke("data", SMOKE, "--set", f"data.source=imagefolder:{root}")
    assert result.exit_code == 0, result.output
    assert sorted(opened) == sorted(range(12)), "the duplicate check and the modes/sizes pass are one pass"
    assert "modes: {'L': 12}   sizes: {'8x8': 12}" in result.output
    opened.clear()
    result = invoke("data", SMOKE, "--set", f"data.source=imagefolder:{root}", "--set", "data.subset.per_class=1")
    assert result.exit_code == 0, result.output
    assert len(opened) == 12
    assert "total       3       3" in result.output
    assert "modes: {'L': 6}   sizes: {'8x8': 6}" in result.output, "modes and sizes count the images the run uses"


def test_synthaug_data_prints_the_notes(shared_test_folder):
    """Needs stages.describe_data to print data.report.notes (the lead's change)."""
    train, test = shared_test_folder
    (train / "loop").symlink_to(train, target_is_directory=True)
    result = invoke("data", SMOKE, "--set", f"data.source=imagefolder:{train}", "--set",
                    f"data.test_source=imagefolder:{test}")
    assert result.exit_code == 0, result.output
    for note in ("warning: 2 image(s) are in both the training and the test split (same pixels); dropped from the "
                 "test split (data.train_test_duplicates: keep to keep them)",
                 "warning: class 'eel' has no test images",
                 "skipped 'loop', a link to the dataset folder"):
        assert note in result.output
