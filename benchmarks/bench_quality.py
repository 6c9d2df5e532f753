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

# setting -> (recipe, overrides): the shipped recipes, so the benchmark measures the defaults users get.
SETTINGS = {
    "fewshot10": ("digits-fewshot.yaml", []),
    "longtail10": ("digits-longtail.yaml", []),
    "longtail50": ("digits-longtail.yaml", ["data.subset.imbalance=50"]),
    # Training-side levers: the same data and classifiers (so the same baselines), another diffusion model.
    "longtail10-px8": ("digits-longtail.yaml", ["model.sample_size=8"]),  # digits' native 8×8
    "longtail10-vpred": ("digits-longtail.yaml", ["model.prediction_type=v_prediction"]),
}
# "sample" is the recipe's own generate settings; the other variants pin guidance 2, the value they were measured
# with, so that they reproduce whatever the recipe's default becomes.
G2 = "generate.guidance=2.0"
VARIANTS = {
    "sample": [],
    "sample-g1": ["generate.guidance=1.0"],
    "sample-g1.5": ["generate.guidance=1.5"],
    "sample-g2": [G2],
    "sample-g4": ["generate.guidance=4.0"],
    "sample-filter0.9": [G2, "generate.filter.min_confidence=0.9"],
    "sample-pc135": [G2, "generate.quota={per_class: 135}"],  # 135 more per class, the head included
    "variation0.3": [G2, "generate.mode=variation", "generate.strength=0.3"],
    "variation0.5": [G2, "generate.mode=variation", "generate.strength=0.5"],
    "variation0.7": [G2, "generate.mode=variation", "generate.strength=0.7"],
    "variation0.5-pc135": [G2, "generate.mode=variation", "generate.strength=0.5", "generate.quota={per_class: 135}"],
    # He et al. 2023: synthetic rows count half as much as real ones in the classifier's loss.
    "sample-w0.5": [G2, "evaluate.synthetic_weight=0.5"],
    "variation0.5-w0.5": [G2, "generate.mode=variation", "generate.strength=0.5", "evaluate.synthetic_weight=0.5"],
    # Near-copies (memorization ratio < 1/3, the report's test) dropped and refilled with new seeds.
    "sample-novel": [G2, "generate.filter.min_novelty=0.3333"],
    "sample-g1.5-novel": ["generate.guidance=1.5", "generate.filter.min_novelty=0.3333"],
}
BASELINES = ["real", "classic", "oversample", "oversample+classic", "smote"]
SYNTHETIC = ["synthetic", "real+synthetic", "real+synthetic+classic"]
ORACLE = ["real", "classic"]


def fmt(stat: dict | None) -> str:
    return "–" if stat is None else f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def evaluate_arms(recipe, arms: list[str]) -> dict:
    """Run ``arms`` of the harness on ``recipe``'s run dir; returns the arms dict and the quality dict."""
    import numpy as np

    from synthaug import stages
    from synthaug.classifiers import train_judge
    from synthaug.evaluation import EvalData, run_arms
    from synthaug.quality import quality_metrics

    x, y, ids, data = stages.real_arrays(recipe)
    test_x = stages.held_out_images(recipe, data)
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


DEFAULT_STEPS = 1000


def result_key(name: str, args) -> str:
    """A setting's key in results.json and its run folder: ``fewshot10``, or ``fewshot10@400`` for 400 steps."""
    return name if args.max_steps == DEFAULT_STEPS else f"{name}@{args.max_steps}"


def setting_recipe(name: str, args, out: Path, extra: list[str] = ()):
    from synthaug.config import load_recipe

    recipe_file, overrides = SETTINGS[name]
    overrides = [*overrides, f"train.max_steps={args.max_steps}", f"train.max_minutes={args.minutes}",
                 f"evaluate.seeds={json.dumps(list(range(args.seeds)))}", "train.sample_every=null", *extra]
    if args.eval_steps:
        overrides.append(f"evaluate.steps={args.eval_steps}")
    return load_recipe(ROOT / "recipes" / recipe_file, overrides=overrides, out=out)


def reuse_model(source: Path, recipe) -> None:
    """Start from a finished run of the same data, model and training settings (e.g. ``make demo``'s)."""
    from synthaug.config import load_recipe

    theirs = load_recipe(source)
    for section in ("data", "model"):
        if getattr(theirs, section) != getattr(recipe, section):
            sys.exit(f"--reuse {source}: its {section} settings differ from the benchmark's")
    if theirs.train.model_copy(update={"max_minutes": None, "sample_every": None}) != recipe.train.model_copy(
            update={"max_minutes": None, "sample_every": None}):
        sys.exit(f"--reuse {source}: its train settings differ from the benchmark's")
    for part in ("model", "checkpoints"):
        if not (recipe.run_dir / part).exists():
            shutil.copytree(source / part, recipe.run_dir / part)


def full_data(data: dict) -> dict:
    """A setting's data section (JSON) without its subset: every real training image."""
    from synthaug.config import SubsetConfig

    return {**data, "subset": SubsetConfig().model_dump(mode="json")}


