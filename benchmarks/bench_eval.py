"""Evaluation time: seconds per arm run, and the imagefolder template's evaluation against its training.

1. **Per arm run** (``--per-arm``): ``synthaug.evaluation.run_arm`` timed in this process (one torch thread,
   as ``run_arm`` trains), seed 0, arms real, classic, real+synthetic and real+synthetic+classic, on (a)
   ``builtin:digits`` at 16 px grey (``recipes/digits-longtail.yaml``) and (b) the 32 px RGB folder of part 2
   (``recipes/imagefolder.yaml``), each with its recipe's classifier settings and ``--steps`` classifier
   steps (default: the recipe's ``evaluate.steps``, ``auto`` resolved as the evaluation does). The "synthetic" set is a
   timing stand-in, not generated images: real training rows copied at random within their class until every
   class has as many rows as the largest, with fresh ids (10**9 + i). Reported: seconds per arm run, ms per step.
2. **The template end to end** (``--template``): a long-tailed folder of ``--images`` (1,000) 64×64 RGB PNGs
   hard-linked from ``--data`` (``../shared/data/sign_language_digits``): class c (sorted folder names) keeps
   its first ``round(n0 * q**c)`` files (sorted), q = ``--imbalance`` ** (-1/9) (imbalance 5), n0 set by the
   total. Then ``synthaug train recipes/imagefolder.yaml --set data.source=imagefolder:FOLDER --out RUN``,
   ``synthaug generate RUN`` and ``synthaug evaluate RUN``, each a child process at the machine's default
   threads, wall-timed (start-up included), with ``--train-minutes`` and ``--set`` passed to all three. The
   target: evaluation takes no longer than training (which stops at the template's ``train.max_minutes``).
   ``RUN/report/metrics.json``'s ``evaluation`` entry (resolved steps, budget), where present, is recorded.

Run from the repository root: ``.venv/bin/python benchmarks/bench_eval.py [--steps N] [--images 1000]
[--train-minutes M] [--set KEY=VALUE ...] [--no-per-arm] [--no-template] [--no-write]``; ``--quick`` checks the
script in about 3 minutes (20 classifier steps, 200 images, a 20-step model; never writes). On 2 cores the full
run takes the template's 30 minutes of training, a few of generation, its evaluation (the quantity measured),
and the per-arm timings (~140 ms per classifier step at 32 px RGB, one thread).
Writes the ``bench_eval`` section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import load_average, machine_line, note, table, update_section

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "recipes" / "imagefolder.yaml"
DIGITS = ROOT / "recipes" / "digits-longtail.yaml"
ARMS = ("real", "classic", "real+synthetic", "real+synthetic+classic")
QUICK_SETS = ["train.max_steps=20", "train.max_minutes=1", "evaluate.steps=20", "evaluate.judge_steps=20",
              "evaluate.seeds=[0]", "generate.steps=4"]


def long_tailed_folder(source: Path, dest: Path, images: int, imbalance: float) -> list[int]:
    """Hard-link (or copy) the first files of every class folder of ``source`` into ``dest`` → the counts."""
    classes = sorted(p for p in source.iterdir() if p.is_dir())
    files = [sorted(p for p in folder.iterdir() if p.is_file()) for folder in classes]
    q = imbalance ** (-1 / max(1, len(classes) - 1))
    head = images / sum(q**c for c in range(len(classes)))
    counts = [min(len(f), max(1, round(head * q**c))) for c, f in enumerate(files)]
    for folder, kept, n in zip(classes, files, counts):
        (dest / folder.name).mkdir(parents=True)
        for path in kept[:n]:
            try:
                os.link(path, dest / folder.name / path.name)
            except OSError:
                shutil.copy2(path, dest / folder.name / path.name)
    return counts


def stand_in_synthetic(train, seed: int = 0):
    """Real training rows copied within their class up to the largest class, with fresh ids."""
    from synthaug.evaluation import EvalData

    rng = np.random.default_rng(seed)
    counts = np.bincount(train.y)
    rows = [rng.choice(np.flatnonzero(train.y == c), counts.max() - n, replace=True)
            for c, n in enumerate(counts) if 0 < n < counts.max()]
    rows = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    return EvalData(train.x[rows], train.y[rows], 10**9 + np.arange(len(rows)))


def time_arms(name: str, recipe, steps: int | None) -> list[dict]:
    """Every arm of ``ARMS`` once at seed 0 on ``recipe``'s data → one row per arm."""
    from synthaug.evaluation import EvalData, run_arm
    from synthaug.stages import held_out_images, real_arrays

    x, y, ids, data = real_arrays(recipe)
    train = EvalData(x, y, ids)
    test = EvalData(held_out_images(recipe, data), np.asarray(data.test["label"]), np.asarray(data.test["id"]))
    synthetic = stand_in_synthetic(train)
    from synthaug.budget import resolve_steps

    cfg = resolve_steps(recipe.evaluate, len(train))  # the recipe's steps; auto: as the evaluation resolves them
    if steps is not None:
        cfg = cfg.model_copy(update={"steps": steps})
    rows = []
    for arm in ARMS:
        started = time.perf_counter()
        run = run_arm(arm, 0, train, test, synthetic, len(data.classes), cfg)
        seconds = time.perf_counter() - started
        rows.append({"data": name, "arm": arm, "rows": len(run.train_ids), "steps": run.steps,
                     "batch": cfg.batch_size, "seconds": seconds, "ms": 1000 * seconds / max(1, run.steps)})
        note(f"{name} {arm}: {len(run.train_ids)} rows, {run.steps} steps, {seconds:.1f} s "
             f"({rows[-1]['ms']:.1f} ms/step, accuracy {run.metrics['accuracy']:.3f})")
    return rows


