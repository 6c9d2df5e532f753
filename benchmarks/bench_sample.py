"""Sampling images/second: ``synthaug.sampling.Generator.sample`` against a plain diffusers loop, in one run.

Both sample the same labels (``i mod K``) with the same UNet, DPM-Solver++ scheduler (``make_scheduler("dpmpp",
...)`` from the model's training scheduler), steps, guidance and batch size. The plain loop is what a
diffusers user writes: one ``torch.Generator`` for the batch noise and two UNet calls per step (conditional,
then null class), under ``torch.no_grad``. Modes of ``Generator.sample``:

- fp32, as shipped (guidance batched: 2B rows per step, in UNet calls of at most 256 rows), on ``--images`` images beside the plain loop;
- fp32 channels_last: the same call after the caller converts the UNet's weights with
  ``gen.unet.to(memory_format=torch.channels_last)`` (synthaug unchanged), on ``--small-images`` images
  beside fp32 and the plain loop on the same images;
- bf16 autocast (``autocast=True``), likewise; on a CPU without native bf16 it is emulated and slow, so it
  runs on ``--bf16-images`` images only;
- the demo recipe's settings: what ``synthaug generate`` does with ``recipes/digits-longtail.yaml`` (its
  ``precision``, ``guidance`` and ``guidance_interval``), on ``--small-images`` images.

What is timed: the whole call that turns labels into images (noise, every UNet pass, guidance, scheduler
steps, conversion to PIL images or uint8 arrays), after one small warm-up call per path. The paths take turns
batch by batch (ABBA order); ``--repeats`` repeats that and keeps each path's best total. Model loading and the
judge are outside. Quality: a judge classifier (``synthaug.evaluation.train_judge`` on the real digits
training split) scores each mode's images, so a faster mode can be checked to keep judge accuracy within 1
point of fp32 on the same labels and seeds. The machine's reference speed: a 2048×2048 fp32 matmul and the
UNet's costliest conv2d alone; the UNet's FLOPs per image and step are counted with
``torch.utils.flop_counter.FlopCounterMode`` (matmul, conv and attention only).

Run from the repository root: ``.venv/bin/python benchmarks/bench_sample.py [--model runs/digits-longtail/model]
[--images 512] [--steps 20] [--no-write]`` (``make bench`` runs it). Without a trained model it first trains a
quick one (``--quick-steps``) into a temporary folder and says so. Writes the ``sample`` section of
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from _common import load_average, machine_line, native_bf16, note, table, update_section

ROOT = Path(__file__).resolve().parents[1]
RECIPE = "recipes/digits-longtail.yaml"
FP32_TARGET, FAST_TARGET, JUDGE_POINTS = 1.0, 2.0, 1.0


@torch.no_grad()
def plain_sample(unet, training_config, labels: list[int], *, steps: int, guidance: float, null_class: int,
                 batch_size: int, seed: int = 0) -> np.ndarray:
    """The plain diffusers loop: guidance as two forward passes per step → uint8 (N, H, W, C)."""
    from synthaug.images import to_uint8
    from synthaug.sampling import make_scheduler

    cfg = unet.config
    out = []
    for start in range(0, len(labels), batch_size):
        y = torch.tensor(labels[start:start + batch_size])
        null = torch.full_like(y, null_class)
        scheduler = make_scheduler("dpmpp", training_config)
        scheduler.set_timesteps(steps)
        noise = torch.randn((len(y), cfg.in_channels, cfg.sample_size, cfg.sample_size),
                            generator=torch.Generator().manual_seed(seed + start))
        x = noise * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            x_in = scheduler.scale_model_input(x, t)
            cond = unet(x_in, t, class_labels=y).sample
            uncond = unet(x_in, t, class_labels=null).sample
            x = scheduler.step(uncond + guidance * (cond - uncond), t, x).prev_sample
        out.append(to_uint8(x.clamp(-1, 1)))
    return np.concatenate(out)


def to_array(images) -> np.ndarray:
    if isinstance(images, np.ndarray):
        return images
    return np.stack([np.asarray(im) for im in images]).reshape(len(images), *np.asarray(images[0]).shape[:2], -1)


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def quick_model(tmp: Path, steps: int) -> Path:
    from synthaug.config import load_recipe
    from synthaug.stages import train

    recipe = load_recipe(RECIPE, [f"train.max_steps={steps}", "train.sample_every=null",
                                  f"train.checkpoint_every={steps + 1}"], out=tmp / "quick")
    note(f"no trained model: training a quick one ({steps} steps) in {recipe.run_dir}")
    return train(recipe, progress=False)


def matmul_gflops(n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(timed(torch.mm, a, b)[0] for _ in range(reps))
    return 2 * n**3 / best / 1e9


def costliest_conv(unet, batch: int):
    """The UNet's conv2d with the most FLOPs in one forward of ``batch`` images → (module, input shape, flops)."""
    shapes = {}
    hooks = [m.register_forward_hook(lambda m, inp, out: shapes.__setitem__(m, (inp[0].shape, out.shape)))
             for m in unet.modules() if isinstance(m, torch.nn.Conv2d)]
    cfg = unet.config
    with torch.no_grad():
        unet(torch.zeros(batch, cfg.in_channels, cfg.sample_size, cfg.sample_size), 10,
             class_labels=torch.zeros(batch, dtype=torch.long))
    for h in hooks:
        h.remove()

    def flops(m):
        out = shapes[m][1]
        return 2 * out.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]

    conv = max(shapes, key=flops)
    return conv, shapes[conv][0], flops(conv)


