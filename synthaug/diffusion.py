"""The class-conditional diffusion model: a diffusers UNet, the training objective, and its files on disk.

Weights (``UNet2DModel``), noise maths (diffusers schedulers) and the training step live apart, as in
diffusers. Class conditioning uses the UNet's ``num_class_embeds``: ids ``0..K-1`` are the classes and id
``K`` is the null class that classifier-free guidance (Ho & Salimans 2022) samples against.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel

from synthaug import __version__
from synthaug.config import ConditionedAugmentConfig, ModelConfig, TrainConfig
from synthaug.errors import SynthaugError
from synthaug.seeds import step_seed

META_FILE = "synthaug.json"
NORMALIZATION = {"mean": 0.5, "std": 0.5}  # pixels in [0, 1] → (x − 0.5) / 0.5 ∈ [−1, 1]


def training_scheduler(prediction_type: str = "epsilon") -> DDPMScheduler:
    """The forward process: 1000 steps of the cosine schedule (Nichol & Dhariwal 2021), good at small sizes."""
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type=prediction_type,
        clip_sample=True,
        timestep_spacing="trailing",
    )


def build_unet(cfg: ModelConfig, num_classes: int, image_size: int, channels: int) -> UNet2DModel:
    """A fresh ``UNet2DModel`` with ``num_classes + 1`` class embeddings (the last is the null class)."""
    groups = math.gcd(*cfg.block_out_channels)
    groups = max(g for g in range(1, min(groups, 32) + 1) if groups % g == 0)
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in cfg.attention)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.attention))
    if image_size % 2 ** (len(cfg.block_out_channels) - 1):
        key = "model.sample_size" if cfg.sample_size else "data.image_size"
        raise SynthaugError(
            f"{key}={image_size} cannot be halved {len(cfg.block_out_channels) - 1} times by "
            f"{len(cfg.block_out_channels)} UNet blocks; use a multiple of {2 ** (len(cfg.block_out_channels) - 1)}"
        )
    return UNet2DModel(
        sample_size=image_size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=cfg.layers_per_block,
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=groups,
        attention_head_dim=min(cfg.block_out_channels[-1], 32),
        num_class_embeds=num_classes + 1,
    )


_ARCH_KEYS = {"block_out_channels": "block_out_channels", "layers_per_block": "layers_per_block"}


def load_base_unet(cfg: ModelConfig, num_classes: int, image_size: int, channels: int) -> UNet2DModel:
    """Load ``model.base`` (a diffusers UNet folder, a pipeline folder holding ``unet/``, or a Hub id).

    An unconditional base gains a zero-initialised class embedding, so before any update every class
    (and the null class) predicts exactly what the base predicts.
    """
    base = cfg.base
    path = Path(base)
    subfolder = "unet" if (path / "unet" / "config.json").is_file() else None
    try:
        unet = UNet2DModel.from_pretrained(base, subfolder=subfolder, use_safetensors=True)
    except (OSError, ValueError) as exc:
        raise SynthaugError(
            f"model.base={base!r}: cannot load a UNet2DModel from safetensors ({str(exc).splitlines()[0]})"
        ) from None
    config = dict(unet.config)
    for key in cfg.model_fields_set & set(_ARCH_KEYS):
        ours, theirs = getattr(cfg, key), config[_ARCH_KEYS[key]]
        if list(ours if isinstance(ours, list) else [ours]) != list(theirs if isinstance(theirs, (list, tuple)) else [theirs]):
            raise SynthaugError(f"model.{key}={ours} conflicts with the base model's {theirs}; remove the key from the recipe")
    if config["in_channels"] != channels:
        raise SynthaugError(f"data.channels={channels} but model.base has {config['in_channels']} input channels")
    if config.get("sample_size") not in (None, image_size):
        key = "model.sample_size" if cfg.sample_size else "data.image_size"
        raise SynthaugError(f"{key}={image_size} but model.base was trained at {config['sample_size']}; "
                            f"set model.sample_size: {config['sample_size']}")
    existing = config.get("num_class_embeds")
    if existing == num_classes + 1:
        return unet
    if existing is not None and not cfg.reset_class_embedding:
        raise SynthaugError(
            f"model.base has {existing - 1} classes (+ null) but the data has {num_classes}; "
            "set model.reset_class_embedding=true to start the class embedding afresh"
        )
    config["num_class_embeds"] = num_classes + 1
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    conditional = UNet2DModel.from_config(config)
    state = {k: v for k, v in unet.state_dict().items() if not k.startswith("class_embedding.")}
    missing, unexpected = conditional.load_state_dict(state, strict=False)
    assert set(missing) <= {"class_embedding.weight"} and not unexpected, (missing, unexpected)
    torch.nn.init.zeros_(conditional.class_embedding.weight)
    return conditional


AUGMENT_DIM = 9  # x-flip, log2 zoom, cos(rotation) − 1, sin(rotation), shift x, shift y, brightness, log2 contrast, log2 saturation


def conditioned_augment(images: torch.Tensor, cfg: ConditionedAugmentConfig, gen: torch.Generator
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a batch ``(B, C, H, W)`` in [−1, 1] → (images, parameters ``(B, AUGMENT_DIM)``).

    Each transform is chosen per image with probability ``cfg.p``; the parameters of an image left alone
    are all zero, which is what sampling asks for. Every random number is drawn whatever the settings, so a
    setting changes its own transform only. Geometry is one affine warp with reflected borders (as ADA pads).
    """
    b, c = images.shape[:2]
    device = images.device

    def chosen() -> torch.Tensor:
        return (torch.rand(b, generator=gen) < cfg.p).float()

    flip = torch.randint(0, 2, (b,), generator=gen).float() * chosen() * float(cfg.xflip)
    zoom = torch.randn(b, generator=gen) * cfg.scale * chosen()
    angle = (torch.rand(b, generator=gen) * 2 - 1) * math.radians(cfg.rotate) * chosen()
    shift = torch.randn(b, 2, generator=gen) * cfg.translate * chosen()[:, None]
    bright = torch.randn(b, generator=gen) * cfg.color * chosen()
    contrast = torch.randn(b, generator=gen) * cfg.color * chosen()
    saturation = torch.randn(b, generator=gen) * cfg.color * chosen() * float(c == 3)
    params = torch.stack([flip, zoom, angle.cos() - 1, angle.sin(), shift[:, 0], shift[:, 1], bright, contrast,
                          saturation], dim=1)

    # forward map (input → output, normalised coordinates): shift ∘ rotate ∘ zoom ∘ flip; the grid wants its inverse
    cos, sin, z = angle.cos(), angle.sin(), torch.exp2(zoom)
    forward = torch.zeros(b, 3, 3)
    forward[:, 0, 0], forward[:, 0, 1] = cos * z * (1 - 2 * flip), -sin * z
    forward[:, 1, 0], forward[:, 1, 1] = sin * z * (1 - 2 * flip), cos * z
    forward[:, :2, 2], forward[:, 2, 2] = 2 * shift, 1
    theta = torch.linalg.inv(forward)[:, :2].to(device=device, dtype=images.dtype)
    warped = F.grid_sample(images, F.affine_grid(theta, list(images.shape), align_corners=False),
                           mode="bilinear", padding_mode="reflection", align_corners=False)
    moved = params[:, :6].abs().sum(dim=1).to(device) > 0
    out = torch.where(moved[:, None, None, None], warped, images)

    view = (b, 1, 1, 1)
    coloured = out + bright.to(out).view(view)
    mean = coloured.mean(dim=(1, 2, 3), keepdim=True)
    coloured = mean + (coloured - mean) * torch.exp2(contrast).to(out).view(view)
    if c == 3:
        grey = coloured.mean(dim=1, keepdim=True)
        coloured = grey + (coloured - grey) * torch.exp2(saturation).to(out).view(view)
    recoloured = params[:, 6:].abs().sum(dim=1).to(device) > 0
    out = torch.where(recoloured[:, None, None, None], coloured.clamp(-1, 1), out)
    return out, params.to(device=device, dtype=images.dtype)


