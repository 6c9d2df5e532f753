"""Sampling a latent-text model (``synthaug.latent_text``): ``model.base`` with the saved LoRA weights and class
tokens loaded the diffusers way (``load_text_pipeline``), and ``TextGenerator``, which samples it with the
interface of the pixel ``Generator``: per-image seeds, classifier-free guidance against the negative prompt,
img2img from real images for variations (SDEdit, Meng et al. 2022, as DA-Fusion).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from synthaug.errors import SynthaugError
from synthaug.images import fit_arrays
from synthaug.latent_text import (
    LORA_FILE,
    TOKENS_DIR,
    _first_line,
    _is_commit,
    base_revision,
    decode_latents,
    encode_images,
    load_pipeline,
    quiet_loading,
    resolve_base,
    vae_scale,
)
from synthaug.sampling import (
    Generator,
    guided_steps,
    initial_noise,
    make_scheduler,
    start_point,
    takes_generator,
)
from synthaug.seeds import derive_seed


@torch.inference_mode()
def denoise_latents(unet, scheduler, cond: torch.Tensor, uncond: torch.Tensor, generators: list[torch.Generator], *,
                    shape: tuple[int, int, int], steps: int, guidance: float, init: torch.Tensor | None = None,
                    strength: float = 1.0, autocast: bool = False, trace: list | None = None,
                    guidance_interval: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """Reverse diffusion in latent space with classifier-free guidance (Ho & Salimans 2022) between captions.

    Args:
        unet: a ``UNet2DConditionModel`` (eval mode).
        scheduler: a diffusers scheduler (``make_scheduler(..., threshold=False)``); its state is reset here.
        cond, uncond: (B, L, D) text encoder states of each image's caption and of the negative (or empty) prompt.
        generators: B ``torch.Generator``s, one per image (CPU), the only source of randomness.
        shape: one latent's (C, h, w).
        guidance: w in ε = ε_u + w·(ε_c − ε_u).
        init: (B, C, h, w) scaled latents of real images for variations (SDEdit, Meng et al. 2022): noised to
            ``strength`` of the schedule and denoised from there; None samples from noise.
        trace: if a list, the scheduler's clean-latent estimate (or the latents) after each step is appended.
        guidance_interval: the share of the steps that are guided (``sampling.guided_steps``); the others take
            the caption's prediction alone.

    Returns:
        (B, C, h, w) float32 latents on the UNet's device.
    """
    device = next(unet.parameters()).device
    x, timesteps = start_point(scheduler, shape, generators, steps, init, strength)
    x = x.to(device)
    cond = cond.to(device)
    context = torch.cat([cond, uncond.to(device)])
    guided_at = guided_steps(steps, guidance_interval, guidance)
    for i, t in enumerate(timesteps, start=steps - len(timesteps)):
        # 2. The caption's and the negative prompt's predictions, batched together (the caption's alone
        #    outside the guidance interval).
        guide = i in guided_at
        model_in = scheduler.scale_model_input(torch.cat([x, x]) if guide else x, t)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            out = unet(model_in, t, encoder_hidden_states=context if guide else cond).sample.float()
        if guide:
            c, u = out.chunk(2)
            out = u + guidance * (c - u)
        # 3. Guidance, then 4. the scheduler's update (stochastic ones draw from each image's own generator).
        extra = {"generator": generators} if takes_generator(scheduler) else {}
        step = scheduler.step(out, t, x, **extra)
        x = step.prev_sample
        if trace is not None:
            est = getattr(step, "pred_original_sample", None)
            trace.append((est if est is not None else x).float())
    return x.float()


def load_text_pipeline(model_dir: str | Path):
    """A latent-text model folder → ``(StableDiffusionPipeline, meta)``: the base pipeline of ``synthaug.json``
    (checked against the revision it was trained on) with the folder's LoRA weights and class tokens loaded
    through diffusers' ``load_lora_weights`` / ``load_textual_inversion``."""
    from synthaug.diffusion import read_meta

    model_dir = Path(model_dir)
    meta = read_meta(model_dir)
    base, trained_on = meta["base"], meta["base_revision"]
    path = resolve_base(base, meta["trust_pickles"], trained_on if _is_commit(trained_on or "") else None)
    if trained_on is not None and base_revision(path) != trained_on:
        raise SynthaugError(f"{model_dir}: trained on {base} at {trained_on}, but its weights are now "
                            f"{base_revision(path)}; restore the base it was trained on, or retrain")
    pipe = load_pipeline(path, base, meta["trust_pickles"])
    try:
        with quiet_loading():
            pipe.load_lora_weights(model_dir, weight_name=LORA_FILE, use_safetensors=True)
            pipe.load_textual_inversion([str(model_dir / TOKENS_DIR / f"{i}.safetensors")
                                         for i in range(len(meta["classes"]))], use_safetensors=True)
    except Exception as exc:  # a missing or foreign file fails inside diffusers with its own error type
        raise SynthaugError(f"{model_dir}: cannot load the LoRA weights and class tokens onto {base!r} "
                            f"({_first_line(exc)}); retrain the model") from None
    return pipe, meta


