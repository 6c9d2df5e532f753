"""Does the synthetic data help? The evaluation harness on digits few-shot and long-tail settings.

For each setting, one diffusion model is trained under a fixed CPU budget (``--minutes``, wall clock on
this machine), then each generation *variant* (sampling from noise, variations of real images, guidance,
judge filtering, …) writes its own synthetic set. The five baselines (real, classic, oversample,
oversample+classic, smote) are trained once per setting; the synthetic arms once per variant, every arm
for the same number of optimizer steps and the same seeds. Everything is tested on the held-out split.

    .venv/bin/python benchmarks/bench_quality.py                 # all settings, default variants
    .venv/bin/python benchmarks/bench_quality.py --settings longtail10 --variants sample,variation0.5

Writes the tables to docs/BENCHMARKS.md (block ``bench_quality``) and the raw numbers to
``runs/bench-quality/results.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import load_average, machine_line, update_section  # noqa: E402

SETTINGS = {
    "fewshot10": ["data.subset.per_class=10"],
    "longtail10": ["data.subset.imbalance=10"],
    "longtail50": ["data.subset.imbalance=50"],
}
VARIANTS = {
    "sample": [],
    "sample-g4": ["generate.guidance=4.0"],
    "sample-filter0.9": ["generate.filter.min_confidence=0.9"],
    "variation0.5": ["generate.mode=variation", "generate.strength=0.5"],
    "variation0.7": ["generate.mode=variation", "generate.strength=0.7"],
}
BASELINES = ["real", "classic", "oversample", "oversample+classic", "smote"]
SYNTHETIC = ["synthetic", "real+synthetic", "real+synthetic+classic"]


def fmt(stat: dict | None) -> str:
    return "–" if stat is None else f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def evaluate_arms(recipe, arms: list[str]) -> dict:
    """Run ``arms`` of the harness on ``recipe``'s run dir; returns the arms dict and the quality dict."""
    import numpy as np

    from synthaug import stages
    from synthaug.evaluation import EvalData, quality_metrics, run_arms, train_judge

    x, y, ids, data = stages.real_arrays(recipe)
    test_x = stages._to_test_array(recipe, data)
    train = EvalData(x, y, ids)
    test = EvalData(test_x, np.asarray(data.test["label"]), np.asarray(data.test["id"]))
    synthetic, quality = None, None
    if any("synthetic" in a for a in arms):
        synthetic = EvalData(*stages.synthetic_arrays(recipe.run_dir / "synthetic", recipe.data.image_size,
                                                      recipe.data.channels))
        judge = train_judge(train, len(data.classes), recipe.evaluate, recipe.seed)
        quality, _ = quality_metrics(judge, train, synthetic, recipe.evaluate.memorization_threshold)
    cfg = recipe.evaluate.model_copy(update={"arms": arms})
    return {"arms": run_arms(train, test, synthetic, len(data.classes), cfg), "quality": quality,
            "train_counts": data.train_counts}


def run_setting(name: str, args) -> dict:
    from synthaug import stages
    from synthaug.config import load_recipe

    base_dir = ROOT / "runs" / "bench-quality" / name
    overrides = [*SETTINGS[name], f"train.max_steps={args.max_steps}", f"train.max_minutes={args.minutes}",
                 f"evaluate.seeds={json.dumps(list(range(args.seeds)))}", f"evaluate.steps={args.eval_steps}",
                 "train.sample_every=null"]
    recipe = load_recipe(ROOT / "recipes" / "digits-longtail.yaml", overrides=overrides, out=base_dir)
    started = time.perf_counter()
    stages.train(recipe, resume=True, progress=False)
    train_seconds = time.perf_counter() - started
    step = stages.checkpoint_step(base_dir / "checkpoints" / "last.ckpt")
    result = {"train_seconds": round(train_seconds), "train_steps": step, "variants": {}}
    print(f"[{name}] trained {step} steps in {train_seconds:.0f} s", flush=True)
    result["baselines"] = evaluate_arms(recipe, BASELINES)
    for variant in args.variants:
        vdir = base_dir / "variants" / variant
        if not (vdir / "model").exists():
            vdir.mkdir(parents=True, exist_ok=True)
            shutil.copytree(base_dir / "model", vdir / "model")
        vrecipe = load_recipe(ROOT / "recipes" / "digits-longtail.yaml", overrides=overrides + VARIANTS[variant],
                              out=vdir)
        t0 = time.perf_counter()
        stages.generate(vrecipe, resume=True, progress=False)
        gen_seconds = time.perf_counter() - t0
        res = evaluate_arms(vrecipe, SYNTHETIC)
        res["generate_seconds"] = round(gen_seconds)
        result["variants"][variant] = res
        print(f"[{name}] {variant}: " + ", ".join(f"{a} {fmt(r['macro_f1'])}" for a, r in res["arms"].items()),
              flush=True)
    return result