def snr_weights(scheduler: DDPMScheduler, timesteps: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """Min-SNR-γ loss weights (Hang et al. 2023), expressed for the model's prediction target."""
    alphas = scheduler.alphas_cumprod.to(timesteps.device)[timesteps]
    snr = alphas / (1 - alphas)
    clipped = torch.clamp(snr, max=gamma)
    return clipped / (snr + 1) if prediction_type == "v_prediction" else clipped / snr


def training_optimizer(params: list[torch.nn.Parameter], train: TrainConfig, total_steps: int) -> dict[str, Any]:
    """AdamW at ``train.lr`` with a linear warm-up (at most a tenth of the run) and cosine decay, per step: what
    Lightning's ``configure_optimizers`` returns, for every backbone."""
    optimizer = torch.optim.AdamW(params, lr=train.lr, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimizer, min(train.warmup_steps, total_steps // 10), total_steps)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class ClassConditionalDiffusion(pl.LightningModule):
    """DDPM training (Ho et al. 2020) of a class-conditional UNet with label dropout for guidance.

    Args:
        unet: the ``UNet2DModel``; ``num_class_embeds`` must be ``num_classes + 1``.
        num_classes: K; label ``K`` is the null class.
        train: the recipe's ``train`` section (lr, warm-up, EMA, label dropout, min-SNR).
        prediction_type: ``"epsilon"`` or ``"v_prediction"``.
        seed: every random draw of step ``i`` on rank ``r`` derives from ``(seed, i, r)``, so a resumed
            run makes exactly the draws an uninterrupted run makes.
    """

    def __init__(self, unet: UNet2DModel, num_classes: int, train: TrainConfig, prediction_type: str = "epsilon",
                 seed: int = 0):
        super().__init__()
        self.unet = unet
        self.num_classes = num_classes
        self.cfg = train
        self.seed = seed
        self.scheduler = training_scheduler(prediction_type)
        self.prediction_type = prediction_type
        for name in train.freeze:
            getattr(self.unet, name).requires_grad_(False)
        self.ema = EMAModel(self.unet.parameters(), decay=train.ema_decay, use_ema_warmup=True) if train.ema_decay > 0 else None
        # Non-leaking augmentation: the parameters enter through a bias-free linear map added to the class
        # embedding, so "no augmentation" (all zeros) adds exactly nothing. Sampling uses the bare UNet, which is
        # "no augmentation"; the map is trained, checkpointed and resumed here but never saved with the model.
        self.augment_embedding = None
        self._augment_emb: torch.Tensor | None = None
        if train.conditioned_augment.p > 0:
            self.augment_embedding = torch.nn.Linear(AUGMENT_DIM, self.unet.class_embedding.embedding_dim, bias=False)
            torch.nn.init.zeros_(self.augment_embedding.weight)
            self.unet.class_embedding.register_forward_hook(self._add_augment_embedding)

    def _add_augment_embedding(self, module, inputs, output: torch.Tensor) -> torch.Tensor | None:
        return None if self._augment_emb is None else output + self._augment_emb.to(output.dtype)

    @property
    def null_class(self) -> int:
        return self.num_classes

    def on_fit_start(self) -> None:
        if self.ema is not None:
            self.ema.to(self.device)

    def loss(self, images: torch.Tensor, labels: torch.Tensor, step: int) -> torch.Tensor:
        """The (weighted) denoising loss of one batch; ``images`` (B, C, H, W) in [−1, 1]."""
        gen = torch.Generator().manual_seed(step_seed(self.seed, step, self.global_rank, 2))
        b = images.shape[0]
        noise = torch.randn(images.shape, generator=gen).to(images)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (b,), generator=gen).to(images.device)
        drop = (torch.rand(b, generator=gen) < self.cfg.label_dropout).to(images.device)
        labels = torch.where(drop, torch.full_like(labels, self.null_class), labels)
        if self.augment_embedding is not None:
            aug_gen = torch.Generator().manual_seed(step_seed(self.seed, step, self.global_rank, 3))
            images, params = conditioned_augment(images, self.cfg.conditioned_augment, aug_gen)
            self._augment_emb = self.augment_embedding(params)
        try:
            noisy = self.scheduler.add_noise(images, noise, t)
            pred = self.unet(noisy, t, class_labels=labels).sample
            target = noise if self.prediction_type == "epsilon" else self.scheduler.get_velocity(images, noise, t)
            per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
            if self.cfg.snr_gamma is not None:
                per_sample = per_sample * snr_weights(self.scheduler, t, self.cfg.snr_gamma, self.prediction_type)
            if self.cfg.cbdm.weight > 0:
                per_sample = per_sample + self._cbdm_term(noisy, t, pred, drop, step)
        finally:
            self._augment_emb = None
        return per_sample.mean()

    def _cbdm_term(self, noisy: torch.Tensor, t: torch.Tensor, pred: torch.Tensor, dropped: torch.Tensor,
                   step: int) -> torch.Tensor:
        """CBDM's regulariser per sample (Qin et al. 2023): the prediction for the true class and that for a
        uniformly drawn class at the same noisy image pull toward each other, weighted τ·t/T; rows trained on
        the null class carry none."""
        gen = torch.Generator().manual_seed(step_seed(self.seed, step, self.global_rank, 4))
        other = torch.randint(0, self.num_classes, (noisy.shape[0],), generator=gen).to(noisy.device)
        pred_other = self.unet(noisy, t, class_labels=other).sample.float()
        pred = pred.float()
        pull = F.mse_loss(pred, pred_other.detach(), reduction="none").mean(dim=(1, 2, 3))
        commit = F.mse_loss(pred.detach(), pred_other, reduction="none").mean(dim=(1, 2, 3))
        weight = self.cfg.cbdm.weight * t.float() / self.scheduler.config.num_train_timesteps
        return weight * (pull + self.cfg.cbdm.gamma * commit) * (~dropped).float()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch["images"], batch["labels"], int(batch["step"]))
        if not torch.isfinite(loss):
            # Stop here: every later step would only carry the NaN into the weights, the EMA and the model.
            raise SynthaugError(f"training loss became {loss.item()} at step {int(batch['step'])}; "
                                f"{self._lower_lr_fix()}")
        self.log("train_loss", loss, prog_bar=True, on_step=True, batch_size=batch["images"].shape[0])
        return loss

    def _lower_lr_fix(self) -> str:
        return f"lower train.lr (now {self.cfg.lr:g}) and rerun with --overwrite"

    def optimizer_step(self, *args, **kwargs) -> None:
        # The EMA update belongs to the optimizer step, so no hook or stop can fall between them.
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.step(self.unet.parameters())

    def configure_optimizers(self):
        total = max(self.trainer.max_steps, 1) if self.trainer is not None else self.cfg.max_steps
        return training_optimizer([p for p in self.parameters() if p.requires_grad], self.cfg, total)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.ema is not None:
            checkpoint["ema"] = self.ema.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning calls this before loading the weights: a class count that changed since the checkpoint
        # (other data) is a clear error here, where loading would fail with a size mismatch.
        saved = checkpoint.get("state_dict", {}).get("unet.class_embedding.weight")
        if saved is not None and saved.shape[0] != self.num_classes + 1:
            raise SynthaugError(
                f"the checkpoint to resume has {saved.shape[0] - 1} classes but the data has {self.num_classes}; "
                "restore the data it was trained on, or rerun with --overwrite to train afresh"
            )
        if self.ema is not None and "ema" in checkpoint:
            self.ema.load_state_dict(checkpoint["ema"])

    def sampling_unet(self) -> UNet2DModel:
        """A copy of the UNet holding the EMA weights (or the raw ones without EMA), in eval mode."""
        unet = UNet2DModel.from_config(self.unet.config)
        unet.load_state_dict(self.unet.state_dict())
        if self.ema is not None:
            self.ema.copy_to(unet.parameters())
        # The last update can break the weights after the last loss was checked (a one-step run, say).
        if not all(torch.isfinite(p).all() for p in unet.parameters()):
            step = self.trainer.global_step if self._trainer is not None else "the end"
            raise SynthaugError(f"training made the weights NaN or infinite by step {step}; {self._lower_lr_fix()}")
        return unet.eval()


# --------------------------------------------------------------------------------------------- files


def save_model(unet: UNet2DModel, scheduler: DDPMScheduler, model_dir: Path, classes: list[str],
               image_size: int, channels: int) -> Path:
    """Write ``model_dir`` as a diffusers pipeline (``unet/`` safetensors, ``scheduler/``, ``model_index.json``)
    plus ``synthaug.json``."""
    from synthaug.io import atomic_dir, atomic_write_text
    from synthaug.pipeline import write_model_index

    with atomic_dir(model_dir) as tmp:
        unet.save_pretrained(tmp / "unet", safe_serialization=True)
        scheduler.save_pretrained(tmp / "scheduler")
        write_model_index(tmp, classes, image_size)  # loads as synthaug.SynthaugPipeline
        meta = {
            "classes": list(classes),
            "image_size": image_size,
            "channels": channels,
            "null_class_id": len(classes),
            "normalization": NORMALIZATION,
            "version": __version__,
        }
        atomic_write_text(tmp / META_FILE, json.dumps(meta, indent=2))
    return model_dir


REQUIRED_META = ("classes", "image_size", "channels", "null_class_id")
KNOWN_META = (*REQUIRED_META, "normalization", "version", "backbone")
BACKBONES = ("pixel", "latent-text")  # a description without "backbone" is a pixel model's


def _max_image_size() -> int:
    from synthaug.config import DataConfig

    return next(m.le for m in DataConfig.model_fields["image_size"].metadata if hasattr(m, "le"))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


def read_meta(model_dir: Path) -> dict[str, Any]:
    """``model_dir/synthaug.json``, checked: a damaged or foreign file is refused with one line, never trusted
    (an ``image_size`` of 20000 would exhaust memory, ``"abc"`` would fail deep inside sampling)."""
    path = Path(model_dir) / META_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise SynthaugError(f"{model_dir}: no {META_FILE}, so not a synthaug model folder (run_dir/model); "
                            "train a model first (synthaug train)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SynthaugError(f"{path}: not valid JSON ({exc}); retrain or restore the file") from None
    if not isinstance(meta, dict):
        raise SynthaugError(f"{path}: not a synthaug model description (a JSON {type(meta).__name__}); retrain it")
    backbone = meta.get("backbone", "pixel")
    if backbone not in BACKBONES:
        raise SynthaugError(f"{path}: unknown backbone {json.dumps(backbone)[:40]} (synthaug knows {', '.join(BACKBONES)}); "
                            f"the model was written by another synthaug version ({meta.get('version', 'unknown')}), "
                            "use that version or retrain")
    if backbone == "pixel":
        required, known = REQUIRED_META, KNOWN_META
    else:
        from synthaug.latent_text import TEXT_META

        required = known = TEXT_META
    missing = [k for k in required if k not in meta]
    if missing:
        raise SynthaugError(f"{path}: missing {', '.join(missing)}; the model was written by another version, retrain it")
    # A key this version does not know may change what the weights mean (another normalisation, say).
    extra = sorted(k for k in meta if k not in known)
    if extra:
        raise SynthaugError(
            f"{path}: unknown key(s) {', '.join(extra)}; the model was written by another synthaug version "
            f"({meta.get('version', 'unknown')}), use that version or retrain"
        )
    problem = _meta_problem(meta)
    if problem:
        raise SynthaugError(f"{path}: {problem}; the file is damaged, restore it or retrain")
    return meta


def _meta_problem(meta: dict[str, Any]) -> str | None:
    """What is wrong with the values of a model description, or None."""
    classes, size, channels = meta["classes"], meta["image_size"], meta["channels"]
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        return f"classes must be a non-empty list of class names, got {json.dumps(classes)[:80]}"
    if len(set(classes)) != len(classes):
        return f"classes {classes} name a class twice"
    top = _max_image_size()
    if not _is_int(size) or not 1 <= size <= top:
        return f"image_size {json.dumps(size)[:40]} is not a whole number of pixels from 1 to {top}"
    if not _is_int(channels) or channels not in (1, 3):
        return f"channels {json.dumps(channels)[:40]} is not 1 or 3"
    if meta.get("backbone") == "latent-text":
        from synthaug.latent_text import text_meta_problem

        return text_meta_problem(meta)
    if meta["null_class_id"] != len(classes) or not _is_int(meta["null_class_id"]):
        return f"null_class_id {json.dumps(meta['null_class_id'])[:40]} does not match {len(classes)} classes"
    norm = meta.get("normalization", NORMALIZATION)
    if not _valid_normalization(norm, channels):
        return (f"normalization {json.dumps(norm)[:80]} is not {{\"mean\": M, \"std\": S}} of finite numbers "
                "(or one per channel) with S > 0")
    if not isinstance(meta.get("version", ""), str):
        return f"version {json.dumps(meta['version'])[:40]} is not a version string"
    return None


def _valid_normalization(norm: Any, channels: int) -> bool:
    if not isinstance(norm, dict) or set(norm) != {"mean", "std"}:
        return False
    mean, std = ([v] if not isinstance(v, list) else v for v in (norm["mean"], norm["std"]))
    return all(len(v) in (1, channels) and all(_is_number(x) for x in v) for v in (mean, std)) and all(
        x > 0 for x in std)


def check_model_fits_data(model_dir: Path, meta: dict[str, Any], image_size: int, channels: int) -> None:
    """Refuse a model whose images would not be the recipe's: its size and channels must be ``data``'s."""
    for key, theirs, ours in (("image_size", meta["image_size"], image_size), ("channels", meta["channels"], channels)):
        if theirs != ours:
            raise SynthaugError(
                f"{Path(model_dir) / META_FILE}: the model makes images with {key} {theirs} but the recipe has "
                f"data.{key}={ours}; set data.{key}={theirs} or retrain with --overwrite"
            )


def load_model(model_dir: Path) -> tuple[UNet2DModel, DDPMScheduler, dict[str, Any]]:
    """Load a saved model: weights from safetensors only (never a pickle), plus its metadata."""
    model_dir = Path(model_dir)
    meta = read_meta(model_dir)
    try:
        unet = UNet2DModel.from_pretrained(model_dir / "unet", use_safetensors=True)
        scheduler = DDPMScheduler.from_pretrained(model_dir / "scheduler")
    except (OSError, ValueError) as exc:
        raise SynthaugError(f"{model_dir}: cannot load the model ({str(exc).splitlines()[0]}); retrain it") from None
    if unet.config.num_class_embeds != len(meta["classes"]) + 1:
        raise SynthaugError(
            f"{model_dir}: the UNet has {unet.config.num_class_embeds} class embeddings but synthaug.json names "
            f"{len(meta['classes'])} classes (+ null); the folder is inconsistent, retrain"
        )
    if {unet.config.in_channels, unet.config.out_channels} != {meta["channels"]}:
        raise SynthaugError(
            f"{model_dir}: the UNet has {unet.config.in_channels} input and {unet.config.out_channels} output "
            f"channels but synthaug.json says {meta['channels']}; the folder is inconsistent, retrain"
        )
    return unet.eval(), scheduler, meta
