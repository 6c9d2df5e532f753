"""The model in the ecosystem's formats: a diffusers pipeline (``SynthaugPipeline``), a Hub model card, pushing
the model to the Hub (against a stand-in of the Hub client, never the network)."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from helpers import copy_run

from synthaug import SynthaugPipeline, stages
from synthaug.config import load_recipe
from synthaug.model_card import push_model_to_hub
from synthaug.sampling import Generator

# --------------------------------------------------------------------------------------------- the pipeline


def test_the_model_folder_is_a_diffusers_pipeline(smoke_synthetic: Path):
    index = json.loads((smoke_synthetic / "model" / "model_index.json").read_text())
    assert index["_class_name"] == "SynthaugPipeline" and index["unet"] == ["diffusers", "UNet2DModel"]
    pipe = SynthaugPipeline.from_pretrained(smoke_synthetic / "model")
    assert pipe.id2label == dict(enumerate(Generator.from_pretrained(smoke_synthetic / "model").classes))
    assert type(pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"  # what synthaug generate samples with


def test_the_pipeline_draws_the_images_synthaug_generate_wrote(smoke_synthetic: Path):
    """Same seeds → the same images as the synthetic dataset's rows, whatever the batch the pipeline gets."""
    recipe = load_recipe(smoke_synthetic)
    ds = datasets.load_from_disk(str(smoke_synthetic / "synthetic")).with_format("numpy")
    rows = [0, 4, 7, 12]
    labels, seeds = ds["label"][rows].tolist(), ds["seed"][rows].tolist()
    pipe = SynthaugPipeline.from_pretrained(smoke_synthetic / "model")
    out = pipe(class_labels=labels, generator=[torch.Generator().manual_seed(s) for s in seeds],
               guidance_scale=recipe.generate.guidance, num_inference_steps=recipe.generate.steps,
               output_type="np").images
    written = np.stack([np.asarray(ds[i]["image"]).reshape(out.shape[1:]) for i in rows])
    np.testing.assert_array_equal(np.rint(out * 255).astype(np.uint8), written)
    one = pipe(class_labels=labels[1:2], generator=[torch.Generator().manual_seed(seeds[1])],
               guidance_scale=recipe.generate.guidance, num_inference_steps=recipe.generate.steps,
               output_type="np").images
    np.testing.assert_array_equal(one[0], out[1])


def test_class_names_resolve_through_get_label_ids(smoke_synthetic: Path):
    pipe = SynthaugPipeline.from_pretrained(smoke_synthetic / "model")
    names = [pipe.id2label[3], pipe.id2label[0]]
    assert pipe.get_label_ids(names) == [3, 0] and pipe.get_label_ids(names[0]) == [3]
    with pytest.raises(ValueError, match="unknown class 'cat'"):
        pipe.get_label_ids(["cat"])
    with pytest.raises(ValueError, match="class_labels must be ids"):
        pipe(class_labels=[len(pipe.id2label)])  # the null class is no class
    with pytest.raises(ValueError, match="precision must be"):
        pipe(class_labels=[0], precision="fp16")


def test_another_diffusers_scheduler_swaps_in(smoke_synthetic: Path):
    from diffusers import DDIMScheduler

    pipe = SynthaugPipeline.from_pretrained(smoke_synthetic / "model")
    first = pipe(class_labels=[1, 2], generator=torch.manual_seed(0), num_inference_steps=4, output_type="pt").images
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    ddim = pipe(class_labels=[1, 2], generator=torch.manual_seed(0), num_inference_steps=4, output_type="pt").images
    again = pipe(class_labels=[1, 2], generator=torch.manual_seed(0), num_inference_steps=4, output_type="pil").images
    assert first.shape == ddim.shape == (2, 1, 8, 8) and 0 <= float(ddim.min()) and float(ddim.max()) <= 1
    assert not torch.equal(first, ddim)  # the scheduler in use changed the images
    np.testing.assert_array_equal(np.asarray(again[0]), np.rint(ddim[0, 0].numpy() * 255).astype(np.uint8))


def test_the_pipeline_saves_and_loads_again(smoke_synthetic: Path, tmp_path: Path):
    pipe = SynthaugPipeline.from_pretrained(smoke_synthetic / "model")
    pipe.save_pretrained(tmp_path / "copy")
    assert (tmp_path / "copy" / "unet" / "diffusion_pytorch_model.safetensors").exists()
    again = SynthaugPipeline.from_pretrained(tmp_path / "copy")
    assert again.id2label == pipe.id2label and again.config.image_size == pipe.config.image_size
    a = pipe(class_labels=[5], generator=torch.manual_seed(1), num_inference_steps=3, output_type="np").images
    b = again(class_labels=[5], generator=torch.manual_seed(1), num_inference_steps=3, output_type="np").images
    np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------------------- the model card


def test_training_writes_a_hub_model_card(smoke_model: Path):
    from huggingface_hub import ModelCard

    card = ModelCard.load(smoke_model / "model" / "README.md")
    assert card.data.library_name == "diffusers" and "synthaug" in card.data.tags
    assert "diffusers:SynthaugPipeline" in card.data.tags
    assert not card.data.eval_results  # no evaluation yet
    assert "SynthaugPipeline.from_pretrained" in card.text and "synthetic" in card.text


