"""A run directory's state: what counts as finished, what a resume may continue, what --overwrite redoes.

Issue 13's probe: a resume after changing a model key broke the run (and saved the new key first), a report
interrupted while drawn passed for finished, and `evaluate --overwrite` reused arm runs of other data.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import SMOKE, assert_one_line, copy_run, invoke, snapshot
from PIL import Image

from synthaug import runs

CHANGED_KEYS = {
    "model.sample_size=4": "model.sample_size changed from 8 to 4",
    "model.block_out_channels=[8, 8]": "model.block_out_channels changed from [8, 16] to [8, 8]",
    "model.prediction_type=v_prediction": "model.prediction_type changed from 'epsilon' to 'v_prediction'",
    "data.image_size=16": "data.image_size changed from 8 to 16",
    "data.channels=3": "data.channels changed from 1 to 3",
}


@pytest.mark.parametrize("change", list(CHANGED_KEYS))
def test_resuming_after_a_model_key_changed_is_refused_and_changes_nothing(change: str, smoke_synthetic: Path,
                                                                           tmp_path: Path):
    run = copy_run(smoke_synthetic, tmp_path / "run")
    before = snapshot(run)
    result = invoke("train", run, "--resume", "--set", "train.max_steps=30", "--set", change)
    assert_one_line(result, 2, CHANGED_KEYS[change], "--overwrite")
    assert snapshot(run) == before, "a refused resume changed the run directory (recipe.yaml included)"


def test_a_refused_resume_leaves_the_run_resumable(smoke_synthetic: Path, tmp_path: Path):
    """Probe 8: the refused architecture used to be saved into recipe.yaml, so a later plain resume failed too."""
    run = copy_run(smoke_synthetic, tmp_path / "run")
    refused = invoke("train", run, "--resume", "--set", "train.max_steps=30", "--set", "model.block_out_channels=[8, 8]")
    assert refused.exit_code == 2, refused.output
    resumed = invoke("train", run, "--resume", "--set", "train.max_steps=30")
    assert resumed.exit_code == 0, resumed.output
    assert runs.checkpoint_step(run / "checkpoints" / "last.ckpt") == 30


def test_generating_from_a_model_made_with_other_model_keys_is_refused(smoke_synthetic: Path, tmp_path: Path):
    run = copy_run(smoke_synthetic, tmp_path / "run")
    before = snapshot(run)
    assert_one_line(invoke("generate", run, "--overwrite", "--set", "model.sample_size=4"), 2,
                    "model.sample_size changed from 8 to 4")
    assert snapshot(run) == before


def test_a_checkpoint_that_does_not_fit_the_recipe_is_refused_without_a_recipe_to_compare(smoke_synthetic: Path,
                                                                                       tmp_path: Path):
    """Without the run's recipe.yaml (a run copied by hand), the checkpoint's own shapes are compared."""
    run = copy_run(smoke_synthetic, tmp_path / "run")
    (run / "recipe.yaml").unlink()
    result = invoke("train", SMOKE, "--out", run, "--resume", "--set", "train.max_steps=30",
                    "--set", "model.block_out_channels=[8, 8]")
    assert_one_line(result, 2, "the checkpoint does not fit the model the recipe builds", "--overwrite")


def test_an_evaluation_interrupted_while_the_report_is_drawn_is_not_finished(smoke_synthetic: Path, tmp_path: Path,
                                                                             monkeypatch):
    """Probe 2: metrics.json was taken as proof of a finished evaluation; --resume then printed a page path
    that did not exist. Only the marker written after the page counts."""
    import synthaug.report

    run = copy_run(smoke_synthetic, tmp_path / "run")
    draw = synthaug.report.build_report

    def interrupted(report_dir):
        raise KeyboardInterrupt

    monkeypatch.setattr(synthaug.report, "build_report", interrupted)
    assert invoke("evaluate", run, "--set", "evaluate.arms=[real]").exit_code == 130
    assert (run / "report" / "metrics.json").exists() and not (run / "report" / "index.html").exists()
    monkeypatch.setattr(synthaug.report, "build_report", draw)
    resumed = invoke("evaluate", run, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert (run / "report" / "index.html").exists()
    assert (run / "report" / ".complete").exists()
    marked = (run / "report" / ".complete").stat().st_mtime_ns
    again = invoke("evaluate", run, "--resume")  # finished now: nothing is redone
    assert again.exit_code == 0, again.output
    assert (run / "report" / ".complete").stat().st_mtime_ns == marked


def test_evaluate_overwrite_measures_the_data_as_it_is_now(digits_png_folder: Path, tmp_path: Path):
    """Probe 1: replace every image with noise, `evaluate --overwrite` reported the old figures from its cache."""
    run = tmp_path / "run"
    common = ["--set", f"data.source=imagefolder:{digits_png_folder}", "--set", "evaluate.arms=[real]",
              "--set", "data.test_fraction=0.5", "--out", run]
    assert invoke("evaluate", SMOKE, *common).exit_code == 0
    before = json.loads((run / "report" / "metrics.json").read_text())["arms"]["real"]
    rng = np.random.default_rng(0)
    for path in sorted(digits_png_folder.rglob("*.png")):
        Image.fromarray((rng.random((8, 8)) * 255).astype(np.uint8), "L").save(path)
    assert invoke("evaluate", run, "--overwrite").exit_code == 0
    after = json.loads((run / "report" / "metrics.json").read_text())["arms"]["real"]
    assert after["runs"] != before["runs"], "evaluate --overwrite reused arm runs made on other data"
    shutil.rmtree(run / "report")
    assert invoke("evaluate", run).exit_code == 0
    fresh = json.loads((run / "report" / "metrics.json").read_text())["arms"]["real"]
    assert fresh == after, "--overwrite differs from a first evaluation of the same data"
