"""``synthaug generate`` end to end: the recipe's settings against ``generate.precision=32-true`` and against full
guidance, on the same trained model, in one run; and ``precision: auto`` with the CPU's bf16 flags hidden, as it
runs on a CPU without native bf16 (it must cost nothing against explicit float32).

    .venv/bin/python benchmarks/bench_generate.py [--recipe recipes/digits-longtail.yaml]
        [--model runs/digits-longtail/model] [--repeats 2] [--no-write]

``--model`` is a model trained with the recipe (``make demo`` leaves one). Each setting runs the whole stage (``stages.generate``: the plan, the Lightning predict loop, shards, the
dataset written in every format the recipe names) into its own copy of the run, in turns (ABBA) so they share the
machine's load; the fastest of ``--repeats`` counts. What each setting made is then scored by one judge
(``train_judge`` on the real training split), so "faster" can be checked against "as recognisable". Writes the
``generate`` block of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_average, machine_line, note, table, update_section  # noqa: E402

# name -> overrides on top of the recipe; the first is the reference the ratios are to: the demo's sampling
# before issue 19 (guidance 1.5 on every step, float32).
EVERY_STEP = ["generate.guidance=1.5", "generate.guidance_interval=[0,1]"]
NO_BF16 = "recipe settings (auto), CPU flags hidden"
SETTINGS = {
    "guidance 1.5 on every step, 32-true": [*EVERY_STEP, "generate.precision=32-true"],
    "guidance 1.5 on every step, auto": EVERY_STEP,
    "recipe settings, 32-true": ["generate.precision=32-true"],
    "recipe settings (auto)": [],
    # What `auto` does on a CPU without native bf16: this machine's flags hidden from synthaug (float32 again).
    NO_BF16: [],
}


@contextmanager
def hidden_flags(hide: bool):
    """Within: synthaug sees a CPU without avx512_bf16/amx_bf16 (``sampling.cpu_flags`` says only avx2)."""
    from synthaug import sampling

    saved = sampling.cpu_flags
    if hide:
        sampling.cpu_flags = lambda: frozenset({"avx2"})
    try:
        yield
    finally:
        sampling.cpu_flags = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="recipes/digits-longtail.yaml")
    parser.add_argument("--model", default="runs/digits-longtail/model", help="a model trained with the recipe")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--judge-steps", type=int, default=400)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    from synthaug import stages
    from synthaug.classifiers import predict, train_judge
    from synthaug.config import load_recipe
    from synthaug.evaluation import EvalData
    from synthaug.evaluation_inputs import synthetic_arrays
    from synthaug.sampling import resolve_precision

    if not (Path(args.model) / "synthaug.json").exists():
        sys.exit(f"bench_generate: no model at {args.model}; run `make demo` first, or pass --model")
    load_before = load_average()
    tmp = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    best: dict[str, float] = {}
    made: dict[str, Path] = {}
    names = list(SETTINGS)
    for r in range(args.repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            copy = tmp / f"{names.index(name)}-{r}"
            shutil.copytree(args.model, copy / "model")
            recipe = load_recipe(args.recipe, overrides=SETTINGS[name], out=copy)
            with hidden_flags(name == NO_BF16):
                started = time.perf_counter()
                stages.generate(recipe, progress=False)
                seconds = time.perf_counter() - started
            note(f"run {r + 1}: {name:45s} {seconds:6.1f} s")
            if name not in best or seconds < best[name]:
                best[name] = seconds
            made[name] = copy

    recipe = load_recipe(args.recipe, overrides=[f"evaluate.judge_steps={args.judge_steps}"], out=tmp / "judge")
    x, y, ids, data = stages.real_arrays(recipe)
    judge = train_judge(EvalData(x, y, ids), len(data.classes), recipe.evaluate, recipe.seed)
    rows, first = [], None
    for name in names:
        sx, sy, _ = synthetic_arrays(made[name] / "synthetic", recipe.data.image_size, recipe.data.channels)
        info = json.loads((made[name] / "synthetic" / "generation.json").read_text())
        hits = predict(judge, sx) == sy
        rate = len(sy) / best[name]
        first = first or (rate, hits)
        same_rows = len(hits) == len(first[1])
        delta = 100 * (hits.mean() - first[1].mean())
        rows.append([name, info["precision"], f"{info['guidance']:g}",
                     "–".join(f"{v:g}" for v in info["guidance_interval"]), len(sy), f"{best[name]:.1f}",
                     f"{rate:.1f}", f"{rate / first[0]:.2f}×", f"{hits.mean():.3f}",
                     f"{delta:+.1f}" if same_rows else "—"])
    shutil.rmtree(tmp, ignore_errors=True)
    g = recipe.generate
    auto, fp32 = names.index("recipe settings (auto)"), names.index("recipe settings, 32-true")
    text = "\n".join([
        "## `synthaug generate` end to end: precision and guidance interval", "",
        f"`benchmarks/bench_generate.py --recipe {args.recipe} --model {args.model} --repeats {args.repeats}` on "
        f"{machine_line()}. Recipe settings: {g.sampler}, {g.steps} steps, guidance {g.guidance:g} on steps "
        f"{g.guidance_interval[0]:g}–{g.guidance_interval[1]:g}); `precision: auto` resolves to "
        f"`{resolve_precision('auto')[0]}` here.", "",
        table(["setting", "precision", "guidance", "guided steps", "images", "seconds (best)", "img/s",
               "× first row", "judge accuracy", "Δ judge vs first row (points)"], rows), "",
        f"- **precision auto vs 32-true, recipe settings:** {best[names[fp32]] / best[names[auto]]:.2f}× "
        f"(judge {rows[auto][8]} vs {rows[fp32][8]}). Where bf16 is not native (flags hidden), `auto` is float32: "
        f"{best[names[fp32]] / best[NO_BF16]:.2f}× explicit 32-true (judge {rows[names.index(NO_BF16)][8]}).",
        "- Timed: the whole `stages.generate` call (plan, Lightning predict loop, shards, writing the dataset in the "
        f"recipe's formats {g.formats}), best of {args.repeats}, the settings taking turns. Not timed: the judge.",
        f"- Judge: `train_judge` ({args.judge_steps} steps) on the real training split; every setting samples the "
        "same plan (same labels and per-image seeds), so Δ is paired image by image.",
        f"- Load average before {load_before}, after {load_average()}.",
    ])
    print(text)
    if not args.no_write:
        update_section("generate", text)


if __name__ == "__main__":
    main()
