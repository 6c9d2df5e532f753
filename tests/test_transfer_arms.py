"""The arms that train in two phases (``evaluation.arm_phases``): pre-train on the synthetic set then
fine-tune on real rows (``synthetic-then-real``), and train on real+synthetic then re-train the last layer on
class-balanced real rows (``real+synthetic-then-head``, SYNAuG). Their share of the step budget, the weights
each phase hands on, the frozen layers, determinism, the leak check, the lift and the cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import synthaug.classifiers as classifiers
import synthaug.evaluation as evaluation
from synthaug.classifiers import EndlessClassBalanced, fit_classifier
from synthaug.config import EvaluateConfig
from synthaug.evaluation import HEAD_FRACTION, PRETRAIN_FRACTION, EvalData, arm_runs, run_arm

NUM_CLASSES = 3
PHASED_ARMS = ("synthetic-then-real", "synthetic-then-real+classic",
               "real+synthetic-then-head", "real+synthetic-then-head+classic")


def _data(counts: list[int], id_start: int, seed: int) -> EvalData:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(counts)), counts)
    x = rng.integers(0, 256, size=(len(y), 8, 8, 1), dtype=np.uint8)
    return EvalData(x, y, id_start + np.arange(len(y)))


TRAIN, TEST, SYNTHETIC = _data([12, 6, 3], 0, 1), _data([5, 5, 5], 100, 2), _data([2, 4, 6], 1000, 3)


def _cfg(**overrides) -> EvaluateConfig:
    settings = dict(steps=10, batch_size=8, seeds=[0], workers=1, judge_steps=10)
    return EvaluateConfig(**{**settings, **overrides})


def _run(arm: str, **kwargs):
    return run_arm(arm, 0, TRAIN, TEST, SYNTHETIC, NUM_CLASSES, _cfg(), **kwargs)


@pytest.mark.parametrize("arm", PHASED_ARMS)
def test_a_phased_arm_takes_the_whole_step_budget_and_is_deterministic(arm):
    cfg = _cfg()
    first, again = _run(arm), _run(arm)
    assert first.steps == cfg.steps and first.images_seen == cfg.steps * cfg.batch_size
    assert first.best_step is not None and 0 < first.best_step <= cfg.steps  # selected in the last phase
    assert np.array_equal(first.preds, again.preds) and first.metrics == again.metrics
    assert first.best_step == again.best_step
    assert np.array_equal(first.val_ids, _run("real").val_ids)  # the same validation slice as every arm


def _spy_on_fits(monkeypatch) -> list[dict]:
    """Every ``fit_classifier`` call of ``run_arm``: its arguments and its result."""
    calls: list[dict] = []

    def spy(data, val, *args, **kwargs):
        fit = fit_classifier(data, val, *args, **kwargs)
        calls.append({"data": data, "val": val, **kwargs, "fit": fit})
        return fit

    monkeypatch.setattr(evaluation, "fit_classifier", spy)
    return calls


def test_pretraining_uses_the_whole_synthetic_set_and_fine_tuning_starts_from_its_weights(monkeypatch):
    calls = _spy_on_fits(monkeypatch)
    cas = SYNTHETIC.take(np.arange(6))  # a CAS set, which the synthetic-only arm would train on instead
    run = _run("synthetic-then-real+classic", cas=cas)
    pretrain, finetune = calls
    pretrain_steps = int(_cfg().steps * PRETRAIN_FRACTION)
    assert np.array_equal(pretrain["data"].ids, SYNTHETIC.ids) and pretrain["val"] is None
    assert (pretrain["steps"], pretrain["start"], pretrain["retrain_head"]) == (pretrain_steps, None, False)
    assert finetune["start"] is pretrain["fit"].model and not finetune["retrain_head"]
    assert finetune["steps"] == _cfg().steps - pretrain_steps
    assert set(finetune["data"].ids) <= set(TRAIN.ids) and np.array_equal(finetune["val"].ids, run.val_ids)
    assert pretrain["classic"] and finetune["classic"]  # "+classic": augmentation in every phase
    assert pretrain["seed"] != finetune["seed"]  # each phase draws its own batches and augmentation


def test_head_retraining_follows_real_plus_synthetic_training_on_real_rows(monkeypatch):
    calls = _spy_on_fits(monkeypatch)
    cfg = _cfg(synthetic_weight=0.5)
    run_arm("real+synthetic-then-head", 0, TRAIN, TEST, SYNTHETIC, NUM_CLASSES, cfg)
    mixed, head = calls
    head_steps = max(1, round(cfg.steps * HEAD_FRACTION))
    assert (mixed["steps"], head["steps"]) == (cfg.steps - head_steps, head_steps)
    assert set(SYNTHETIC.ids) <= set(mixed["data"].ids) and mixed["val"] is None
    assert (mixed["data"].weights[mixed["data"].ids >= 1000] == 0.5).all()  # as in the real+synthetic arm
    assert head["retrain_head"] and head["start"] is mixed["fit"].model
    assert set(head["data"].ids) <= set(TRAIN.ids) and not set(head["data"].ids) & set(head["val"].ids)
    assert not mixed["classic"] and not head["classic"]


def test_every_phase_trains_on_rows_the_leak_check_sees():
    for arm in PHASED_ARMS:
        run = _run(arm)
        trained = set(run.train_ids)
        assert set(SYNTHETIC.ids) <= trained, arm  # the synthetic phase ...
        assert set(TRAIN.ids) - set(run.val_ids) <= trained, arm  # ... and the real one
        assert not trained & set(TEST.ids) and not trained & set(run.val_ids), arm


# --------------------------------------------------------------------------------- the fit helper


def _fit(steps: int = 4, lr: float = 2e-3, **kwargs):
    return fit_classifier(TRAIN, None, NUM_CLASSES, _cfg(lr=lr), steps=steps, seed=0, classic=False, **kwargs)


def test_head_retraining_changes_the_last_layer_only(monkeypatch):
    start = _fit()
    before = {k: v.clone() for k, v in start.model.state_dict().items()}
    samplers: list[EndlessClassBalanced] = []

    def recording(*args):
        samplers.append(EndlessClassBalanced(*args))
        return samplers[-1]

    monkeypatch.setattr(classifiers, "EndlessClassBalanced", recording)
    retrained = _fit(retrain_head=True, start=start.model, steps=3).model.state_dict()
    assert len(samplers) == 1  # on class-balanced batches
    head = {k for k in before if k.startswith("net.head.")}
    assert head == {"net.head.weight", "net.head.bias"}
    for key, value in before.items():  # weights and batch-norm statistics alike
        assert torch.equal(retrained[key], value) != (key in head), key
    assert all(torch.equal(start.model.state_dict()[k], v) for k, v in before.items())  # start is unchanged


def test_fine_tuning_starts_from_the_given_weights():
    start = _fit().model
    # An lr of 1e-9 moves no weight by more than ~1e-8 in one step: what comes out is where training started.
    tuned, fresh = _fit(steps=1, lr=1e-9, start=start).model, _fit(steps=1, lr=1e-9).model
    for (name, p), s, f in zip(tuned.named_parameters(), start.parameters(), fresh.parameters(), strict=True):
        assert torch.allclose(p, s, atol=1e-6), name
        assert not torch.allclose(p, f, atol=1e-6), name


def test_class_balanced_batches_draw_every_class_about_equally():
    y = np.repeat(np.arange(3), [90, 9, 1])
    draws = iter(EndlessClassBalanced(y, seed=0))
    counts = np.bincount(y[[next(draws) for _ in range(3000)]], minlength=3)
    assert (np.abs(counts - 1000) < 120).all(), counts


# -------------------------------------------------------------------------------- lift and cache


def test_phased_arms_get_paired_intervals_and_can_be_the_best_synthetic_arm():
    from synthaug.classifiers import classification_metrics
    from synthaug.evaluation import ArmRun, aggregate_runs, compute_lift

    target = np.repeat(np.arange(3), [200, 60, 10])
    rng = np.random.default_rng(0)

    def preds(correct: float) -> np.ndarray:
        return np.where(rng.random(len(target)) > correct, (target + 1) % 3, target)

    accuracy = {"real": 0.7, "classic": 0.75, "synthetic-then-real": 0.8, "real+synthetic-then-head": 0.95}
    runs = [ArmRun(arm, seed, classification_metrics(p, target, 3), 10, 80, None, np.zeros(1, dtype=np.int64),
                   np.zeros(1, dtype=np.int64), p)
            for arm, correct in accuracy.items() for seed in range(3) for p in [preds(correct)]]
    lift = compute_lift(aggregate_runs(runs), runs, target)
    assert lift["best_baseline"] == "classic" and lift["best_synthetic_arm"] == "real+synthetic-then-head"
    assert set(lift["paired"]) == {"synthetic-then-real", "real+synthetic-then-head"}
    assert lift["verdict"] == "helps" and lift["verdict_vs_real"] is None  # no real+synthetic arm ran


class _Retrained(Exception):
    pass


def _refuse(*args):
    raise _Retrained


def test_a_phased_arm_is_cached_with_the_synthetic_arms(tmp_path, monkeypatch):
    cfg = _cfg(arms=["synthetic-then-real"])
    first = arm_runs(TRAIN, TEST, SYNTHETIC, NUM_CLASSES, cfg, progress=False, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*/synthetic-then-real@0.json"))) == 1
    monkeypatch.setattr(evaluation, "run_arm", _refuse)
    again = arm_runs(TRAIN, TEST, SYNTHETIC, NUM_CLASSES, cfg, progress=False, cache_dir=tmp_path)
    assert again[0].to_json() == first[0].to_json()
    other = SYNTHETIC.take(np.arange(len(SYNTHETIC) - 1))  # other synthetic data: the phased arm reruns
    with pytest.raises(_Retrained):
        arm_runs(TRAIN, TEST, other, NUM_CLASSES, cfg, progress=False, cache_dir=tmp_path)