def table(name: str, result: dict) -> str:
    base = result["baselines"]["arms"]
    real = base["real"]["macro_f1"]["mean"]
    best_name = max(base, key=lambda a: base[a]["macro_f1"]["mean"])
    best = base[best_name]["macro_f1"]
    lines = [f"### {name}: {SETTINGS[name][0]} — diffusion model {result['train_steps']} steps in "
             f"{result['train_seconds']} s", "",
             "| arm | variant | macro-F1 (mean ± std) | lift over real | margin over best baseline | "
             "judge acc. | memorization |", "|---|---|---|---|---|---|---|"]
    for arm in BASELINES:
        m = base[arm]["macro_f1"]
        lines.append(f"| {arm} | – | {fmt(m)} | {m['mean'] - real:+.3f} | {m['mean'] - best['mean']:+.3f} | – | – |")
    for variant, res in result["variants"].items():
        q = res["quality"] or {}
        for arm, r in res["arms"].items():
            m = r["macro_f1"]
            beats = m["mean"] - best["mean"] > max(m["std"], best["std"])
            lines.append(
                f"| {arm} | {variant} | {fmt(m)} | {m['mean'] - real:+.3f} | {m['mean'] - best['mean']:+.3f}"
                f"{' ✓' if beats else ''} | {q.get('judge_accuracy', float('nan')):.3f} | "
                f"{q.get('memorization_rate', float('nan')):.3f} |")
    lines += ["", f"Best baseline: **{best_name}** ({fmt(best)}). ✓ = ahead of it by more than either arm's std."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated: " + ", ".join(SETTINGS))
    parser.add_argument("--variants", default="sample,variation0.5", help="comma-separated: " + ", ".join(VARIANTS))
    parser.add_argument("--minutes", type=float, default=6.0, help="diffusion training budget per setting")
    parser.add_argument("--max-steps", type=int, default=1500)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--eval-steps", type=int, default=600)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    args.variants = [v for v in args.variants.split(",") if v]
    load_before = load_average()
    results = {}
    out = ROOT / "runs" / "bench-quality"
    out.mkdir(parents=True, exist_ok=True)
    for name in [s for s in args.settings.split(",") if s]:
        results[name] = run_setting(name, args)
        (out / "results.json").write_text(json.dumps(results, indent=2))
    md = [f"Machine: {machine_line()}. Load average before: {load_before}; after: {load_average()}.",
          f"Budget per setting: diffusion training ≤ {args.minutes} min wall clock (≤ {args.max_steps} steps); "
          f"every classifier arm {args.eval_steps} optimizer steps; {args.seeds} seeds; test = held-out split "
          "(25% of every class, before any subset).", "",
          f"Reproduce: `.venv/bin/python benchmarks/bench_quality.py --settings {args.settings} "
          f"--variants {','.join(args.variants)} --minutes {args.minutes}`", ""]
    for name, result in results.items():
        md += [table(name, result), ""]
    text = "\n".join(md)
    print(text)
    if not args.no_write:
        update_section("bench_quality", "## Quality: does the synthetic data help?\n\n" + text)


if __name__ == "__main__":
    main()
