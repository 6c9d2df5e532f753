"""Bad input through the real CLI: exit 2 (1 when the machine fails), one line, no traceback, nothing lost.

Each case builds its files, runs one ``synthaug`` command with click's ``CliRunner`` and checks the exit
code and the one ``synthaug:`` line. Data-only cases use ``synthaug data``, which decodes and converts
every image without training. Cases already in tests/test_cli.py (a corrupt PNG, an empty class folder,
a missing folder, a CSV without a label column, …) are not repeated here; docs/RELIABILITY.md lists both.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers import SMOKE, assert_one_line, copy_run, invoke, snapshot
from PIL import Image

from synthaug import runs, stages
from synthaug.config import load_recipe

# --------------------------------------------------------------------------------------------- helpers


def contents(snap: dict[str, tuple[bytes, int]]) -> dict[str, bytes]:
    return {k: v[0] for k, v in snap.items()}


def grey(value: int, size: int = 8) -> Image.Image:
    rng = np.random.default_rng(value)
    return Image.fromarray((rng.random((size, size)) * 255).astype(np.uint8), "L")


def image_folder(root: Path, classes: dict[str, int], mode: str = "L", ext: str = "png", first: int = 0) -> Path:
    """``root/CLASS/i.EXT``: ``classes[CLASS]`` small images per class, saved in PIL ``mode``. No two images
    share their pixels (duplicates across the split would be dropped from the test split); another ``first``
    makes other images."""
    for k, (c, n) in enumerate(classes.items()):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = grey(first + 1000 * k + i)
            if mode == "I;16":
                img = Image.fromarray(np.asarray(img).astype(np.uint16) * 257)
            elif mode != "L":
                img = img.convert(mode)
            img.save(root / c / f"{i}.{ext}")
    return root


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width × height`` grey pixels but holds a few bytes: decoding it would fail."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def source(spec: str) -> list[str]:
    return ["data", str(SMOKE), "--set", f"data.source={spec}"]


# --------------------------------------------------------------------------------------------- data: refused

DataCase = Callable[[Path], tuple[list[str], str]]


def truncated_png(tmp: Path):
    root = image_folder(tmp / "imgs", {"cat": 4, "dog": 4})
    whole = (root / "dog" / "2.png").read_bytes()
    (root / "dog" / "2.png").write_bytes(whole[: len(whole) // 2])
    return source(f"imagefolder:{root}"), f"{root / 'dog' / '2.png'}: not a readable image"


def garbage_jpeg(tmp: Path):
    root = image_folder(tmp / "imgs", {"cat": 4, "dog": 4})
    (root / "cat" / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00garbage" * 20)
    return source(f"imagefolder:{root}"), f"{root / 'cat' / 'photo.jpg'}: not a readable image"


def zero_byte_file(tmp: Path):
    root = image_folder(tmp / "imgs", {"cat": 4, "dog": 4})
    (root / "cat" / "empty.png").write_bytes(b"")
    return source(f"imagefolder:{root}"), f"{root / 'cat' / 'empty.png'}: not a readable image (empty file)"


def class_of_only_non_images(tmp: Path):
    root = image_folder(tmp / "imgs", {"cat": 4, "dog": 4})
    (root / "eel").mkdir()
    (root / "eel" / "notes.txt").write_text("no pictures yet")
    return source(f"imagefolder:{root}"), "class folder 'eel' has no images"


def class_with_one_image(tmp: Path):
    root = image_folder(tmp / "imgs", {"cat": 4, "dog": 1})
    return source(f"imagefolder:{root}"), "class 'dog' has 1 image, too few to hold out a test image; add images or set data.test_source"


def classes_differing_only_in_case(tmp: Path):
    root = image_folder(tmp / "imgs", {"Cat": 3, "cat": 3, "dog": 3})
    return source(f"imagefolder:{root}"), "class folders 'Cat', 'cat' differ only in case"


def huge_png(pixels_per_side: int) -> DataCase:
    def case(tmp: Path):
        root = image_folder(tmp / "imgs", {"cat": 4, "dog": 4})
        (root / "cat" / "huge.png").write_bytes(png_header(pixels_per_side, pixels_per_side))
        return source(f"imagefolder:{root}"), f"{root / 'cat' / 'huge.png'}: image of"
    return case


def csv_files(tmp: Path, rows: str, name: str = "labels.csv") -> Path:
    folder = tmp / "csv"
    folder.mkdir(exist_ok=True)
    for i in range(8):
        grey(i).save(folder / f"{i}.png")
    (folder / name).write_text("image,label\n" + rows)
    return folder / name


def csv_nan_label(tmp: Path):
    path = csv_files(tmp, "0.png,0\n1.png,NaN\n2.png,1\n3.png,1\n4.png,0\n5.png,\n")
    return source(f"csv:{path}"), "empty image or label on line(s) 3, 7"


def held_out_csv_with_unknown_ids(tmp: Path):
    train = csv_files(tmp, "".join(f"{i}.png,{i % 2}\n" for i in range(8)))
    test = csv_files(tmp, "0.png,0\n1.png,7\n", name="test.csv")
    args = [*source(f"csv:{train}"), "--set", f"data.test_source=csv:{test}"]
    return args, "test classes ['7'] are not training classes"


def held_out_csv_with_unknown_names(tmp: Path):
    train = csv_files(tmp, "".join(f"{i}.png,{'cat' if i % 2 else 'dog'}\n" for i in range(8)))
    test = csv_files(tmp, "0.png,cat\n1.png,dgo\n", name="test.csv")
    args = [*source(f"csv:{train}"), "--set", f"data.test_source=csv:{test}"]
    return args, "test classes ['dgo'] are not training classes (did you mean 'dog'?)"


def recipe_file(text: str) -> DataCase:
    def case(tmp: Path):
        path = tmp / "recipe.yaml"
        path.write_text(text)
        return ["data", str(path)], ""
    return case


def override(*values: str) -> DataCase:
    def case(tmp: Path):
        args = ["data", str(SMOKE)]
        for value in values:
            args += ["--set", value]
        return args, ""
    return case


DATA_REFUSED = {
    # case: (builder, what the one line must say besides what the builder returns)
    "truncated png": (truncated_png, "remove or replace the file"),
    "garbage jpeg": (garbage_jpeg, "remove or replace the file"),
    "zero-byte file": (zero_byte_file, "remove or replace the file"),
    "class of only non-image files": (class_of_only_non_images, "add images or remove the folder"),
    "class with one image": (class_with_one_image, ""),
    "classes differing only in case": (classes_differing_only_in_case, "merge or rename them"),
    "png of 81 MP": (huge_png(9000), "9000×9000 pixels is too large; downscale it first"),
    "png of 100 MP (PIL warns)": (huge_png(10000), "10000×10000 pixels is too large; downscale it first"),
    "png of 400 MP (PIL refuses)": (huge_png(20000), "pixels is too large; downscale it first"),
    "csv NaN rows": (csv_nan_label, "fill them in or drop the rows"),
    "test csv with unknown label ids": (held_out_csv_with_unknown_ids, "rename them"),
    "test csv with unknown label names": (held_out_csv_with_unknown_names, "rename them"),
    "recipe unknown key": (recipe_file("train:\n  max_step: 3\n"), "train.max_step: unknown key; did you mean train.max_steps?"),
    "recipe wrong type": (recipe_file("train:\n  max_steps: many\n"), "train.max_steps: Input should be a valid integer"),
    "recipe out of range": (recipe_file("data:\n  test_fraction: 1.5\n"), "data.test_fraction: Input should be less than 1 (got 1.5)"),
    "recipe negative guidance": (recipe_file("generate:\n  guidance: -1\n"), "generate.guidance: Input should be greater than or equal to 0"),
    "recipe not a mapping": (recipe_file("- data\n- train\n"), "a recipe must be a YAML mapping of keys, got list"),
    "recipe unknown arm": (recipe_file("evaluate:\n  arms: [real, synthetc]\n"), "unknown arm 'synthetc'; did you mean synthetic?"),
    "--set into a value": (override("train.max_steps.x=3"), "--set 'train.max_steps.x=3': train.max_steps is a value, not a section"),
    "--set into an unset value": (override("train.lr.x=3"), "train.lr: Input should be a valid number"),
    "--set bad YAML": (override("train.lr=[1, 2"), "--set 'train.lr=[1, 2': the value is not valid YAML"),
    "--set without =": (override("train.lr"), "expected KEY=VALUE"),
    "--set empty key part": (override("train..lr=3"), "is not a dotted key path"),
    "--set unknown section": (override("trian.lr=3"), "trian: unknown key; did you mean train?"),
    "--resume with --overwrite": (lambda tmp: (["data", str(SMOKE), "--resume", "--overwrite"], ""), "contradict"),
}


@pytest.mark.parametrize("case", list(DATA_REFUSED))
def test_bad_data_and_recipes_exit_2_with_one_line(case: str, tmp_path: Path):
    build, expected = DATA_REFUSED[case]
    args, named = build(tmp_path)
    assert_one_line(invoke(*args), 2, *(t for t in (named, expected) if t))


def test_a_huge_png_is_refused_from_its_header_without_decoding(tmp_path: Path, monkeypatch):
    from PIL import ImageFile

    args, _ = huge_png(20000)(tmp_path)
    loaded: list[str] = []
    real_load = ImageFile.ImageFile.load

    def load(self):
        loaded.append(str(getattr(self, "filename", "")))
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    for side in (9000, 20000):
        (tmp_path / "imgs" / "cat" / "huge.png").write_bytes(png_header(side, side))
        assert_one_line(invoke(*args), 2, "too large")  # a decode would have said "truncated"
        assert not [p for p in loaded if p.endswith("huge.png")], "the huge image was decoded"


# --------------------------------------------------------------------------------------------- data: accepted


@pytest.mark.parametrize("mode,ext", [("RGBA", "png"), ("P", "png"), ("LA", "png"), ("I;16", "png"),
                                      ("CMYK", "jpg"), ("F", "tif"), ("1", "png")])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_image_mode_is_accepted_and_converted(mode: str, ext: str, channels: int, tmp_path: Path):
    from synthaug.images import to_array
    from synthaug.sources import load_source

    root = image_folder(tmp_path / "imgs", {"cat": 3, "dog": 3}, mode=mode, ext=ext)
    assert Image.open(root / "cat" / f"0.{ext}").mode == mode
    result = invoke(*source(f"imagefolder:{root}"), "--set", f"data.channels={channels}")
    assert result.exit_code == 0, result.output
    assert f"modes: {{'{mode}': 6}}" in result.output
    x = to_array(load_source(f"imagefolder:{root}")[0], 8, channels)
    assert x.shape == (6, 8, 8, channels) and x.dtype == np.uint8


def test_non_image_files_are_ignored_and_counted(tmp_path: Path):
    root = image_folder(tmp_path / "imgs", {"cat": 4, "dog": 4})
    (root / "cat" / "notes.txt").write_text("x")
    (root / "dog" / "labels.csv").write_text("x")
    (root / "dog" / "Thumbs.db").write_bytes(b"\0")
    result = invoke(*source(f"imagefolder:{root}"))
    assert result.exit_code == 0, result.output
    assert "warning: 3 non-image file(s) ignored" in result.output
    assert "total       6       2" in result.output


def test_unicode_and_spaces_in_class_names_work(tmp_path: Path):
    names = ["chat noir", "été", "日本 語"]
    root = image_folder(tmp_path / "imgs", dict.fromkeys(names, 4))
    result = invoke(*source(f"imagefolder:{root}"))
    assert result.exit_code == 0, result.output
    for name in names:
        assert name in result.output


def test_the_fix_for_a_one_image_class_works(tmp_path: Path):
    """The one-image message says "set data.test_source": doing so lets the data load."""
    root = image_folder(tmp_path / "imgs", {"cat": 4, "dog": 1})
    test = image_folder(tmp_path / "test", {"cat": 2, "dog": 2}, first=500)
    result = invoke(*source(f"imagefolder:{root}"), "--set", f"data.test_source=imagefolder:{test}")
    assert result.exit_code == 0, result.output
    assert "dog" in result.output and "has only 1 training image(s)" in result.output


def test_usage_errors_are_one_line_too(tmp_path: Path):
    a_file = tmp_path / "file"
    a_file.write_text("")
    assert_one_line(invoke("train", SMOKE, "--out", a_file), 2, "is a file", "synthaug train --help")
    assert_one_line(invoke("generate", SMOKE, "--shard", "5/2"), 2, "need 0 ≤ i < n")
    assert_one_line(invoke("trian", SMOKE), 2, "No such command 'trian'", "Did you mean 'train'?")


# --------------------------------------------------------------------------------------------- run directories


@pytest.fixture(scope="module")
def finished_run(smoke_synthetic: Path, tmp_path_factory) -> Path:
    """A smoke run with every output: model, checkpoints, logs, synthetic and report."""
    run = copy_run(smoke_synthetic, tmp_path_factory.mktemp("bad-inputs") / "run")
    stages.evaluate(load_recipe(run, overrides=["evaluate.arms=[real]"]), progress=False)
    return run


def edit_meta(run: Path, change: Callable[[dict], None]) -> None:
    path = run / "model" / "synthaug.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def three_class_folder(tmp: Path) -> Path:
    return image_folder(tmp / "abc", {"a": 4, "b": 4, "c": 4})


RUN_REFUSED = {
    "model from another version: extra key": (
        lambda run, tmp: edit_meta(run, lambda m: m.update(prompt_template="a photo of {}"))
        or ["generate", run, "--overwrite"],
        ["synthaug.json: unknown key(s) prompt_template", "another synthaug version"]),
    "model from another version: missing key": (
        lambda run, tmp: edit_meta(run, lambda m: m.pop("channels")) or ["generate", run, "--overwrite"],
        ["synthaug.json: missing channels", "retrain"]),
    "model description not an object": (
        lambda run, tmp: (run / "model" / "synthaug.json").write_text("[1, 2]") and ["generate", run, "--overwrite"],
        ["not a synthaug model description"]),
    "model classes differ from the data": (
        lambda run, tmp: ["generate", run, "--overwrite", "--set", f"data.source=imagefolder:{three_class_folder(tmp)}"],
        ["the model's classes ['0', '1'", "differ from the data's ['a', 'b', 'c']"]),
    "unet class count differs from synthaug.json": (
        lambda run, tmp: edit_meta(run, lambda m: m.update(classes=m["classes"][:3], null_class_id=3))
        or ["generate", run, "--overwrite"],
        ["the UNet has 11 class embeddings but synthaug.json names 3 classes"]),
    "resume training on data with other classes": (
        lambda run, tmp: ["train", run, "--resume", "--set", "train.max_steps=30",
                          "--set", f"data.source=imagefolder:{three_class_folder(tmp)}"],
        ["the checkpoint to resume has 10 classes but the data has 3", "--overwrite"]),
    "train over an existing model": (lambda run, tmp: ["train", run], ["model exists", "--overwrite", "--resume"]),
    "generate over an existing synthetic set": (
        lambda run, tmp: ["generate", run, "--set", "generate.quota.per_class=5"], ["synthetic exists", "--overwrite"]),
    "evaluate over an existing report": (lambda run, tmp: ["evaluate", run], ["metrics.json exists", "--overwrite"]),
    "run over existing outputs": (lambda run, tmp: ["run", run], ["exists", "--resume", "--overwrite"]),
    "train from a recipe whose output_dir holds a model": (
        lambda run, tmp: ["train", SMOKE, "--out", run], ["model exists"]),
}


@pytest.mark.parametrize("case", list(RUN_REFUSED))
def test_bad_run_directories_exit_2_and_keep_earlier_outputs(case: str, finished_run: Path, tmp_path: Path):
    run = copy_run(finished_run, tmp_path / "run")
    build, expected = RUN_REFUSED[case]
    args = build(run, tmp_path)
    before = snapshot(run)
    assert_one_line(invoke(*args), 2, *expected)
    after = snapshot(run)
    # recipe.yaml has its own test below (test_a_refused_command_leaves_the_runs_recipe_as_it_was).
    before.pop("recipe.yaml"), after.pop("recipe.yaml")
    assert contents(after) == contents(before), "a refused command changed the run directory"
    assert after == before, "a refused command rewrote files of the run directory"


def test_a_refused_command_leaves_the_runs_recipe_as_it_was(finished_run: Path, tmp_path: Path):
    """run_dir/recipe.yaml is the provenance of what is in the run; a command that fails on bad input must
    not replace it with its own overrides (today stages.generate/train/evaluate save it before checking)."""
    for args in (["generate", "--set", f"data.source=imagefolder:{three_class_folder(tmp_path)}", "--overwrite"],
                 ["train", "--resume", "--set", "train.max_steps=30",
                  "--set", f"data.source=imagefolder:{three_class_folder(tmp_path)}"]):
        run = copy_run(finished_run, tmp_path / f"run-{args[0]}")
        before = saved_recipe(run)
        result = invoke(args[0], run, *args[1:])
        assert result.exit_code == 2, result.output
        assert saved_recipe(run) == before, f"{args[0]} rewrote recipe.yaml with its overrides"


def saved_recipe(run: Path) -> dict:
    """run_dir/recipe.yaml less output_dir (a command on a moved run records where the run is now)."""
    import yaml

    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe.pop("output_dir")
    return recipe


# --------------------------------------------------------------------------------------------- the machine fails


@pytest.fixture
def tmpfs(tmp_path: Path):
    """Mount a tmpfs (``mount(options)`` → its folder), or None where mounting is not permitted."""
    mounted: list[Path] = []

    def mount(options: str) -> Path | None:
        target = tmp_path / f"mnt{len(mounted)}"
        target.mkdir()
        if shutil.which("mount") is None:
            return None
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True)
        if done.returncode != 0:
            return None
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def remount_read_only(target: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(target)], check=True, capture_output=True)


def read_only(monkeypatch) -> None:
    """Every atomic write in synthaug.io fails as on a read-only file system."""
    import types

    import synthaug.io

    def refuse(*args, dir=None, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(dir))

    monkeypatch.setattr(synthaug.io, "tempfile", types.SimpleNamespace(mkstemp=refuse, mkdtemp=refuse))


@pytest.mark.parametrize("how", ["mount", "monkeypatch"])
def test_read_only_output_folder_is_an_environment_failure(how: str, finished_run: Path, tmp_path: Path, tmpfs,
                                                          monkeypatch):
    if how == "mount":
        target = tmpfs("size=16m")
        if target is None:
            pytest.skip("mount is not permitted here; the monkeypatch variant covers the case")
        run = copy_run(finished_run, target / "run")
        remount_read_only(target)
        fresh = target / "new-run"
    else:
        run = copy_run(finished_run, tmp_path / "run")
        fresh = tmp_path / "new-run"
        read_only(monkeypatch)
    before = snapshot(run)
    assert_one_line(invoke("train", SMOKE, "--out", fresh), 1, "not writable (Read-only file system)",
                    "choose another folder with --out")
    assert_one_line(invoke("generate", run, "--overwrite"), 1, "not writable (Read-only file system)")
    assert_one_line(invoke("evaluate", run, "--overwrite"), 1, "not writable (Read-only file system)")
    assert contents(snapshot(run)) == contents(before)


def fill(folder: Path, leave: int) -> None:
    """Fill the file system of ``folder`` up to ``leave`` bytes of free space."""
    import os

    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    with open(folder / "filler", "wb") as fh:
        fh.write(b"\0" * max(0, free - leave))


def generation_disk_full(monkeypatch, after: int):
    """Atomic writes fail with ENOSPC from the ``after``-th on (fsync is where a full disk shows)."""
    import synthaug.io

    calls = {"n": 0}
    real_fsync = synthaug.io.os.fsync

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] > after:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(synthaug.io.os, "fsync", fsync)


@pytest.mark.parametrize("how", ["mount", "monkeypatch-shards", "monkeypatch-dataset"])
def test_disk_full_while_generating_keeps_the_earlier_dataset(how: str, finished_run: Path, tmp_path: Path,
                                                             tmpfs, monkeypatch):
    if how == "mount":
        target = tmpfs("size=4m")
        if target is None:
            pytest.skip("mount is not permitted here; the monkeypatch variants cover the case")
        run = copy_run(finished_run, target / "run", "checkpoints", "logs")
        fill(target, leave=48 * 1024)
    else:
        run = copy_run(finished_run, tmp_path / "run")
        if how == "monkeypatch-shards":
            generation_disk_full(monkeypatch, after=3)  # recipe.yaml, plan.json, one shard; then full
        else:
            import datasets

            def save_to_disk(self, *args, **kwargs):
                raise OSError(errno.ENOSPC, "No space left on device")

            monkeypatch.setattr(datasets.Dataset, "save_to_disk", save_to_disk)
    before = snapshot(run / "synthetic")
    result = invoke("generate", run, "--overwrite", "--set", "generate.quota.per_class=60",
                    "--set", "generate.batch_size=32")
    assert_one_line(result, 1, "the disk is full; free some space and rerun with --resume")
    assert snapshot(run / "synthetic") == before, "the earlier synthetic dataset was touched"
    assert not list(run.glob(".synthetic*.tmp")), "no half-written dataset is left beside it"


def full_disk_for_checkpoints(monkeypatch) -> None:
    """Checkpoint writes fail as on a full disk, where the finished temporary file is renamed into place."""
    import synthaug.io

    real_replace = os.replace

    def replace(src, dst):
        if str(dst).endswith(".ckpt"):
            Path(src).unlink(missing_ok=True)
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(synthaug.io.os, "replace", replace)


@pytest.mark.parametrize("how", ["mount", "monkeypatch"])
def test_disk_full_while_training_names_the_full_disk(how: str, tmp_path: Path, tmpfs, monkeypatch):
    """Lightning writes checkpoints itself, not through synthaug.io: the CLI still says the disk is full."""
    target = tmpfs("size=400k") if how == "mount" else tmp_path
    if target is None:
        pytest.skip("mount is not permitted here; the monkeypatch variant covers the case")
    if how == "monkeypatch":
        full_disk_for_checkpoints(monkeypatch)
    line = assert_one_line(invoke("train", SMOKE, "--out", target / "run"), 1,
                           "the disk is full; free some space and rerun with --resume")
    assert "checkpoints" in line and ".ckpt" in line


def test_disk_full_while_training_leaves_no_truncated_checkpoint(tmp_path: Path, tmpfs):
    """A checkpoint cut short by a full disk must not be left behind, where --resume would refuse it.

    Lightning's "atomic" save writes a temporary file in the system temp folder and moves it into place;
    across file systems the move is a copy, which a full disk cuts short. stages.train needs a CheckpointIO
    that writes through synthaug.io.atomic_write_bytes (temporary file beside the target, then rename).
    """
    target = tmpfs("size=400k")
    if target is None:
        pytest.skip("needs a small tmpfs (mount is not permitted here)")
    run = target / "run"
    assert invoke("train", SMOKE, "--out", run).exit_code == 1
    for ckpt in (run / "checkpoints").glob("*.ckpt"):
        runs.checkpoint_step(ckpt)  # raises SynthaugError ("refused, not a safe Lightning checkpoint")
