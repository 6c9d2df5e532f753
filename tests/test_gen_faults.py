"""Faults in training and generation, and generation at scale.

A loss that turns NaN stops training with one line and no model; a model description (``synthaug.json``)
is checked, never trusted; a quota that asks for no image makes a valid empty synthetic set; the synthetic
set is assembled by streaming the shards, row for row the set one in-memory table made.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from helpers import SMOKE, assert_one_line, copy_run, invoke, snapshot

from synthaug.diffusion import ClassConditionalDiffusion
from synthaug.errors import SynthaugError


@pytest.fixture
def run(smoke_model: Path, tmp_path: Path) -> Path:
    """A copy of the session's smoke model (10 classes of 20 training images each: balanced) and its recipe."""
    return copy_run(smoke_model, tmp_path / "run", "checkpoints", "logs")


# --------------------------------------------------------------------------------------------- NaN loss


def poison_weights_after(monkeypatch, step: int) -> None:
    """A diverged update: optimizer step ``step`` leaves a UNet weight NaN (as a too-high lr does), and the EMA
    takes it in."""

    def on_before_optimizer_step(self, optimizer):
        if self.trainer.global_step == step:
            with torch.no_grad():
                next(self.unet.parameters()).view(-1)[0] = float("nan")

    monkeypatch.setattr(ClassConditionalDiffusion, "on_before_optimizer_step", on_before_optimizer_step)


def test_a_loss_that_becomes_nan_stops_training_with_one_line_and_no_model(tmp_path: Path, monkeypatch):
    poison_weights_after(monkeypatch, step=3)
    run = tmp_path / "run"
    line = assert_one_line(invoke("train", SMOKE, "--out", run, "--set", "train.lr=0.002"), 2,
                           "training loss became nan at step 4", "lower train.lr (now 0.002)", "--overwrite")
    assert "Traceback" not in line
    assert not (run / "model").exists(), "a NaN model must not be saved"
    assert not list(run.glob(".model*")), "no half-written model folder is left"
    # The fix works: the same recipe trains once the update no longer diverges.
    monkeypatch.undo()
    result = invoke("train", SMOKE, "--out", run, "--overwrite")
    assert result.exit_code == 0, result.output
    assert (run / "model" / "synthaug.json").exists()


def test_weights_broken_by_the_last_step_are_not_saved(tmp_path: Path, monkeypatch):
    """A one-step run: the update that breaks the weights comes after the last loss was checked."""
    poison_weights_after(monkeypatch, step=0)
    run = tmp_path / "run"
    assert_one_line(invoke("train", SMOKE, "--out", run, "--set", "train.max_steps=1"), 2,
                    "training made the weights NaN or infinite by step 1", "lower train.lr")
    assert not (run / "model").exists()


# --------------------------------------------------------------------------------------------- synthaug.json


def edit_meta(run: Path, **changes) -> None:
    path = run / "model" / "synthaug.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


DAMAGED_META = {
    "image_size huge": ({"image_size": 20000}, "image_size 20000 is not a whole number of pixels from 1 to 1024"),
    "image_size zero": ({"image_size": 0}, "image_size 0 is not a whole number of pixels"),
    "image_size text": ({"image_size": "abc"}, 'image_size "abc" is not a whole number of pixels'),
    "image_size fraction": ({"image_size": 8.5}, "image_size 8.5 is not a whole number"),
    "image_size boolean": ({"image_size": True}, "image_size true is not a whole number"),
    "channels 2": ({"channels": 2}, "channels 2 is not 1 or 3"),
    "classes not a list": ({"classes": "0123456789"}, "classes must be a non-empty list of class names"),
    "classes repeated": ({"classes": ["a"] * 10}, "name a class twice"),
    "null class id text": ({"null_class_id": "10"}, 'null_class_id "10" does not match 10 classes'),
    "normalization std zero": ({"normalization": {"mean": 0.5, "std": 0}}, "normalization"),
    "normalization not numbers": ({"normalization": {"mean": "x", "std": 0.5}}, "of finite numbers"),
    "version not text": ({"version": 3}, "version 3 is not a version string"),
}


@pytest.mark.parametrize("case", list(DAMAGED_META))
def test_a_damaged_model_description_is_refused_with_one_line(case: str, run: Path):
    changes, expected = DAMAGED_META[case]
    edit_meta(run, **changes)
    before = snapshot(run)
    assert_one_line(invoke("generate", run, "--overwrite"), 2, "synthaug.json: ", expected, "restore it or retrain")
    assert snapshot(run) == before, "a refused command changed the run directory"