@pytest.fixture(scope="module")
def evaluated(smoke_synthetic: Path, tmp_path_factory) -> Path:
    run = copy_run(smoke_synthetic, tmp_path_factory.mktemp("card") / "run")
    stages.evaluate(load_recipe(run, overrides=["evaluate.arms=[real, real+synthetic]"]), progress=False)
    return run


def test_evaluation_puts_the_metrics_on_the_model_card(evaluated: Path):
    from huggingface_hub import ModelCard

    metrics = json.loads((evaluated / "report" / "metrics.json").read_text())
    card = ModelCard.load(evaluated / "model" / "README.md")
    results = {r.metric_name: r.metric_value for r in card.data.eval_results}
    real = metrics["arms"]["real"]["macro_f1"]["mean"]
    assert results["downstream macro-F1, real"] == pytest.approx(real, abs=1e-4)
    assert "downstream macro-F1, real+synthetic" in results
    assert results["judge accuracy of the samples"] == pytest.approx(metrics["quality"]["judge_accuracy"], abs=1e-4)
    paired = metrics["lift"]["paired"]["real+synthetic"]["vs_real"]
    assert f"{paired['mean']:+.3f}" in card.text and paired["verdict"] in card.text


def test_class_names_from_the_data_are_escaped_on_the_card():
    from huggingface_hub import ModelCard

    from synthaug.model_card import model_card

    meta = {"classes": ["<script>alert(1)</script>", "a|b", "---"], "image_size": 8, "channels": 1}
    card = ModelCard(str(model_card(meta)))
    assert "<script>" not in card.text and "&lt;script&gt;" in card.text and "a&#124;b" in card.text
    assert card.data.library_name == "diffusers"  # a class called --- did not end the YAML header


def test_push_model_to_hub_uploads_the_folder_to_a_private_repo(smoke_model: Path, monkeypatch):
    import huggingface_hub

    calls = []
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(
        ("create", repo_id, kw, self.token)))
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", lambda self, **kw: calls.append(("upload", kw)) or
                        type("Info", (), {"commit_url": "https://hub/commit/1"})())
    url = push_model_to_hub(smoke_model / "model", "me/tiny-model", token="t0ken")
    (_, repo_id, create_kw, token), (_, upload_kw) = calls
    assert (repo_id, create_kw["private"], create_kw["repo_type"], token) == ("me/tiny-model", True, "model", "t0ken")
    assert upload_kw["repo_id"] == "me/tiny-model" and Path(upload_kw["folder_path"]) == smoke_model / "model"
    assert url == "https://hub/commit/1"


def test_push_model_to_hub_refuses_a_folder_that_is_not_a_model(tmp_path: Path):
    from synthaug.errors import SynthaugError

    with pytest.raises(SynthaugError, match="not a synthaug model folder"):
        push_model_to_hub(tmp_path, "me/nothing")


# --------------------------------------------------------------------------------------------- Lightning loggers


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory) -> Path:
    """The smoke recipe trained with TensorBoard and MLflow beside the CSV log, a sample grid every 10 steps."""
    from helpers import SMOKE, invoke

    run = tmp_path_factory.mktemp("loggers") / "run"
    result = invoke("train", SMOKE, "--out", run, "--set", "train.logger=[tensorboard, mlflow]",
                    "--set", "train.sample_every=10")
    assert result.exit_code == 0, result.output
    return run


def test_tensorboard_gets_the_loss_the_learning_rate_and_the_sample_grids(logged_run: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list((logged_run / "logs" / "tensorboard").glob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file"
    acc = EventAccumulator(str(events[0].parent), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    loss = next(t for t in tags["scalars"] if "loss" in t)
    assert len(acc.Scalars(loss)) >= 2 and any(t.startswith("lr") for t in tags["scalars"])
    assert "samples" in tags["images"] and [e.step for e in acc.Images("samples")] == [10, 20]
    assert (logged_run / "logs" / "metrics.csv").exists()  # the CSV log the report reads is still written


def test_mlflow_gets_a_run_with_the_recipe_as_hyperparameters(logged_run: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(logged_run / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("smoke")
    (run,) = client.search_runs([experiment.experiment_id])
    params = run.data.params
    assert params["train/max_steps"] == "20" and params["seed"] == "0" and "mlflow" in params["train/logger"]
    assert any("loss" in k for k in run.data.metrics)
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "samples")]
    assert artifacts == ["samples/step-000010.png", "samples/step-000020.png"]


def test_weights_and_biases_logs_offline(tmp_path: Path, monkeypatch):
    pytest.importorskip("wandb")  # an optional extra; the dev install has it
    from helpers import SMOKE, invoke

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    result = invoke("train", SMOKE, "--out", run, "--set", "train.logger=wandb", "--set", "train.max_steps=10")
    assert result.exit_code == 0, result.output
    offline = list((run / "wandb").glob("offline-run-*"))
    assert offline and list(offline[0].glob("*.wandb")), "no offline W&B run"


def test_a_missing_logger_package_is_one_line_with_the_extra_to_install(tmp_path: Path, monkeypatch):
    import importlib.util

    from helpers import SMOKE, assert_one_line, invoke

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    result = invoke("train", SMOKE, "--out", tmp_path / "run", "--set", "train.logger=[tensorboard, mlflow]")
    assert_one_line(result, 2, "train.logger=mlflow", 'pip install "synthaug[mlflow]"')
    assert not (tmp_path / "run").exists()  # refused before anything was written
