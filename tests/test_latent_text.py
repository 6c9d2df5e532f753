"""The latent-text backbone (LoRA and class tokens on a pretrained text-to-image pipeline) through the same
contract as the pixel one: train → generate → evaluate by the CLI, per-image seeds, resume, every output format and
metrics.json key, and bad input as one line. The base is a tiny pipeline built here (tests/tiny_text_pipeline.py);
nothing needs the network.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import SMOKE, assert_one_line, copy_run, invoke
from safetensors.torch import load_file
from test_generation import SignalAfterFirstBatch, assert_same_images
from test_training import SignalAt
from tiny_text_pipeline import build_tiny_pipeline

from synthaug import runs, stages
from synthaug.config import DEFAULT_ARMS, load_recipe
from synthaug.errors import Interrupted

TEXT_LORA = Path(__file__).resolve().parents[1] / "recipes" / "text-lora.yaml"
# The GPU template cut to seconds on the CPU: 6 training images per digit at 32 px (8×8 latents), 6 steps.
TINY = ["data.source=builtin:digits", "data.image_size=32", "data.channels=3", "data.subset.per_class=6",
        "train.max_steps=6", "train.batch_size=4", "train.warmup_steps=1", "train.checkpoint_every=3",
        "train.max_minutes=null", "generate.steps=3", "generate.batch_size=5", "generate.quota={per_class: 2}",
        "generate.formats=[hf, parquet, imagefolder]", "evaluate.classifier=cnn", "evaluate.steps=10",
        "evaluate.judge_steps=10", "evaluate.seeds=[0]", "evaluate.workers=1", "evaluate.max_minutes=null",
        "compute.precision=32-true"]
ON_CPU = ["compute.accelerator=cpu"]
ON_CUDA = ["compute.accelerator=gpu", "compute.precision=bf16-mixed", "generate.precision=bf16-mixed"]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sets(*overrides: str) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("base") / "pipe")


def overrides(base: Path, *more: str) -> list[str]:
    return [f"model.base={base}", *TINY, *more]


def run_cli(run: Path, base: Path, *more: str) -> Path:
    result = invoke("run", TEXT_LORA, "--out", run, *sets(*overrides(base, *more)))
    assert result.exit_code == 0, result.output
    return run


@pytest.fixture(scope="module")
def text_run(tiny_base: Path, tmp_path_factory) -> Path:
    """``synthaug run recipes/text-lora.yaml`` on the tiny base, on the CPU. Read it, or copy it (``copy_run``)."""
    return run_cli(tmp_path_factory.mktemp("text") / "run", tiny_base, *ON_CPU)


def recipe(run: Path, base: Path, *more: str):
    return load_recipe(TEXT_LORA, overrides=overrides(base, *ON_CPU, *more), out=run)


def gen(run: Path, *more: str, **kwargs):
    return stages.generate(load_recipe(run, overrides=list(more)), progress=False, **kwargs)


def saved_tensors(model: Path) -> dict[str, torch.Tensor]:
    """Every tensor the model folder holds, by file and name."""
    return {f"{f.relative_to(model)}:{name}": tensor
            for f in sorted(model.rglob("*.safetensors")) for name, tensor in load_file(f).items()}


# --------------------------------------------------------------------------------------------- the contract


def check_contract(run: Path, base: Path) -> None:
    """What the pixel backbone's end-to-end tests check (tests/test_report.py, test_cli.py, test_generation.py)."""
    model = run / "model"
    weights = sorted(p.relative_to(model).as_posix() for p in model.rglob("*") if p.suffix in (".safetensors", ".bin"))
    assert weights == [*(f"class_tokens/{i}.safetensors" for i in range(10)), "pytorch_lora_weights.safetensors"], \
        "only what was trained, no copy of the base"
    meta = json.loads((model / "synthaug.json").read_text())
    assert meta["backbone"] == "latent-text" and meta["base"] == str(base.resolve())
    assert meta["base_revision"].startswith("sha256:") and meta["classes"] == [str(i) for i in range(10)]
    assert meta["prompts"]["3"] == "a photo of a <synthaug-3>"
    assert (meta["image_size"], meta["channels"]) == (32, 3)

    metrics = json.loads((run / "report" / "metrics.json").read_text())
    design = {
        "dataset": {"classes", "train_counts", "test_counts", "duplicates_train_test", "shot_groups"},
        "generation": {"counts", "sampler", "steps", "guidance", "images_per_second"},
        "quality": {"judge_accuracy", "fid_judge", "precision", "recall", "memorization_rate", "cas_ratio"},
        "lift": {"macro_f1", "accuracy", "best_baseline", "best_synthetic_arm", "vs_best_baseline_macro_f1",
                 "paired", "verdict", "verdict_vs_real"},
        "evaluation": {"steps", "judge_steps", "max_minutes", "accelerator", "seconds"},
    }
    for section, keys in design.items():
        assert keys <= set(metrics[section]), (section, keys - set(metrics[section]))
    assert set(metrics["arms"]) == set(DEFAULT_ARMS)
    for arm, stats in metrics["arms"].items():
        for key in ("accuracy", "macro_f1", "balanced_accuracy"):
            assert {"mean", "std"} <= set(stats[key]) and 0.0 <= stats[key]["mean"] <= 1.0, (arm, key)
        assert len(stats["per_class_f1"]) == 10
    assert metrics["generation"]["counts"] == {str(i): 2 for i in range(10)}

    ds = datasets.load_from_disk(str(run / "synthetic"))
    assert ds[0]["image"].size == (32, 32) and ds[0]["image"].mode == "RGB"
    x = np.stack([np.asarray(im) for im in ds["image"]])
    assert x.std() > 0 and len(set(ds["seed"])) == len(ds)
    table = pd.concat(pd.read_parquet(p) for p in sorted((run / "synthetic" / "parquet").glob("*.parquet")))
    assert table["label"].tolist() == ds["label"]
    folder = datasets.load_dataset("imagefolder", data_dir=str(run / "synthetic" / "imagefolder"), split="train")
    assert sorted(ds.features["label"].names[i] for i in ds["label"]) == sorted(map(str, folder["class_name"]))

    card = (run / "synthetic" / "README.md").read_text()
    assert str(base.resolve()) in card and meta["base_revision"] in card, "the card names the base and its hash"
    assert "a photo of a <synthaug-3>" in card and "LoRA rank 8" in card, "... the prompts and the adapter"
    assert (run / "report" / "index.html").is_file()


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_train_generate_evaluate_through_the_cli(device, text_run: Path, tiny_base: Path, tmp_path: Path):
    run = text_run if device == "cpu" else run_cli(tmp_path / "cuda", tiny_base, *ON_CUDA)
    check_contract(run, tiny_base)


