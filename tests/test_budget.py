"""The evaluation's classifier budget (synthaug.budget): steps scaled to the data, evaluate.max_minutes
shrinking every arm alike, and the resolved plan reused on resume so no finished arm run is redone."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import copy_run, invoke

from synthaug import budget
from synthaug.budget import AUTO_MAX_STEPS, AUTO_MIN_STEPS, MIN_BUDGET_STEPS, auto_steps, plan_evaluation
from synthaug.config import EvaluateConfig, load_recipe
from synthaug.errors import SynthaugError


def images(n: int = 64, size: int = 8, channels: int = 1) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, channels), dtype=np.uint8)


def test_auto_steps_scale_with_the_data_within_bounds():
    assert auto_steps(10, 64) == AUTO_MIN_STEPS
    assert auto_steps(1_000_000, 64) == AUTO_MAX_STEPS
    assert auto_steps(800, 64) == int(np.ceil(budget.AUTO_EPOCHS * 800 / 64))
    assert auto_steps(800, 64) < auto_steps(1600, 64) < AUTO_MAX_STEPS


def test_auto_is_the_default_and_the_judge_follows_the_arms():
    cfg = budget.resolve_steps(EvaluateConfig(), 800)
    assert cfg.steps == cfg.judge_steps == auto_steps(800, 64)
    explicit = budget.resolve_steps(EvaluateConfig(steps=7, judge_steps=9), 800)
    assert (explicit.steps, explicit.judge_steps) == (7, 9)


@pytest.mark.parametrize("value", ["often", 0, -3])
def test_steps_must_be_a_positive_number_or_auto(tmp_path, value):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"evaluate:\n  steps: {value}\n")
    with pytest.raises(SynthaugError, match="evaluate.steps"):
        load_recipe(recipe)


def test_no_budget_no_timing(monkeypatch):
    monkeypatch.setattr(budget, "seconds_per_step", lambda *a, **k: pytest.fail("timed without a budget"))
    cfg, plan = plan_evaluation(EvaluateConfig(steps=40, judge_steps=30), images(), 10, with_judge=True)
    assert (cfg.steps, cfg.judge_steps, plan.estimated_minutes, plan.shrunk_from) == (40, 30, None, None)


def test_a_budget_shrinks_every_run_alike(monkeypatch):
    monkeypatch.setattr(budget, "seconds_per_step", lambda *a, **k: 0.1)
    cfg = EvaluateConfig(steps=1000, judge_steps=1000, seeds=[0, 1], arms=["real", "classic"], workers=2,
                         max_minutes=1.0)
    # (1000 x 2 waves + 1000 judge) x 0.1 s x overhead (1.45) = 7.25 min > 1 min: steps shrink by the same factor.
    resolved, plan = plan_evaluation(cfg, images(), 10, with_judge=True)
    assert plan.shrunk_from == 1000 and resolved.steps == plan.steps == resolved.judge_steps < 1000
    assert plan.estimated_minutes <= 1.0
    generous = cfg.model_copy(update={"max_minutes": 60.0})
    assert plan_evaluation(generous, images(), 10, with_judge=True)[0].steps == 1000


def test_a_budget_never_goes_below_the_floor(monkeypatch):
    monkeypatch.setattr(budget, "seconds_per_step", lambda *a, **k: 10.0)
    resolved, _ = plan_evaluation(EvaluateConfig(steps=500, max_minutes=0.01), images(), 10, with_judge=False)
    assert resolved.steps == MIN_BUDGET_STEPS


def test_the_timing_measures_a_real_step():
    seconds = budget.seconds_per_step(images(channels=3), 10, EvaluateConfig(batch_size=8), timed=2)
    assert 0 < seconds < 5


def test_a_saved_plan_is_reused_until_the_settings_change(tmp_path, monkeypatch):
    saved = tmp_path / "plan.json"
    cfg = EvaluateConfig(steps=1000, max_minutes=1.0, seeds=[0], arms=["real"])
    monkeypatch.setattr(budget, "seconds_per_step", lambda *a, **k: 0.05)
    first, _ = plan_evaluation(cfg, images(), 10, with_judge=True, saved=saved)
    # A resumed evaluation on a slower or busier machine must not re-time: the finished runs used these steps.
    monkeypatch.setattr(budget, "seconds_per_step", lambda *a, **k: pytest.fail("re-timed on resume"))
    assert plan_evaluation(cfg, images(), 10, with_judge=True, saved=saved)[0].steps == first.steps
    monkeypatch.setattr(budget, "seconds_per_step", lambda *a, **k: 0.5)
    changed, _ = plan_evaluation(cfg.model_copy(update={"max_minutes": 2.0}), images(), 10, with_judge=True,
                                 saved=saved)
    assert changed.steps != first.steps
    saved.write_text("{not json")
    assert plan_evaluation(cfg, images(), 10, with_judge=True, saved=saved)[0].steps >= MIN_BUDGET_STEPS


def test_evaluate_records_the_plan_and_every_arm_gets_its_steps(smoke_synthetic, tmp_path):
    run = copy_run(smoke_synthetic, tmp_path / "run")
    result = invoke("evaluate", run, "--set", "evaluate.steps=auto", "--set", "evaluate.judge_steps=auto",
                    "--set", "evaluate.max_minutes=0.02", "--set", "evaluate.arms=[real, real+synthetic]")
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "report" / "metrics.json").read_text())
    plan = metrics["evaluation"]
    assert plan["max_minutes"] == 0.02 and plan["estimated_minutes"] is not None
    assert plan["steps"] < AUTO_MIN_STEPS  # 300 steps of the smoke classifier do not fit in 1.2 seconds
    assert {r["steps"] for arm in metrics["arms"].values() for r in arm["runs"]} == {plan["steps"]}
    assert "synthaug evaluate: 2 arm runs of" in result.stdout
    assert (run / "report" / ".runs" / budget.PLAN_FILE).exists()


def test_on_a_gpu_the_runs_are_timed_there_and_go_one_after_another(monkeypatch):
    devices = []
    monkeypatch.setattr(budget, "seconds_per_step", lambda *a, device="cpu", **k: devices.append(device) or 0.01)
    cfg = EvaluateConfig(steps=100, max_minutes=5.0, workers=2, seeds=[0, 1], arms=["real"])
    _, on_gpu = plan_evaluation(cfg, images(), 10, with_judge=False, accelerator="gpu")
    _, on_cpu = plan_evaluation(cfg, images(), 10, with_judge=False)
    assert devices == ["cuda", "cpu"] and (on_gpu.workers, on_cpu.workers) == (1, 2)
    assert on_gpu.estimated_minutes == pytest.approx(2 * on_cpu.estimated_minutes)  # two waves instead of one
