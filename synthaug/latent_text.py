"""The latent-text backbone: a pretrained text-to-image pipeline (Stable Diffusion layout) adapted to the classes.

``model.base`` is read, never changed: training adds LoRA adapters to the UNet's attention layers (Hu et al. 2022,
through peft, as diffusers' ``train_text_to_image_lora.py``) and ``model.class_tokens`` new token vectors per class
to the text encoder (textual inversion, Gal et al. 2023; DA-Fusion, Trabucco et al. 2024), on the VAE latents of
the real images (Rombach et al. 2022), encoded once. The model folder holds only what was trained, in the layouts
diffusers loads (``load_lora_weights``, ``load_textual_inversion``), and ``synthaug.json`` naming the base::

    run/model/
      pytorch_lora_weights.safetensors    the UNet's LoRA weights
      class_tokens/K.safetensors          class K's vectors: {"<synthaug-K>": (class_tokens, dim)}
      synthaug.json                       backbone, base (+ revision or weights hash), classes, prompts, adapter

Class K's caption is its template (``model.class_prompts`` or ``model.prompt``) with ``{name}`` replaced by its
tokens, ``<synthaug-K> <synthaug-K>_1 …`` (diffusers' multi-vector names). Sampling such a model is
``synthaug.latent_text_sampling``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from synthaug import __version__
from synthaug.config import ModelConfig, TrainConfig
from synthaug.diffusion import META_FILE, snr_weights, training_optimizer
from synthaug.errors import SynthaugError, did_you_mean
from synthaug.images import to_model_input, to_uint8
from synthaug.seeds import step_seed

BACKBONE = "latent-text"
COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
WEIGHTED = {"unet": "UNet2DConditionModel", "vae": "AutoencoderKL", "text_encoder": "CLIPTextModel"}
PICKLES = (".bin", ".ckpt", ".pt", ".pth")
LORA_FILE = "pytorch_lora_weights.safetensors"
TOKENS_DIR = "class_tokens"

# --------------------------------------------------------------------------------------------- the base


@contextmanager
def quiet_loading() -> Iterator[None]:
    """Keep diffusers' and transformers' loading bars and notes off the console (a bar per component)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    libraries = (diffusers_logging, transformers_logging)
    saved = [(lib, lib.get_verbosity(), lib.is_progress_bar_enabled()) for lib in libraries]
    for lib, _, _ in saved:
        lib.set_verbosity(logging.ERROR)
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib, level, bars in saved:
            lib.set_verbosity(level)
            if bars:
                lib.enable_progress_bar()