def test_same_images_whatever_the_batch_size_and_after_an_interruption(text_run: Path, tmp_path: Path,
                                                                         monkeypatch):
    """``text_run`` generated in batches of 5; batches of 2, and batches of 5 stopped after the first and
    resumed, make the same images."""
    import pytorch_lightning as pl

    small = copy_run(text_run, tmp_path / "small", "synthetic", "report")
    gen(small, "generate.batch_size=2")
    assert_same_images(text_run, small)

    parts = copy_run(text_run, tmp_path / "parts", "synthetic", "report")
    real_init = pl.Trainer.__init__

    def with_signal(self, *args, callbacks=None, **kwargs):
        real_init(self, *args, callbacks=[SignalAfterFirstBatch(), *(callbacks or [])], **kwargs)

    monkeypatch.setattr(pl.Trainer, "__init__", with_signal)
    with pytest.raises(Interrupted):
        gen(parts)
    monkeypatch.setattr(pl.Trainer, "__init__", real_init)
    assert len(list((parts / "synthetic.parts").glob("shard-*.parquet"))) == 1
    gen(parts, resume=True)
    assert_same_images(text_run, parts)


def test_interrupted_then_resumed_training_equals_uninterrupted(text_run: Path, tiny_base: Path, tmp_path: Path,
                                                                monkeypatch):
    import pytorch_lightning as pl

    real_init = pl.Trainer.__init__

    def with_signal(self, *args, callbacks=None, **kwargs):
        real_init(self, *args, callbacks=[*(callbacks or []), SignalAt(3)], **kwargs)

    run = tmp_path / "parts"
    monkeypatch.setattr(pl.Trainer, "__init__", with_signal)
    with pytest.raises(Interrupted):
        stages.train(recipe(run, tiny_base), progress=False)
    monkeypatch.setattr(pl.Trainer, "__init__", real_init)
    assert not (run / "model").exists() and runs.checkpoint_step(run / "checkpoints" / "last.ckpt") in (3, 4)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["state_dict"] and all("lora" in k or k.endswith(".vectors") for k in ckpt["state_dict"]), \
        "checkpoints hold the trained tensors alone, not the base"

    stages.train(recipe(run, tiny_base), resume=True, progress=False)
    assert runs.checkpoint_step(run / "checkpoints" / "last.ckpt") == 6
    a, b = saved_tensors(text_run / "model"), saved_tensors(run / "model")
    assert a.keys() == b.keys() and len(a) > 10
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-6, f"resumed weights differ by {worst}"


