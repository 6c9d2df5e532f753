"""The CLI end to end: train → generate round trip, and bad input → exit 2 with one clear line."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pytest
import yaml
from helpers import SMOKE, assert_one_line, copy_run, invoke
from PIL import Image


def test_train_writes_a_diffusers_model(smoke_model: Path):
    """``smoke_model`` is made by ``synthaug train``."""
    import json

    model = smoke_model / "model"
    assert (model / "unet" / "config.json").is_file()
    assert list((model / "unet").glob("*.safetensors")), "weights must be safetensors"
    assert not list(model.rglob("*.bin")), "no pickled weights"
    assert (model / "scheduler" / "scheduler_config.json").is_file()
    meta = json.loads((model / "synthaug.json").read_text())
    assert meta["classes"] == [str(i) for i in range(10)]
    assert meta["null_class_id"] == 10 and meta["image_size"] == 8 and meta["channels"] == 1
    saved = yaml.safe_load((smoke_model / "recipe.yaml").read_text())
    assert saved["output_dir"] == str(smoke_model) and saved["train"]["max_steps"] == 20
    assert (smoke_model / "checkpoints" / "last.ckpt").is_file()
    assert list((smoke_model / "logs").rglob("metrics.csv")), "Lightning's CSV logger writes the loss"


def test_generate_round_trip_balances_classes(smoke_model: Path, tmp_path: Path):
    run = copy_run(smoke_model, tmp_path / "run")
    result = invoke("generate", run, "--set", "generate.quota={balance: max}", "--set", "data.subset.imbalance=4")
    assert result.exit_code == 0, result.output
    ds = datasets.load_from_disk(str(run / "synthetic"))
    names = ds.features["label"].names
    assert names == [str(i) for i in range(10)]
    # imbalance 4 on 20 per class: real counts fall from 20 to 5; synthetic tops each class up to 20.
    from synthaug.config import load_recipe
    from synthaug.data import load_real_data

    data = load_real_data(load_recipe(run).data, 0)
    real = data.train_counts
    synth = np.bincount(ds["label"], minlength=10)
    assert real[0] == 20 and real[-1] == 5
    assert (synth + np.array(real) == max(real)).all()
    assert set(ds.column_names) >= {"image", "label", "seed", "index", "sampler", "steps", "guidance", "mode",
                                    "confidence", "novelty"}
    assert ds[0]["image"].size == (8, 8)
    card = (run / "synthetic" / "README.md").read_text()
    assert "synthetic" in card.lower() and "recipe_hash" in card

    again = invoke("generate", run)
    assert again.exit_code == 2
    assert "exists" in again.output and "--overwrite" in again.output


def test_dry_run_prints_the_resolved_recipe(tmp_path: Path):
    result = invoke("train", SMOKE, "--set", "train.lr=3e-4", "--out", tmp_path / "r", "--dry-run")
    assert result.exit_code == 0
    printed = yaml.safe_load(result.output)
    assert printed["train"]["lr"] == pytest.approx(3e-4)
    assert not (tmp_path / "r").exists(), "--dry-run writes nothing"


def test_data_command_shows_counts():
    result = invoke("data", SMOKE)
    assert result.exit_code == 0, result.output
    assert "class" in result.output and "train" in result.output and "test" in result.output
    assert "modes" in result.output


# --------------------------------------------------------------------------------------------- bad input


def _folder(tmp_path: Path, classes: dict[str, int]) -> Path:
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = tmp_path / "imgs"
    for c, (name, n) in enumerate(classes.items()):
        (root / name).mkdir(parents=True)
        for i in range(n):
            img = (digits.images[digits.target == c][i] * 15).astype(np.uint8)
            Image.fromarray(img, "L").save(root / name / f"{i}.png")
    return root


def _bad_cases(tmp_path: Path):
    corrupt = _folder(tmp_path / "a", {"cat": 4, "dog": 4})
    (corrupt / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    empty = _folder(tmp_path / "b", {"cat": 4, "dog": 4})
    (empty / "eel").mkdir()
    csv_dir = tmp_path / "c"
    csv_dir.mkdir()
    (csv_dir / "labels.csv").write_text("image,klass\nx.png,cat\n")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("data:\n  source: builtin:digits\n   image_size: 16\n")
    return [
        ("corrupt image", ["data", SMOKE, "--set", f"data.source=imagefolder:{corrupt}"], "broken.png"),
        ("empty class folder", ["data", SMOKE, "--set", f"data.source=imagefolder:{empty}"], "'eel'"),
        ("missing folder", ["data", SMOKE, "--set", f"data.source=imagefolder:{tmp_path / 'nope'}"], "no such folder"),
        ("csv without label", ["data", SMOKE, "--set", f"data.source=csv:{csv_dir / 'labels.csv'}"], "'label'"),
        ("unknown key", ["train", SMOKE, "--set", "data.imagesize=16"], "did you mean data.image_size"),
        ("negative quota", ["generate", SMOKE, "--set", "generate.quota={per_class: -3}"], "generate.quota.per_class"),
        ("unreadable yaml", ["train", bad_yaml], "not valid YAML"),
        ("unknown scheme", ["data", SMOKE, "--set", "data.source=ftp:somewhere"], "unknown source"),
        ("missing recipe", ["train", tmp_path / "missing.yaml"], "no such recipe"),
    ]


def test_bad_inputs_exit_2_with_one_clear_line(tmp_path: Path):
    for name, args, expected in _bad_cases(tmp_path):
        try:
            assert_one_line(invoke(*args), 2, expected)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None


def test_existing_output_is_refused(smoke_model: Path):
    assert_one_line(invoke("train", smoke_model), 2, "exists", "--overwrite")