def test_the_python_api_and_torchview_check_the_description_too(run: Path):
    import synthaug
    from synthaug.torch_data import TorchView

    edit_meta(run, image_size=20000)
    with pytest.raises(SynthaugError, match="image_size 20000 is not a whole number"):
        synthaug.Generator.from_pretrained(run / "model")
    with pytest.raises(SynthaugError, match="image_size 20000 is not a whole number"):
        TorchView("builtin:digits", model_dir=run / "model")


def test_a_unet_with_other_channels_than_the_description_is_refused(run: Path):
    edit_meta(run, channels=3)
    assert_one_line(invoke("generate", run, "--overwrite"), 2,
                    "the UNet has 1 input and 1 output channels but synthaug.json says 3", "retrain")


@pytest.mark.parametrize("key, theirs, ours", [("image_size", 4, 8), ("channels", 1, 3)])
def test_a_model_that_does_not_fit_the_recipes_data_is_refused(key: str, theirs: int, ours: int, run: Path):
    """Needs stages.generate to call diffusion.check_model_fits_data (the lead's change)."""
    if key == "image_size":
        edit_meta(run, image_size=theirs)  # the run's recipe keeps data.image_size: 8
        args = ["generate", run]
    else:  # the model folder of a grey run, put below a recipe for RGB data
        (run / "recipe.yaml").unlink()
        args = ["generate", SMOKE, "--out", run, "--set", f"data.channels={ours}"]
    before = snapshot(run)
    assert_one_line(invoke(*args), 2, f"the model makes images with {key} {theirs}",
                    f"the recipe has data.{key}={ours}", f"set data.{key}={theirs} or retrain with --overwrite")
    assert snapshot(run) == before, "a refused command changed the run directory (recipe.yaml included)"
    assert not (run / "synthetic").exists()


# --------------------------------------------------------------------------------------------- empty plans


@pytest.mark.parametrize("quota, why", [("{balance: max}", "every class already has 20 real training images"),
                                        ("{per_class: 0}", "asks for none in any class")])
def test_a_quota_that_asks_for_no_image_writes_a_valid_empty_set(quota: str, why: str, run: Path):
    """Needs the lead's stages.generate (today: AttributeError … num_rows, exit 1)."""
    from synthaug.mixing import load_synthetic
    from synthaug.writers import synthetic_features

    result = invoke("generate", run, "--set", f"generate.quota={quota}",
                    "--set", "generate.formats=[hf, parquet, imagefolder]")
    assert result.exit_code == 0, result.output
    assert "(0 images)" in result.stdout
    synthetic = run / "synthetic"
    ds = datasets.load_from_disk(str(synthetic))
    assert len(ds) == 0 and ds.features == synthetic_features([str(d) for d in range(10)])
    for folder in (synthetic, synthetic / "parquet", synthetic / "imagefolder"):
        loaded = load_synthetic(folder)
        assert len(loaded) == 0 and loaded.features["label"].names == ds.features["label"].names, folder
    card = (synthetic / "README.md").read_text()
    assert "No synthetic images were needed" in card and why in card and "Total synthetic images: 0." in card
    info = json.loads((synthetic / "generation.json").read_text())
    assert info["counts"] == dict.fromkeys(ds.features["label"].names, 0)
    assert not (run / "synthetic.parts").exists()
    assert "quota" in (run / "recipe.yaml").read_text()


def test_evaluating_an_empty_synthetic_set_leaves_its_arms_out_and_says_so(run: Path):
    assert invoke("generate", run, "--set", "generate.quota={per_class: 0}").exit_code == 0
    result = invoke("evaluate", run, "--set", "evaluate.arms=[real, synthetic, real+synthetic]")
    assert result.exit_code == 0, result.output  # was: "run `synthaug generate` first", though it had run
    assert "the synthetic set is empty, so arms with synthetic data are left out" in result.stdout
    metrics = json.loads((run / "report" / "metrics.json").read_text())
    assert list(metrics["arms"]) == ["real"] and metrics["quality"] is None


def test_an_unknown_class_in_the_quota_leaves_the_runs_recipe_as_it_was(run: Path):
    """Needs the lead's stages.generate: the plan is made before recipe.yaml is saved."""
    before = snapshot(run)
    assert_one_line(invoke("generate", run, "--set", "generate.quota={counts: {ten: 3}}"), 2,
                    "generate.quota.counts: unknown class 'ten'")
    assert snapshot(run) == before


# --------------------------------------------------------------------------------------------- streaming


