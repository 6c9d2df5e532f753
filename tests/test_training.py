"""Training: EMA, resume to identical weights, time budgets, fine-tuning a base, DDP, unsafe checkpoints."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from diffusers import UNet2DModel
from helpers import SMOKE
from pytorch_lightning.callbacks import Callback
from safetensors.torch import load_file

from synthaug import runs, stages
from synthaug.cli import cli
from synthaug.config import ModelConfig, load_recipe
from synthaug.diffusion import load_base_unet
from synthaug.errors import Interrupted


def recipe(tmp_path: Path, *overrides: str):
    return load_recipe(SMOKE, overrides=list(overrides), out=tmp_path)


def saved_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    (path,) = (run_dir / "model" / "unet").glob("*.safetensors")
    return load_file(path)


def test_ema_weights_are_saved_and_differ_from_raw(tmp_path: Path):
    run = tmp_path / "ema"
    stages.train(recipe(run, "train.ema_decay=0.99"), progress=False)
    saved = saved_weights(run)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    raw = {k.removeprefix("unet."): v for k, v in ckpt["state_dict"].items() if k.startswith("unet.")}
    ema = ckpt["ema"]["shadow_params"]
    names = [n for n, p in UNet2DModel.from_pretrained(run / "model" / "unet").named_parameters()]
    assert len(ema) == len(names)
    differ = sum(not torch.equal(saved[n], raw[n]) for n in names)
    assert differ > len(names) // 2, "the saved model must be the EMA, not the raw weights"
    for n, shadow in zip(names, ema):
        assert torch.equal(saved[n], shadow), n


class SignalAt(Callback):
    """Send this process SIGINT once training reaches ``step``, as a user pressing Ctrl-C would."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def test_sample_grids_during_training_at_the_model_resolution(tmp_path: Path):
    """``train.sample_every``: a labelled grid per checkpointed step, drawn by the EMA UNet at its own
    resolution (here ``model.sample_size`` 8 for 16 px data), one row per class."""
    import numpy as np
    from PIL import Image

    from synthaug.images import grid_image

    stages.train(recipe(tmp_path, "train.sample_every=10", "data.image_size=16", "model.sample_size=8"),
                 progress=False)
    grids = sorted((tmp_path / "logs" / "samples").glob("*.png"))
    assert [p.name for p in grids] == ["step-000010.png", "step-000020.png"]
    expected = grid_image(np.zeros((10, 8, 8, 8, 1), np.uint8), [str(c) for c in range(10)]).size
    first, last = (np.asarray(Image.open(p).convert("L")) for p in grids)
    assert Image.open(grids[0]).size == expected, "10 classes x 8 samples of 8 px tiles"
    assert not np.array_equal(first, last), "the model moved between the two grids"


def test_interrupt_then_resume_gives_the_same_weights(tmp_path: Path, monkeypatch):
    whole = tmp_path / "whole"
    stages.train(recipe(whole), progress=False)

    parts = tmp_path / "parts"
    import pytorch_lightning as pl

    real_init = pl.Trainer.__init__

    def with_signal(self, *args, callbacks=None, **kwargs):
        real_init(self, *args, callbacks=[*(callbacks or []), SignalAt(7)], **kwargs)

    monkeypatch.setattr(pl.Trainer, "__init__", with_signal)
    with pytest.raises(Interrupted):
        stages.train(recipe(parts), progress=False)
    monkeypatch.setattr(pl.Trainer, "__init__", real_init)
    assert not (parts / "model").exists()
    # The stop lands on the step boundary after the signal (7, or 8 if the signal came after the check).
    assert runs.checkpoint_step(parts / "checkpoints" / "last.ckpt") in (7, 8)

    stages.train(recipe(parts), resume=True, progress=False)
    assert runs.checkpoint_step(parts / "checkpoints" / "last.ckpt") == 20
    a, b = saved_weights(whole), saved_weights(parts)
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-6, f"resumed weights differ by {worst}"