def find_oracle(results: dict, data: dict, evaluate: dict) -> dict | None:
    """The ceiling measured by any setting on ``data``'s full data with the same classifier settings."""
    found = [r["oracle"] for r in results.values()
             if (r.get("oracle") or {}).get("data") == full_data(data) and r["oracle"]["evaluate"] == evaluate]
    return found[0] if found else None


def run_setting(name: str, args, earlier: dict) -> dict:
    from synthaug import runs, stages

    base_dir = ROOT / "runs" / "bench-quality" / result_key(name, args)
    recipe = setting_recipe(name, args, base_dir)
    base_dir.mkdir(parents=True, exist_ok=True)
    note = ""
    if name in args.reuse:
        reuse_model(Path(args.reuse[name]), recipe)
        note = f"model reused from `{args.reuse[name]}` (same data, model and training settings)"
    started = time.perf_counter()
    stages.train(recipe, resume=True, progress=False)
    train_seconds = time.perf_counter() - started
    step = runs.checkpoint_step(base_dir / "checkpoints" / "last.ckpt")
    if step < args.max_steps:  # the --minutes cap cut training: a table under this key would be mislabelled
        sys.exit(f"[{name}] training stopped at step {step} of {args.max_steps} (the --minutes {args.minutes} cap, "
                 f"often a busy machine); delete {base_dir} and rerun with a larger --minutes, so that the "
                 "training time it records is one whole run")
    result = {"train_seconds": None if note else round(train_seconds), "train_steps": step, "note": note,
              # What the baselines depend on: the data and every classifier setting but the arms and workers.
              "data": recipe.data.model_dump(mode="json"),
              "evaluate": recipe.evaluate.model_dump(mode="json", exclude={"arms", "workers"}),
              "variants": {}}
    before = earlier.get(result_key(name, args))
    if before and (before["train_steps"], before["data"], before["evaluate"]) == (step, result["data"], result["evaluate"]):
        # The same model as an earlier invocation: keep its training time and the variants this one does not rerun.
        result.update(train_seconds=before["train_seconds"], note=before["note"], variants=dict(before["variants"]))
    trained = result["note"] or f"trained in {result['train_seconds']} s"
    print(f"[{name}] {step} steps, {trained}", flush=True)
    # The baselines do not depend on the diffusion model: another budget of the same setting has them.
    same = [r for r in earlier.values() if (r.get("data"), r.get("evaluate")) == (result["data"], result["evaluate"])]
    result["baselines"] = same[0]["baselines"] if same else evaluate_arms(recipe, BASELINES)
    full = full_data(result["data"])
    if full != result["data"]:
        # The ceiling: the same classifiers on every training image the subset left out. A generator that
        # reproduced the missing real images could at best get here.
        result["oracle"] = find_oracle(earlier, result["data"], result["evaluate"]) or {
            "data": full, "evaluate": result["evaluate"],
            **evaluate_arms(setting_recipe(name, args, base_dir, ["data.subset={}"]), ORACLE)}
    print(f"[{name}] baselines: " + ", ".join(f"{a} {fmt(r['macro_f1'])}"
                                               for a, r in result["baselines"]["arms"].items()), flush=True)
    for variant in args.variants:
        vdir = base_dir / "variants" / variant
        if not (vdir / "model").exists():
            vdir.mkdir(parents=True, exist_ok=True)
            shutil.copytree(base_dir / "model", vdir / "model")
        vrecipe = setting_recipe(name, args, vdir, VARIANTS[variant])
        twins = [other for other in result["variants"]  # same generation settings: reuse that variant's images
                 if setting_recipe(name, args, vdir, VARIANTS[other]).generate == vrecipe.generate]
        if twins and not (vdir / "synthetic").exists():
            shutil.copytree(base_dir / "variants" / twins[0] / "synthetic", vdir / "synthetic")
        t0 = time.perf_counter()
        stages.generate(vrecipe, resume=True, progress=False)
        gen_seconds = time.perf_counter() - t0
        res = evaluate_arms(vrecipe, SYNTHETIC)
        res["generate_seconds"] = round(gen_seconds)
        res["images"] = sum(json.loads((vdir / "synthetic" / "generation.json").read_text())["counts"].values())
        result["variants"][variant] = res
        print(f"[{name}] {variant}: " + ", ".join(f"{a} {fmt(r['macro_f1'])}" for a, r in res["arms"].items()),
              flush=True)
    return result


