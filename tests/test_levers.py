"""Training-side generator levers: non-leaking (conditioned) augmentation and class-balancing diffusion (CBDM)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import SMOKE
from safetensors.torch import load_file

from synthaug import runs, stages
from synthaug.config import ConditionedAugmentConfig, ModelConfig, TrainConfig, load_recipe
from synthaug.diffusion import AUGMENT_DIM, ClassConditionalDiffusion, build_unet, conditioned_augment


def batch(b: int = 8, c: int = 3, size: int = 16) -> torch.Tensor:
    return torch.rand(b, c, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1


def module(**train) -> ClassConditionalDiffusion:
    torch.manual_seed(0)  # the same initial weights for every module a test compares
    unet = build_unet(ModelConfig(block_out_channels=[16, 16], attention=[False, False]), 3, 16, 3)
    return ClassConditionalDiffusion(unet, 3, TrainConfig(ema_decay=0.0, **train), seed=0)


def test_no_augmentation_is_all_zero_parameters_and_the_images_untouched():
    x = batch()
    out, params = conditioned_augment(x, ConditionedAugmentConfig(p=0.0), torch.Generator().manual_seed(0))
    assert params.shape == (8, AUGMENT_DIM) and not params.any()
    assert torch.equal(out, x)


def test_each_image_is_transformed_as_its_parameters_say():
    """Flips only: the images with parameter 1 are mirrored, the others left alone."""
    x = batch()
    cfg = ConditionedAugmentConfig(p=1.0, scale=0.0, rotate=0.0, translate=0.0, color=0.0)
    out, params = conditioned_augment(x, cfg, torch.Generator().manual_seed(0))
    flipped = params[:, 0] == 1
    assert 0 < flipped.sum() < len(x), "half the images flip"
    assert not params[:, 1:].any()
    assert torch.allclose(out[flipped], x[flipped].flip(-1), atol=1e-5)
    assert torch.equal(out[~flipped], x[~flipped])


def test_every_transform_moves_some_images_and_leaves_the_others():
    x = batch(64)
    out, params = conditioned_augment(x, ConditionedAugmentConfig(p=0.3), torch.Generator().manual_seed(0))
    untouched = ~params.any(dim=1)
    assert 0 < untouched.sum() < 64
    assert torch.equal(out[untouched], x[untouched])
    assert (out[~untouched] - x[~untouched]).abs().amax(dim=(1, 2, 3)).min() > 0
    for column in range(AUGMENT_DIM):
        assert params[:, column].any(), f"parameter {column} never drawn at p=0.3"
    assert out.min() >= -1 and out.max() <= 1


def test_a_setting_changes_only_its_own_transform():
    """Every random number is drawn whatever the settings: turning colour off leaves the geometry's draws."""
    x = batch(32)
    a_out, a = conditioned_augment(x, ConditionedAugmentConfig(p=0.5), torch.Generator().manual_seed(3))
    b_out, b = conditioned_augment(x, ConditionedAugmentConfig(p=0.5, color=0.0), torch.Generator().manual_seed(3))
    assert torch.equal(a[:, :6], b[:, :6]) and not b[:, 6:].any() and a[:, 6:].any()


def test_sampling_with_no_augmentation_is_the_bare_unet():
    """The augmentation embedding is bias-free, so the all-zero "no augmentation" input adds nothing: the
    saved UNet (no augmentation weights at all) predicts what the trained module predicts for it."""
    m = module(conditioned_augment={"p": 0.5})
    torch.nn.init.normal_(m.augment_embedding.weight)
    x, t, y = batch(4), torch.tensor([10, 200, 500, 900]), torch.tensor([0, 1, 2, 3])
    m._augment_emb = m.augment_embedding(torch.zeros(4, AUGMENT_DIM))
    with torch.no_grad():
        conditioned = m.unet(x, t, class_labels=y).sample
        m._augment_emb = m.augment_embedding(torch.ones(4, AUGMENT_DIM))
        augmented = m.unet(x, t, class_labels=y).sample
        m._augment_emb = None
        bare = m.sampling_unet()(x, t, class_labels=y).sample
        other_class = m.sampling_unet()(x, t, class_labels=y.flip(0)).sample
    assert torch.equal(conditioned, bare)
    # A fresh UNet barely listens to its conditioning: measure against what a change of class does.
    assert (augmented - bare).abs().max() > (other_class - bare).abs().max(), "the augmentation input reaches the UNet"
    assert not [k for k in m.sampling_unet().state_dict() if "augment" in k]


def test_the_augmentation_embedding_learns():
    m = module(conditioned_augment={"p": 0.5})
    m.loss(batch(), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]), step=0).backward()
    assert m.augment_embedding.weight.grad.abs().sum() > 0
    assert m._augment_emb is None, "the per-batch input is cleared after the step"


def test_cbdm_adds_a_non_negative_term_and_nothing_for_null_class_rows():
    x, y = batch(), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])

    def distinct_classes(m: ClassConditionalDiffusion) -> ClassConditionalDiffusion:
        with torch.no_grad():  # a fresh UNet barely tells classes apart; a trained one does
            m.unet.class_embedding.weight.mul_(1000)
        return m

    plain = distinct_classes(module()).loss(x, y, step=0)
    regularised = distinct_classes(module(cbdm={"weight": 5.0})).loss(x, y, step=0)
    assert regularised > plain, "two classes' predictions differ, so the pull costs something"
    all_null = module(label_dropout=1.0).loss(x, y, step=0)
    assert torch.equal(module(label_dropout=1.0, cbdm={"weight": 5.0}).loss(x, y, step=0), all_null)