def shard_layout(parts: Path, n: int = 700, batch: int = 37) -> None:
    """Shards as two ranks write them (interleaved positions), plus one batch written twice: rank 0's first
    batch again under another rank's name, as a rerun batch would be."""
    from synthaug.writers import write_shard

    rng = np.random.default_rng(0)
    parts.mkdir()
    for rank in (0, 1):
        positions = list(range(rank, n, 2))
        for start in range(0, len(positions), batch):
            chunk = positions[start:start + batch]
            rows = {"position": chunk, "label": [p * 10 // n for p in chunk], "index": [p % 70 for p in chunk],
                    "seed": [1000 + p for p in chunk],
                    "image": rng.integers(0, 256, (len(chunk), 8, 8, 1), dtype=np.uint8)}
            write_shard(parts, rank, rows)
    first = sorted(parts.glob("shard-*-r0.parquet"))[0]
    shutil.copy(first, parts / first.name.replace("-r0", "-r7"))


def one_table(parts: Path) -> pa.Table:
    """The shards as one table in plan order, each position once (first in name order): the reference."""
    table = pa.concat_tables([pq.read_table(p) for p in sorted(parts.glob("shard-*.parquet"))])
    order = np.argsort(table.column("position").to_numpy(), kind="stable")
    table = table.take(order)
    positions = table.column("position").to_numpy()
    return table.filter(pa.array(np.concatenate([[True], positions[1:] != positions[:-1]])))


def test_the_streamed_dataset_equals_the_one_table_dataset_row_for_row(tmp_path: Path, monkeypatch):
    from synthaug import writers
    from synthaug.mixing import load_synthetic

    parts = tmp_path / "synthetic.parts"
    shard_layout(parts)
    classes = [f"c{k}" for k in range(10)]
    settings = {"sampler": "dpmpp", "steps": 4, "guidance": 2.0, "mode": "sample"}
    # Small files, so the stream crosses file boundaries of every format.
    monkeypatch.setattr(writers, "MAX_SHARD_BYTES", 20_000)
    monkeypatch.setattr(writers, "PARQUET_ROWS", 150)
    out = writers.write_synthetic(
        writers.synthetic_batches(writers.Parts.read(parts), None, classes, settings), tmp_path / "synthetic",
        ["hf", "parquet", "imagefolder"], "card", features=writers.synthetic_features(classes))
    assert len(list(out.glob("data-*.arrow"))) > 1 and len(list((out / "parquet").glob("*.parquet"))) == 5

    expected = writers.table_to_dataset(one_table(parts), classes, settings)
    assert len(expected) == 700
    raw = datasets.Image(decode=False)
    for name, ds in (("hf", datasets.load_from_disk(str(out))), ("parquet", load_synthetic(out / "parquet"))):
        assert ds.features == expected.features, name
        got, want = ds.cast_column("image", raw).to_dict(), expected.cast_column("image", raw).to_dict()
        assert got == want, f"{name}: the streamed rows differ from the one-table rows"
    folder = load_synthetic(out / "imagefolder")
    assert folder["seed"] == expected["seed"] and folder["label"] == expected["label"]


def test_streaming_in_plan_order_reads_each_shard_once(tmp_path: Path, monkeypatch):
    """Interleaved ranks' shards are merged in plan order with each read once: a few shards in memory, not all,
    and no shard read again per batch."""
    from synthaug import writers

    parts = tmp_path / "synthetic.parts"
    shard_layout(parts)
    reads: list[str] = []
    real_read = pq.read_table

    def counting_read(source, *args, **kwargs):
        if kwargs.get("columns") is None:
            reads.append(Path(source).name)
        return real_read(source, *args, **kwargs)

    monkeypatch.setattr(pq, "read_table", counting_read)
    index = writers.Parts.read(parts)
    positions = np.concatenate([t.column("position").to_numpy() for t in index.tables(rows=64)])
    assert positions.tolist() == list(range(700))
    assert len(reads) == len(set(reads)) == len(index.paths) - 1, "the duplicate shard is never needed"


def test_class_names_are_literal_text_in_the_dataset_card():
    """The Hub renders the card's markdown to HTML: a class name is shown as written, never run as HTML."""
    from synthaug.writers import dataset_card

    classes = ["<script>alert(1)</script>", "a|b", "plain"]
    card = dataset_card(name="run<b>", classes=classes, real_counts=dict.fromkeys(classes, 3),
                        counts=dict.fromkeys(classes, 2), settings={}, provenance={},
                        note="class '<script>alert(1)</script>' needs none")
    assert "<script>" not in card and "<b>" not in card
    assert "| &lt;script&gt;alert(1)&lt;/script&gt; | 3 | 2 |" in card
    assert "| a\\|b | 3 | 2 |" in card and "| plain | 3 | 2 |" in card