def table(key: str, result: dict) -> str:
    name = key.split("@")[0]
    base = result["baselines"]["arms"]
    real = base["real"]["macro_f1"]["mean"]
    best_name = max(base, key=lambda a: base[a]["macro_f1"]["mean"])
    best = base[best_name]["macro_f1"]
    recipe_file, overrides = SETTINGS[name]
    trained = result["note"] or f"trained here in {result['train_seconds']} s"
    counts = result["baselines"]["train_counts"]
    ev = result["evaluate"]
    lines = [f"### {key}: `recipes/{recipe_file}` {' '.join(overrides)}".rstrip(), "",
             f"Real training images per class: {', '.join(map(str, counts))}. Diffusion model: "
             f"{result['train_steps']} steps, {trained}. Every classifier: {ev['steps']} steps at batch "
             f"{ev['batch_size']}.", "",
             "| arm | variant | synthetic images | macro-F1 (mean ± std) | lift over real | "
             "margin over best baseline | judge acc. | memorization |", "|---|---|---|---|---|---|---|---|"]
    for arm in BASELINES:
        m = base[arm]["macro_f1"]
        lines.append(f"| {arm} | – | – | {fmt(m)} | {m['mean'] - real:+.3f} | {m['mean'] - best['mean']:+.3f} "
                     "| – | – |")
    for variant, res in result["variants"].items():
        q = res["quality"] or {}
        for arm, r in res["arms"].items():
            m = r["macro_f1"]
            beats = m["mean"] - best["mean"] > max(m["std"], best["std"])
            lines.append(
                f"| {arm} | {variant} | {res['images']} | {fmt(m)} | {m['mean'] - real:+.3f} | {m['mean'] - best['mean']:+.3f}"
                f"{' ✓' if beats else ''} | {q.get('judge_accuracy', float('nan')):.3f} | "
                f"{q.get('memorization_rate', float('nan')):.3f} |")
    oracle = result.get("oracle")
    if oracle:
        full = ", ".join(map(str, oracle["train_counts"]))
        for arm, r in oracle["arms"].items():
            m = r["macro_f1"]
            lines.append(f"| {arm}, every real image (ceiling) | – | – | {fmt(m)} | {m['mean'] - real:+.3f} | "
                         f"{m['mean'] - best['mean']:+.3f} | – | – |")
    lines += ["", f"Best baseline: **{best_name}** ({fmt(best)}). ✓ = ahead of it by more than either arm's std."]
    if oracle:
        lines.append(f"Ceiling rows: the same classifiers on all the real training images before the subset "
                     f"({full} per class); a generator that reproduced the missing real images could at best get "
                     "there.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default="fewshot10,longtail10,longtail50",
                        help="comma-separated: " + ", ".join(SETTINGS))
    parser.add_argument("--variants", default="sample,variation0.5", help="comma-separated: " + ", ".join(VARIANTS))
    parser.add_argument("--minutes", type=float, default=10.0, help="wall-clock cap on diffusion training")
    parser.add_argument("--max-steps", type=int, default=DEFAULT_STEPS, help="diffusion training steps per setting")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--eval-steps", type=int, default=None, help="classifier steps (default: the recipe's)")
    parser.add_argument("--reuse", action="append", default=[], metavar="SETTING=RUN_DIR",
                        help="start SETTING from a finished run with the same settings, e.g. "
                             "longtail10=runs/digits-longtail after `make demo`")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--tables-only", action="store_true",
                        help="rewrite the docs section from runs/bench-quality/results.json, running nothing")
    args = parser.parse_args()
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant {unknown[0]!r}; variants are {', '.join(VARIANTS)}")
    args.reuse = dict(item.split("=", 1) for item in args.reuse)
    load_before = load_average()
    out = ROOT / "runs" / "bench-quality"
    out.mkdir(parents=True, exist_ok=True)
    # Settings run earlier (another invocation) stay in the results and the tables; a rerun replaces its own.
    results = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    for name in [] if args.tables_only else [s for s in args.settings.split(",") if s]:
        results[result_key(name, args)] = run_setting(name, args, results)
        (out / "results.json").write_text(json.dumps(results, indent=2))
    results = {key: results[key] for key in sorted(results, key=lambda k: (list(SETTINGS).index(k.split("@")[0]), k))}
    for result in results.values():  # a setting run before the ceiling existed borrows one on the same full data
        if "oracle" not in result and full_data(result["data"]) != result["data"]:
            borrowed = find_oracle(results, result["data"], result["evaluate"])
            if borrowed:
                result["oracle"] = borrowed
    load = "" if args.tables_only else f" Load average before: {load_before}; after: {load_average()}."
    md = [f"Machine: {machine_line()}.{load}",
          f"Budget per setting: diffusion training {DEFAULT_STEPS} steps unless the table says otherwise (`@N`: N "
          f"steps; ≈ 0.4 s a step here, so 1,000 ≈ 7 CPU-minutes); every classifier arm the recipe's `evaluate.steps` "
          f"optimizer steps{f' (here {args.eval_steps})' if args.eval_steps else ''}; {args.seeds} seeds; test = "
          "the held-out split (25% of every class, carved before any subset).", "",
          "Reproduce: `.venv/bin/python benchmarks/bench_quality.py --settings SETTING --variants VARIANTS` with "
          "the variants named in each table (`--reuse longtail10=runs/digits-longtail` starts from a 1,000-step "
          "demo model instead of training one). Variant `sample` is the recipe's own generate settings (guidance "
          "1.5 in `digits-longtail`, 2 in `digits-fewshot`); `sample-gN` sets guidance N; every other variant "
          "samples at guidance 2.", ""]
    for name, result in results.items():
        md += [table(name, result), ""]
    text = "\n".join(md)
    print(text)
    if not args.no_write:
        update_section("bench_quality", "## Quality: does the synthetic data help?\n\n" + text)


if __name__ == "__main__":
    main()
