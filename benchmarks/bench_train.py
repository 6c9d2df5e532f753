"""Training images/second: ``synthaug.stages.train`` (Lightning) against a plain PyTorch loop, in one run.

Both paths train the digits-longtail UNet (16×16, block_out_channels (32, 64, 64), batch 64) for the same
number of steps on the same batches, with the same thread count, in fp32 and in bf16-mixed:

- synthaug: the real ``synthaug.stages.train`` on ``recipes/digits-longtail.yaml`` (``--set``-style
  overrides: ``train.max_steps``, ``compute.precision``; no sample grids, no checkpoint inside the run), into
  a temporary folder, progress bar off. A timing callback is added to the ``Trainer`` it builds.
- plain: the same ``build_module`` (UNet, EMA, ``ClassConditionalDiffusion.loss``), the same ``StepBatches``,
  AdamW + cosine warm-up schedule + EMA update, written as a bare ``for`` loop; bf16 via
  ``torch.autocast("cpu", dtype=torch.bfloat16)`` around the loss, as Lightning's ``bf16-mixed`` does.

What is timed, identically for both: the wall time from the start of step ``W`` (after ``--warmup`` untimed
steps) to the start of the last step, i.e. ``steps − 1 − W`` complete step cycles. A cycle holds
everything between two steps: building the batch from the already decoded uint8 array, forward, backward,
optimizer, LR schedule and EMA updates, and, for synthaug, Lightning's loop, hooks and logging. Data
decoding, model construction, ``Trainer`` setup and the checkpoint and model saves at the end are outside
the window. Each path runs ``--repeats`` times, interleaved; the table shows the best run of each.

Run from the repository root: ``.venv/bin/python benchmarks/bench_train.py [--steps 60] [--repeats 2]
[--no-write]`` (``make bench`` runs it). Writes the ``train`` section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from _common import load_average, machine_line, native_bf16, note, table, update_section

ROOT = Path(__file__).resolve().parents[1]
RECIPE = "recipes/digits-longtail.yaml"
TARGET = 0.95


class StepClock:
    """A Lightning callback that notes the time at the start of every training step."""

    def __init__(self):
        self.marks: list[float] = []
        self.threads = None

    def as_callback(self):
        from pytorch_lightning.callbacks import Callback

        clock = self

        class _Clock(Callback):
            def on_train_start(self, trainer, pl_module):
                clock.threads = torch.get_num_threads()

            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                clock.marks.append(time.perf_counter())

        return _Clock()


@contextlib.contextmanager
def clocked_trainer(clock: StepClock):
    """Every ``pytorch_lightning.Trainer`` built inside gets ``clock``'s callback first in its list."""
    import pytorch_lightning as pl

    original = pl.Trainer.__init__

    def init(self, *args, **kwargs):
        kwargs["callbacks"] = [clock.as_callback(), *(kwargs.get("callbacks") or [])]
        original(self, *args, **kwargs)

    pl.Trainer.__init__ = init
    try:
        yield
    finally:
        pl.Trainer.__init__ = original


def rates(marks: list[float], warmup: int, batch: int) -> tuple[float, float]:
    """(img/s over the timed window, img/s of the median step cycle) from step start times."""
    cycles = [b - a for a, b in zip(marks[warmup:], marks[warmup + 1:])]
    return batch * len(cycles) / sum(cycles), batch / statistics.median(cycles)


def recipe_for(precision: str, steps: int, out: Path | None = None):
    from synthaug.config import load_recipe

    return load_recipe(RECIPE, [f"train.max_steps={steps}", f"compute.precision={precision}",
                                "compute.accelerator=cpu", "train.sample_every=null",
                                f"train.checkpoint_every={steps + 1}"], out=out)


def run_synthaug(precision: str, steps: int, warmup: int) -> tuple[float, float]:
    from synthaug.stages import train

    clock = StepClock()
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        recipe = recipe_for(precision, steps, Path(tmp) / "run")
        with clocked_trainer(clock):
            train(recipe, progress=False)
    assert len(clock.marks) == steps and clock.threads == torch.get_num_threads(), (len(clock.marks), clock.threads)
    return rates(clock.marks, warmup, recipe.train.batch_size)