def test_gradient_checkpointing_is_applied_and_trains_the_same_weights(text_run: Path, tiny_base: Path,
                                                                      tmp_path: Path):
    """``train.gradient_checkpointing`` turns on diffusers' checkpointing in the UNet; recomputing activations
    in the backward pass gives the weights training without it gives."""
    module = stages.build_module(recipe(tmp_path / "m", tiny_base, "train.gradient_checkpointing=true"),
                                 [str(i) for i in range(10)])
    assert module.unet.is_gradient_checkpointing
    run = tmp_path / "checkpointed"
    stages.train(recipe(run, tiny_base, "train.gradient_checkpointing=true"), progress=False)
    a, b = saved_tensors(text_run / "model"), saved_tensors(run / "model")
    assert a.keys() == b.keys() and max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_trains_the_adapter(tiny_base: Path, tmp_path: Path):
    """Many devices through Lightning, as for the pixel backbone: two gloo processes train the LoRA and the
    class tokens, rank 0 saves only what was trained."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "synthaug.cli", "train", str(TEXT_LORA), "--out", str(run), "--verbose",
           *sets(*overrides(tiny_base, *ON_CPU, "compute.devices=2", "compute.strategy=ddp"))]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world_size: 2" in proc.stderr or "distributed_backend=gloo" in proc.stderr
    assert runs.checkpoint_step(run / "checkpoints" / "last.ckpt") == 6
    tensors = saved_tensors(run / "model")
    assert len(tensors) > 10 and all(torch.isfinite(t).all() for t in tensors.values())


# --------------------------------------------------------------------------------------------- what is learned


@pytest.fixture(scope="module")
def generator(text_run: Path):
    from synthaug.sampling import Generator

    return Generator.from_pretrained(text_run / "model")


def test_the_saved_lora_changes_the_unet_output(generator, text_run: Path, tiny_base: Path):
    """``Generator.from_pretrained`` loads the LoRA with ``load_lora_weights``: the UNet no longer predicts what
    the base's does."""
    from diffusers import UNet2DConditionModel

    from synthaug.latent_text_sampling import TextGenerator

    assert isinstance(generator, TextGenerator)
    base = UNet2DConditionModel.from_pretrained(tiny_base / "unet", use_safetensors=True).eval()
    gen = torch.Generator().manual_seed(0)
    x, hidden = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 77, 32, generator=gen)
    t = torch.tensor([100, 700])
    with torch.no_grad():
        before = base(x, t, encoder_hidden_states=hidden).sample
        after = generator.unet(x, t, encoder_hidden_states=hidden).sample
    assert (after - before).abs().max().item() > 1e-4, "the adapter must change the UNet's prediction"
    lora = load_file(text_run / "model" / "pytorch_lora_weights.safetensors")
    assert lora and all(k.startswith("unet.") and "lora" in k for k in lora)


