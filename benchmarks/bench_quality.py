"""Does the synthetic data help? Every lever, with paired 95% intervals, on long-tail, few-shot and RGB data.

Three kinds of lever, crossed per setting:

- a *setting* is the data (digits long tail at imbalance 10/50/100, few-shot 5/10 per class, the RGB
  development set long-tailed 20:1 at 32 px), with its recipe;
- a *generator* is how the diffusion model trains (``default``; ``aug…``: non-leaking augmentation,
  ``train.conditioned_augment``; ``cbdm…``: class-balancing diffusion, ``train.cbdm``); each is trained once
  per setting, for the setting's step budget;
- a *variant* is how the synthetic set is drawn from a generator (the recipe's sampler settings; ``feedback-…``:
  feedback-guided selection, ``generate.feedback``; ``novel``: near-copies dropped; ``variation…``: real
  training images noised part-way and denoised, ``generate.mode: variation``).

Each (setting, generator, variant) is a real synthaug run folder under ``runs/bench-quality/SETTING/``,
generated and evaluated by ``synthaug.stages`` exactly as ``synthaug run`` does (the recipe's classifier, its
``evaluate.steps: auto``, its seeds), so every figure is what a user gets: paired differences to ``real`` and
to the best baseline with their 95% interval and verdict, many/medium/few accuracy, judge accuracy,
memorization and the CAS ratio, from ``metrics.json``. The arm runs of a setting share one cache, so the
baselines train once per setting; the ceiling (every real image) is one more run without the subset.

    .venv/bin/python benchmarks/bench_quality.py --settings longtail50 --generators default,aug0.15
    .venv/bin/python benchmarks/bench_quality.py --settings rgb32-lt20 --rgb-data ../shared/data/sign_language_digits

Writes the tables to docs/BENCHMARKS.md (block ``bench_quality``) and the collected figures to
``benchmarks/results/quality.json`` (committed); a rerun adds to them and reuses every finished run (its models
and arm runs are cached under ``runs/bench-quality/``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import load_average, machine_line, update_section  # noqa: E402

# setting -> (recipe, overrides, diffusion training steps): the shipped recipes, so the defaults users get. The
# long-tail settings keep the sampling their committed results were made with (guidance 1.5 on every step; the
# recipe now guides at 2.0 on the noisiest half, variant `interval0.5`).
LONGTAIL_SAMPLING = ["generate.guidance=1.5", "generate.guidance_interval=[0,1]"]
SETTINGS = {
    "longtail10": ("digits-longtail.yaml", [*LONGTAIL_SAMPLING], 1000),
    "longtail50": ("digits-longtail.yaml", ["data.subset.imbalance=50", *LONGTAIL_SAMPLING], 1000),
    "longtail100": ("digits-longtail.yaml", ["data.subset.imbalance=100", *LONGTAIL_SAMPLING], 1000),
    "fewshot5": ("digits-fewshot.yaml", ["data.subset.per_class=5"], 400),
    "fewshot10": ("digits-fewshot.yaml", [], 400),
    # ../shared/data/sign_language_digits (64 px photos of hand signs, 10 classes), long-tailed 20:1 at 32 px; the
    # template's variations (`mode: variation`, strength 0.4) are variant `variation0.4`, plain samples `sample`.
    "rgb32-lt20": ("imagefolder.yaml", ["data.source=imagefolder:{rgb}", "data.image_size=32", "data.channels=3",
                                        "data.subset.imbalance=20", "train.max_minutes=10",
                                        "generate.mode=sample"], 100000),
}
GENERATORS = {
    "default": [],
    "aug0.15": ["train.conditioned_augment.p=0.15"],
    "aug0.3": ["train.conditioned_augment.p=0.3"],
    "aug0.3-noflip": ["train.conditioned_augment.p=0.3", "train.conditioned_augment.xflip=false"],
    "cbdm1": ["train.cbdm.weight=1.0"],
    "aug0.3-cbdm1": ["train.conditioned_augment.p=0.3", "train.cbdm.weight=1.0"],
    # early stopping on novelty: twice the budget, the best of 10 checks kept
    "keepbest-x2": ["train.max_steps={steps2}", "train.keep_best.every={steps10}"],
    "aug0.3-keepbest-x2": ["train.conditioned_augment.p=0.3", "train.max_steps={steps2}",
                           "train.keep_best.every={steps10}"],
}
VARIANTS = {
    "sample": [],
    "feedback-entropy": ["generate.feedback.criterion=entropy"],
    "feedback-loss": ["generate.feedback.criterion=loss"],
    "novel": ["generate.filter.min_novelty=0.3333"],
    "confident0.5": ["generate.filter.min_confidence=0.5"],
    "feedback-entropy-confident0.5": ["generate.feedback.criterion=entropy", "generate.filter.min_confidence=0.5"],
    "g2": ["generate.guidance=2.0"],
    "interval0.5": ["generate.guidance=2.0", "generate.guidance_interval=[0,0.5]"],
    # variations of real training images (SDEdit, as DA-Fusion): noised to `strength` of the schedule, denoised
    "variation0.25": ["generate.mode=variation", "generate.strength=0.25"],
    "variation0.4": ["generate.mode=variation", "generate.strength=0.4"],
    "variation0.6": ["generate.mode=variation", "generate.strength=0.6"],
}
BASELINES = ["real", "classic", "oversample", "oversample+classic", "smote"]
MIXING = ["synthetic", "real+synthetic", "real+synthetic+classic"]
TRANSFER = ["synthetic-then-real+classic", "real+synthetic-then-head+classic"]
CEILING = ["real", "classic"]


def recipe_for(setting: str, out: Path, args, extra: list[str] = ()):
    """The recipe of one run of ``setting`` in ``out``, with the benchmark's fixed settings and ``extra``."""
    from synthaug.config import load_recipe

    recipe_file, overrides, steps = SETTINGS[setting]
    overrides = [*overrides, f"train.max_steps={steps}", "train.sample_every=null",
                 f"evaluate.seeds={json.dumps(list(range(args.seeds)))}", f"evaluate.workers={args.workers}", *extra]
    fill = {"{rgb}": str(args.rgb_data), "{steps2}": str(2 * steps), "{steps10}": str(max(1, 2 * steps // 10))}
    for key, value in fill.items():
        overrides = [o.replace(key, value) for o in overrides]
    return load_recipe(ROOT / "recipes" / recipe_file, overrides=overrides, out=out)


def share_cache(run_dir: Path, cache: Path) -> None:
    """Point ``run_dir``'s arm-run cache at the setting's: the baselines (keyed by the real data and the
    classifier settings alone) train once for every generator and variant."""
    link = run_dir / "report" / ".runs"
    cache.mkdir(parents=True, exist_ok=True)
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        shutil.rmtree(link, ignore_errors=True)
        os.symlink(cache.resolve(), link)


def evaluated(recipe) -> dict:
    """The run's metrics.json, evaluating what is missing: a finished evaluation with other arms is redone from
    the arm-run cache (only the new arms train)."""
    from synthaug import stages
    from synthaug.runs import RunDir

    out = RunDir(recipe.run_dir)
    if out.metrics.exists() and set(json.loads(out.metrics.read_text())["arms"]) != set(recipe.evaluate.arms):
        out.evaluated.unlink(missing_ok=True)
    stages.evaluate(recipe, resume=True, progress=False)
    return json.loads(out.metrics.read_text())


def summary(metrics: dict) -> dict:
    """What the tables show of one run's metrics.json."""
    q = metrics.get("quality") or {}
    lift = metrics["lift"]
    arms = {arm: {"macro_f1": r["macro_f1"], **{g: r.get(g) for g in ("many", "medium", "few")},
                  **(lift.get("paired") or {}).get(arm, {})} for arm, r in metrics["arms"].items()}
    return {"arms": arms, "best_baseline": lift["best_baseline"], "judge_accuracy": q.get("judge_accuracy"),
            "memorization": q.get("memorization_rate"), "cas_ratio": q.get("cas_ratio"),
            "images": sum((metrics.get("generation") or {}).get("counts", {}).values()) or None,
            "classifier_steps": metrics["evaluation"]["steps"],
            "train_counts": list(metrics["dataset"]["train_counts"].values())}


def run_setting(setting: str, args, result: dict) -> dict:
    from synthaug import runs, stages

    base = ROOT / "runs" / "bench-quality" / setting
    cache = base / "arm-cache"
    arms = BASELINES + MIXING + (TRANSFER if args.transfer else [])
    if "ceiling" not in result and args.ceiling:
        recipe = recipe_for(setting, base / "ceiling", args, ["data.subset={}", f"evaluate.arms={json.dumps(CEILING)}"])
        share_cache(recipe.run_dir, cache)
        result["ceiling"] = summary(evaluated(recipe))
        print(f"[{setting}] ceiling: {fmt_arms(result['ceiling'])}", flush=True)
    for generator in args.generators:
        gdir = base / generator
        recipe = recipe_for(setting, gdir, args, GENERATORS[generator])
        started = time.perf_counter()
        stages.train(recipe, resume=True, progress=False)
        key = f"{generator}/train"
        if key not in result:
            result[key] = {"seconds": round(time.perf_counter() - started),
                           "steps": runs.checkpoint_step(gdir / "checkpoints" / "last.ckpt")}
        for variant in args.variants:
            vdir = gdir / "variants" / variant
            if not (vdir / "model").exists():
                vdir.mkdir(parents=True, exist_ok=True)
                shutil.copytree(gdir / "model", vdir / "model")
            vrecipe = recipe_for(setting, vdir, args, [*GENERATORS[generator], *VARIANTS[variant],
                                                       f"evaluate.arms={json.dumps(arms)}"])
            share_cache(vdir, cache)
            t0 = time.perf_counter()
            stages.generate(vrecipe, resume=True, progress=False)
            generated = round(time.perf_counter() - t0)
            res = summary(evaluated(vrecipe))
            res["generate_seconds"] = result.get(f"{generator}/{variant}", {}).get("generate_seconds", generated)
            res["generator_steps"] = result.get(f"{generator}/{variant}", {}).get(
                "generator_steps", runs.checkpoint_step(gdir / "checkpoints" / "last.ckpt"))
            result[f"{generator}/{variant}"] = res
            print(f"[{setting}] {generator}/{variant}: {fmt_arms(res)}", flush=True)
    return result


def fmt_arms(res: dict) -> str:
    return ", ".join(f"{arm} {r['macro_f1']['mean']:.3f}" for arm, r in res["arms"].items())


def fmt_ci(d: dict | None) -> str:
    if not d:
        return "–"
    low, high = d["ci"]
    mark = {"helps": " ✓", "hurts": " ✗"}.get(d["verdict"], "")
    return f"{d['mean']:+.3f} [{low:+.3f}, {high:+.3f}]{mark}"


def fmt_groups(r: dict) -> str:
    return " / ".join("–" if r.get(g) is None else f"{r[g]['mean']:.2f}" for g in ("many", "medium", "few"))


def fmt_num(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(setting: str, result: dict) -> str:
    recipe_file, overrides, steps = SETTINGS[setting]
    runs_ = {k: v for k, v in result.items() if k not in ("ceiling", "seeds") and not k.endswith("/train")}
    if not runs_:
        return ""
    first = next(iter(runs_.values()))
    base_arms = first["arms"]
    best = first["best_baseline"]
    trained = ", ".join(f"{k.split('/')[0]} {v['steps']} steps in {v['seconds']} s"
                        for k, v in result.items() if k.endswith("/train"))
    # a wall-clock budget (RGB) trains a different number of steps when the model is trained again for new variants
    retrained: dict[int, list[str]] = {}
    for key, res in runs_.items():
        if res.get("generator_steps") not in (None, result.get(f"{key.split('/')[0]}/train", {}).get("steps")):
            retrained.setdefault(res["generator_steps"], []).append(key)
    for steps_, keys in retrained.items():
        trained += f" ({', '.join(keys)}: the same generator trained again, {steps_} steps)"
    lines = [f"### {setting}: `recipes/{recipe_file}` {' '.join(o for o in overrides if '{rgb}' not in o)}".rstrip(),
             "", f"Real training images per class: {', '.join(map(str, first['train_counts']))}. "
             f"Diffusion models: {trained}. Every classifier: {first['classifier_steps']} steps (`auto`), "
             f"{result.get('seeds', 5)} seeds; "
             f"best baseline: **{best}**.",
             "", "| generator / variant | arm | macro-F1 | vs real [95% CI] | vs best baseline [95% CI] | "
             "many / medium / few acc. | judge acc. | memorization | CAS ratio |",
             "|---|---|---|---|---|---|---|---|---|"]
    for arm in BASELINES:
        r = base_arms.get(arm)
        if r:
            m = r["macro_f1"]
            lines.append(f"| baseline | {arm} | {m['mean']:.3f} ± {m['std']:.3f} | – | – | {fmt_groups(r)} | – | – | – |")
    for key, res in runs_.items():
        for arm, r in res["arms"].items():
            if arm in BASELINES:
                continue
            m = r["macro_f1"]
            lines.append(f"| {key} | {arm} | {m['mean']:.3f} ± {m['std']:.3f} | {fmt_ci(r.get('vs_real'))} | "
                         f"{fmt_ci(r.get('vs_best_baseline'))} | {fmt_groups(r)} | {fmt_num(res['judge_accuracy'])} | "
                         f"{fmt_num(res['memorization'])} | {fmt_num(res['cas_ratio'], 2)} |")
    ceiling = result.get("ceiling")
    if ceiling:
        for arm, r in ceiling["arms"].items():
            m = r["macro_f1"]
            lines.append(f"| ceiling: every real image | {arm} | {m['mean']:.3f} ± {m['std']:.3f} | – | – | "
                         f"{fmt_groups(r)} | – | – | – |")
    lines += ["", "✓ / ✗: the 95% interval of the paired difference lies above / below zero (the verdicts "
                  "\"helps\" / \"hurts\"); otherwise \"no clear difference\"."]
    if any(key.split("/")[1].startswith("variation") for key in runs_):
        lines.append("Variation rows: the synthetic set is real training images noised part-way and denoised with "
                     "their class; the synthetic-only arm (CAS) trains on the model's plain samples from noise, as "
                     "in every other row, so it is the same for every variant of one generator.")
    if ceiling:
        lines.append(f"Ceiling: the same classifiers on every real training image before the subset "
                     f"({', '.join(map(str, ceiling['train_counts']))} per class).")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default="longtail50", help="comma-separated: " + ", ".join(SETTINGS))
    parser.add_argument("--generators", default="default", help="comma-separated: " + ", ".join(GENERATORS))
    parser.add_argument("--variants", default="sample", help="comma-separated: " + ", ".join(VARIANTS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--transfer", action="store_true", help="also the pre-train and head re-training arms")
    parser.add_argument("--no-ceiling", dest="ceiling", action="store_false")
    parser.add_argument("--rgb-data", type=Path, default=ROOT.parent / "shared" / "data" / "sign_language_digits",
                        help="the RGB development set (an imagefolder) for rgb32-lt20")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--tables-only", action="store_true", help="rewrite the docs section from benchmarks/results/quality.json")
    args = parser.parse_args()
    for option, known in (("settings", SETTINGS), ("generators", GENERATORS), ("variants", VARIANTS)):
        values = [v for v in getattr(args, option).split(",") if v]
        unknown = [v for v in values if v not in known]
        if unknown:
            parser.error(f"unknown {option[:-1]} {unknown[0]!r}; choose from {', '.join(known)}")
        setattr(args, option, values)
    load_before = load_average()
    out = ROOT / "runs" / "bench-quality"
    out.mkdir(parents=True, exist_ok=True)
    saved = ROOT / "benchmarks" / "results" / "quality.json"  # committed: the figures outlive the run caches
    saved.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(saved.read_text()) if saved.exists() else {}
    for setting in [] if args.tables_only else args.settings:
        earlier = results.get(setting, {})
        if earlier and earlier.get("seeds", 5) != args.seeds:
            print(f"[{setting}] the saved figures used {earlier.get('seeds', 5)} seeds; starting again with "
                  f"{args.seeds}", flush=True)
            earlier = {}
        results[setting] = run_setting(setting, args, {**earlier, "seeds": args.seeds})
        saved.write_text(json.dumps(results, indent=2) + "\n")
    load = "" if args.tables_only else f" Load average before: {load_before}; after: {load_average()}."
    md = [f"Machine: {machine_line()}.{load}",
          "Each setting's diffusion models train for its step budget (digits long tail 1,000 steps; few-shot 400; RGB "
          "10 minutes of wall clock); the seconds in each table are wall clock and include whatever else ran on "
          "the 2 cores (alone, 1,000 digit steps take ≈ 3 minutes on an Intel Xeon with AMX, ≈ 7 on an AMD EPYC "
          "without native bf16), so the step-budgeted results do not depend on them; classifiers: the recipe's `evaluate` section with "
          "`steps: auto`, 5 seeds unless the setting says otherwise (`--seeds`); test = the held-out split (25% of "
          "every class, carved before any subset).",
          "",
          "Reproduce: `.venv/bin/python benchmarks/bench_quality.py --settings SETTING --generators G1,G2 --variants "
          "V1,V2 [--transfer]` with the names in the first column (generator/variant).", ""]
    for setting in (s for s in SETTINGS if s in results):
        md += [table(setting, results[setting]), ""]
    text = "\n".join(md)
    print(text)
    if not args.no_write:
        update_section("bench_quality", "## Quality: does the synthetic data help?\n\n" + text)


if __name__ == "__main__":
    main()