def test_levers_off_leave_the_loss_unchanged():
    """The levers draw from their own random streams: off, the loss is bit-identical to a module without them."""
    x, y = batch(), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    assert torch.equal(module().loss(x, y, step=5),
                       module(conditioned_augment={"p": 0.0, "rotate": 30.0}, cbdm={"gamma": 1.0}).loss(x, y, step=5))


@pytest.mark.parametrize("overrides", [["train.conditioned_augment.p=0.5", "train.cbdm.weight=1.0"]])
def test_training_with_the_levers_saves_a_plain_model_and_resumes(tmp_path: Path, overrides):
    """Through the training stage: the checkpoint carries the augmentation embedding (resume needs it), the
    saved model is a plain diffusers UNet; resuming a finished run changes nothing."""
    recipe = load_recipe(SMOKE, overrides=overrides, out=tmp_path)
    stages.train(recipe, progress=False)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert "augment_embedding.weight" in ckpt["state_dict"]
    (weights,) = (tmp_path / "model" / "unet").glob("*.safetensors")
    saved = load_file(weights)
    assert not [k for k in saved if "augment" in k]
    stages.train(recipe, resume=True, progress=False)
    assert runs.checkpoint_step(tmp_path / "checkpoints" / "last.ckpt") == recipe.train.max_steps
    again = load_file(weights)
    assert all(torch.equal(saved[k], again[k]) for k in saved)


def scripted_scores(monkeypatch, by_call: list[float]) -> None:
    """Make check number i score ``by_call[i]`` (the share of samples recognised and new)."""
    import numpy as np

    from synthaug.callbacks import KeepNovelBest

    calls = iter(by_call)

    def fake(self, images, labels):
        share = next(calls)
        return np.arange(len(labels)) < round(share * len(labels))

    monkeypatch.setattr(KeepNovelBest, "recognised_and_new", fake)


def test_keep_best_saves_the_best_checks_weights(tmp_path: Path, monkeypatch):
    """Checks at steps 5, 10, 15 and 20; the second scores best, so the model is step 10's EMA weights."""
    scripted_scores(monkeypatch, [0.25, 0.75, 0.5, 0.5])
    recipe = load_recipe(SMOKE, overrides=["train.keep_best.every=5", "train.keep_best.few=1000"], out=tmp_path)
    stages.train(recipe, progress=False)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    (state,) = [v for k, v in ckpt["callbacks"].items() if "KeepNovelBest" in k]
    assert [c["step"] for c in state["checks"]] == [5, 10, 15, 20]
    assert state["best_step"] == 10 and state["best_score"] == 0.75
    assert set(state["checks"][0]["per_class"]) == {str(c) for c in range(10)}, "few=1000: every class is rare"
    (weights,) = (tmp_path / "model" / "unet").glob("*.safetensors")
    saved = load_file(weights)
    assert all(torch.equal(saved[k], state["best_state"][k]) for k in saved)
    final = {k.removeprefix("unet."): v for k, v in ckpt["state_dict"].items() if k.startswith("unet.")}
    assert any(not torch.equal(saved[k], final[k]) for k in saved), "not the last weights"


def test_keep_best_prefers_the_later_check_on_a_tie_and_resumes_its_choice(tmp_path: Path, monkeypatch):
    scripted_scores(monkeypatch, [0.5, 0.5])
    recipe = load_recipe(SMOKE, overrides=["train.keep_best.every=10"], out=tmp_path)
    stages.train(recipe, progress=False)

    def state() -> dict:
        ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
        return next(v for k, v in ckpt["callbacks"].items() if "KeepNovelBest" in k)

    assert state()["best_step"] == 20, "a tie goes to the later, more trained, weights"
    # Ten more steps from the finished checkpoint: the earlier checks travel with it and still win.
    scripted_scores(monkeypatch, [0.25])
    more = load_recipe(SMOKE, overrides=["train.keep_best.every=10", "train.max_steps=30"], out=tmp_path)
    stages.train(more, resume=True, progress=False)
    assert [c["step"] for c in state()["checks"]] == [10, 20, 30] and state()["best_step"] == 20


def test_rare_classes_are_the_few_shot_ones_or_the_rarest_third():
    import numpy as np

    from synthaug.callbacks import keep_best_callback

    recipe = load_recipe(SMOKE, overrides=["train.keep_best.every=5", "evaluate.judge_steps=1", "evaluate.steps=1"])
    x = np.zeros((40, 8, 8, 1), np.uint8)
    y = np.repeat(np.arange(4), 10)
    ids = np.arange(40)
    assert keep_best_callback(recipe, x, y, ids, [50, 30, 12, 3], list("abcd")).rare == [2, 3]
    assert keep_best_callback(recipe, x, y, ids, [50, 30, 40, 25, 60, 90], list("abcdef")).rare == [1, 3]
    off = load_recipe(SMOKE)
    assert keep_best_callback(off, x, y, ids, [50, 30, 12, 3], list("abcd")) is None
