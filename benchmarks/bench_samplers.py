"""Which sampler, steps, guidance and precision make recognisable images: judge accuracy per second.

    .venv/bin/python benchmarks/bench_samplers.py [--run runs/digits-longtail] [--per-class 50] [--guidance 1.5]
        [--reference] [--short] [--section samplers] [--no-write]

A judge classifier (``train_judge``, classic augmentation) is trained on the run's real training split and
scores the real test split; then each setting samples ``--per-class`` images per class from the same
per-image seeds, and the judge's accuracy on them (overall, worst class, rarest class), its difference to the
first row (DPM-Solver++, 20 steps, fp32, ``--guidance``) paired image by image with a 95% interval, and
the speed as a ratio to that row, measured in the same run, are recorded. Rows with a guidance interval
(``generate.guidance_interval``) guide only that share of the steps. bf16 rows (autocast) run only where
the CPU computes bf16 natively. ``--reference`` adds 250 DDPM steps (slow); ``--short`` keeps only the rows
that decide the defaults (for slower models: the RGB development set). Two threads. Writes the ``--section``
block (default ``samplers``) of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_average, machine_line, table, update_section  # noqa: E402

# (sampler, steps, guidance or None for --guidance, bf16 autocast, guidance interval); the first row is the
# reference.
EVERY = (0.0, 1.0)
SETTINGS = (
    ("dpmpp", 20, None, False, EVERY), ("dpmpp", 15, None, False, EVERY), ("dpmpp", 12, None, False, EVERY),
    ("dpmpp", 10, None, False, EVERY), ("dpmpp", 8, None, False, EVERY),
    ("dpmpp", 20, None, True, EVERY), ("dpmpp", 15, None, True, EVERY), ("dpmpp", 12, None, True, EVERY),
    ("dpmpp", 10, None, True, EVERY), ("dpmpp", 8, None, True, EVERY),
    # Guidance on part of the steps only (Kynkäänniemi et al. 2024): the unguided steps cost half.
    ("dpmpp", 20, None, True, (0.0, 0.75)), ("dpmpp", 20, None, True, (0.0, 0.6)),
    ("dpmpp", 20, None, True, (0.0, 0.5)), ("dpmpp", 20, None, True, (0.0, 0.4)),
    ("dpmpp", 20, None, True, (0.25, 1.0)), ("dpmpp", 20, 2.0, True, (0.0, 0.5)),
    ("dpmpp", 20, 1.75, True, (0.0, 0.6)), ("dpmpp", 20, 2.0, True, EVERY),
    ("dpmpp", 20, None, False, (0.0, 0.5)),
    ("dpmpp-ode", 20, None, False, EVERY), ("ddim", 20, None, False, EVERY), ("unipc", 20, None, False, EVERY),
    ("euler", 20, None, False, EVERY), ("dpmpp", 20, 1.0, False, EVERY), ("dpmpp", 20, 4.0, False, EVERY),
)
REFERENCE = ("ddpm", 250, None, False, EVERY)
# --short: the rows that decide the defaults, for models that sample slowly (the RGB development set).
SHORT = (
    ("dpmpp", 20, None, False, EVERY), ("dpmpp", 20, None, True, EVERY), ("dpmpp", 12, None, True, EVERY),
    ("dpmpp", 10, None, True, EVERY), ("dpmpp", 20, None, True, (0.0, 0.5)), ("dpmpp", 20, "x4/3", True, (0.0, 0.5)),
)


def paired_interval(a: np.ndarray, b: np.ndarray, rounds: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of b − a (per-image hits, same seeds) with a 95% bootstrap interval over images."""
    diff = b.astype(float) - a.astype(float)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (rounds, len(diff)))].mean(1)
    return float(diff.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/digits-longtail")
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--guidance", type=float, default=1.5,
                        help="guidance of the rows that name none: the demo's full-guidance scale before the "
                             "guidance interval (bench_quality: 1.5 beat 2 downstream on the long tail)")
    parser.add_argument("--reference", action="store_true", help="add 250 DDPM steps (slow)")
    parser.add_argument("--short", action="store_true", help="only the rows that decide the defaults")
    parser.add_argument("--section", default="samplers", help="docs/BENCHMARKS.md block to write")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    from synthaug import runs, stages
    from synthaug.classifiers import predict, train_judge
    from synthaug.config import load_recipe
    from synthaug.evaluation import EvalData
    from synthaug.sampling import Generator
    from synthaug.seeds import derive_seed

    load_before = load_average()
    recipe = load_recipe(args.run)
    x, y, ids, data = stages.real_arrays(recipe)
    k = len(data.classes)
    judge = train_judge(EvalData(x, y, ids), k, recipe.evaluate, recipe.seed)
    test_x, test_y = stages.held_out_images(recipe, data), np.asarray(data.test["label"])
    judge_test = float((predict(judge, test_x) == test_y).mean())
    print(f"judge accuracy on the real test split: {judge_test:.3f}", flush=True)
    torch.set_num_threads(2)
    generator = Generator.from_pretrained(Path(args.run) / "model")
    rarest = int(np.argmin(data.train_counts))
    labels = np.repeat(np.arange(k), args.per_class)
    seeds = [derive_seed(recipe.seed, int(c), i % args.per_class) for i, c in enumerate(labels)]
    from synthaug.sampling import bf16_supported

    rows, first = [], None
    settings = [*(SHORT if args.short else SETTINGS), *([REFERENCE] if args.reference else [])]
    for sampler, steps, guidance, bf16, interval in settings:
        if bf16 and not bf16_supported():
            continue  # emulated bf16 is many times slower: no row
        guidance = args.guidance if guidance is None else args.guidance * 4 / 3 if guidance == "x4/3" else guidance
        generator.sample_arrays(labels[:4].tolist(), seeds[:4], guidance=guidance, steps=steps, sampler=sampler,
                                autocast=bf16, guidance_interval=interval)  # warm-up
        started = time.perf_counter()
        images = generator.sample_arrays(labels.tolist(), seeds, guidance=guidance, steps=steps, sampler=sampler,
                                         autocast=bf16, guidance_interval=interval)
        rate = len(labels) / (time.perf_counter() - started)
        hits = predict(judge, images) == labels
        first = first or (hits, rate)
        mean, low, high = paired_interval(first[0], hits)
        per_class = hits.reshape(k, args.per_class).mean(1)
        rows.append([sampler, steps, f"{guidance:.3g}", f"{interval[0]:g}–{interval[1]:g}", "bf16" if bf16 else "fp32",
                     f"{hits.mean():.3f}",
                     f"{100 * mean:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]", f"{per_class.min():.2f}",
                     f"{per_class[rarest]:.2f}", f"{rate:.1f}", f"{rate / first[1]:.2f}×"])
        print(" | ".join(map(str, rows[-1])), flush=True)
    text = "\n".join([
        "## Samplers: judge accuracy per sampler, steps and guidance"
        + ("" if args.section == "samplers" else f" ({recipe.name}, {recipe.data.image_size} px, "
                                                  f"{recipe.data.channels} channel(s))"), "",
        f"`benchmarks/bench_samplers.py --run {args.run} --per-class {args.per_class} --guidance {args.guidance:g}"
        f"{' --short' if args.short else ''}{'' if args.section == 'samplers' else ' --section ' + args.section}"
        f"{' --reference' if args.reference else ''}` on {machine_line()}. "
        f"Model: `{args.run}/model` ({runs.checkpoint_step(Path(args.run) / 'checkpoints' / 'last.ckpt')} "
        f"training steps). Judge: `train_judge` ({recipe.evaluate.judge_steps} steps) on the real training "
        f"split, {judge_test:.1%} on the real test split. {args.per_class} images per class, the same "
        "per-image seeds for every setting; 2 threads.", "",
        table(["sampler", "steps", "guidance", "guided steps", "precision", "judge accuracy",
               "Δ judge vs first row, points [95%]", "worst class", f"rarest class ({data.classes[rarest]})",
               "img/s", "× first row"], rows), "",
        "- Δ judge: paired image by image (same seeds), 95% bootstrap interval over the images; one image is "
        f"{100 / len(labels):.1f} points. Speed: the same call, labels to uint8 arrays, after a warm-up, as a "
        "ratio to the first row measured in this run.",
        "- `dpmpp` is DPM-Solver++ (2nd order) in its SDE form, `dpmpp-ode` the deterministic form; both "
        "threshold the clean-image estimate. Both start at t = T of the cosine schedule, where an epsilon "
        "model's clean-image estimate is poor; the SDE form re-injects noise each step and recovers, the ODE "
        "form does not.",
        "- Guided steps: `generate.guidance_interval` [start, stop], the share of the steps (from the noisiest) "
        "that apply guidance, counted as diffusers' `ClassifierFreeGuidance(start=, stop=)` counts them; the other "
        "steps take the conditional prediction alone, one UNet row per image instead of two.",
        f"- Load average before {load_before}, after {load_average()}.",
    ])
    print(text)
    if not args.no_write:
        update_section(args.section, text)


if __name__ == "__main__":
    main()
