"""Sampling: quotas → a plan of (label, index, seed) rows → the denoising loop → images.

Every image has its own seed and its own ``torch.Generator``, so an image depends only on the recipe
seed, its class and its index — not on the batch size, the number of processes, or an interruption.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)
from PIL import Image

from synthaug.config import QuotaConfig
from synthaug.errors import SynthaugError, did_you_mean
from synthaug.images import fit_arrays, to_model_input, to_pil, to_uint8
from synthaug.seeds import derive_seed

# --------------------------------------------------------------------------------------------- quotas


def plan_quotas(real_counts: dict[str, int], quota: QuotaConfig) -> dict[str, int]:
    """How many synthetic images each class gets (DESIGN §3 quota semantics).

    ``balance: max`` tops every class up to the largest real count; ``per_class: N`` gives N each;
    ``total: N`` splits N as evenly as possible (earlier classes take the remainder); ``ratio: R`` gives
    ``round(R × real)``; ``counts`` names classes (unnamed classes get 0).
    """
    classes = list(real_counts)
    if quota.balance == "max":
        top = max(real_counts.values(), default=0)
        return {c: top - n for c, n in real_counts.items()}
    if quota.per_class is not None:
        return dict.fromkeys(classes, quota.per_class)
    if quota.total is not None:
        base, extra = divmod(quota.total, len(classes))
        return {c: base + (i < extra) for i, c in enumerate(classes)}
    if quota.ratio is not None:
        return {c: int(round(quota.ratio * n)) for c, n in real_counts.items()}
    unknown = sorted(set(quota.counts) - set(classes))
    if unknown:
        did = did_you_mean(unknown[0], classes, quoted=True)
        raise SynthaugError(f"generate.quota.counts: unknown class {unknown[0]!r}{did}; classes are {classes}")
    return {c: int(quota.counts.get(c, 0)) for c in classes}


def empty_quota_note(real_counts: dict[str, int], quota: QuotaConfig) -> str:
    """Why ``quota`` asks for no image at all, for the dataset card of the empty synthetic set it makes."""
    if quota.balance == "max":
        top = max(real_counts.values(), default=0)
        return (f"No synthetic images were needed: `balance: max` tops every class up to the largest class's "
                f"real count, and every class already has {top} real training images.")
    asked = quota.model_dump(exclude_none=True)
    return f"No synthetic images were needed: `generate.quota` {asked} asks for none in any class."


@dataclass(frozen=True, slots=True)
class PlanRow:
    position: int  # place in the final dataset
    label: int
    index: int  # the image's index within its class
    seed: int


class Plan(Sequence[PlanRow]):
    """The rows of a generation plan as four int64 arrays: 32 bytes a row, however many rows (a list of
    ``PlanRow`` objects took ~150). ``plan[i]`` is a ``PlanRow``; ``plan[mask]`` and ``plan[indices]`` (numpy)
    are the selected rows, as a ``Plan``."""

    __slots__ = ("position", "label", "index", "seed")

    def __init__(self, position, label, index, seed):
        self.position, self.label, self.index, self.seed = (np.asarray(a, dtype=np.int64)
                                                             for a in (position, label, index, seed))

    def __len__(self) -> int:
        return len(self.position)

    def __getitem__(self, i):
        if isinstance(i, (int, np.integer)):
            return PlanRow(int(self.position[i]), int(self.label[i]), int(self.index[i]), int(self.seed[i]))
        return Plan(self.position[i], self.label[i], self.index[i], self.seed[i])

    def __repr__(self) -> str:
        return f"Plan({len(self)} rows)"


def build_plan(quotas: Sequence[int], seed: int, first_index: Sequence[int] | None = None) -> Plan:
    """Rows in class order: class 0's images, then class 1's, … (``quotas[k]`` images of class k)."""
    starts = first_index if first_index is not None else [0] * len(quotas)
    label = np.repeat(np.arange(len(quotas), dtype=np.int64), np.asarray(quotas, dtype=np.int64))
    index = np.concatenate([np.arange(start, start + n, dtype=np.int64) for start, n in zip(starts, quotas)]
                           + [np.zeros(0, dtype=np.int64)])
    seeds = np.fromiter((derive_seed(seed, int(k), int(i)) for k, i in zip(label, index)), dtype=np.int64,
                        count=len(label))
    return Plan(np.arange(len(label)), label, index, seeds)


# --------------------------------------------------------------------------------------------- schedulers

# Dynamic thresholding (Saharia et al. 2022) keeps the solvers' clean-image estimate in [-1, 1]. Without it
# the first step from t = T of the cosine schedule, where alpha_bar(T) is ~0, divides by ~0 and the
# samples saturate to black and white.
_THRESHOLD = {"thresholding": True, "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0}
_SCHEDULERS = {
    # DPM-Solver++ (Lu et al. 2022), 2nd-order multistep, in its SDE form: each step re-injects fresh noise
    # (from each image's own generator). On the cosine schedule the first steps start where the signal is
    # ~0 and an epsilon model's clean-image estimate is poor; the ODE form carries that error to the end,
    # the SDE form washes it out (docs/BENCHMARKS.md, bench_samplers, has the judge accuracies).
    "dpmpp": (DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, **_THRESHOLD}),
    "dpmpp-ode": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2, **_THRESHOLD}),
    # DDIM (Song et al. 2021); set_alpha_to_one=False keeps the last step's noise level honest.
    "ddim": (DDIMScheduler, {"set_alpha_to_one": False}),
    "ddpm": (DDPMScheduler, {}),
    # Euler works in sigma = sqrt((1 - alpha_bar) / alpha_bar), infinite at t = T of the cosine schedule:
    # start one spacing below it.
    "euler": (EulerDiscreteScheduler, {"timestep_spacing": "leading"}),
    "unipc": (UniPCMultistepScheduler, {"predict_x0": True, **_THRESHOLD}),  # UniPC (Zhao et al. 2023)
}


def make_scheduler(name: str, training_config: dict, *, threshold: bool = True):
    """A sampling scheduler built from the training scheduler's config (same betas, same prediction type).
    ``threshold=False`` leaves out dynamic thresholding: latents (synthaug.latent_text) are not bounded to [-1, 1]."""
    if name not in _SCHEDULERS:
        raise SynthaugError(f"generate.sampler={name!r}: use one of {', '.join(_SCHEDULERS)}")
    cls, extra = _SCHEDULERS[name]
    config = {k: v for k, v in dict(training_config).items() if not k.startswith("_")}
    config["timestep_spacing"] = "trailing"  # include the last (noisiest) timestep: needed for few steps
    config.update({k: v for k, v in extra.items() if threshold or k not in _THRESHOLD})
    return cls.from_config(config)


# --------------------------------------------------------------------------------------------- the loop

# The UNet's throughput per image on a CPU peaks near 256 rows per call (docs/BENCHMARKS.md, bench_sample),
# so a guided batch of 256 images (512 rows) runs as two calls.
MAX_FORWARD = 256


def initial_noise(shape: tuple[int, ...], generators: list[torch.Generator]) -> torch.Tensor:
    """One (C, H, W) draw per generator, stacked: image i's noise never depends on its batch neighbours."""
    return torch.stack([torch.randn(shape, generator=g) for g in generators])