class TextGenerator(Generator):
    """Sample a latent-text model: ``model.base`` with the saved LoRA and class tokens loaded the diffusers way.

    The interface is the pixel ``Generator``'s (``classes``, ``meta``, ``image_size``, ``sample_arrays``,
    ``sample``, ``device``); images come out at the model's ``image_size`` and ``channels``.

    >>> gen = Generator.from_pretrained("runs/text-lora/model")   # dispatches here on synthaug.json's backbone
    >>> images = gen.sample(labels=["cat", "dog"], guidance=7.5, steps=30, seed=0)
    """

    def __init__(self, pipe, meta: dict, device: str | torch.device = "cpu"):
        self.unet = pipe.unet.to(device).eval()
        self.vae = pipe.vae.to(device).eval()
        self.text_encoder = pipe.text_encoder.to(device).eval()
        self.tokenizer, self.training_scheduler = pipe.tokenizer, pipe.scheduler
        self.meta = meta
        self.classes: list[str] = list(meta["classes"])
        self.image_size: int = int(meta["image_size"])
        self.channels: int = int(meta["channels"])
        self.captions = [meta["prompts"][c] for c in self.classes]
        self.negative_prompt: str = meta["negative_prompt"] or ""
        self.latent_shape = (self.unet.config.in_channels, self.image_size // vae_scale(self.vae),
                             self.image_size // vae_scale(self.vae))

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, device: str | torch.device = "cpu") -> TextGenerator:
        pipe, meta = load_text_pipeline(model_dir)
        return cls(pipe, meta, device)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def _encode(self, captions: list[str]) -> torch.Tensor:
        ids = self.tokenizer(captions, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        return self.text_encoder(ids.to(self.device))[0]

    def _latents(self, labels: Sequence[int], seeds: Sequence[int], *, guidance: float, steps: int, sampler: str,
                 init: np.ndarray | None, strength: float, autocast: bool, trace: list | None = None,
                 guidance_interval: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
        # Lightning moves the UNet alone (generation.SamplingModule); the other parts follow it.
        self.text_encoder.to(self.device)
        self.vae.to(self.device)
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        with torch.inference_mode():
            cond = self._encode([self.captions[int(label)] for label in labels])
            uncond = self._encode([self.negative_prompt] * len(labels))
            init_latents = None if init is None else encode_images(self.vae, fit_arrays(init, self.image_size))
        return denoise_latents(
            self.unet, make_scheduler(sampler, self.training_scheduler.config, threshold=False), cond, uncond,
            generators, shape=self.latent_shape, steps=steps, guidance=guidance, init=init_latents,
            strength=strength, autocast=autocast, trace=trace, guidance_interval=guidance_interval)

    @torch.inference_mode()
    def sample_arrays(self, labels: Sequence[int], seeds: Sequence[int], *, guidance: float = 7.5, steps: int = 20,
                      sampler: str = "dpmpp", init: np.ndarray | None = None, strength: float = 1.0,
                      autocast: bool | None = None,
                      guidance_interval: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
        """Images for explicit per-image seeds → uint8 (B, image_size, image_size, channels). ``init``: uint8
        (B, H, W, C) real images for variations (img2img), fitted to ``image_size`` first. ``autocast`` and
        ``guidance_interval``: as ``Generator.sample_arrays``."""
        latents = self._latents(labels, seeds, guidance=guidance, steps=steps, sampler=sampler, init=init,
                                strength=strength, autocast=self.autocast_default(autocast),
                                guidance_interval=guidance_interval)
        return decode_latents(self.vae, latents, self.channels)

    @torch.inference_mode()
    def diffusion_strips(self, real: np.ndarray, labels: Sequence[int], *, frames: int = 8, steps: int = 20,
                         guidance: float = 7.5, sampler: str = "dpmpp", seed: int = 0,
                         guidance_interval: tuple[float, float] = (0.0, 1.0)):
        """``sampling.diffusion_strips`` in latent space: each frame is a latent decoded by the VAE."""
        self.vae.to(self.device)
        x0 = encode_images(self.vae, fit_arrays(real, self.image_size))
        gens = [torch.Generator().manual_seed(derive_seed(seed, int(c), 0)) for c in labels]
        noise = initial_noise(tuple(x0.shape[1:]), gens).to(x0)
        schedule = self.training_scheduler
        ts = np.linspace(0, schedule.config.num_train_timesteps - 1, frames).round().astype(int)
        forward = [decode_latents(self.vae, schedule.add_noise(x0, noise, torch.full((len(x0),), int(t))), self.channels)
                   for t in ts]
        trace: list[torch.Tensor] = []
        self._latents(labels, [derive_seed(seed, int(c), 0) for c in labels], guidance=guidance, steps=steps,
                      sampler=sampler, init=None, strength=1.0, autocast=False, trace=trace,
                      guidance_interval=guidance_interval)
        picks = np.linspace(0, len(trace) - 1, frames).round().astype(int)
        reverse = [decode_latents(self.vae, trace[i], self.channels) for i in picks]
        return np.stack(forward, axis=1), np.stack(reverse, axis=1)
