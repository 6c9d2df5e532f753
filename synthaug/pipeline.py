"""The trained model as a diffusers pipeline: ``SynthaugPipeline``, modelled on diffusers' class-conditional
``DiTPipeline``.

``run/model`` carries a ``model_index.json``, so the folder loads the way every diffusers model does::

    >>> from synthaug import SynthaugPipeline
    >>> pipe = SynthaugPipeline.from_pretrained("runs/digits-longtail/model")
    >>> images = pipe(class_labels=pipe.get_label_ids(["3", "7"]), generator=torch.manual_seed(0)).images
    >>> pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config)   # any diffusers scheduler

Loading puts in the sampler ``synthaug generate`` uses by default (DPM-Solver++ built from the training
schedule, ``sampling.make_scheduler``); pass ``scheduler=`` to ``from_pretrained`` or assign ``pipe.scheduler`` to
use another. A list of one ``torch.Generator`` per image gives the images ``synthaug generate`` writes for those
seeds (``Generator.sample_arrays``), whatever the batch; a single generator draws one seed per image from it.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput, UNet2DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin

MODEL_INDEX = "model_index.json"
DEFAULT_SAMPLER = "dpmpp"


class SynthaugPipeline(DiffusionPipeline):
    """Class-conditional image generation with a synthaug model: a ``UNet2DModel`` with class embeddings (the last
    one is "no class", for classifier-free guidance) and a scheduler.

    Args:
        unet: the class-conditional UNet.
        scheduler: any diffusers scheduler built on the training schedule.
        id2label: class id → class name, as in ``DiTPipeline``.
        image_size: the size images come out at (the data's; the UNet may work at another).
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: UNet2DModel, scheduler: SchedulerMixin, id2label: dict | None = None,
                 image_size: int | None = None):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        id2label = {int(k): str(v) for k, v in (id2label or {}).items()}
        self.register_to_config(id2label={str(k): v for k, v in id2label.items()},
                                image_size=image_size or unet.config.sample_size)
        self.id2label = id2label
        self.labels = {name: i for i, name in sorted(id2label.items())}

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, sampler: str = DEFAULT_SAMPLER, **kwargs):
        """``DiffusionPipeline.from_pretrained`` (safetensors only, unless ``use_safetensors=False``), with the
        saved training scheduler replaced by ``sampler`` built on it unless ``scheduler=`` is given.

        A latent-text model folder (LoRA weights and class tokens on a base model) loads as the base's
        ``StableDiffusionPipeline`` with the adapters applied, plus ``id2label``, ``prompts`` (class name → the
        caption it was trained with) and ``get_label_ids``: call it with ``prompt=pipe.prompts["cat"]``."""
        from synthaug.sampling import make_scheduler

        text = _latent_text(pretrained_model_name_or_path)
        if text is not None:
            return text
        kwargs.setdefault("use_safetensors", True)
        given = "scheduler" in kwargs
        pipe = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        if not given:
            pipe.scheduler = make_scheduler(sampler, pipe.scheduler.config)
        return pipe

    @property
    def null_class(self) -> int:
        return int(self.unet.config.num_class_embeds) - 1

    def get_label_ids(self, label: str | list[str]) -> list[int]:
        """Class names → class ids (``DiTPipeline.get_label_ids``)."""
        return _label_ids(self.labels, label)

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | list[int] | torch.Tensor,
        guidance_scale: float = 2.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = 20,
        output_type: str = "pil",
        return_dict: bool = True,
        precision: str = "auto",
        guidance_interval: tuple[float, float] = (0.0, 1.0),
    ) -> ImagePipelineOutput | tuple:
        """Draw one image per class label.

        Args:
            class_labels: class ids (``get_label_ids`` turns names into them).
            guidance_scale: w in ε = ε_u + w·(ε_c − ε_u); 1 is plain conditional sampling.
            generator: one ``torch.Generator`` per image (then image i depends only on its own), one for all
                (it draws each image's seed), or None (random).
            num_inference_steps: denoising steps.
            output_type: ``"pil"``, ``"np"`` (float32 NHWC in [0, 1]) or ``"pt"`` (float32 NCHW in [0, 1]).
            precision: ``"auto"`` (bf16 autocast where the device computes bf16 natively, as ``synthaug generate``
                does by default), ``"32-true"`` or ``"bf16-mixed"``.
            guidance_interval: ``(start, stop)``, the share of the steps that apply guidance, counted from the
                noisiest (``generate.guidance_interval``; diffusers' ``ClassifierFreeGuidance(start=, stop=)``).
        """
        from synthaug.images import fit_arrays, to_pil, to_uint8
        from synthaug.sampling import denoise, resolve_precision

        labels = torch.as_tensor(class_labels, dtype=torch.long).reshape(-1)
        if len(labels) and not (0 <= int(labels.min()) and int(labels.max()) < self.null_class):
            raise ValueError(f"class_labels must be ids from 0 to {self.null_class - 1}, got {labels.tolist()}")
        if precision not in ("auto", "32-true", "bf16-mixed"):
            raise ValueError(f"precision must be 'auto', '32-true' or 'bf16-mixed', got {precision!r}")
        start, stop = guidance_interval
        if not 0.0 <= start < stop <= 1.0:
            raise ValueError(f"guidance_interval must be (start, stop) with 0 <= start < stop <= 1, got {guidance_interval}")
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
        generators = _per_image(generator, len(labels))
        if self.unet.device.type != "cpu":  # noise is drawn on the CPU (so images match across devices)
            generators = [g if g.device.type == "cpu" else torch.Generator().manual_seed(g.initial_seed())
                          for g in generators]
        autocast = resolve_precision(precision, self.unet.device)[0] == "bf16-mixed"
        images = denoise(self.unet, self.scheduler, labels, generators, steps=num_inference_steps,
                         guidance=guidance_scale, null_class=self.null_class, autocast=autocast,
                         guidance_interval=(start, stop))
        arrays = fit_arrays(to_uint8(images), int(self.config.image_size))
        if output_type == "pil":
            out = [to_pil(a) for a in arrays]
        else:
            out = arrays.astype(np.float32) / 255.0
            if output_type == "pt":
                out = torch.from_numpy(out).permute(0, 3, 1, 2)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=out) if return_dict else (out,)


