"""Data sources beyond the built-in digits: separate test sources of every kind, duplicates between the
splits found by their pixels, integer CSV labels, ``hf:`` folders that are never written into, names
that are not UTF-8, links back to the dataset folder, EXIF orientation, and the memory-mapped decode cache.
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

from synthaug import data as data_module
from synthaug.config import DataConfig
from synthaug.data import (
    MAX_CLASSES,
    TEST_SOURCE_ID_OFFSET,
    content_hashes,
    load_real_data,
    load_source,
    open_image,
    to_array,
)
from synthaug.errors import SynthaugError

CLASSES = ("cat", "dog", "eel")


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


def test_exif_orientation_is_applied(tmp_path: Path):
    img = picture(3, size=(8, 4))  # 8 wide, 4 high
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view"
    img.save(tmp_path / "phone.png", exif=exif)
    assert Image.open(tmp_path / "phone.png").getexif()[0x0112] == 6
    with open_image({"bytes": None, "path": str(tmp_path / "phone.png")}) as upright:
        assert upright.size == (4, 8)
        assert np.array_equal(np.asarray(upright), np.asarray(img.transpose(Image.Transpose.ROTATE_270)))


def test_a_test_source_without_a_training_class_is_noted(tmp_path: Path):
    train = folder(tmp_path / "train", 3, 0)
    test = folder(tmp_path / "test", 2, 50, classes=("cat", "eel"))
    data = load_real_data(DataConfig(source=f"imagefolder:{train}", test_source=f"imagefolder:{test}"), seed=0)
    assert data.test_counts == [2, 0, 2]
    assert "class 'dog' has no test images, so the test split cannot measure it; add test images of it" in data.report.notes


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


# --------------------------------------------------------------------------------------------- decode cache


def count_open_image(monkeypatch) -> list[int]:
    opened: list[int] = []
    real = data_module.open_image

    def counting(cell, row=0):
        opened.append(row)
        return real(cell, row)

    monkeypatch.setattr(data_module, "open_image", counting)
    return opened


def test_the_decode_cache_equals_the_in_memory_array_and_is_reused(tmp_path: Path, monkeypatch):
    root = folder(tmp_path / "imgs", 4, 0)
    ds, _ = load_source(f"imagefolder:{root}")
    in_memory = to_array(ds, 6, 3)
    opened = count_open_image(monkeypatch)
    cached = to_array(ds, 6, 3, cache_dir=tmp_path / "cache")
    assert isinstance(cached, np.memmap) and np.array_equal(cached, in_memory)
    assert len(opened) == 12
    again = to_array(ds, 6, 3, cache_dir=tmp_path / "cache")
    assert len(opened) == 12, "the second call decoded images"
    assert np.array_equal(again, in_memory)
    cache_file, = (tmp_path / "cache").iterdir()
    written = cache_file.read_bytes()
    again[0] = 0  # callers may write into their array; the cache stays as decoded
    assert cache_file.read_bytes() == written
    to_array(ds, 5, 3, cache_dir=tmp_path / "cache")  # another size is another array
    assert len(opened) == 24 and len(list((tmp_path / "cache").iterdir())) == 2


def test_a_changed_image_invalidates_the_decode_cache(tmp_path: Path):
    root = folder(tmp_path / "imgs", 2, 0)
    ds, _ = load_source(f"imagefolder:{root}")
    before = to_array(ds, 8, 1, cache_dir=tmp_path / "cache")
    changed = root / "dog" / "1.png"
    Image.fromarray(np.full((8, 8), 7, dtype=np.uint8)).save(changed)
    os.utime(changed, ns=(1, 1))  # not even a newer mtime: the size and mtime differ from what was cached
    after = to_array(ds, 8, 1, cache_dir=tmp_path / "cache")
    assert (after[3] == 7).all() and not (before[3] == 7).all()
    assert np.array_equal(after[:3], before[:3])


@pytest.mark.parametrize("failure", ["corrupt image", "Ctrl-C"])
def test_an_interrupted_decode_leaves_no_cache(failure: str, tmp_path: Path, monkeypatch):
    root = folder(tmp_path / "imgs", 4, 0)
    if failure == "corrupt image":
        (root / "dog" / "2.png").write_bytes(b"not a png")
        expected = SynthaugError
    else:
        opened = count_open_image(monkeypatch)
        real = data_module.open_image

        def interrupted(cell, row=0):
            if len(opened) == 6:
                raise KeyboardInterrupt
            return real(cell, row)

        monkeypatch.setattr(data_module, "open_image", interrupted)
        expected = KeyboardInterrupt
    ds, _ = load_source(f"imagefolder:{root}")
    with pytest.raises(expected):
        to_array(ds, 8, 1, cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_decoding_into_the_cache_keeps_memory_flat(tmp_path: Path):
    """1,500 images of 64×64×3 are 18 MB decoded; written row by row, the decode holds one at a time."""
    cells = [{"bytes": None, "path": str(tmp_path / "one.png")}] * 1500
    picture(0, mode="RGB").save(tmp_path / "one.png")
    ds = datasets.Dataset.from_dict({"image": cells}, features=datasets.Features({"image": datasets.Image(decode=False)}))
    for cache_dir in (None, tmp_path / "cache"):
        tracemalloc.start()
        try:
            arr = to_array(ds, 64, 3, cache_dir=cache_dir)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        if cache_dir is None:
            assert peak > 18 * 10**6  # what the cache avoids: the whole array in memory
            in_memory = arr
        else:
            assert peak < 4 * 2**20, f"decoding into the cache allocated {peak / 2**20:.1f} MB at its peak"
            assert np.array_equal(arr, in_memory)


def test_duplicate_digests_are_cached_with_the_arrays(tmp_path: Path, monkeypatch):
    root = folder(tmp_path / "imgs", 4, 0)
    cfg = DataConfig(source=f"imagefolder:{root}")
    first = load_real_data(cfg, seed=0, cache_dir=tmp_path / "cache")
    opened = count_open_image(monkeypatch)
    again = load_real_data(cfg, seed=0, cache_dir=tmp_path / "cache")
    assert not opened, "the second load decoded images to check duplicates"
    assert again.duplicates_train_test == first.duplicates_train_test == 0
    ds, _ = load_source(f"imagefolder:{root}")
    assert np.array_equal(content_hashes(ds, 1), content_hashes(ds, 1, tmp_path / "cache"))
