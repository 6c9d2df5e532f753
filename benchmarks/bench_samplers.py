"""Which sampler, steps and guidance make recognisable images: judge accuracy and time per setting.

    .venv/bin/python benchmarks/bench_samplers.py [--run runs/digits-longtail] [--per-class 20] [--no-write]

A judge classifier (``train_judge``, classic augmentation) is trained on the run's real training split and
scores the real test split; then each setting samples ``--per-class`` images per class from the same
per-image seeds, and the judge's accuracy on them (overall, and on the rarest class) and the wall time are
recorded. Two threads. Writes the ``samplers`` section of docs/BENCHMARKS.md.
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

# (sampler, steps, guidance)
SETTINGS = (
    ("dpmpp", 20, 2.0), ("dpmpp-ode", 20, 2.0), ("ddim", 20, 2.0), ("unipc", 20, 2.0), ("euler", 20, 2.0),
    ("dpmpp", 10, 2.0), ("dpmpp", 20, 1.0), ("dpmpp", 20, 4.0), ("ddpm", 250, 2.0),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/digits-longtail")
    parser.add_argument("--per-class", type=int, default=20)
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
    rows = []
    for sampler, steps, guidance in SETTINGS:
        started = time.perf_counter()
        images = generator.sample_arrays(labels.tolist(), seeds, guidance=guidance, steps=steps, sampler=sampler)
        seconds = time.perf_counter() - started
        hits = predict(judge, images) == labels
        per_class = hits.reshape(k, args.per_class).mean(1)
        rows.append([sampler, steps, guidance, f"{hits.mean():.3f}", f"{per_class.min():.2f}",
                     f"{per_class[rarest]:.2f}", f"{len(labels) / seconds:.1f}"])
        print(" | ".join(map(str, rows[-1])), flush=True)
    text = "\n".join([
        "## Samplers: judge accuracy per sampler, steps and guidance", "",
        f"`benchmarks/bench_samplers.py --run {args.run} --per-class {args.per_class}` on {machine_line()}. "
        f"Model: `{args.run}/model` ({runs.checkpoint_step(Path(args.run) / 'checkpoints' / 'last.ckpt')} "
        f"training steps). Judge: `train_judge` ({recipe.evaluate.judge_steps} steps) on the real training "
        f"split, {judge_test:.1%} on the real test split. {args.per_class} images per class, the same "
        "per-image seeds for every setting; 2 threads.", "",
        table(["sampler", "steps", "guidance", "judge accuracy", "worst class", f"rarest class ({data.classes[rarest]})",
               "img/s"], rows), "",
        "- `dpmpp` is DPM-Solver++ (2nd order) in its SDE form, `dpmpp-ode` the deterministic form; both "
        "threshold the clean-image estimate. Both start at t = T of the cosine schedule, where an epsilon "
        "model's clean-image estimate is poor; the SDE form re-injects noise each step and recovers, the ODE "
        "form does not.",
        f"- Load average before {load_before}, after {load_average()}.",
    ])
    print(text)
    if not args.no_write:
        update_section("samplers", text)


if __name__ == "__main__":
    main()
