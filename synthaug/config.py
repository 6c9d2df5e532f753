"""Recipe schema: the typed sections of a recipe, their validation, and loading and saving a recipe.

A recipe is YAML validated once, at the edge, into typed pydantic models; inner code trusts it.
Every key has a default, so a recipe of just ``data.source`` is valid. Unknown keys are errors that
name the closest valid key, because a silently ignored typo (``train.max_step``) wastes a run.
Reading the YAML itself (its bounds, ``--set`` overrides) is ``synthaug.recipe_yaml``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from synthaug.errors import SynthaugError, did_you_mean, shorten
from synthaug.recipe_yaml import apply_overrides, read_yaml
from synthaug.runs import RECIPE_FILE

# Keys and choices are short words, where one slip costs a large share of the letters; difflib's 0.6
# would miss some of them.
KEY_CUTOFF = 0.5


class _Section(BaseModel):
    # .inf and .nan are valid YAML floats but no valid setting: an infinite lr or guidance gives NaN weights
    # or black images with exit code 0.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class SubsetConfig(_Section):
    per_class: int | None = Field(None, ge=1, description="keep at most this many training images per class")
    imbalance: float | None = Field(None, ge=1.0, description="long-tail factor n_max/n_min: class k (in "
                                                              "label order) keeps n_max * "
                                                              "imbalance^(-k/(K-1)) images, at least 1; "
                                                              "simulates the rare classes users have")


class DataConfig(_Section):
    source: str = Field("builtin:digits", description="the real images: builtin:digits, imagefolder:DIR (one "
                                                      "sub-folder per class), hf:PATH_OR_ID (a saved or Hub "
                                                      "datasets dataset) or csv:FILE (image file paths and "
                                                      "labels)")
    image_column: str = Field("image", description="the image column of an hf: source, or of a csv: source "
                                                   "(file paths relative to the CSV)")
    label_column: str = Field("label", description="the class column (names or ids) of an hf: or csv: source")
    test_source: str | None = Field(None, description="separate test data with the training classes (same "
                                                      "schemes as source); null = hold out test_fraction of "
                                                      "source")
    test_fraction: float = Field(0.25, gt=0.0, lt=1.0, description="share of each class held out as the test "
                                                                   "split (seeded, before subset) when "
                                                                   "test_source is null")
    image_size: int = Field(16, ge=4, le=1024, description="side in pixels every image is fitted to (shorter "
                                                           "side resized, then centre-cropped to a square)")
    channels: Literal[1, 3] = Field(1, description="1 (grey) or 3 (RGB); every image is converted")
    subset: SubsetConfig = Field(SubsetConfig(), description="simulate scarcity in the training split (a cap "
                                                             "per class, a long tail); the test split is "
                                                             "held out first, so it keeps every class at its "
                                                             "natural size")
    train_test_duplicates: Literal["drop", "keep"] = Field(
        "drop", description="images whose decoded pixels are in both splits: drop takes them out of the test "
                            "split, so no test image was seen in training; keep leaves them. Either way they "
                            "are counted (synthaug data, metrics.json dataset.duplicates_train_test)")

    @field_validator("source", "test_source")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return value
        scheme = value.split(":", 1)[0]
        if ":" not in value or scheme not in SOURCE_SCHEMES:
            raise ValueError(
                f"unknown source {value!r}; use one of {', '.join(s + ':...' for s in SOURCE_SCHEMES)}"
            )
        return value


SOURCE_SCHEMES = ("builtin", "imagefolder", "hf", "csv")


class LoraConfig(_Section):
    """LoRA adapters on the text-to-image UNet's attention layers (peft), as diffusers' train_text_to_image_lora.py."""

    rank: int = Field(8, ge=1, le=1024, description="rank of each LoRA update (the adapters' inner "
                                                    "dimension)")
    alpha: float = Field(8.0, gt=0, description="LoRA scale: the updates are multiplied by alpha / rank")
    targets: list[str] = Field(["to_q", "to_k", "to_v", "to_out.0"], min_length=1,
                               description="module names inside the UNet's attention blocks to adapt")


# Keys that only the pixel backbone (a UNet2DModel trained here) reads, and those only latent-text reads.
# (prediction_type: a latent-text model predicts what its base's scheduler says.)
PIXEL_ONLY_KEYS = ("block_out_channels", "layers_per_block", "attention", "prediction_type", "sample_size",
                   "reset_class_embedding")
TEXT_ONLY_KEYS = ("lora", "class_tokens", "prompt", "class_prompts", "negative_prompt", "trust_pickles")


class ModelConfig(_Section):
    backbone: Literal["pixel", "latent-text"] = Field(
        "pixel", description="pixel: a class-conditional UNet2DModel on pixels, trained here (or fine-tuned "
                             "from base); latent-text: a pretrained text-to-image pipeline (base, "
                             "StableDiffusionPipeline layout) fine-tuned with LoRA and class tokens")
    base: str | None = Field(None, description="model to start from: for pixel, a diffusers UNet2DModel "
                                               "folder, a pipeline folder holding unet/, or a Hub id (null = "
                                               "from scratch); for latent-text, a pipeline folder or Hub id "
                                               "(required)")
    block_out_channels: list[int] = Field(
        [32, 64, 64], min_length=1, description="channels of each UNet block, highest resolution first; each "
                                                "block after the first halves the resolution (pixel)")
    layers_per_block: int = Field(1, ge=1, le=4, description="ResNet layers in each UNet block (pixel)")
    attention: list[bool] = Field(
        [False, False, True], min_length=1, description="one flag per block_out_channels entry: whether that "
                                                        "block has self-attention (pixel)")
    prediction_type: Literal["epsilon", "v_prediction"] = Field(
        "epsilon", description="what the UNet learns to predict: the noise (epsilon) or v (v_prediction) "
                               "(pixel)")
    sample_size: int | None = Field(
        None, ge=4, le=1024, description="the diffusion model's own resolution in pixels; null = "
                                         "data.image_size. A smaller one trains and samples faster; samples "
                                         "are fitted to data.image_size as real images are (pixel)")
    reset_class_embedding: bool = Field(False, description="start the class embedding afresh when model.base "
                                                           "was trained with another number of classes; an "
                                                           "explicit opt-in (pixel)")
    lora: LoraConfig = Field(LoraConfig(), description="LoRA adapters on the base UNet's attention layers "
                                                       "(latent-text)")
    class_tokens: int = Field(1, ge=1, le=16, description="learned token vectors per class (textual inversion), "
                                                          "initialised from the class name's words")
    prompt: str = Field("a photo of a {name}", min_length=1, max_length=1000,
                        description="caption template; {name} becomes the class's tokens")
    class_prompts: dict[str, str] = Field({}, description="per-class caption templates, by class name")
    negative_prompt: str | None = Field(
        None, max_length=1000, description="caption that guidance steers away from when sampling; null = the "
                                           "empty caption (latent-text)")
    trust_pickles: bool = Field(False, description="allow a base whose weights are pickles (.bin/.ckpt); "
                                                    "loading a pickle can run code, so only for files you trust")

    @model_validator(mode="after")
    def _backbone_keys(self) -> ModelConfig:
        wrong = PIXEL_ONLY_KEYS if self.backbone == "latent-text" else TEXT_ONLY_KEYS
        # A saved recipe.yaml lists every key at its default: only a changed value is a conflict.
        given = [k for k in wrong if getattr(self, k) != type(self).model_fields[k].default]
        if given:
            other = "pixel" if self.backbone == "latent-text" else "latent-text"
            raise ValueError(f"{given[0]} does not apply to backbone {self.backbone}; remove model.{given[0]} "
                             f"or set model.backbone: {other}")
        if self.backbone == "latent-text" and not self.base:
            raise ValueError("backbone latent-text needs a base; set model.base to a text-to-image pipeline folder "
                             "or Hub id (e.g. stable-diffusion-v1-5/stable-diffusion-v1-5)")
        for where, template in [("model.prompt", self.prompt), *((f"model.class_prompts.{k}", v)
                                                                  for k, v in self.class_prompts.items())]:
            if "{name}" not in template:
                raise ValueError(f"{where} {template!r} has no {{name}}; the class's tokens go there, e.g. "
                                 "'a photo of a {name}'")
        return self

    @model_validator(mode="after")
    def _same_length(self) -> ModelConfig:
        if len(self.attention) != len(self.block_out_channels):
            raise ValueError(
                f"model.attention has {len(self.attention)} entries but model.block_out_channels has "
                f"{len(self.block_out_channels)}; give one attention flag per block"
            )
        if any(c < 1 for c in self.block_out_channels):
            raise ValueError("model.block_out_channels must be positive")
        return self


MINUTES_PER_YEAR = 60 * 24 * 365

# albumentations parameters are numbers, flags, strings and small tuples or mappings of them
# (``Affine: {translate_px: {x: [-1, 1]}, scale: [0.9, 1.1]}``); these bound everything else out.
AUGMENT_MAX_ITEMS = 64
AUGMENT_MAX_DEPTH = 3
AUGMENT_MAX_STRING = 256


class KeyPathError(ValueError):
    """A validation error deeper than the field pydantic reports: ``path`` continues the field's key path."""

    def __init__(self, path: tuple, message: str):
        super().__init__(message)
        self.path = path