def test_a_class_token_changes_its_prompt_only(generator, text_run: Path):
    """The trained token of class 3 moved from its start (the embedding of the word "3"): the text embedding of
    class 3's caption changes, a caption without a class token does not."""
    classes = [str(i) for i in range(10)]
    untrained = stages.build_module(load_recipe(text_run), classes)  # the class tokens as training starts them
    plain, own = "a photo of a cat", generator.meta["prompts"]["3"]

    def embed(tokenizer, encoder, text):
        ids = tokenizer(text, padding="max_length", max_length=77, return_tensors="pt").input_ids
        with torch.no_grad():
            return encoder(ids)[0]

    start = [embed(untrained.tokenizer, untrained.text_encoder, p) for p in (plain, own)]
    trained = [embed(generator.tokenizer, generator.text_encoder, p) for p in (plain, own)]
    assert torch.allclose(start[0], trained[0], atol=1e-6), "a caption without class tokens is the base's"
    assert (start[1] - trained[1]).abs().max().item() > 1e-4, "class 3's caption embeds its trained token"
    vectors = load_file(text_run / "model" / "class_tokens" / "3.safetensors")
    assert list(vectors) == ["<synthaug-3>"] and vectors["<synthaug-3>"].shape == (1, 32)
    token_id = generator.tokenizer.convert_tokens_to_ids("<synthaug-3>")
    row = generator.text_encoder.get_input_embeddings().weight[token_id]
    assert torch.equal(row, vectors["<synthaug-3>"][0]), "load_textual_inversion put the saved vector in place"
    assert (row - untrained.text_encoder.get_input_embeddings().vectors[3]).abs().max().item() > 1e-4


def test_the_model_loads_as_a_diffusers_pipeline_and_has_a_card(generator, text_run: Path):
    """``SynthaugPipeline.from_pretrained`` on a latent-text folder gives the base's ``StableDiffusionPipeline``
    with the adapter and class tokens applied (the same UNet weights as the generator's), and the folder has a Hub
    model card naming the base."""
    from diffusers import StableDiffusionPipeline
    from huggingface_hub import ModelCard

    from synthaug import SynthaugPipeline

    pipe = SynthaugPipeline.from_pretrained(text_run / "model")
    assert isinstance(pipe, StableDiffusionPipeline)
    assert pipe.get_label_ids(["3", "0"]) == [3, 0] and pipe.prompts["3"] == generator.meta["prompts"]["3"]
    ours, theirs = dict(pipe.unet.named_parameters()), dict(generator.unet.named_parameters())
    lora = [k for k in ours if "lora" in k]
    assert lora and all(torch.equal(ours[k], theirs[k]) for k in lora)
    assert pipe.tokenizer.convert_tokens_to_ids("<synthaug-3>") != pipe.tokenizer.unk_token_id
    card = ModelCard.load(text_run / "model" / "README.md")
    assert "backbone:latent-text" in card.data.tags and "fine-tuned from" in card.text
    assert card.data.eval_results  # the CLI run evaluated: its figures are on the card


def test_the_saved_adapter_and_tokens_load_back_exactly(tiny_base: Path, tmp_path: Path):
    """What ``save_model`` writes, ``load_lora_weights`` and ``load_textual_inversion`` read back to the same
    predictions, with a LoRA alpha other than its rank (the scale travels in the file's metadata); a base whose
    weights changed since is refused."""
    from safetensors.torch import save_file

    from synthaug.errors import SynthaugError
    from synthaug.latent_text_sampling import TextGenerator

    base = Path(shutil.copytree(tiny_base, tmp_path / "base"))
    r = recipe(tmp_path / "run", base, "model.lora.alpha=3", "model.class_tokens=2", "train.ema_decay=0")
    module = stages.build_module(r, [str(i) for i in range(10)])
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.trained_parameters():  # as if trained: LoRA's B starts at zero
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    module.save_model(tmp_path / "model", 32, 3)
    loaded = TextGenerator.from_pretrained(tmp_path / "model")
    module.eval()

    x, hidden = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 77, 32, generator=gen)
    t = torch.tensor([10, 900])
    ids = module.caption_ids[[4, 10]]  # class 4's caption (two tokens) and the empty one
    with torch.no_grad():
        for ours, theirs in ((module.unet(x, t, encoder_hidden_states=hidden).sample,
                              loaded.unet(x, t, encoder_hidden_states=hidden).sample),
                             (module.text_encoder(ids)[0], loaded.text_encoder(ids)[0])):
            assert (ours - theirs).abs().max().item() < 1e-5
    assert loaded.captions[4] == "a photo of a <synthaug-4> <synthaug-4>_1"

    (weights,) = (base / "vae").glob("*.safetensors")
    save_file({k: v + 1e-3 for k, v in load_file(weights).items()}, weights)
    with pytest.raises(SynthaugError, match="restore the base it was trained on, or retrain"):
        TextGenerator.from_pretrained(tmp_path / "model")


