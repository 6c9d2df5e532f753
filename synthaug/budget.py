"""How many classifier steps an evaluation can afford.

``evaluate.steps: auto`` scales the steps of every arm run to the real training set: ``AUTO_EPOCHS`` passes
over it, at least ``AUTO_MIN_STEPS`` and at most ``AUTO_MAX_STEPS`` (a 1,000-image folder gets a few hundred
steps, not the 2,000 a 100,000-image one would need). ``evaluate.judge_steps: auto`` is the same number.

``evaluate.max_minutes`` is a budget the judge and every arm run share: a few classifier steps are timed here
(one thread, the data's size, classic augmentation: the dearest step an arm takes), and if the planned runs
would take longer than the budget, every run's steps shrink by the same factor (never below
``MIN_BUDGET_STEPS``): every arm still gets the same compute, so the comparison stays fair.

Timing is machine-dependent, so the resolved plan is written beside the arm cache (``plan.json``) and a
resumed evaluation reuses it: a finished arm run is never redone because the clock read differently.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from synthaug.config import EvaluateConfig
from synthaug.io import atomic_write_text

AUTO_EPOCHS = 50
AUTO_MIN_STEPS = 300
AUTO_MAX_STEPS = 2000
MIN_BUDGET_STEPS = 50
# An evaluation costs more than its timed steps: Lightning's loop, ten checks on the validation slice, test
# predictions, two workers sharing memory bandwidth, the CAS set, FID. bench_eval's template run took 1.17x
# what 1.25 estimated (docs/BENCHMARKS.md), hence 1.45.
RUN_OVERHEAD = 1.45
PLAN_FILE = "plan.json"


def auto_steps(n_train: int, batch_size: int) -> int:
    """``AUTO_EPOCHS`` passes over ``n_train`` images, clamped to [AUTO_MIN_STEPS, AUTO_MAX_STEPS]."""
    return int(min(AUTO_MAX_STEPS, max(AUTO_MIN_STEPS, math.ceil(AUTO_EPOCHS * n_train / batch_size))))


def resolve_steps(cfg: EvaluateConfig, n_train: int) -> EvaluateConfig:
    """``cfg`` with ``steps`` and ``judge_steps`` as numbers (``auto`` → ``auto_steps``); others unchanged."""
    steps = auto_steps(n_train, cfg.batch_size) if cfg.steps == "auto" else cfg.steps
    judge = steps if cfg.judge_steps == "auto" else cfg.judge_steps
    return cfg.model_copy(update={"steps": steps, "judge_steps": judge})


def seconds_per_step(x: np.ndarray, num_classes: int, cfg: EvaluateConfig, *, timed: int = 8,
                     device: str = "cpu") -> float:
    """Wall seconds of one classifier optimizer step on one CPU thread (or on a CUDA ``device``): a batch of
    ``cfg.batch_size`` images like ``x`` (uint8 (N, H, W, C)) through classic augmentation, forward, backward
    and AdamW."""
    import torch
    import torch.nn.functional as F

    from synthaug.classifiers import LitClassifier, classic_augmentation, one_thread
    from synthaug.images import to_model_input

    rng = np.random.default_rng(0)
    batch = x[rng.integers(0, len(x), cfg.batch_size)]
    labels = torch.as_tensor(rng.integers(0, num_classes, cfg.batch_size)).to(device)
    augment = classic_augmentation(0, cfg.flips)
    with one_thread(), torch.random.fork_rng(devices=[]):
        model = LitClassifier(x.shape[-1], num_classes, cfg.classifier).to(device)
        optimizer = torch.optim.AdamW(model.parameters())
        for i in range(timed + 2):  # two untimed warm-up steps
            if i == 2:
                started = time.perf_counter()
            images = np.stack([augment(image=image)["image"] for image in batch])
            loss = F.cross_entropy(model(to_model_input(images).to(device)), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
    return (time.perf_counter() - started) / timed


@dataclass
class EvalPlan:
    """The resolved classifier budget of one evaluation, as recorded in ``metrics.json["evaluation"]``."""

    steps: int
    judge_steps: int
    runs: int  # arm runs (arms × seeds)
    workers: int
    max_minutes: float | None
    seconds_per_step: float | None  # measured, only with a budget
    estimated_minutes: float | None
    shrunk_from: int | None = None  # the steps before the budget shrank them

    def estimate(self) -> float:
        """Minutes the judge and the runs should take at ``seconds_per_step``."""
        waves = math.ceil(self.runs / max(1, self.workers))
        return self.seconds_per_step * RUN_OVERHEAD * (self.steps * waves + self.judge_steps) / 60


def plan_evaluation(cfg: EvaluateConfig, x: np.ndarray, num_classes: int, *, with_judge: bool,
                    saved: Path | None = None, accelerator: str = "cpu") -> tuple[EvaluateConfig, EvalPlan]:
    """Resolve ``auto`` steps and fit them to ``cfg.max_minutes`` → (cfg with int steps, the plan).

    Args:
        x: the real training images, uint8 (N, H, W, C).
        with_judge: whether a judge is trained too (it shares the budget).
        accelerator: where the classifiers train (``classifiers.classifier_accelerator``): on a GPU the runs
            go one after another and the steps are timed there.
        saved: a ``plan.json`` from an earlier, interrupted run of the same evaluation: reused when it was
            made for the same settings and training-set size, so a resume never re-times.
    """
    cfg = resolve_steps(cfg, len(x))
    runs = len(cfg.arms) * len(cfg.seeds)
    key = {"settings": cfg.model_dump(mode="json", exclude={"workers"}), "n_train": len(x), "accelerator": accelerator}
    if saved is not None and saved.exists():
        try:
            earlier = json.loads(saved.read_text())
            if earlier.get("key") == key:
                plan = EvalPlan(**earlier["plan"])
                return cfg.model_copy(update={"steps": plan.steps, "judge_steps": plan.judge_steps}), plan
        except (ValueError, TypeError, KeyError):
            pass  # a damaged plan is simply made again
    judge_steps = cfg.judge_steps if with_judge else 0
    workers = min(cfg.workers, runs) if accelerator == "cpu" else 1
    plan = EvalPlan(cfg.steps, judge_steps, runs, workers, cfg.max_minutes, None, None)
    if cfg.max_minutes is not None:
        device = {"gpu": "cuda", "cuda": "cuda", "mps": "mps"}.get(accelerator, "cpu")
        plan.seconds_per_step = seconds_per_step(x, num_classes, cfg, device=device)
        plan.estimated_minutes = plan.estimate()
        if plan.estimated_minutes > cfg.max_minutes:
            factor = cfg.max_minutes / plan.estimated_minutes
            plan.shrunk_from = plan.steps
            plan.steps = max(MIN_BUDGET_STEPS, int(plan.steps * factor))
            plan.judge_steps = max(MIN_BUDGET_STEPS, int(plan.judge_steps * factor)) if with_judge else 0
            plan.estimated_minutes = plan.estimate()
    if saved is not None:
        atomic_write_text(saved, json.dumps({"key": key, "plan": asdict(plan)}))
    judge = plan.judge_steps if with_judge else cfg.judge_steps
    return cfg.model_copy(update={"steps": plan.steps, "judge_steps": judge}), plan


def describe(plan: EvalPlan) -> str:
    """One line for the console: what the evaluation will run and, with a budget, how long it should take."""
    text = f"{plan.runs} arm runs of {plan.steps} classifier steps on {plan.workers} worker(s)"
    if plan.shrunk_from is not None:
        text += (f"; {plan.shrunk_from} steps would take longer than evaluate.max_minutes = {plan.max_minutes:g},"
                 f" so every arm gets {plan.steps}")
    if plan.estimated_minutes is not None:
        text += f"; about {plan.estimated_minutes:.0f} min"
    return text