def _check_augment_value(value: Any, path: tuple, depth: int) -> None:
    """Refuse an augment parameter that is not a finite number, bool, string or None, or a small list or
    mapping of those (at most AUGMENT_MAX_DEPTH levels, AUGMENT_MAX_ITEMS entries each)."""
    if value is None or isinstance(value, (bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise KeyPathError(path, f"{value} is not a finite number; give a finite value")
        return
    if isinstance(value, str):
        if len(value) > AUGMENT_MAX_STRING:
            raise KeyPathError(path, f"a string of {len(value)} characters; a parameter takes at most "
                                     f"{AUGMENT_MAX_STRING}")
        return
    if not isinstance(value, (list, tuple, dict)):
        raise KeyPathError(path, f"{type(value).__name__} values are not transform parameters; use numbers, "
                                 "true/false, strings, null, or lists and mappings of them")
    if depth > AUGMENT_MAX_DEPTH:
        raise KeyPathError(path, f"nested deeper than {AUGMENT_MAX_DEPTH} levels; "
                                 "transform parameters are values or small lists and mappings of them")
    if len(value) > AUGMENT_MAX_ITEMS:
        raise KeyPathError(path, f"{len(value)} entries; a transform parameter takes at most {AUGMENT_MAX_ITEMS}")
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        if isinstance(value, dict) and not isinstance(key, str):
            raise KeyPathError(path, f"key {key!r} is not a string; name parameters with strings")
        _check_augment_value(item, (*path, key), depth + 1)


class ConditionedAugmentConfig(_Section):
    """Non-leaking augmentation of the diffusion model's training images (Karras et al. 2020, 2022).

    Each transform is applied to an image with probability ``p``; the UNet is told which transforms (their
    parameters are a conditioning input added to the class embedding) and samples are drawn with "no
    transform", so the samples do not inherit the augmentation while the rare classes are no longer copied.
    """

    p: float = Field(0.0, ge=0.0, le=1.0, description="probability of each transform per image; 0 = off")
    xflip: bool = Field(True, description="mirror left-right (half the time, when chosen)")
    scale: float = Field(0.2, ge=0.0, le=1.0, description="std of the log2 zoom factor")
    rotate: float = Field(10.0, ge=0.0, le=180.0, description="largest rotation, degrees")
    translate: float = Field(0.125, ge=0.0, le=0.5, description="std of the shift, a fraction of the image side")
    color: float = Field(0.1, ge=0.0, le=1.0, description="std of brightness shift and log2 contrast "
                                                          "(and log2 saturation with 3 channels)")


class CBDMConfig(_Section):
    """Class-balancing diffusion (Qin et al., CVPR 2023): pulls every class's prediction toward that of a
    uniformly drawn class at the same noisy image, moving head-class knowledge to the tail. Costs a second
    UNet forward pass per step."""

    weight: float = Field(0.0, ge=0.0, le=100.0, description="tau, the regulariser's weight at t = T "
                                                             "(it grows linearly with t); 0 = off")
    gamma: float = Field(0.25, ge=0.0, le=10.0, description="weight of the commitment term that pulls the "
                                                            "drawn class's prediction back")


class KeepBestConfig(_Section):
    """Early stopping on novelty: every ``every`` steps, sample ``per_class`` images of each rare class (fewer
    than ``few`` real training images; the rarest third if none is) from the EMA weights and score the share
    that a judge trained on the real split recognises *and* that is no near-copy (the report's memorization
    test). The model saved is the best check's EMA weights, not the last: the step budget stops mattering
    once it passes the point where the rare classes start to be copied."""

    every: int | None = Field(None, ge=1, description="steps between checks; null = off (the last weights)")
    per_class: int = Field(16, ge=1, le=256, description="samples per rare class per check")
    few: int = Field(20, ge=1, description="classes with fewer real training images are the rare ones")


class TrainConfig(_Section):
    max_steps: int = Field(3000, ge=1, description="optimizer steps of diffusion training")
    max_minutes: float | None = Field(
        None, gt=0, le=MINUTES_PER_YEAR, description="wall-clock budget in minutes: training stops cleanly "
                                                     "and still saves a usable model; null = no limit")
    batch_size: int = Field(64, ge=1, description="training images per optimizer step on each process")
    lr: float = Field(1.0e-3, gt=0, le=1.0, description="peak AdamW learning rate (linear warm-up, then "
                                                        "cosine decay)")
    warmup_steps: int = Field(100, ge=0, description="steps of linear learning-rate warm-up (at most a tenth "
                                                     "of max_steps)")
    ema_decay: float = Field(0.999, ge=0.0, lt=1.0, description="decay of the exponential moving average of "
                                                                "the weights, which is what is saved and "
                                                                "sampled; 0 = no EMA (the raw weights)")
    label_dropout: float = Field(0.1, ge=0.0, le=1.0, description="share of training images whose label "
                                                                  "becomes the null class (latent-text: the "
                                                                  "null caption), which classifier-free "
                                                                  "guidance samples against")
    snr_gamma: float | None = Field(5.0, gt=0, description="gamma of min-SNR loss weighting (Hang et al. "
                                                           "2023); null = off")
    class_balance: float = Field(
        0.5, ge=0.0, le=1.0, description="class c is drawn into batches with weight n_c^-class_balance: 0 = "
                                         "natural frequencies, 1 = fully balanced, which makes the model "
                                         "copy tail images (docs/BENCHMARKS.md)")
    augment: list[dict[str, dict[str, Any] | None]] = Field(
        [], max_length=AUGMENT_MAX_ITEMS, description="albumentations transforms applied to the training "
                                                      "images, a list of {TransformName: {param: value}} "
                                                      "(pixel)")
    conditioned_augment: ConditionedAugmentConfig = Field(
        ConditionedAugmentConfig(), description="non-leaking augmentation: transforms the UNet is told "
                                                "about, so samples do not inherit them (pixel)")
    cbdm: CBDMConfig = Field(CBDMConfig(), description="class-balancing diffusion: a regulariser that moves "
                                                       "head-class knowledge to the tail classes (pixel)")
    keep_best: KeepBestConfig = Field(
        KeepBestConfig(), description="early stopping on novelty: keep the weights whose rare-class samples "
                                      "are best recognised and not copied, not the last ones (pixel)")
    freeze: list[Literal["down_blocks", "mid_block"]] = Field(
        [], description="UNet parts left untrained, e.g. when fine-tuning model.base (pixel)")
    checkpoint_every: int = Field(500, ge=1, description="steps between Lightning checkpoints in "
                                                         "RUN_DIR/checkpoints, which --resume continues from")
    gradient_checkpointing: bool = Field(False, description="recompute the UNet's activations in the backward "
                                                            "pass instead of keeping them: less GPU memory (SD "
                                                            "at 512 px on a 24 GB card), about 20-30% slower")
    sample_every: int | None = Field(None, ge=1, description="steps between grids of samples (one row per "
                                                             "class) saved to RUN_DIR/logs/samples and the "
                                                             "loggers; null = none (pixel)")
    logger: list[Literal["csv", "tensorboard", "mlflow", "wandb"]] = Field(
        ["csv"], description="Lightning loggers, one or a list: csv (always written; the report reads it), "
                             "tensorboard, mlflow, wandb (offline unless WANDB_MODE says otherwise)")

    @field_validator("logger", mode="before")
    @classmethod
    def _one_or_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("augment")
    @classmethod
    def _one_transform_per_item(cls, value: list[dict]) -> list[dict]:
        for i, item in enumerate(value):
            if len(item) != 1:
                raise ValueError("each train.augment item is one {TransformName: {params}} mapping")
            (name, params), = item.items()
            for key, param in (params or {}).items():
                _check_augment_value(param, (i, name, key), 1)
        return value


class QuotaConfig(_Section):
    balance: Literal["max"] | None = Field(None, description="max: top every class up to the largest class's "
                                                             "real training count")
    per_class: int | None = Field(None, ge=0, description="synthetic images for every class")
    total: int | None = Field(None, ge=0, description="synthetic images in all, split as evenly as possible "
                                                      "over the classes (earlier classes take the remainder)")
    ratio: float | None = Field(None, ge=0, le=1000, description="synthetic images per class as a multiple "
                                                                 "of its real training count (rounded)")
    counts: dict[str, int] | None = Field(None, description="synthetic images per class, by class name; "
                                                            "classes not named get none")

    @model_validator(mode="after")
    def _exactly_one(self) -> QuotaConfig:
        given = [k for k in ("balance", "per_class", "total", "ratio", "counts") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "generate.quota needs exactly one of balance: max, per_class: N, total: N, ratio: R, "
                f"counts: {{class: N}} (got {', '.join(given) or 'none'})"
            )
        if self.counts is not None and any(v < 0 for v in self.counts.values()):
            raise ValueError("generate.quota.counts must be non-negative")
        return self


class FilterConfig(_Section):
    min_confidence: float | None = Field(
        None, ge=0.0, le=1.0, description="drop samples that a judge trained on the real training split does "
                                          "not give their label with this probability; null = off")
    min_novelty: float | None = Field(
        None, gt=0.0, lt=1.0, description="drop near-copies: samples whose distance to the nearest training "
                                          "image, divided by that to the second nearest, is below this (the "
                                          "report's memorization test; evaluate.memorization_threshold is "
                                          "1/3); null = off")
    max_tries: int = Field(4, ge=1, description="refill rounds before giving up on a class's quota")


class FeedbackConfig(_Section):
    """Feedback-guided selection (after Askari-Hemmat et al. 2024): draw ``candidates`` samples per wanted
    image and keep the one a classifier trained on the real training split finds hardest, so the synthetic
    set adds what the real set lacks rather than more of what it has."""

    criterion: Literal["entropy", "loss"] | None = Field(
        None, description="entropy: the judge's predictive entropy; loss: its cross-entropy on the sample's "
                          "label; null = off (one sample per image)")
    candidates: int = Field(4, ge=2, le=64, description="samples drawn per kept image")


Sampler = Literal["dpmpp", "dpmpp-ode", "ddim", "ddpm", "euler", "unipc"]
SAMPLERS: tuple[str, ...] = get_args(Sampler)


class GenerateConfig(_Section):
    quota: QuotaConfig = Field(
        QuotaConfig(balance="max"), description="synthetic images per class: exactly one of balance: max, "
                                                "per_class: N, total: N, ratio: R, counts: {class: N}")
    sampler: Sampler = Field("dpmpp", description="diffusers scheduler that denoises: dpmpp (DPM-Solver++, "
                                                  "SDE form), dpmpp-ode (its deterministic form), ddim, "
                                                  "ddpm, euler, unipc")
    steps: int = Field(20, ge=1, le=1000, description="denoising steps per image")
    # Past ~20 samples saturate; 50 leaves room to experiment and catches a slip like 2000 for 2.0.
    guidance: float = Field(2.0, ge=0.0, le=50.0, description="classifier-free guidance scale: 0 = "
                                                              "unconditional, 1 = plain class-conditional "
                                                              "sampling, larger pushes further toward the "
                                                              "class")
    guidance_interval: tuple[float, float] = Field(
        (0.0, 1.0), description="[start, stop]: the share of the denoising steps that apply guidance, counted from "
                                "the noisiest (diffusers' ClassifierFreeGuidance start/stop); the other steps use "
                                "the class-conditional prediction alone, at half the cost")
    mode: Literal["sample", "variation"] = Field(
        "sample", description="sample: from noise; variation: noise a real training image of the class to "
                              "strength, then denoise it (SDEdit)")
    strength: float = Field(0.6, gt=0.0, le=1.0, description="variation mode: how far a real image is "
                                                             "noised, as a share of the schedule (1 = all "
                                                             "the way)")
    batch_size: int = Field(256, ge=1, description="images denoised together on each process; the images do "
                                                   "not depend on it")
    filter: FilterConfig = Field(FilterConfig(), description="drop unrecognised or copied samples and refill "
                                                             "their quota with new seeds")
    feedback: FeedbackConfig = Field(FeedbackConfig(), description="feedback-guided selection: keep the "
                                                                   "hardest of several candidates per image")
    formats: list[Literal["hf", "parquet", "imagefolder"]] = Field(
        ["hf"], description="formats to write: hf (synthetic/, for datasets.load_from_disk; always written), "
                            "parquet (synthetic/parquet/), imagefolder (synthetic/imagefolder/CLASS/*.png)")
    precision: Literal["auto", "32-true", "bf16-mixed"] = Field(
        "auto", description="sampling precision: auto (bf16 autocast where the hardware computes bf16 natively: a "
                            "CPU with avx512_bf16/amx_bf16, a GPU with bf16; float32 elsewhere; the choice is in "
                            "generation.json and the dataset card), 32-true or bf16-mixed")

    @field_validator("guidance_interval")
    @classmethod
    def _an_interval(cls, value: tuple[float, float]) -> tuple[float, float]:
        start, stop = value
        if not 0.0 <= start < stop <= 1.0:
            raise ValueError(f"generate.guidance_interval {list(value)} must be [start, stop] with "
                             "0 <= start < stop <= 1 (shares of the denoising steps; [0, 1] guides every step)")
        return value


def recipe_schema() -> dict[str, Any]:
    """The recipe's JSON Schema (``synthaug schema``): every section and key with its description, unknown keys
    refused (``additionalProperties: false``), for editors and for checking recipes outside synthaug."""
    schema = Recipe.model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "synthaug recipe",
            **{k: v for k, v in schema.items() if k != "title"}}


def lightning_choices(key: str) -> tuple[str, ...]:
    """The values the installed Lightning's ``Trainer`` accepts for ``compute.KEY`` (its registries, so a
    strategy a plugin registers counts). Imported only for a value other than the default: Lightning is slow
    to import, and ``synthaug data`` does not need it."""
    if key == "accelerator":
        from pytorch_lightning.accelerators import AcceleratorRegistry

        return ("auto", "gpu", *sorted(AcceleratorRegistry.available_accelerators()))
    if key == "strategy":
        from pytorch_lightning.strategies import StrategyRegistry

        return ("auto", *sorted(StrategyRegistry.available_strategies()))
    from lightning_fabric.connector import _PRECISION_INPUT_STR, _PRECISION_INPUT_STR_ALIAS

    return ("auto", *get_args(_PRECISION_INPUT_STR), *get_args(_PRECISION_INPUT_STR_ALIAS))  # auto: synthaug's


class ComputeConfig(_Section):
    accelerator: str = Field("auto", description="Lightning accelerator: auto (a GPU if there is one), cpu, "
                                                 "gpu, cuda, mps, ...")
    devices: int | Literal["auto"] | list[int] = Field(
        1, description="devices per node: a count (-1 = all), auto, or a list of device ids like [0, 1]")
    num_nodes: int = Field(1, ge=1, description="machines the run spans (Lightning detects SLURM and "
                                                "torchrun)")
    strategy: str = Field("auto", description="Lightning strategy, e.g. ddp to train and generate across "
                                              "devices and nodes")
    precision: str = Field("32-true", description="Lightning Trainer precision, e.g. 32-true, bf16-mixed, "
                                                  "16-mixed; auto is bf16-mixed where the hardware computes bf16 "
                                                  "natively, else 32-true")

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_as_text(cls, value: Any) -> Any:
        # Lightning takes 16, 32, 64 as numbers too; YAML reads `precision: 32` as one.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("accelerator", "strategy", "precision")
    @classmethod
    def _lightning_accepts(cls, value: str, info) -> str:
        if value == cls.model_fields[info.field_name].default:
            return value
        choices = lightning_choices(info.field_name)
        # Lightning lower-cases a strategy name, not an accelerator or precision name.
        if (value.lower() if info.field_name == "strategy" else value) not in choices:
            raise ValueError(f"unknown {info.field_name} {value!r}{did_you_mean(value, choices, cutoff=KEY_CUTOFF)}; "
                             f"choose one of {', '.join(choices)}")
        return value

    @field_validator("devices", mode="before")
    @classmethod
    def _device_count_or_ids(cls, value: Any) -> Any:
        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        if value == "auto" or (is_int(value) and (value >= 1 or value == -1)):
            return value
        if (isinstance(value, list) and value and all(is_int(v) and v >= 0 for v in value)
                and len(set(value)) == len(value)):
            return value
        raise ValueError(f"{value!r} is not a device count; give a number of devices (e.g. 2; -1 = all), "
                         "auto, or a list of distinct device ids like [0, 1]")


ARMS = (
    "real",
    "classic",
    "oversample",
    "oversample+classic",
    "smote",
    "synthetic",
    "real+synthetic",
    "real+synthetic+classic",
    # How the classifier uses the synthetic set, beside mixing (same step budget as every arm):
    # pre-train on it then fine-tune on real; or train on real+synthetic then re-train the last layer on
    # class-balanced real rows (SYNAuG, Ye-Bin et al. 2023).
    "synthetic-then-real",
    "synthetic-then-real+classic",
    "real+synthetic-then-head",
    "real+synthetic-then-head+classic",
)
# What `evaluate.arms` runs unless a recipe lists arms: the mixing arms and every baseline.
DEFAULT_ARMS = ARMS[:8]


class EvaluateConfig(_Section):
    classifier: Literal["cnn", "resnet18"] = Field("cnn", description="the classifier every arm trains: cnn "
                                                                      "(a small residual CNN, fast on a CPU) "
                                                                      "or resnet18 (for 32 px+ RGB images)")
    steps: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="optimizer steps of every arm's classifier, the same for every arm; auto = "
                            "scaled to the real training set (50 passes, 300 to 2,000 steps)")
    max_minutes: float | None = Field(
        None, gt=0, le=MINUTES_PER_YEAR, description="budget in minutes the judge and every arm run share: "
                                                     "all steps shrink alike when the runs would not fit; "
                                                     "null = no limit")
    batch_size: int = Field(64, ge=1, description="classifier training batch size")
    lr: float = Field(2.0e-3, gt=0, le=1.0, description="peak learning rate of the classifier (AdamW, "
                                                        "one-cycle schedule)")
    # The default 5 seeds: docs/BENCHMARKS.md "statistics".
    seeds: list[int] = Field([0, 1, 2, 3, 4], description="every arm is trained and tested once per seed; 5 "
                                                          "because the paired interval's t quantile falls "
                                                          "from 4.3 (3 seeds) to 2.8")
    arms: list[str] = Field(list(DEFAULT_ARMS), description="ways of composing the classifier's training "
                                                            "data to compare: real, classic, oversample, "
                                                            "smote, synthetic, real+synthetic, their "
                                                            "+classic and -then- forms; default: the mixing "
                                                            "arms and every baseline")
    workers: int = Field(2, ge=1, description="parallel one-thread worker processes for arms x seeds")
    flips: bool = Field(False, description="classic augmentation also flips images left-right; off as digits "
                                           "and text must not be flipped (natural images may)")
    memorization_threshold: float = Field(
        1 / 3, gt=0, lt=1, description="a synthetic image counts as memorized when its distance to the "
                                       "nearest training image, divided by that to the second nearest, is "
                                       "below this")
    judge_steps: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="optimizer steps of the judge (a classifier trained on all real training images "
                            "that scores samples); auto = as many as steps")
    synthetic_weight: float = Field(1.0, gt=0.0, le=1.0, description="loss weight of a synthetic row next to "
                                                                     "a real one in the real+synthetic arms "
                                                                     "(He et al. 2023)")

    @field_validator("arms")
    @classmethod
    def _known_arms(cls, value: list[str]) -> list[str]:
        for arm in value:
            if arm not in ARMS:
                raise ValueError(f"unknown arm {arm!r}{did_you_mean(arm, ARMS, cutoff=KEY_CUTOFF)}; arms are {', '.join(ARMS)}")
        return value

    @field_validator("seeds")
    @classmethod
    def _some_seeds(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("evaluate.seeds needs at least one seed")
        return value


class Recipe(_Section):
    name: str = Field("synthaug", description="the run's name; the run folder is runs/<name> unless "
                                              "output_dir is set")
    seed: int = Field(0, ge=0, description="seed of the split, the subset, the initial weights, the training "
                                           "batches and each image's noise")
    output_dir: str | None = Field(None, description="the run folder, where everything a run writes goes; "
                                                     "null = runs/<name>")
    data: DataConfig = Field(DataConfig(), description="the real images: source, split, size and simulated "
                                                       "scarcity")
    model: ModelConfig = Field(ModelConfig(), description="the diffusion model: backbone and architecture, "
                                                          "or a pretrained base to fine-tune")
    train: TrainConfig = Field(TrainConfig(), description="training the diffusion model")
    generate: GenerateConfig = Field(GenerateConfig(), description="how many synthetic images each class "
                                                                   "gets and how they are sampled, filtered "
                                                                   "and written")
    compute: ComputeConfig = Field(ComputeConfig(), description="Lightning Trainer settings every stage uses")
    evaluate: EvaluateConfig = Field(EvaluateConfig(), description="the downstream test: classifier arms "
                                                                   "with and without synthetic data, over "
                                                                   "several seeds")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not value or "/" in value or "\\" in value or value in (".", "..") or "\x00" in value:
            raise ValueError(f"name {shorten(value)} must be a plain name (no path separators)")
        if len(value.encode()) > 255:  # it names the default run folder; file systems take 255 bytes
            raise ValueError(f"name {shorten(value)} is {len(value.encode())} bytes, longer than a folder name "
                             "may be (255); shorten it")
        return value

    @field_validator("output_dir")
    @classmethod
    def _some_folder(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            # An empty folder name would quietly mean runs/<name>, or the current folder to a path join.
            raise ValueError(f"{value!r} is an empty folder name; give a folder, or null for runs/<name>")
        return value

    @model_validator(mode="after")
    def _pixel_levers(self) -> Recipe:
        if self.model.backbone != "latent-text":
            return self
        t = self.train
        # each: whether it is set, and why the latent-text backbone cannot honour it
        levers = {
            "train.conditioned_augment": (t.conditioned_augment.p > 0, "it conditions the pixel UNet's class embedding"),
            "train.cbdm": (t.cbdm.weight > 0, "it regularises the pixel UNet's class embeddings"),
            "train.keep_best": (t.keep_best.every is not None, "its checks sample the pixel UNet"),
            "train.sample_every": (t.sample_every is not None, "its grids sample the pixel UNet"),
            "train.freeze": (bool(t.freeze), "the base UNet is frozen already and LoRA trains"),
            "train.augment": (bool(t.augment), "the images' VAE latents are encoded once"),
        }
        given = [(key, why) for key, (on, why) in levers.items() if on]
        if given:
            key, why = given[0]
            raise ValueError(f"{key} does not apply to backbone latent-text ({why}); remove it or set "
                             "model.backbone: pixel")
        return self

    @property
    def model_size(self) -> int:
        """The diffusion model's resolution: ``model.sample_size``, or ``data.image_size`` when unset."""
        return self.model.sample_size or self.data.image_size

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path("runs") / self.name

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def digest(self) -> str:
        """A short hash of the resolved recipe, for provenance in dataset cards."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------------------------- loading


def _model_at(path: tuple) -> type[BaseModel] | None:
    """The pydantic model class found at a key path of the recipe, or None."""
    model: Any = Recipe
    for part in path:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        model = model.model_fields[part].annotation
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _format_error(err: dict) -> str:
    deeper = err.get("ctx", {}).get("error")
    loc = tuple(str(p) for p in (*err["loc"], *getattr(deeper, "path", ())))
    path = ".".join(loc)
    if err["type"] == "extra_forbidden":
        parent = _model_at(loc[:-1])
        prefix = "".join(f"{p}." for p in loc[:-1])
        hint = did_you_mean(loc[-1], parent.model_fields, cutoff=KEY_CUTOFF, prefix=prefix) if parent else ""
        where = path
        if not hint:
            valid = ", ".join(parent.model_fields) if parent else ""
            hint = f"; valid keys here: {valid}" if valid else ""
        return f"{where}: unknown key{hint}"
    message = err["msg"].removeprefix("Value error, ")
    if path:
        return f"{path}: {message} (got {shorten(err.get('input'))})" if err["type"] != "value_error" else f"{path}: {message}"
    return message


def validate_recipe(raw: dict[str, Any], origin: str = "recipe") -> Recipe:
    if not isinstance(raw, dict):
        raise SynthaugError(f"{origin}: a recipe must be a YAML mapping of keys, got {type(raw).__name__}")
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = len(exc.errors()) - 1
        suffix = f" (and {more} more problem{'s' * (more > 1)})" if more else ""
        raise SynthaugError(f"{origin}: {_format_error(first)}{suffix}") from None


def load_recipe(
    path_or_run_dir: str | Path | dict | Recipe, overrides: list[str] | tuple[str, ...] = (),
    out: str | Path | None = None,
) -> Recipe:
    """Load a recipe file, or the ``recipe.yaml`` of a run directory, with ``--set`` overrides applied; a recipe
    given as a dict or a ``Recipe`` is validated and overridden the same way.

    Given a run directory, its ``output_dir`` is that directory, wherever it has moved since.
    """
    if isinstance(path_or_run_dir, (dict, Recipe)):
        given = path_or_run_dir
        raw = given.model_dump(mode="json") if isinstance(given, Recipe) else copy.deepcopy(given)
        raw = apply_overrides(raw, list(overrides))
        if out is not None:
            raw["output_dir"] = str(out)
        return validate_recipe(raw)
    path = Path(path_or_run_dir)
    is_run_dir = path.is_dir()
    if is_run_dir:
        if not (path / RECIPE_FILE).is_file():
            raise SynthaugError(f"{path}: a directory without {RECIPE_FILE}; pass a recipe file or a run directory")
        path = path / RECIPE_FILE
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise SynthaugError(f"{path}: a recipe must be a YAML mapping of keys, got {type(raw).__name__}")
    raw = apply_overrides(raw, list(overrides))
    if is_run_dir:
        raw["output_dir"] = str(path.parent)
    if out is not None:
        raw["output_dir"] = str(out)
    return validate_recipe(raw, origin=str(path))


def save_recipe(recipe: Recipe, run_dir: Path) -> Path:
    from synthaug.io import atomic_write_text

    text = yaml.safe_dump(recipe.to_dict(), sort_keys=False)
    return atomic_write_text(run_dir / RECIPE_FILE, text)