def run_plain(precision: str, steps: int, warmup: int, arrays) -> tuple[float, float]:
    from diffusers.optimization import get_cosine_schedule_with_warmup

    from synthaug.data import StepBatches, build_augment
    from synthaug.stages import build_module

    recipe = recipe_for(precision, steps)
    x, y, classes = arrays
    t = recipe.train
    torch.manual_seed(recipe.seed)
    module = build_module(recipe, classes).train()
    data = StepBatches(x, y, t.batch_size, recipe.seed, t.class_balance, build_augment(t.augment))
    params = [p for p in module.unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t.lr, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimizer, min(t.warmup_steps, steps // 10), steps)
    marks = []
    for step in range(steps):
        marks.append(time.perf_counter())
        batch = data[step]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            loss = module.loss(batch["images"], batch["labels"], step)
        loss.backward()
        optimizer.step()
        schedule.step()
        module.ema.step(module.unet.parameters())
        optimizer.zero_grad(set_to_none=True)
    return rates(marks, warmup, t.batch_size)


def ema_cost_ms(arrays) -> float:
    """Milliseconds one EMA update of the UNet takes (part of every step of both paths)."""
    from synthaug.stages import build_module

    module = build_module(recipe_for("32-true", 10), arrays[2])
    module.ema.step(module.unet.parameters())
    start = time.perf_counter()
    for _ in range(20):
        module.ema.step(module.unet.parameters())
    return (time.perf_counter() - start) / 20 * 1000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="training steps per run (fp32)")
    parser.add_argument("--bf16-steps", type=int, default=None,
                        help="training steps per bf16 run (default: --steps with native bf16, else a tenth, run once)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps at the start of each run")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each path, interleaved; the best counts")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads for both paths")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    os.chdir(ROOT)  # the recipe and docs/BENCHMARKS.md are found from the repository root

    import pytorch_lightning  # noqa: F401  (it resets its loggers to INFO on import)

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)

    from synthaug.sampling import resolve_precision
    from synthaug.stages import real_arrays

    native = native_bf16()
    bf16_steps = args.bf16_steps or (args.steps if native else max(args.steps // 10, 5))
    # precision → (steps, untimed warm-up steps, repeats); emulated bf16 is slow, so it runs short and once.
    modes = {"32-true": (args.steps, args.warmup, args.repeats),
             "bf16-mixed": (bf16_steps, min(args.warmup, max(bf16_steps // 4, 1)), args.repeats if native else 1)}
    for steps, warmup, _ in modes.values():
        if steps - 1 - warmup < 1:
            parser.error(f"--steps {steps} leaves no timed step after --warmup {warmup}")

    load_before = load_average()
    x, y, _, data = real_arrays(recipe_for("32-true", 10))
    arrays = (x, y, data.classes)
    runs: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for r in range(args.repeats):
        for precision, (steps, warmup, repeats) in modes.items():
            if r >= repeats:
                continue
            order = ("plain", "synthaug") if r % 2 == 0 else ("synthaug", "plain")
            for path in order:
                rate = (run_plain(precision, steps, warmup, arrays) if path == "plain"
                        else run_synthaug(precision, steps, warmup))
                runs.setdefault((precision, path), []).append(rate)
                note(f"repeat {r + 1}: {precision:10s} {path:8s} {rate[0]:7.1f} img/s (median step {rate[1]:.1f})")
    ema_ms = ema_cost_ms(arrays)
    load_after = load_average()

    rows = []
    for precision, (steps, warmup, repeats) in modes.items():
        plain, ours = (max(r[0] for r in runs[(precision, path)]) for path in ("plain", "synthaug"))
        plain_med, ours_med = (max(r[1] for r in runs[(precision, path)]) for path in ("plain", "synthaug"))
        ratio = ours / plain
        label = precision if precision == "32-true" or native else f"{precision} (emulated: no native bf16 here)"
        rows.append([label, f"{steps - 1 - warmup} of {steps}", repeats, f"{plain:.1f}", f"{ours:.1f}", f"{ratio:.3f}×",
                     f"{ours_med / plain_med:.3f}×", "yes" if ratio >= TARGET else "no"])
    header = ["mode", "steps timed", "runs each", "plain img/s", "synthaug img/s", "ratio", "ratio of median steps",
              f"target ≥ {TARGET}× met"]
    details = "; ".join(f"{p} {path}: " + ", ".join(f"{v[0]:.1f}" for v in vals) for (p, path), vals in runs.items())
    markdown = "\n".join([
        "## Training: `synthaug train` vs a plain PyTorch loop",
        "",
        f"`benchmarks/bench_train.py --steps {args.steps} --repeats {args.repeats}` on {machine_line()}, "
        f"{args.threads} torch threads for both paths. Model: digits-longtail UNet (16×16, block_out_channels "
        "(32, 64, 64), 1 layer per block, attention in the last block), batch 64, AdamW, EMA, min-SNR loss.",
        "",
        table(header, rows),
        "",
        "- **Timed:** from the start of the first step after the warm-up steps (the first "
        f"{modes['32-true'][1]} in fp32, {modes['bf16-mixed'][1]} in bf16) to the start of the last step: complete step cycles, each with batch assembly from the decoded array, "
        "forward, backward, AdamW, LR schedule, EMA and, for synthaug, Lightning's loop, hooks and logging. "
        "Not timed: decoding the images, building the model and `Trainer`, the final checkpoint and model save.",
        "- **synthaug** is `synthaug.stages.train` on `recipes/digits-longtail.yaml` (progress bar off, no "
        "sample grids, no checkpoint inside the run); **plain** is the same module's `loss` with AdamW, the "
        "cosine schedule and the EMA update in a bare loop, bf16 via `torch.autocast('cpu', torch.bfloat16)`.",
        "- img/s = images in the timed window / its wall time, best of the interleaved runs of each path; "
        f"every run: {details}. The median-step ratio (batch / median step cycle, best run) is less "
        "sensitive to bursts of background load but leaves out work done every few steps (logging).",
        f"- One EMA update costs {ema_ms:.1f} ms per step in both paths.",
        f"- `compute.precision: auto` resolves to `{resolve_precision('auto', 'cpu')[0]}` here "
        f"({resolve_precision('auto', 'cpu')[1]}), so its row is auto's.",
        f"- Load average before {load_before}, after {load_after}: other processes may have been running, "
        "so absolute figures are a lower bound; the two paths ran interleaved under the same load.",
    ])
    print(markdown)
    if not args.no_write:
        print(f"wrote {update_section('train', markdown)}", file=sys.stderr)


if __name__ == "__main__":
    main()