def _latent_text(path):
    """The diffusers pipeline of a local latent-text model folder, or None for anything else."""
    from synthaug.diffusion import META_FILE, read_meta

    folder = Path(path)
    if not (folder / META_FILE).is_file() or read_meta(folder).get("backbone") != "latent-text":
        return None
    from synthaug.latent_text_sampling import load_text_pipeline

    pipe, meta = load_text_pipeline(folder)
    pipe.id2label = dict(enumerate(meta["classes"]))
    pipe.prompts = dict(meta["prompts"])
    pipe.get_label_ids = functools.partial(_label_ids, {name: i for i, name in pipe.id2label.items()})
    return pipe


def _label_ids(labels: dict[str, int], label: str | list[str]) -> list[int]:
    names = [label] if isinstance(label, str) else list(label)
    unknown = [n for n in names if n not in labels]
    if unknown:
        raise ValueError(f"unknown class {unknown[0]!r}; the classes are {list(labels)}")
    return [labels[n] for n in names]


def _per_image(generator, n: int) -> list[torch.Generator]:
    """One CPU generator per image: as given, one seed each drawn from a single generator, or random."""
    if isinstance(generator, list):
        if len(generator) != n:
            raise ValueError(f"got {len(generator)} generators for {n} class labels; give one per image or one")
        return generator
    source = generator if generator is not None else torch.Generator().manual_seed(
        int(torch.randint(0, 2**63 - 1, (1,)).item()))
    seeds = torch.randint(0, 2**63 - 1, (n,), generator=source, device=source.device).tolist()
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def write_model_index(model_dir: Path, classes: list[str], image_size: int) -> Path:
    """``model_dir/model_index.json``: what ``DiffusionPipeline.from_pretrained`` reads to assemble the pipeline
    from the ``unet/`` and ``scheduler/`` folders ``diffusion.save_model`` writes."""
    import diffusers

    from synthaug.io import atomic_write_text

    index = {
        "_class_name": SynthaugPipeline.__name__,
        "_diffusers_version": diffusers.__version__,
        "id2label": {str(i): name for i, name in enumerate(classes)},
        "image_size": int(image_size),
        "scheduler": ["diffusers", "DDPMScheduler"],  # the training schedule; from_pretrained builds the sampler
        "unet": ["diffusers", "UNet2DModel"],
    }
    path = Path(model_dir) / MODEL_INDEX
    atomic_write_text(path, json.dumps(index, indent=2))
    return path