def resolve_base(base: str, trust_pickles: bool, revision: str | None = None) -> Path:
    """``model.base`` → its local pipeline folder, checked (``check_pipeline_folder``). A Hub id is downloaded
    to, or found in, the Hugging Face cache, at ``revision`` (a commit; None: the newest)."""
    path = Path(base).expanduser()
    if not path.exists():
        if base.startswith((".", "/", "~")) or base.count("/") != 1:
            raise SynthaugError(f"model.base={base!r}: no such folder; give a text-to-image pipeline folder or a "
                                "Hub id like stable-diffusion-v1-5/stable-diffusion-v1-5")
        try:
            with quiet_loading():
                from diffusers import StableDiffusionPipeline

                path = Path(StableDiffusionPipeline.download(base, revision=revision, safety_checker=None,
                                                             feature_extractor=None,
                                                             use_safetensors=None if trust_pickles else True))
        except Exception as exc:  # hub errors come in many types; all mean "not here"
            raise SynthaugError(f"model.base={base!r}: not a local folder, and the Hub has no pipeline by that id "
                                f"or cannot be reached ({_first_line(exc)}); give a local pipeline folder") from None
    check_pipeline_folder(path, base, trust_pickles)
    return path


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def check_pipeline_folder(path: Path, base: str, trust_pickles: bool) -> None:
    """Refuse a folder that is not a StableDiffusionPipeline (``model_index.json`` and the five components),
    and pickled weights unless ``model.trust_pickles``."""
    layout = "a text-to-image pipeline folder in the StableDiffusionPipeline layout (model_index.json, " \
             f"{'/, '.join(COMPONENTS)}/)"
    index = path / "model_index.json"
    if not index.is_file():
        raise SynthaugError(f"model.base={base!r}: no model_index.json, so not a diffusers pipeline; give {layout}")
    try:
        listed = json.loads(index.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SynthaugError(f"model.base={base!r}: model_index.json is not valid JSON ({exc}); restore it") from None
    if not isinstance(listed, dict):
        raise SynthaugError(f"model.base={base!r}: model_index.json is not a mapping of components; give {layout}")
    for name in COMPONENTS:
        entry = listed.get(name)
        if not (isinstance(entry, list) and len(entry) == 2 and entry[1]) or not (path / name).is_dir():
            raise SynthaugError(f"model.base={base!r}: no {name}; the latent-text backbone needs {layout}")
    for name, cls in WEIGHTED.items():
        if listed[name][1] != cls:
            raise SynthaugError(f"model.base={base!r}: its {name} is a {listed[name][1]}, not a {cls}; the "
                                "latent-text backbone takes Stable Diffusion 1.x/2.x pipelines")
        files = [f for f in (path / name).iterdir() if f.is_file()]
        if any(f.name.endswith(".safetensors") for f in files):
            continue
        pickles = sorted(f.name for f in files if f.suffix in PICKLES)
        if not pickles:
            raise SynthaugError(f"model.base={base!r}: {name}/ holds no weights; restore the pipeline folder")
        if not trust_pickles:
            raise SynthaugError(f"model.base={base!r}: {name}/{pickles[0]} holds pickled weights, and loading a pickle "
                                "can run code; convert the pipeline to safetensors, or set model.trust_pickles: true "
                                "if you trust the files")


def base_revision(path: Path) -> str:
    """What names the base's weights: the Hub commit of a cached snapshot (``…/snapshots/<commit>``), else a
    SHA-256 digest over the weight files it loads from (not variants such as ``*.fp16.safetensors``)."""
    import hashlib

    from synthaug.io import file_digest

    if path.parent.name == "snapshots" and _is_commit(path.name):
        return path.name
    h = hashlib.sha256()
    for name in WEIGHTED:
        plain = [f for f in (path / name).iterdir() if "." not in f.stem]
        files = sorted(f for f in plain if f.suffix == ".safetensors") or sorted(f for f in plain if f.suffix in PICKLES)
        for f in files:
            h.update(f"{name}/{f.name}:{file_digest(f)}\n".encode())
    return f"sha256:{h.hexdigest()[:16]}"


def _is_commit(text: str) -> bool:
    return re.fullmatch(r"[0-9a-f]{40}", text) is not None


def load_pipeline(path: Path, base: str, trust_pickles: bool):
    """The ``StableDiffusionPipeline`` of a checked folder (``resolve_base``), on the CPU in float32."""
    with quiet_loading():  # importing the pipeline has transformers log notes about optional packages
        from diffusers import StableDiffusionPipeline

    try:
        with quiet_loading():
            return StableDiffusionPipeline.from_pretrained(
                path, use_safetensors=None if trust_pickles else True, safety_checker=None, feature_extractor=None,
                requires_safety_checker=False)
    except Exception as exc:  # a damaged component fails in the library that reads it, with its own error type
        raise SynthaugError(f"model.base={base!r}: cannot load the pipeline ({_first_line(exc)}); "
                            "restore the folder or give another base") from None


def vae_scale(vae) -> int:
    """Pixels per latent cell: the VAE halves the image once per block after the first."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def encode_images(vae, images: np.ndarray, batch: int = 16) -> torch.Tensor:
    """uint8 (N, H, W, C) → scaled latents (N, latent channels, H/s, W/s) on the VAE's device: the mean of each
    image's latent distribution (deterministic), times the VAE's ``scaling_factor``. Grey images are repeated to RGB."""
    device = next(vae.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = to_model_input(np.asarray(images[start:start + batch])).to(device)
            x = x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x
            out.append(vae.encode(x).latent_dist.mean * vae.config.scaling_factor)
    return torch.cat(out)


def decode_latents(vae, latents: torch.Tensor, channels: int) -> np.ndarray:
    """Scaled latents → uint8 (N, H, W, channels); one channel is the mean of the VAE's RGB."""
    images = vae.decode(latents.to(next(vae.parameters()).dtype) / vae.config.scaling_factor).sample.float()
    images = images.mean(dim=1, keepdim=True) if channels == 1 else images
    return to_uint8(images.clamp(-1, 1).cpu())


# --------------------------------------------------------------------------------------------- class tokens


def class_tokens(index: int, count: int) -> list[str]:
    """Class ``index``'s token strings, named as diffusers names a multi-vector embedding's tokens."""
    first = f"<synthaug-{index}>"
    return [first] + [f"{first}_{j}" for j in range(1, count)]


def class_captions(cfg: ModelConfig, classes: Sequence[str]) -> list[str]:
    """Each class's caption: its template with ``{name}`` replaced by its tokens."""
    unknown = sorted(set(cfg.class_prompts) - set(classes))
    if unknown:
        raise SynthaugError(f"model.class_prompts: unknown class {unknown[0]!r}"
                            f"{did_you_mean(unknown[0], classes, quoted=True)}; classes are {list(classes)}")
    return [cfg.class_prompts.get(c, cfg.prompt).replace("{name}", " ".join(class_tokens(i, cfg.class_tokens)))
            for i, c in enumerate(classes)]


def name_token_ids(tokenizer, name: str) -> list[int]:
    """The ids of a class name's words (``_`` read as a space), unknown pieces left out; refuses a name
    with none."""
    ids = [i for i in tokenizer(name.replace("_", " "), add_special_tokens=False).input_ids
           if i != tokenizer.unk_token_id]
    if not ids:
        raise SynthaugError(f"class name {name!r} gives no token the base's tokenizer knows, so its class tokens "
                            "have no words to start from; rename the class (its folder or label) in words")
    return ids


class ClassTokenEmbedding(torch.nn.Module):
    """The text encoder's token embedding, frozen, plus the class tokens' vectors as a parameter of their own
    (ids from ``first`` up): training changes those rows only, and checkpoints hold them alone."""

    def __init__(self, base: torch.nn.Embedding, vectors: torch.Tensor, first: int):
        super().__init__()
        self.base = base
        self.vectors = torch.nn.Parameter(vectors)
        self.first = first

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        new = ids >= self.first
        known = self.base(ids.clamp(max=self.first - 1))
        learned = self.vectors[(ids - self.first).clamp(min=0, max=len(self.vectors) - 1)]
        return torch.where(new[..., None], learned.to(known.dtype), known)


# --------------------------------------------------------------------------------------------- training


class LatentTextDiffusion(pl.LightningModule):
    """LoRA and class-token training of a text-to-image pipeline on cached VAE latents.

    Args:
        cfg: the recipe's ``model`` section (base, lora, class_tokens, prompts, trust_pickles).
        classes: the class names, in label order.
        train: the recipe's ``train`` section (lr, warm-up, EMA, ``label_dropout`` as prompt dropout, min-SNR).
        image_size: the data's size; a multiple of the VAE's latent cell.
        seed: every random draw of step ``i`` on rank ``r`` derives from ``(seed, i, r)``, as in the pixel module.

    Batches carry ``rows`` into the training images (``data.StepBatches``); their latents are encoded once at the
    start of fitting from the datamodule's ``images``. The noise schedule and prediction type are the base's.
    ``state_dict`` holds the trained tensors only (LoRA, class tokens): the frozen base comes from ``model.base``.
    """

    def __init__(self, cfg: ModelConfig, classes: Sequence[str], train: TrainConfig, image_size: int, seed: int = 0):
        super().__init__()
        from diffusers import DDPMScheduler
        from diffusers.training_utils import EMAModel

        self.model_cfg, self.classes, self.cfg, self.seed = cfg, list(classes), train, seed
        self.base_path = resolve_base(cfg.base, cfg.trust_pickles)
        pipe = load_pipeline(self.base_path, cfg.base, cfg.trust_pickles)
        self.unet, self.vae, self.text_encoder, self.tokenizer = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
        with quiet_loading():
            self.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.prediction_type = self.scheduler.config.prediction_type
        if image_size % vae_scale(self.vae):
            raise SynthaugError(f"data.image_size={image_size} is not a multiple of the base VAE's {vae_scale(self.vae)}-"
                                f"pixel latent cell; use a multiple of {vae_scale(self.vae)}")
        for part in (self.unet, self.vae, self.text_encoder):
            part.requires_grad_(False)
        self._add_lora()
        self.tokens = [class_tokens(i, cfg.class_tokens) for i in range(len(self.classes))]
        self.captions = class_captions(cfg, self.classes)
        self._add_class_tokens()
        # Row K is the empty caption: prompt dropout trains the unconditional model guidance samples against.
        self.register_buffer("caption_ids", self._tokenize([*self.captions, ""]), persistent=False)
        self.trained_names = {name for name, p in self.named_parameters() if p.requires_grad}
        self.ema = EMAModel(self.trained_parameters(), decay=train.ema_decay, use_ema_warmup=True) \
            if train.ema_decay > 0 else None
        self.latents: torch.Tensor | None = None
        # Loading left the base in eval mode; Stable Diffusion's parts have no dropout or batch statistics, so
        # train mode changes no output, and Lightning expects it.
        self.train()

    def _add_lora(self) -> None:
        from peft import LoraConfig

        lora = self.model_cfg.lora
        try:
            self.unet.add_adapter(LoraConfig(r=lora.rank, lora_alpha=lora.alpha, init_lora_weights="gaussian",
                                             target_modules=list(lora.targets)))
        except ValueError as exc:
            raise SynthaugError(f"model.lora.targets={lora.targets}: {_first_line(exc)}; name modules of the base "
                                "UNet's attention blocks, e.g. to_q, to_k, to_v, to_out.0") from None

    def _add_class_tokens(self) -> None:
        """Add every class's tokens to the tokenizer, their vectors (the mean of the class name's word
        embeddings) to the text encoder."""
        flat = [t for tokens in self.tokens for t in tokens]
        clash = [t for t in flat if t in self.tokenizer.get_vocab()]
        if clash:
            raise SynthaugError(f"model.base={self.model_cfg.base!r}: its tokenizer already has {clash[0]}, a token "
                                "synthaug adds; use the original base, not a pipeline synthaug tokens were loaded into")
        embedding = self.text_encoder.get_input_embeddings()
        starts = [embedding.weight[name_token_ids(self.tokenizer, c)].mean(dim=0) for c in self.classes]
        self.tokenizer.add_tokens(flat)
        ids = self.tokenizer.convert_tokens_to_ids(flat)
        assert ids == list(range(ids[0], ids[0] + len(flat))), "added tokens take consecutive ids"
        vectors = torch.stack([v for v in starts for _ in range(self.model_cfg.class_tokens)]).detach().clone()
        self.text_encoder.set_input_embeddings(ClassTokenEmbedding(embedding, vectors, ids[0]))

    def _tokenize(self, captions: list[str]) -> torch.Tensor:
        """Captions → token ids (N, model_max_length); refuses one the tokenizer would cut short."""
        limit = self.tokenizer.model_max_length
        for name, caption in zip(self.classes, captions):
            n = len(self.tokenizer(caption, verbose=False).input_ids)
            if n > limit:
                raise SynthaugError(f"the caption of class {name!r} is {n} tokens, more than the base's tokenizer "
                                    f"takes ({limit}); shorten model.prompt (or model.class_prompts) or lower "
                                    "model.class_tokens")
        return self.tokenizer(captions, padding="max_length", max_length=limit, truncation=True,
                              return_tensors="pt").input_ids

    def trained_parameters(self) -> list[torch.nn.Parameter]:
        return [p for name, p in self.named_parameters() if name in self.trained_names]

    # Checkpoints hold the trained tensors alone (megabytes, not the base's gigabytes).
    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        full = super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        for key in [k for k in full if k.startswith(prefix) and k[len(prefix):] not in self.trained_names]:
            del full[key]
        return full

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = sorted(set(result.missing_keys) & self.trained_names)
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(f"state_dict does not fit: missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}")
        return result

    def on_fit_start(self) -> None:
        if self.ema is not None:
            self.ema.to(self.device)
        self.latents = encode_images(self.vae, self.trainer.datamodule.images)

    def loss(self, rows: torch.Tensor, labels: torch.Tensor, step: int) -> torch.Tensor:
        """The (min-SNR weighted) denoising loss of the latents of training rows ``rows`` with their captions."""
        gen = torch.Generator().manual_seed(step_seed(self.seed, step, self.global_rank, 2))
        latents = self.latents[rows.to(self.latents.device)].to(self.device)
        b = latents.shape[0]
        noise = torch.randn(latents.shape, generator=gen).to(latents)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (b,), generator=gen).to(self.device)
        drop = torch.rand(b, generator=gen) < self.cfg.label_dropout
        captions = torch.where(drop, torch.full((b,), len(self.classes)), labels.cpu()).to(self.device)
        hidden = self.text_encoder(self.caption_ids[captions])[0]
        noisy = self.scheduler.add_noise(latents, noise, t)
        pred = self.unet(noisy, t, encoder_hidden_states=hidden).sample
        target = noise if self.prediction_type == "epsilon" else self.scheduler.get_velocity(latents, noise, t)
        per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        if self.cfg.snr_gamma is not None:
            per_sample = per_sample * snr_weights(self.scheduler, t, self.cfg.snr_gamma, self.prediction_type)
        return per_sample.mean()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        step = int(batch["step"])
        loss = self.loss(batch["rows"], batch["labels"], step)
        if not torch.isfinite(loss):
            raise SynthaugError(f"training loss became {loss.item()} at step {step}; lower train.lr "
                                f"(now {self.cfg.lr:g}) and rerun with --overwrite")
        self.log("train_loss", loss, prog_bar=True, on_step=True, batch_size=len(batch["rows"]))
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.step(self.trained_parameters())

    def configure_optimizers(self):
        total = max(self.trainer.max_steps, 1) if self._trainer is not None else self.cfg.max_steps
        return training_optimizer(self.trained_parameters(), self.cfg, total)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.ema is not None:
            checkpoint["ema"] = self.ema.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.ema is not None and "ema" in checkpoint:
            self.ema.load_state_dict(checkpoint["ema"])

    @contextmanager
    def ema_weights(self) -> Iterator[None]:
        """The EMA weights (the raw ones without EMA) in place of the trained parameters, for saving."""
        params = self.trained_parameters()
        if self.ema is not None:
            self.ema.store(params)
            self.ema.copy_to(params)
        try:
            yield
        finally:
            if self.ema is not None:
                self.ema.restore(params)

    def save_model(self, model_dir: Path, image_size: int, channels: int) -> Path:
        """Write the model folder (module docstring) with the EMA weights."""
        from diffusers import StableDiffusionPipeline
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict
        from safetensors.torch import save_file

        from synthaug.io import atomic_dir, atomic_write_text

        with self.ema_weights():
            lora = {k: v.detach().cpu().contiguous()
                    for k, v in convert_state_dict_to_diffusers(get_peft_model_state_dict(self.unet)).items()}
            vectors = self.text_encoder.get_input_embeddings().vectors.detach().float().cpu().clone()
        if not all(torch.isfinite(v).all() for v in [*lora.values(), vectors]):
            step = self.trainer.global_step if self._trainer is not None else "the end"
            raise SynthaugError(f"training made the weights NaN or infinite by step {step}; lower train.lr "
                                f"(now {self.cfg.lr:g}) and rerun with --overwrite")
        n, lora_cfg = self.model_cfg.class_tokens, self.model_cfg.lora
        local = Path(self.model_cfg.base).expanduser().exists()  # else a Hub id, kept as given
        meta = {
            "backbone": BACKBONE,
            "classes": self.classes,
            "image_size": image_size,
            "channels": channels,
            "base": str(self.base_path.resolve()) if local else self.model_cfg.base,
            "base_revision": base_revision(self.base_path),
            "trust_pickles": self.model_cfg.trust_pickles,
            "prompts": dict(zip(self.classes, self.captions)),
            "class_tokens": dict(zip(self.classes, self.tokens)),
            "negative_prompt": self.model_cfg.negative_prompt,
            "lora": lora_cfg.model_dump(mode="json"),
            "version": __version__,
        }
        with atomic_dir(model_dir) as tmp, quiet_loading():
            StableDiffusionPipeline.save_lora_weights(
                tmp, unet_lora_layers=lora, safe_serialization=True,
                unet_lora_adapter_metadata=self.unet.peft_config["default"].to_dict())
            (tmp / TOKENS_DIR).mkdir()
            for i, tokens in enumerate(self.tokens):
                save_file({tokens[0]: vectors[i * n:(i + 1) * n].contiguous()}, tmp / TOKENS_DIR / f"{i}.safetensors")
            atomic_write_text(tmp / META_FILE, json.dumps(meta, indent=2))
        return model_dir