@torch.no_grad()
def conv_gflops(conv, shape, flops: int, reps: int = 5) -> float:
    x = torch.randn(shape)
    conv(x)
    return flops / min(timed(conv, x)[0] for _ in range(reps)) / 1e9


def unet_flops_per_image_step(unet) -> int:
    """Counted FLOPs of one guided step for one image (a conditional and a null-class forward)."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = unet.config
    x = torch.zeros(8, cfg.in_channels, cfg.sample_size, cfg.sample_size)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        unet(x, 10, class_labels=torch.zeros(8, dtype=torch.long))
    return counter.get_total_flops() // 4


def run_group(fns: dict, labels: list[int], batch_size: int, repeats: int):
    """Run every path in ``fns`` on ``labels``, batch by batch in ABBA order → {name: (best seconds, uint8 images)}."""
    chunks = [labels[i:i + batch_size] for i in range(0, len(labels), batch_size)]
    names = list(fns)
    best: dict[str, tuple[float, np.ndarray]] = {}
    for r in range(repeats):
        total, images = dict.fromkeys(names, 0.0), {n: [] for n in names}
        for c, chunk in enumerate(chunks):
            for name in (names if (r + c) % 2 == 0 else names[::-1]):
                s, out = timed(fns[name], chunk, seed=c)
                total[name] += s
                images[name].append(to_array(out))
        for name in names:
            note(f"{len(labels):4d} images, run {r + 1}: {name:38s} {len(labels) / total[name]:7.1f} img/s")
            if name not in best or total[name] < best[name][0]:
                best[name] = (total[name], np.concatenate(images[name]))
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="runs/digits-longtail/model")
    parser.add_argument("--images", type=int, default=512, help="images for plain vs Generator.sample in fp32")
    parser.add_argument("--small-images", type=int, default=64, help="images for the other modes")
    parser.add_argument("--bf16-images", type=int, default=16, help="images for bf16 on a CPU without native bf16")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=1.5,
                        help="guidance of every path but the demo recipe's settings, which use the recipe's")
    parser.add_argument("--batch-size", type=int, default=256, help="images per batch (the UNet sees twice as many)")
    parser.add_argument("--repeats", type=int, default=1, help="passes over each group; each path's best counts")
    parser.add_argument("--judge-steps", type=int, default=150, help="training steps of the judge")
    parser.add_argument("--quick-steps", type=int, default=150, help="training steps of the quick model, if needed")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    model_arg, args.model = args.model, Path(args.model).resolve()
    os.chdir(ROOT)  # the recipe and docs/BENCHMARKS.md are found from the repository root

    import diffusers
    import pytorch_lightning  # noqa: F401  (it resets its loggers to INFO on import)

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    diffusers.utils.logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)

    from synthaug.classifiers import predict, train_judge
    from synthaug.config import load_recipe
    from synthaug.evaluation import EvalData
    from synthaug.sampling import Generator, bf16_supported, guided_steps, resolve_precision
    from synthaug.stages import real_arrays

    load_before = load_average()
    tmp = tempfile.TemporaryDirectory(prefix="bench-sample-")
    model, quick = args.model, False
    if not (model / "synthaug.json").exists():
        model, quick = quick_model(Path(tmp.name), args.quick_steps), True
    gen = Generator.from_pretrained(model)
    k = len(gen.classes)
    labels = [i % k for i in range(args.images)]
    kw = {"steps": args.steps, "guidance": args.guidance, "batch_size": args.batch_size}

    def plain(lab, seed=0):
        return plain_sample(gen.unet, gen.training_scheduler.config, lab, null_class=gen.null_class, seed=seed, **kw)

    def fp32(lab, seed=0):
        return gen.sample(lab, seed=seed, autocast=False, **kw)

    def channels_last(lab, seed=0):
        gen.unet.to(memory_format=torch.channels_last)
        try:
            return gen.sample(lab, seed=seed, autocast=False, **kw)
        finally:
            gen.unet.to(memory_format=torch.contiguous_format)

    def bf16(lab, seed=0):
        return gen.sample(lab, seed=seed, autocast=True, **kw)

    shipped = load_recipe(RECIPE).generate  # the demo recipe's sampling settings
    interval = tuple(shipped.guidance_interval)

    def defaults(lab, seed=0):  # what `synthaug generate` does with the demo recipe
        return gen.sample(lab, seed=seed, autocast=None, guidance_interval=interval,
                          **{**kw, "guidance": shipped.guidance})

    precision = resolve_precision(shipped.precision)[0]
    guided = len(guided_steps(args.steps, interval, shipped.guidance))
    share = (2 * guided + (args.steps - guided)) / (2 * args.steps)  # of a fully guided call's UNet rows
    PLAIN, FP32, CL, BF16 = ("plain loop, fp32", "Generator.sample, fp32", "Generator.sample, fp32 channels_last",
                             "Generator.sample, bf16 autocast")
    DEFAULTS = (f"Generator.sample, {RECIPE.split('/')[-1]} settings ({precision}, guidance {shipped.guidance:g} "
                f"on steps {interval[0]:g}–{interval[1]:g})")
    native = native_bf16()
    groups = [(args.images, {PLAIN: plain, FP32: fp32}), (args.small_images, {PLAIN: plain, FP32: fp32, CL: channels_last})]
    if native:
        groups[1][1][BF16] = bf16
    else:
        groups.append((args.bf16_images, {PLAIN: plain, FP32: fp32, BF16: bf16}))
    groups[1][1][DEFAULTS] = defaults
    for fn in (plain, fp32, channels_last, bf16, defaults):  # warm-up: first calls build oneDNN primitives
        fn(labels[:4])
    # The second group is short, so it gets at least two passes; emulated bf16 is slow and gets --repeats.
    results = {n: run_group(fns, labels[:n], min(args.batch_size, n), max(args.repeats, 2) if i == 1 else args.repeats)
               for i, (n, fns) in enumerate(groups)}

    # Reference speed of the machine and of the UNet.
    matmul = matmul_gflops()
    conv, conv_shape, conv_flops = costliest_conv(gen.unet, 2 * args.batch_size)
    conv_rate = conv_gflops(conv, conv_shape, conv_flops)
    flops = unet_flops_per_image_step(gen.unet)
    note(f"matmul {matmul:.1f} GFLOP/s, conv {conv_rate:.1f} GFLOP/s, UNet {flops / 1e6:.1f} MFLOP/image-step")

    # Quality: a judge trained on the real training split.
    recipe = load_recipe(RECIPE, [f"evaluate.judge_steps={args.judge_steps}"])
    x, y, ids, _ = real_arrays(recipe)
    judge = train_judge(EvalData(x, y, ids), k, recipe.evaluate, recipe.seed)
    tx, ty, _, _ = real_arrays(recipe, split="test")
    judge_real = float((predict(judge, tx) == ty).mean())
    note(f"judge: {100 * judge_real:.1f}% on the real test split")
    load_after = load_average()

    rows, kept = [], []
    for n, runs in results.items():
        rate = {name: n / secs for name, (secs, _) in runs.items()}
        acc = {name: float((predict(judge, out) == np.asarray(labels[:n])).mean()) for name, (_, out) in runs.items()}
        for name, (_, out) in runs.items():
            speedup, delta = rate[name] / rate[PLAIN], 100 * (acc[name] - acc[FP32])
            pixels = "—" if name == PLAIN else f"{np.abs(out.astype(int) - runs[FP32][1].astype(int)).mean():.2f}"
            gflops = rate[name] * args.steps * flops * (share if name == DEFAULTS else 1.0) / 1e9
            target = ""
            if name == FP32 and n == args.images:
                target = f"≥ {FP32_TARGET:g}×: {'yes' if speedup >= FP32_TARGET else 'no'}"
            if name == DEFAULTS:
                target = (f"≥ {FAST_TARGET:g}×, judge ≥ fp32 − {JUDGE_POINTS:g} point: "
                          f"{'yes' if speedup >= FAST_TARGET and delta >= -JUDGE_POINTS else 'no'}")
            # A faster mode counts if it loses at most JUDGE_POINTS of judge accuracy (a gain is no loss).
            if (name in (CL, BF16, DEFAULTS) or (name == FP32 and n == args.images)) and delta >= -JUDGE_POINTS:
                kept.append((speedup, name, n))
            rows.append([name, n, f"{rate[name]:.1f}", f"{speedup:.2f}×", f"{100 * acc[name]:.1f}%", f"{delta:+.1f}",
                         pixels, f"{gflops:.1f} ({100 * gflops / matmul:.0f}% / {100 * gflops / conv_rate:.0f}%)",
                         target])
    fastest = max(kept) if kept else None
    header = ["mode", "images", "img/s", "× plain loop", "judge accuracy", "Δ judge vs fp32 (points)",
              "mean abs pixel Δ vs fp32 (0–255)", "UNet GFLOP/s (% of matmul / conv peak)", "target"]
    model_note = (f"a **quick model** trained here for {args.quick_steps} steps (no trained model at `{model_arg}`), "
                  "so judge accuracies are low in absolute terms; compare the modes with one another"
                  if quick else f"`{model_arg}`")
    conv_desc = f"{conv.in_channels}→{conv.out_channels} {conv.kernel_size[0]}×{conv.kernel_size[1]} on {tuple(conv_shape)}"
    bf16_note = ("native bf16: bf16 autocast ran on the same images as channels_last." if native else
                 f"This CPU has no native bf16 (no avx512_bf16/amx_bf16; synthaug's `bf16_supported()` says "
                 f"{bf16_supported()}), so bf16 autocast ran on {args.bf16_images} images only.")
    fast_line = (f"{fastest[1]} ({fastest[2]} images), {fastest[0]:.2f}× the plain loop on the same images: the "
                 f"≥ {FAST_TARGET:g}× target is {'met' if fastest[0] >= FAST_TARGET else 'not met'}."
                 if fastest else "none.")
    markdown = "\n".join([
        "## Sampling: `Generator.sample` vs a plain diffusers loop",
        "",
        f"`benchmarks/bench_sample.py --images {args.images} --steps {args.steps} --guidance {args.guidance:g}` on "
        f"{machine_line()}, {args.threads} torch threads. Model: {model_note}. DPM-Solver++ (2nd order), "
        f"batches of up to {args.batch_size} images, labels `i mod {k}`.",
        "",
        table(header, rows),
        "",
        f"- **Fastest mode at most {JUDGE_POINTS:g} judge point below fp32:** {fast_line} Each group of rows (same "
        "image count) ran on the same labels and seeds; its ratios and Δs are within the group. The plain loop draws "
        "other noise, so its Δ shows how much judge accuracy moves between seeds.",
        f"- **Timed:** the whole call from labels to images (noise, {args.steps} steps of UNet passes, guidance, "
        "scheduler updates, conversion to PIL images / uint8 arrays), after one warm-up call per path. The paths "
        f"take turns batch by batch (ABBA); best of {args.repeats} pass(es) ({max(args.repeats, 2)} for the "
        f"{args.small_images}-image group). Not timed: loading the model, the judge.",
        "- **plain loop**: `make_scheduler('dpmpp', …)`, one `torch.Generator` for the batch noise, two UNet calls "
        "per step (class, then null class) under `torch.no_grad`. **channels_last**: the caller converts the "
        "UNet's weights (`gen.unet.to(memory_format=torch.channels_last)`); synthaug is unchanged. "
        f"**{RECIPE.split('/')[-1]} settings**: `Generator.sample` as `synthaug generate` runs with the demo "
        "recipe: its `generate.precision` (auto), `guidance` and `guidance_interval` (the share of the steps that "
        "are guided; the others run the conditional prediction alone); every other path guides every step at "
        f"`--guidance {args.guidance:g}`.",
        f"- {bf16_note}",
        f"- **Judge**: `train_judge` on the real training split ({len(y)} images, {args.judge_steps} steps, one "
        f"thread) scores {100 * judge_real:.1f}% on the real test split. Judge accuracy is the share of sampled "
        "images it gives their own label; with n images one image is 100/n points.",
        f"- **Machine peak**: 2048×2048 fp32 matmul {matmul:.1f} GFLOP/s; the UNet's costliest conv "
        f"({conv_desc}) alone {conv_rate:.1f} GFLOP/s. The UNet costs {flops / 1e6:.1f} MFLOP per image and "
        "guided step (two forwards; matmul, conv and attention counted by `FlopCounterMode`, norms and "
        f"element-wise ops not); the GFLOP/s column is img/s × steps × that ({share:.0%} of it for the demo "
        "recipe's settings, whose unguided steps run one forward).",
        f"- Load average before {load_before}, after {load_after}: other processes may have been running; "
        "the paths took turns under the same load.",
    ])
    print(markdown)
    if not args.no_write:
        print(f"wrote {update_section('sample', markdown)}", file=sys.stderr)
    tmp.cleanup()


if __name__ == "__main__":
    main()