def per_arm(tmp: Path, folder: Path, steps: int | None) -> list[dict]:
    from synthaug.config import load_recipe

    note("per arm run: builtin:digits, 16 px grey")
    rows = time_arms("digits 16 px grey", load_recipe(DIGITS, out=tmp / "arm-digits"), steps)
    note("per arm run: the long-tailed folder, 32 px RGB")
    rgb = load_recipe(TEMPLATE, [f"data.source=imagefolder:{folder}"], out=tmp / "arm-rgb")
    return rows + time_arms("folder 32 px RGB", rgb, steps)


def child(command: list[str], what: str) -> float:
    """Run ``synthaug COMMAND`` at the machine's default threads → its wall seconds; exit on failure."""
    note(f"{what}: synthaug {shlex.join(command)}")
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "synthaug.cli", *command], cwd=ROOT, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{what} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    note(f"{what}: {seconds:.1f} s")
    return seconds


def template(folder: Path, run: Path, overrides: list[str]) -> dict:
    """train → generate → evaluate the template on ``folder`` → wall seconds per stage and metrics facts."""
    sets = [arg for value in overrides for arg in ("--set", value)]
    result = {
        "train": child(["train", str(TEMPLATE), "--out", str(run), "--set", f"data.source=imagefolder:{folder}",
                        *sets], "training"),
        "generate": child(["generate", str(run), *sets], "generation"),
        "evaluate": child(["evaluate", str(run), *sets], "evaluation"),
    }
    metrics = json.loads((run / "report" / "metrics.json").read_text())
    result["arm_runs"] = sum(len(arm.get("runs", [])) for arm in (metrics.get("arms") or {}).values())
    result["evaluation"] = metrics.get("evaluation")
    result["synthetic"] = sum(((metrics.get("generation") or {}).get("counts") or {}).values())
    return result


