"""Untrusted files: pickles are never unpickled, YAML never builds Python objects, and no name a user or a
dataset supplies can make synthaug write outside the run directory.

A planted pickle in ``checkpoints/last.ckpt`` on ``train --resume`` is covered by
tests/test_training.py::test_planted_pickle_checkpoint_is_refused_without_executing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from helpers import SMOKE, invoke
from PIL import Image

import synthaug
from synthaug.errors import SynthaugError

PACKAGE = Path(synthaug.__file__).resolve().parent


def assert_refused(result, *expected: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("synthaug: error: "), result.stderr
    assert "Traceback" not in result.output
    for text in expected:
        assert text in lines[0], f"{lines[0]!r} does not mention {text!r}"


class Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    path = tmp_path / "payload-ran"
    yield path
    assert not path.exists(), "an untrusted file executed code"


@pytest.fixture
def model_run(smoke_model: Path) -> Path:
    """The session's smoke model (tests/conftest.py): tests copy it before planting anything."""
    return smoke_model


def plant_pickle(unet_dir: Path, marker: Path) -> None:
    """Replace the safetensors weights with a pickle of the same state, plus a payload."""
    import torch

    (weights,) = unet_dir.glob("*.safetensors")
    weights.unlink()
    torch.save({"conv_in.weight": Payload(marker)}, unet_dir / "diffusion_pytorch_model.bin")


# --------------------------------------------------------------------------------------------- pickles


def test_the_planted_pickle_is_live():
    """The control: loading such a file the unsafe way does run the payload (so the tests below could fail)."""
    import tempfile

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        control = Path(tmp) / "control"
        torch.save({"w": Payload(control)}, Path(tmp) / "w.bin")
        torch.load(Path(tmp) / "w.bin", weights_only=False)  # on purpose, on our own file
        assert control.exists()


def test_a_planted_pickle_model_is_refused_without_executing(model_run: Path, tmp_path: Path, marker: Path):
    run = tmp_path / "run"
    shutil.copytree(model_run, run)
    plant_pickle(run / "model" / "unet", marker)
    assert_refused(invoke("generate", run), "cannot load the model", "retrain it")
    assert_refused(invoke("evaluate", run, "--set", "evaluate.arms=[real]"), "cannot load the model")
    with pytest.raises(SynthaugError, match="cannot load the model"):
        synthaug.Generator.from_pretrained(run / "model")
    assert not (run / "synthetic").exists() and not (run / "report" / "metrics.json").exists()


def test_a_planted_pickle_base_model_is_refused_without_executing(model_run: Path, tmp_path: Path, marker: Path):
    base = tmp_path / "base"
    shutil.copytree(model_run / "model" / "unet", base)
    plant_pickle(base, marker)
    assert_refused(invoke("train", SMOKE, "--out", tmp_path / "ft", "--set", f"model.base={base}"),
                   "model.base=", "cannot load a UNet2DModel from safetensors")


def test_damaged_safetensors_are_refused(model_run: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(model_run, run)
    (weights,) = (run / "model" / "unet").glob("*.safetensors")
    weights.write_bytes(weights.read_bytes()[:1000])
    assert_refused(invoke("generate", run), "cannot load the model")


# --------------------------------------------------------------------------------------------- YAML

PYTHON_TAG = "!!python/object/apply:os.system"


def test_a_recipe_with_a_python_tag_is_refused_without_executing(tmp_path: Path, marker: Path):
    recipe = tmp_path / "evil.yaml"
    recipe.write_text(f"name: {PYTHON_TAG} ['touch {marker}']\n")
    assert_refused(invoke("data", recipe), "not valid YAML", "python/object/apply")
    assert_refused(invoke("data", SMOKE, "--set", f"name={PYTHON_TAG} ['touch {marker}']"),
                   "the value is not valid YAML")


def test_a_run_directorys_recipe_with_a_python_tag_is_refused(model_run: Path, tmp_path: Path, marker: Path):
    run = tmp_path / "run"
    shutil.copytree(model_run, run)
    text = (run / "recipe.yaml").read_text()
    (run / "recipe.yaml").write_text(text.replace("name: smoke", f"name: !!python/object/new:os.system ['touch {marker}']"))
    assert_refused(invoke("generate", run), "recipe.yaml: not valid YAML")


# --------------------------------------------------------------------------------------------- paths


@pytest.mark.parametrize("name", ["../../x", "..", "a/b", "a\\b"])
def test_a_recipe_name_cannot_be_a_path(name: str, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: '{name}'\ndata: {{source: 'builtin:digits'}}\n")
    assert_refused(invoke("train", recipe), "name", "must be a plain name")
    assert_refused(invoke("train", SMOKE, "--set", "output_dir=null", "--set", f"name='{name}'"), "must be a plain name")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"], "nothing is written"


def files_below(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_nothing_is_written_outside_the_run_directory(tmp_path: Path, monkeypatch):
    """Class names that look like paths, a relative ``--out`` with ``..``: every file lands below the run."""
    classes = ["../../etc", "..", "a/b", "chat noir", "日本"]
    data = tmp_path / "data"
    data.mkdir()
    rows = []
    for c, name in enumerate(classes):
        for i in range(4):
            Image.new("L", (8, 8), 40 * c + 10 * i).save(data / f"{c}-{i}.png")
            rows.append(f'{c}-{i}.png,"{name}"\n')
    (data / "labels.csv").write_text("image,label\n" + "".join(rows))
    cwd = tmp_path / "work" / "here"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    before = files_below(tmp_path)

    out = Path("..") / "runs" / "x"  # relative, through ..: the run directory is tmp_path/work/runs/x
    run_dir = (cwd / out).resolve()
    result = invoke("train", SMOKE, "--out", out, "--set", f"data.source=csv:{data / 'labels.csv'}",
                    "--set", "train.max_steps=2", "--set", "generate.formats=[hf, parquet, imagefolder]")
    assert result.exit_code == 0, result.output
    result = invoke("generate", out)
    assert result.exit_code == 0, result.output

    new = files_below(tmp_path) - before
    outside = sorted(str(p) for p in new if run_dir not in p.resolve().parents)
    assert not outside, f"written outside {run_dir}: {outside}"
    export = run_dir / "synthetic" / "imagefolder"
    folders = sorted(p.name for p in export.iterdir() if p.is_dir())
    assert len(folders) == len(classes) and all(export.resolve() in (export / f).resolve().parents for f in folders)
    assert "chat noir" in folders and "日本" in folders


def test_trust_remote_code_appears_nowhere_in_the_package():
    hits = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if "trust_remote_code" in p.read_text()]
    assert not hits, f"trust_remote_code in {hits}"