def test_max_minutes_stops_cleanly_and_saves(tmp_path: Path):
    run = tmp_path / "budget"
    stages.train(recipe(run, "train.max_steps=100000", "train.max_minutes=0.05"), progress=False)
    step = runs.checkpoint_step(run / "checkpoints" / "last.ckpt")
    assert 0 < step < 100000
    assert saved_weights(run), "a usable model is saved at the budget"


def test_finetuning_an_unconditional_base_starts_from_its_predictions(tmp_path: Path):
    base = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=8)
    torch.nn.init.normal_(base.conv_out.weight, std=0.1)  # diffusers zero-inits nothing here, but be explicit
    base.save_pretrained(tmp_path / "pipe" / "unet", safe_serialization=True)
    unet = load_base_unet(ModelConfig(base=str(tmp_path / "pipe")), num_classes=3, image_size=8, channels=1)
    assert unet.config.num_class_embeds == 4
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10, 200, 500, 900])
    with torch.no_grad():
        expected = base(x, t).sample
        for label in range(4):  # every class and the null class
            got = unet(x, t, class_labels=torch.full((4,), label)).sample
            assert (got - expected).abs().max().item() < 1e-5

    # A base with a class embedding of another size needs an explicit reset; a conflicting key is an error.
    from synthaug.errors import SynthaugError

    conditional = UNet2DModel.from_config({**dict(unet.config), "num_class_embeds": 6})
    conditional.save_pretrained(tmp_path / "cond", safe_serialization=True)
    with pytest.raises(SynthaugError, match="reset_class_embedding"):
        load_base_unet(ModelConfig(base=str(tmp_path / "cond")), num_classes=3, image_size=8, channels=1)
    reset = load_base_unet(ModelConfig(base=str(tmp_path / "cond"), reset_class_embedding=True), 3, 8, 1)
    assert reset.config.num_class_embeds == 4
    with pytest.raises(SynthaugError, match=r"model.block_out_channels=\[32, 64\] conflicts"):
        load_base_unet(ModelConfig(base=str(tmp_path / "pipe"), block_out_channels=[32, 64], attention=[False, False]),
                       3, 8, 1)


def test_finetune_through_the_cli(tmp_path: Path):
    base = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=8)
    base.save_pretrained(tmp_path / "base", safe_serialization=True)
    result = CliRunner().invoke(cli, ["train", str(SMOKE), "--out", str(tmp_path / "ft"), "--set",
                                      f"model.base={tmp_path / 'base'}", "--set", "train.freeze=[down_blocks]"])
    assert result.exit_code == 0, result.output
    tuned = saved_weights(tmp_path / "ft")
    original = load_file(next((tmp_path / "base").glob("*.safetensors")))
    frozen = [k for k in original if k.startswith("down_blocks.")]
    assert frozen and all(torch.equal(tuned[k], original[k]) for k in frozen), "frozen blocks stay as the base"
    assert not torch.equal(tuned["conv_out.weight"], original["conv_out.weight"])


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = Path("/tmp/synthaug-pickle-executed")


def test_planted_pickle_checkpoint_is_refused_without_executing(tmp_path: Path):
    MARKER.unlink(missing_ok=True)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(pickle.dumps({"global_step": 3, "state_dict": Payload()}))
    result = CliRunner().invoke(cli, ["train", str(SMOKE), "--out", str(run), "--resume"])
    assert result.exit_code == 2, result.output
    assert "refused" in result.output and "last.ckpt" in result.output
    assert not MARKER.exists(), "the pickle payload ran"


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_trains_and_saves(tmp_path: Path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "synthaug.cli", "train", str(SMOKE), "--out", str(tmp_path / "ddp"),
           "--set", "compute.accelerator=cpu", "--set", "compute.devices=2", "--set", "compute.strategy=ddp",
           "--verbose"]  # Lightning's own banners name the world size
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world_size: 2" in proc.stderr or "distributed_backend=gloo" in proc.stderr
    assert saved_weights(tmp_path / "ddp")
    assert runs.checkpoint_step(tmp_path / "ddp" / "checkpoints" / "last.ckpt") == 20