@torch.inference_mode()
def denoise(unet, scheduler, labels: torch.Tensor, generators: list[torch.Generator], *, steps: int,
            guidance: float, null_class: int, init: torch.Tensor | None = None, strength: float = 1.0,
            autocast: bool = False, trace: list | None = None, max_forward: int = MAX_FORWARD,
            guidance_interval: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """Reverse diffusion with classifier-free guidance (Ho & Salimans 2022).

    Args:
        unet: a class-conditional ``UNet2DModel`` (eval mode).
        scheduler: a diffusers scheduler (see ``make_scheduler``); its state is reset here.
        labels: (B,) int64 class ids.
        generators: B ``torch.Generator``s, one per image (CPU), the only source of randomness.
        steps: number of denoising steps.
        guidance: w in ε = ε_u + w·(ε_c − ε_u); w = 1 is plain conditional sampling, w = 0 unconditional.
        null_class: the label id the model was trained to treat as "no class".
        init: (B, C, H, W) images in [−1, 1] for variation mode (SDEdit, Meng et al. 2022): they are
            noised to ``strength`` of the schedule and denoised from there; None samples from noise.
        trace: if a list, after each step the scheduler's clean-image estimate (DDIM, DDPM, Euler) or, for
            schedulers that do not report one (DPM-Solver++, UniPC), the partly denoised sample is appended
            (for report strips).
        max_forward: the most rows one UNet call takes. The guided batch (conditional and unconditional
            rows together) is split into calls of at most this many rows; each image's result does not
            depend on the split.
        guidance_interval: ``(start, stop)``, the share of the denoising steps that are guided
            (``guided_steps``); the others take the conditional prediction alone, one UNet row per image
            instead of two.

    Returns:
        (B, C, H, W) float32 images in [−1, 1].
    """
    cfg = unet.config
    device = next(unet.parameters()).device
    shape = (cfg.in_channels, cfg.sample_size, cfg.sample_size)

    x, timesteps = start_point(scheduler, shape, generators, steps, init, strength)
    x = x.to(device)
    labels = labels.to(device)
    both_labels = torch.cat([labels, torch.full_like(labels, null_class)])
    guided_at = guided_steps(steps, guidance_interval, guidance)

    for i, t in enumerate(timesteps, start=steps - len(timesteps)):
        # 2. The conditional and unconditional predictions batched together (in calls of <= max_forward rows);
        #    outside the guidance interval the conditional one alone.
        guide = i in guided_at
        model_in = scheduler.scale_model_input(torch.cat([x, x]) if guide else x, t)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            out = torch.cat([
                unet(part, t, class_labels=part_labels).sample
                for part, part_labels in zip(model_in.split(max_forward),
                                             (both_labels if guide else labels).split(max_forward))
            ]).float()
        # 3. Guidance: move from the unconditional prediction towards (and past) the conditional one.
        if guide:
            cond, uncond = out.chunk(2)
            guided = uncond + guidance * (cond - uncond)
        else:
            guided = out
        # 4. The scheduler's update; stochastic schedulers draw from each image's own generator.
        extra = {"generator": generators} if takes_generator(scheduler) else {}
        step = scheduler.step(guided, t, x, **extra)
        x = step.prev_sample
        if trace is not None:
            est = getattr(step, "pred_original_sample", None)
            trace.append((est if est is not None else x).clamp(-1, 1).cpu())
    return x.clamp(-1, 1).float().cpu()


def guided_steps(steps: int, interval: tuple[float, float] = (0.0, 1.0), guidance: float = 2.0) -> range:
    """The indices (0 = the noisiest step of the full schedule) of the steps that apply classifier-free guidance:
    those in ``[int(start·steps), int(stop·steps))``, as diffusers' ``ClassifierFreeGuidance(start=, stop=)``
    counts them. Guidance 1 is the conditional prediction itself, so no step needs the unconditional one.
    A variation (``strength`` < 1) starts part-way and guides the same noise levels."""
    if guidance == 1.0:
        return range(0)
    start, stop = interval
    return range(int(start * steps), int(stop * steps))


def start_point(scheduler, shape: tuple[int, ...], generators: list[torch.Generator], steps: int,
                init: torch.Tensor | None = None, strength: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Where denoising starts → ``(x, timesteps)`` (``x`` on the CPU): each image's own noise and every timestep,
    or, for a variation (SDEdit, Meng et al. 2022), ``init`` noised to the last ``strength`` share of the
    schedule and the timesteps from there. Pixel and latent denoising loops share it."""
    # 1. Timesteps: all of them, or the last `strength` share of them for a variation.
    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps
    noise = initial_noise(shape, generators)
    if init is None:
        return noise * scheduler.init_noise_sigma, timesteps
    start = steps - max(1, min(steps, int(round(steps * strength))))
    timesteps = timesteps[start:]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start)
    return scheduler.add_noise(init.float().cpu(), noise, timesteps[:1].repeat(len(generators))), timesteps


def takes_generator(scheduler) -> bool:
    import inspect

    return "generator" in inspect.signature(scheduler.step).parameters


NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs that compute bf16 natively


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``, read once; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return frozenset(line.partition(":")[2].split())


def bf16_supported() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), where bf16 autocast pays off; elsewhere
    it is emulated, many times slower than float32."""
    flags = cpu_flags()
    if flags:
        return any(f in flags for f in NATIVE_BF16_FLAGS)
    try:  # no /proc/cpuinfo: ask oneDNN
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # pragma: no cover - older torch
        return False


def sampling_device(accelerator: str) -> str:
    """Where generation and evaluation sample (``accelerator``: the recipe's, or the classifiers' for the CAS set
    and the diffusion strips): a GPU if there is one to use; a pretrained text-to-image model takes seconds an
    image on a CPU."""
    return "cuda" if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available() else "cpu"


def resolve_precision(requested: str, device: str | torch.device = "cpu") -> tuple[str, str]:
    """``generate.precision`` / ``compute.precision`` → ``(precision, why)``: ``auto`` is ``bf16-mixed`` where
    the hardware runs bf16 natively (a CUDA device with bf16; a CPU with avx512_bf16 or amx_bf16) and
    ``32-true`` elsewhere. Other values are kept as the recipe gives them."""
    if requested != "auto":
        return requested, "set in the recipe"
    if torch.device(device).type == "cuda":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return "bf16-mixed", f"auto: native bf16 on {torch.cuda.get_device_name()}"
        return "32-true", "auto: no native bf16 on this GPU"
    if bf16_supported():
        found = sorted(f for f in cpu_flags() if f in NATIVE_BF16_FLAGS) or ["oneDNN bf16"]
        return "bf16-mixed", f"auto: native bf16 on this CPU ({', '.join(found)})"
    return "32-true", "auto: no native bf16 on this CPU (no avx512_bf16/amx_bf16; emulated bf16 is slower)"


class Generator:
    """Sample images from a trained synthaug model.

    Images come out at the model's ``image_size`` (the data's, from ``synthaug.json``); a UNet trained at
    another resolution (``model.sample_size``) samples at its own, and its samples are fitted to it.

    >>> gen = Generator.from_pretrained("runs/digits-longtail/model")
    >>> images = gen.sample(labels=[0, 0, 3], guidance=2.0, steps=20, seed=0)
    """

    def __init__(self, unet, training_scheduler, meta: dict, device: str | torch.device = "cpu"):
        self.unet = unet.to(device).eval()
        self.training_scheduler = training_scheduler
        self.meta = meta
        self.classes: list[str] = list(meta["classes"])
        self.null_class: int = int(meta["null_class_id"])
        self.sample_size: int = int(unet.config.sample_size)
        self.image_size: int = int(meta.get("image_size", self.sample_size))

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, device: str | torch.device = "cpu") -> Generator:
        """The generator of a saved model: this class for the pixel backbone, ``latent_text_sampling.TextGenerator`` for
        a model whose ``synthaug.json`` says ``"backbone": "latent-text"``."""
        from synthaug.diffusion import load_model, read_meta

        if read_meta(Path(model_dir)).get("backbone") == "latent-text":
            from synthaug.latent_text_sampling import TextGenerator

            return TextGenerator.from_pretrained(model_dir, device)
        unet, scheduler, meta = load_model(Path(model_dir))
        return cls(unet, scheduler, meta, device)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def label_ids(self, labels: Sequence[int | str]) -> list[int]:
        """Class ids for ``labels`` given as ids (int) or class names (str)."""
        ids = []
        for label in labels:
            if isinstance(label, str):
                if label not in self.classes:
                    raise SynthaugError(f"unknown class {label!r}; classes are {self.classes}")
                ids.append(self.classes.index(label))
            elif 0 <= int(label) < len(self.classes):
                ids.append(int(label))
            else:
                raise SynthaugError(f"label {label} out of range 0..{len(self.classes) - 1}")
        return ids

    def autocast_default(self, autocast: bool | None) -> bool:
        """``autocast`` as given, or (None) what ``precision: auto`` picks on this generator's device."""
        return resolve_precision("auto", self.device)[0] == "bf16-mixed" if autocast is None else autocast

    def sample_arrays(self, labels: Sequence[int], seeds: Sequence[int], *, guidance: float = 2.0, steps: int = 20,
                      sampler: str = "dpmpp", init: np.ndarray | None = None, strength: float = 1.0,
                      autocast: bool | None = None,
                      guidance_interval: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
        """Images for explicit per-image seeds → uint8 (B, image_size, image_size, C). ``init``: uint8
        (B, H, W, C) for variations, fitted to the UNet's resolution first. ``guidance_interval``: the share of
        the steps that are guided (``denoise``). ``autocast``: bf16 autocast on or
        off; None decides as ``generate.precision: auto`` does (on where the device computes bf16 natively),
        so these are the images ``synthaug generate`` writes for the same seeds with its defaults."""
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        init_t = None
        if init is not None:
            init = fit_arrays(init, self.sample_size)
            init_t = to_model_input(init)
        images = denoise(
            self.unet, make_scheduler(sampler, self.training_scheduler.config),
            torch.as_tensor(list(labels), dtype=torch.long), generators,
            steps=steps, guidance=guidance, null_class=self.null_class, init=init_t, strength=strength,
            autocast=self.autocast_default(autocast), guidance_interval=guidance_interval,
        )
        return fit_arrays(to_uint8(images), self.image_size)

    def sample(self, labels: Sequence[int | str], guidance: float = 2.0, steps: int = 20, seed: int = 0,
               sampler: str = "dpmpp", batch_size: int = 256, autocast: bool | None = None,
               guidance_interval: tuple[float, float] = (0.0, 1.0)) -> list[Image.Image]:
        """Sample one image per label → a list of PIL images. Image i's seed is ``derive_seed(seed, label, i)``."""
        ids = self.label_ids(labels)
        seeds = [derive_seed(seed, label, i) for i, label in enumerate(ids)]
        out: list[Image.Image] = []
        for start in range(0, len(ids), batch_size):
            arrays = self.sample_arrays(ids[start:start + batch_size], seeds[start:start + batch_size],
                                        guidance=guidance, steps=steps, sampler=sampler, autocast=autocast,
                                        guidance_interval=guidance_interval)
            out.extend(to_pil(a) for a in arrays)
        return out


def diffusion_strips(generator: Generator, real: np.ndarray, labels: Sequence[int], *, frames: int = 8,
                     steps: int = 20, guidance: float = 2.0, sampler: str = "dpmpp", seed: int = 0,
                     guidance_interval: tuple[float, float] = (0.0, 1.0)):
    """The pictures people expect of a diffusion model, one row per class.

    Returns ``(forward, reverse)``, uint8 (K, frames, H, W, C): ``forward`` noises a real image of each
    class from clean to pure noise along the training schedule; ``reverse`` shows the sampler's
    state (its clean-image estimate, or the partly denoised sample, see ``denoise``) from pure noise to the
    final sample. A generator of another backbone draws its own (``TextGenerator.diffusion_strips``).
    """
    own = getattr(generator, "diffusion_strips", None)
    if own is not None:
        return own(real, labels, frames=frames, steps=steps, guidance=guidance, sampler=sampler, seed=seed,
                   guidance_interval=guidance_interval)
    schedule = generator.training_scheduler
    real = fit_arrays(real, generator.sample_size)  # the model's own resolution; frames are fitted back below
    x0 = to_model_input(real)
    gens = [torch.Generator().manual_seed(derive_seed(seed, int(c), 0)) for c in labels]
    noise = initial_noise(tuple(x0.shape[1:]), gens)
    ts = np.linspace(0, schedule.config.num_train_timesteps - 1, frames).round().astype(int)
    forward = [fit_arrays(to_uint8(schedule.add_noise(x0, noise, torch.full((len(x0),), int(t)))), generator.image_size)
               for t in ts]
    trace: list[torch.Tensor] = []
    denoise(generator.unet, make_scheduler(sampler, schedule.config), torch.as_tensor(list(labels)), gens,
            steps=steps, guidance=guidance, null_class=generator.null_class, trace=trace,
            guidance_interval=guidance_interval)
    picks = np.linspace(0, len(trace) - 1, frames).round().astype(int)
    reverse = [fit_arrays(to_uint8(trace[i]), generator.image_size) for i in picks]
    return np.stack(forward, axis=1), np.stack(reverse, axis=1)