def test_variation_starts_from_the_real_image_as_much_as_strength_says(generator, text_run: Path, tmp_path: Path):
    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8) for _ in range(2))

    def far(strength: float) -> float:
        """How much the outputs of two different real images differ, with the same seeds."""
        out = [generator.sample_arrays([3, 5], [11, 12], guidance=7.5, steps=10, init=init, strength=strength)
               for init in (a, b)]
        return float(np.abs(out[0].astype(float) - out[1]).mean())

    light, full = far(0.2), far(1.0)
    assert light > 0, "the output depends on the image it starts from"
    assert light > 2 * full, f"a low strength keeps more of the real image ({light:.2f} vs {full:.2f} at 1.0)"

    run = copy_run(text_run, tmp_path / "var", "synthetic", "report")
    ds = gen(run, "generate.mode=variation", "generate.strength=0.5")
    assert all(s is not None for s in ds["source_index"]) and len(ds) == 20
    card = (run / "synthetic" / "README.md").read_text()
    assert "variation" in card and "**strength**: `0.5`" in card


# --------------------------------------------------------------------------------------------- bad input


def _without(base: Path, dest: Path, part: str) -> Path:
    shutil.copytree(base, dest, ignore=shutil.ignore_patterns(part))
    return dest


def _pickled(base: Path, dest: Path) -> Path:
    shutil.copytree(base, dest)
    (weights,) = (dest / "unet").glob("*.safetensors")
    torch.save(load_file(weights), dest / "unet" / "diffusion_pytorch_model.bin")
    weights.unlink()
    return dest


def _odd_class_folder(tmp: Path) -> Path:
    from PIL import Image

    for k, name in enumerate(("cat", "€€")):  # bytes the tiny vocabulary has no token for
        (tmp / "imgs" / name).mkdir(parents=True)
        for i in range(4):
            pixels = np.full((8, 8, 3), 40 * i + 9 * k, np.uint8)  # no two images alike
            Image.fromarray(pixels).save(tmp / "imgs" / name / f"{i}.png")
    return tmp / "imgs"