def per_arm_markdown(rows: list[dict]) -> list[str]:
    body = [[r["data"], r["arm"], f"{r['rows']:,}", r["steps"], r["batch"], f"{r['seconds']:.1f}", f"{r['ms']:.1f}"]
            for r in rows]
    return [
        "**Per arm run**: `synthaug.evaluation.run_arm`, one thread, seed 0, the recipe's classifier settings "
        "(digits: `recipes/digits-longtail.yaml`; folder: `recipes/imagefolder.yaml`). The synthetic rows are a "
        "timing stand-in, not generated images: real training rows copied within their class up to the largest "
        "class. Rows: the arm's training rows after the 10% validation slice.",
        "",
        table(["data", "arm", "training rows", "classifier steps", "batch", "s per arm run", "ms per step"], body),
        "",
    ]


def template_markdown(t: dict, counts: list[int], overrides: list[str]) -> list[str]:
    ratio = t["evaluate"] / t["train"]
    verdict = "PASS" if t["evaluate"] <= t["train"] else "FAIL"
    body = [[stage, f"{t[stage]:.0f}", f"{t[stage] / 60:.1f}"] for stage in ("train", "generate", "evaluate")]
    given = ", ".join(f"`{o}`" for o in overrides) or "none (the template as shipped)"
    lines = [
        f"**The template end to end**: `recipes/imagefolder.yaml` on a long-tailed folder of {sum(counts):,} "
        f"64×64 RGB photos from `sign_language_digits` (per class {', '.join(map(str, counts))}; imbalance "
        f"{max(counts) / min(counts):.1f}; 20% held out as the test split), fitted to 32 px. One child process per "
        f"stage at the machine's default threads; wall time includes start-up. Overrides: {given}.",
        "",
        table(["stage", "wall s", "minutes"], body),
        "",
        f"- Evaluation ÷ training: {ratio:.2f}; {t['arm_runs']} arm runs; {t['synthetic']:,} synthetic images.",
        f"- `metrics.json` `evaluation`: {json.dumps(t['evaluation']) if t['evaluation'] else 'not recorded'}.",
        f"- **Target, evaluation no longer than training: {verdict}** (evaluation {t['evaluate'] / 60:.1f} min, "
        f"training {t['train'] / 60:.1f} min).",
        "",
    ]
    return lines


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-arm", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--template", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--steps", type=int, default=None, help="classifier steps per arm run (per-arm part)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/sign_language_digits")
    parser.add_argument("--images", type=int, default=None, help="images in the long-tailed folder (1000)")
    parser.add_argument("--imbalance", type=float, default=5.0, help="largest ÷ smallest class of the folder")
    parser.add_argument("--train-minutes", type=float, default=None, help="train.max_minutes (default: the template's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="for train, generate, evaluate")
    parser.add_argument("--quick", action="store_true", help="a check in a few minutes; implies --no-write")
    parser.add_argument("--no-write", action="store_true", help="print the section only")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps = args.steps or 20
        args.images = args.images or 200
        args.set = [*QUICK_SETS, *args.set]
        args.no_write = True
    args.images = args.images or 1000
    args.overrides = ([f"train.max_minutes={args.train_minutes}"] if args.train_minutes else []) + args.set
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    command = shlex.join([".venv/bin/python", "benchmarks/bench_eval.py", *(sys.argv[1:] if argv is None else argv)])
    os.chdir(ROOT)
    load_before = load_average()
    arms, t = [], None
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        tmp = Path(tmp)
        folder = tmp / "folder"
        counts = long_tailed_folder(args.data, folder, args.images, args.imbalance)
        note(f"long-tailed folder: {sum(counts)} images, per class {counts}")
        if args.per_arm:
            arms = per_arm(tmp, folder, args.steps)
        if args.template:
            t = template(folder, tmp / "run", args.overrides)
    load_after = load_average()

    lines = ["## Evaluation time: per arm run, and the imagefolder template's evaluation against its training", "",
             f"`{command}` on {machine_line()}. Load average before {load_before}, after {load_after}.", ""]
    if arms:
        lines += per_arm_markdown(arms)
    if t:
        lines += template_markdown(t, counts, args.overrides)
    markdown = "\n".join(lines)
    print(markdown)
    if not args.no_write:
        print(f"wrote {update_section('bench_eval', markdown)}", file=sys.stderr)


if __name__ == "__main__":
    main()