# --------------------------------------------------------------------------------------------- meta

TEXT_META = ("backbone", "classes", "image_size", "channels", "base", "base_revision", "trust_pickles", "prompts",
             "class_tokens", "negative_prompt", "lora", "version")


def text_meta_problem(meta: dict[str, Any]) -> str | None:
    """What is wrong with the latent-text keys of a model description (``diffusion.read_meta`` checks the rest),
    or None."""
    classes = meta["classes"]
    if not isinstance(meta["base"], str) or not meta["base"]:
        return f"base {json.dumps(meta['base'])[:80]} is not a pipeline folder or Hub id"
    if meta["base_revision"] is not None and not isinstance(meta["base_revision"], str):
        return f"base_revision {json.dumps(meta['base_revision'])[:40]} is not a string"
    if not isinstance(meta["trust_pickles"], bool):
        return f"trust_pickles {json.dumps(meta['trust_pickles'])[:40]} is not true or false"
    prompts, tokens = meta["prompts"], meta["class_tokens"]
    if not isinstance(prompts, dict) or list(prompts) != classes or not all(isinstance(p, str) for p in prompts.values()):
        return "prompts is not a caption per class, in class order"
    if not isinstance(tokens, dict) or list(tokens) != classes or not all(
            isinstance(t, list) and t and all(isinstance(s, str) for s in t) for t in tokens.values()):
        return "class_tokens is not a list of token strings per class, in class order"
    if meta["negative_prompt"] is not None and not isinstance(meta["negative_prompt"], str):
        return f"negative_prompt {json.dumps(meta['negative_prompt'])[:40]} is not a string"
    lora = meta["lora"]
    if not isinstance(lora, dict) or set(lora) != {"rank", "alpha", "targets"}:
        return f"lora {json.dumps(lora)[:80]} is not {{\"rank\", \"alpha\", \"targets\"}}"
    if not isinstance(meta.get("version", ""), str):
        return f"version {json.dumps(meta['version'])[:40]} is not a version string"
    return None