BAD = {
    "not a pipeline folder": (lambda base, tmp: [f"model.base={tmp}"], ["no model_index.json", "StableDiffusionPipeline"]),
    "no tokenizer": (lambda base, tmp: [f"model.base={_without(base, tmp / 'p', 'tokenizer')}"], ["no tokenizer"]),
    "pickled weights": (lambda base, tmp: [f"model.base={_pickled(base, tmp / 'p')}"],
                        ["unet/diffusion_pytorch_model.bin", "model.trust_pickles: true"]),
    "template without {name}": (lambda base, tmp: [f"model.base={base}", "model.prompt=a photo"], ["has no {name}"]),
    "class name without tokens": (lambda base, tmp: [f"model.base={base}",
                                                     f"data.source=imagefolder:{_odd_class_folder(tmp)}"],
                                  ["'€€'", "no token"]),
    "caption too long": (lambda base, tmp: [f"model.base={base}", "model.prompt=a {name} " + "x " * 80],
                         ["more than the base's tokenizer takes (77)", "shorten model.prompt"]),
    "unknown class in class_prompts": (lambda base, tmp: [f"model.base={base}", "model.class_prompts={'33': '{name}'}"],
                                       ["model.class_prompts: unknown class '33'"]),
    "pixel-only key": (lambda base, tmp: [f"model.base={base}", "model.block_out_channels=[8, 16]"],
                       ["block_out_channels does not apply to backbone latent-text"]),
    "keep_best": (lambda base, tmp: [f"model.base={base}", "train.keep_best.every=3"],
                  ["train.keep_best does not apply to backbone latent-text"]),
    "sample_every": (lambda base, tmp: [f"model.base={base}", "train.sample_every=3"],
                     ["train.sample_every does not apply"]),
    "cbdm": (lambda base, tmp: [f"model.base={base}", "train.cbdm.weight=1"], ["train.cbdm does not apply"]),
    "conditioned_augment": (lambda base, tmp: [f"model.base={base}", "train.conditioned_augment.p=0.3"],
                            ["train.conditioned_augment does not apply"]),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_exit_2(case: str, tiny_base: Path, tmp_path: Path):
    make, expected = BAD[case]
    tmp = tmp_path / "in"
    tmp.mkdir()
    result = invoke("train", TEXT_LORA, "--out", tmp_path / "run", *sets(*TINY, *ON_CPU, *make(tiny_base, tmp)))
    assert_one_line(result, 2, *expected)
    assert not (tmp_path / "run" / "model").exists()


def test_lora_keys_with_the_pixel_backbone_are_refused(tmp_path: Path):
    result = invoke("train", SMOKE, "--out", tmp_path / "run", "--set", "model.lora.rank=4")
    assert_one_line(result, 2, "lora does not apply to backbone pixel")


def test_pickled_weights_load_with_the_trust_key(tiny_base: Path, tmp_path: Path):
    base = _pickled(tiny_base, tmp_path / "pickled")
    module = stages.build_module(recipe(tmp_path / "run", base, "model.trust_pickles=true"), [str(i) for i in range(10)])
    assert module.trained_names


def test_a_base_file_is_read_once_per_process_until_it_changes(tmp_path: Path, monkeypatch):
    import builtins
    import os

    import synthaug.io
    from synthaug.io import file_digest

    opened = []

    def counting_open(path, *args, **kwargs):
        opened.append(path)
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(synthaug.io, "open", counting_open, raising=False)
    weights = tmp_path / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(b"a" * 4096)
    first = file_digest(weights)
    assert file_digest(weights) == first and len(opened) == 1, "the same file is hashed once"
    replacement = tmp_path / "new.tmp"
    replacement.write_bytes(b"b" * 4096)  # same size, written the atomic way (a new inode)
    os.replace(replacement, weights)
    assert file_digest(weights) != first and len(opened) == 2, "a rewritten file is hashed again"


def test_the_guidance_interval_runs_the_caption_alone_outside_it(generator):
    """``guidance_interval`` on the latent backbone: guided steps run caption and negative prompt together (2B
    rows), the others the caption alone (B rows); the images change, and still depend only on their seeds."""
    rows = []
    forward = generator.unet.forward

    def counting(sample, *args, **kwargs):
        rows.append(len(sample))
        return forward(sample, *args, **kwargs)

    generator.unet.forward = counting
    try:
        full = generator.sample_arrays([1, 2], [7, 8], guidance=3.0, steps=4, autocast=False)
        assert rows == [4, 4, 4, 4]
        rows.clear()
        half = generator.sample_arrays([1, 2], [7, 8], guidance=3.0, steps=4, autocast=False,
                                       guidance_interval=(0.0, 0.5))
        assert rows == [4, 4, 2, 2]
        one = generator.sample_arrays([1], [7], guidance=3.0, steps=4, autocast=False, guidance_interval=(0.0, 0.5))
    finally:
        generator.unet.forward = forward
    assert np.abs(half.astype(int) - full.astype(int)).max() > 0
    np.testing.assert_array_equal(one[0], half[0])
