"""Downstream evaluation: arm composition, equal compute, no test leak, mean and std over seeds, lift.

The classifiers themselves are tested in test_classifiers.py, sample quality in test_quality.py (on the
``digits`` fixture of this file)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from synthaug.config import ARMS, EvaluateConfig
from synthaug.errors import SynthaugError
from synthaug.evaluation import EvalData, arm_training_set, compute_lift, run_arm, run_arms

NUM_CLASSES = 10
TRAIN_COUNTS = [24, 16, 12, 8, 6, 5, 4, 3, 2, 1]  # long tail; the last class has a single image
SYNTHETIC_ID_OFFSET = 1_000_000


def _cfg(**overrides) -> EvaluateConfig:
    settings = dict(steps=24, batch_size=16, seeds=[0], workers=1, judge_steps=30)
    return EvaluateConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def digits() -> dict[str, EvalData]:
    """sklearn's 8x8 digits as uint8 (N, 8, 8, 1): a long-tailed train split, a 20-per-class test
    split, and "synthetic" images (other real digits, 6 per class, with their own ids)."""
    bunch = load_digits()
    x = np.rint(bunch.images * (255 / 16)).astype(np.uint8)[..., None]
    y, ids = bunch.target.astype(np.int64), np.arange(len(bunch.target), dtype=np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    parts: dict[str, list[int]] = {"train": [], "test": [], "synthetic": [], "fresh": []}
    for label in range(NUM_CLASSES):
        rows = order[y[order] == label]
        n = TRAIN_COUNTS[label]
        parts["train"] += rows[:n].tolist()
        parts["test"] += rows[n : n + 20].tolist()
        parts["synthetic"] += rows[n + 20 : n + 26].tolist()
        parts["fresh"] += rows[n + 26 : n + 27].tolist()
    data = {name: EvalData(x[rows], y[rows], ids[rows]) for name, rows in parts.items()}
    data["synthetic"].ids = data["synthetic"].ids + SYNTHETIC_ID_OFFSET
    return data


@pytest.fixture(scope="module")
def every_arm(digits) -> dict:
    """Every arm trained once at seed 0."""
    cfg = _cfg()
    return {
        arm: run_arm(arm, 0, digits["train"], digits["test"], digits["synthetic"], NUM_CLASSES, cfg)
        for arm in ARMS
    }


# ------------------------------------------------------------------------------------- composition


def _tiny(counts: list[int], id_start: int, seed: int) -> EvalData:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(counts)), counts)
    x = rng.integers(0, 256, size=(len(y), 8, 8, 1), dtype=np.uint8)
    return EvalData(x, y, id_start + np.arange(len(y)))


def test_each_arm_composes_its_training_data_as_documented():
    real = _tiny([6, 3, 1], id_start=0, seed=1)
    synthetic = _tiny([0, 3, 6], id_start=100, seed=2)

    def counts(arm):
        data, classic = arm_training_set(arm, real, synthetic, seed=0)
        return np.bincount(data.y, minlength=3).tolist(), classic

    assert counts("real") == ([6, 3, 1], False)
    assert counts("classic") == ([6, 3, 1], True)
    assert counts("oversample") == ([6, 6, 6], False)
    assert counts("oversample+classic") == ([6, 6, 6], True)
    assert counts("smote") == ([6, 6, 6], False)
    assert counts("synthetic") == ([0, 3, 6], False)
    assert counts("real+synthetic") == ([6, 6, 7], False)
    assert counts("real+synthetic+classic") == ([6, 6, 7], True)
    with pytest.raises(SynthaugError, match="phases"):  # each phase has its own data: arm_phases
        arm_training_set("synthetic-then-real", real, synthetic, seed=0)


def test_synthetic_rows_can_weigh_less_in_the_loss():
    real = _tiny([6, 3, 1], id_start=0, seed=1)
    synthetic = _tiny([0, 3, 6], id_start=100, seed=2)
    plain, _ = arm_training_set("real+synthetic", real, synthetic, seed=0)
    assert plain.weight is None and (plain.weights == 1).all()
    data, _ = arm_training_set("real+synthetic+classic", real, synthetic, seed=0, synthetic_weight=0.25)
    from_synthetic = data.ids >= 100
    assert from_synthetic.sum() == 9
    assert (data.weights[from_synthetic] == 0.25).all() and (data.weights[~from_synthetic] == 1).all()
    assert (data.take(np.flatnonzero(from_synthetic)).weights == 0.25).all()
    # Arms without synthetic rows are unweighted whatever the setting.
    assert arm_training_set("oversample", real, synthetic, seed=0, synthetic_weight=0.25)[0].weight is None


def test_oversampled_rows_are_copies_of_real_rows():
    real = _tiny([6, 3, 1], id_start=0, seed=1)
    data, _ = arm_training_set("oversample", real, None, seed=0)
    assert set(data.ids) == set(real.ids)
    for image, label, source in zip(data.x, data.y, data.ids, strict=True):
        assert np.array_equal(image, real.x[source]) and label == real.y[source]


def test_smote_interpolates_within_a_class_and_copies_single_image_classes():
    real = _tiny([6, 3, 1], id_start=0, seed=1)
    data, _ = arm_training_set("smote", real, None, seed=0)
    new = data.take(np.flatnonzero(data.ids < 0))  # interpolated rows have no single source row
    assert np.bincount(new.y, minlength=3).tolist() == [0, 3, 0]
    class1 = real.x[real.y == 1].astype(int)
    assert (new.x >= class1.min(axis=0) - 1).all() and (new.x <= class1.max(axis=0) + 1).all()
    singles = data.take(np.flatnonzero(data.y == 2))
    assert (singles.ids == real.ids[real.y == 2][0]).all()  # the one-image class is copied, not interpolated


def test_arm_composition_is_seeded():
    real = _tiny([6, 3, 1], id_start=0, seed=1)
    first, _ = arm_training_set("smote", real, None, seed=3)
    again, _ = arm_training_set("smote", real, None, seed=3)
    assert np.array_equal(first.x, again.x) and np.array_equal(first.ids, again.ids)


def test_arms_with_synthetic_data_need_it(digits):
    with pytest.raises(SynthaugError, match="synthetic"):
        arm_training_set("real+synthetic", digits["train"], None, seed=0)
    with pytest.raises(SynthaugError, match="synthetic"):
        run_arms(
            digits["train"],
            digits["test"],
            None,
            NUM_CLASSES,
            _cfg(arms=["real", "synthetic"]),
            progress=False,
        )


# ------------------------------------------------------------------------------------------- training


def test_every_arm_takes_the_same_number_of_optimizer_steps(every_arm):
    cfg = _cfg()
    sizes = {arm: len(run.train_ids) for arm, run in every_arm.items()}
    assert len(set(sizes.values())) > 2  # the arms really differ in data size ...
    for arm, run in every_arm.items():
        assert run.steps == cfg.steps, arm  # ... but not in compute
        assert run.images_seen == cfg.steps * cfg.batch_size, arm


def test_test_images_never_reach_training_or_validation(digits, every_arm):
    train_ids, test_ids = set(digits["train"].ids), set(digits["test"].ids)
    allowed = train_ids | set(digits["synthetic"].ids)
    for arm, run in every_arm.items():
        trained, validated = set(run.train_ids), set(run.val_ids)
        assert not trained & test_ids, arm
        assert not validated & test_ids, arm
        assert validated and validated <= train_ids, arm  # the validation slice is real training data ...
        assert not trained & validated, arm  # ... held out from fitting
        assert {i for i in trained if i >= 0} <= allowed, arm  # negative ids: SMOTE interpolations


def test_a_test_image_in_the_training_split_is_refused(digits):
    train = EvalData.concat(digits["train"], digits["test"].take(np.arange(1)))
    with pytest.raises(SynthaugError, match="test images"):
        run_arm("real", 0, train, digits["test"], None, NUM_CLASSES, _cfg())


def test_same_arm_and_seed_give_identical_metrics(digits, every_arm):
    again = run_arm(
        "real+synthetic+classic", 0, digits["train"], digits["test"], digits["synthetic"], NUM_CLASSES, _cfg()
    )
    first = every_arm["real+synthetic+classic"]
    assert again.metrics == first.metrics
    assert again.best_step == first.best_step


def test_run_arms_reports_mean_and_std_over_seeds(digits, every_arm):
    cfg = _cfg(arms=["real", "synthetic"], seeds=[0, 1])
    arms = run_arms(digits["train"], digits["test"], digits["synthetic"], NUM_CLASSES, cfg, progress=False)
    assert list(arms) == ["real", "synthetic"]
    for result in arms.values():
        for key in ("accuracy", "macro_f1", "balanced_accuracy"):
            values = [run[key] for run in result["runs"]]
            assert result[key]["mean"] == pytest.approx(np.mean(values))
            assert result[key]["std"] == pytest.approx(np.std(values, ddof=1))
        assert len(result["per_class_f1"]) == NUM_CLASSES
        assert [run["seed"] for run in result["runs"]] == [0, 1]
        assert all(run["steps"] == cfg.steps for run in result["runs"])
    seed0 = arms["real"]["runs"][0]
    assert seed0["macro_f1"] == every_arm["real"].metrics["macro_f1"]  # same run in or out of run_arms


# ----------------------------------------------------------------------------------------------- lift


def _arm(macro_f1: float, accuracy: float) -> dict:
    return {"macro_f1": {"mean": macro_f1, "std": 0.01}, "accuracy": {"mean": accuracy, "std": 0.01}}


def test_compute_lift_on_a_hand_made_arms_dict():
    arms = {
        "real": _arm(0.80, 0.85),
        "classic": _arm(0.85, 0.88),
        "oversample+classic": _arm(0.88, 0.90),
        "real+synthetic": _arm(0.86, 0.89),
        "real+synthetic+classic": _arm(0.90, 0.92),
    }
    lift = compute_lift(arms)
    assert lift["macro_f1"] == pytest.approx(0.06)
    assert lift["accuracy"] == pytest.approx(0.04)
    assert lift["best_baseline"] == "oversample+classic"
    assert lift["best_synthetic_arm"] == "real+synthetic+classic"
    assert lift["vs_best_baseline_macro_f1"] == pytest.approx(0.02)


def test_compute_lift_with_missing_arms_gives_none():
    lift = compute_lift({"real": _arm(0.8, 0.85)})
    assert lift == {
        "macro_f1": None,
        "accuracy": None,
        "best_baseline": "real",
        "best_synthetic_arm": None,
        "vs_best_baseline_macro_f1": None,
    }
    assert all(value is None for value in compute_lift({}).values())


@pytest.mark.slow
def test_a_process_pool_gives_the_same_metrics_as_in_process(digits):
    cfg = _cfg(arms=["real"], seeds=[0, 1])
    args = (digits["train"], digits["test"], None, NUM_CLASSES)
    in_process = run_arms(*args, cfg, progress=False)
    pooled = run_arms(*args, cfg.model_copy(update={"workers": 2}), progress=False)
    assert pooled == in_process


# ------------------------------------------------------------------ paired intervals, long-tail groups


def _runs(preds: dict[str, list[np.ndarray]]) -> list:
    """ArmRuns with the given test predictions per arm (one array per seed) and their metrics."""
    from synthaug.classifiers import classification_metrics
    from synthaug.evaluation import ArmRun

    target = _TARGET
    return [ArmRun(arm, seed, classification_metrics(p, target, 3), 10, 100, None, np.zeros(4, dtype=np.int64),
                   np.zeros(1, dtype=np.int64), p)
            for arm, per_seed in preds.items() for seed, p in enumerate(per_seed)]


_TARGET = np.repeat(np.arange(3), [200, 60, 10])  # many, medium and few test images, 270 in all


def _noisy(correct: float, seed: int) -> np.ndarray:
    """Predictions right for a ``correct`` share of every class's images (the rest one class off)."""
    rng = np.random.default_rng(seed)
    wrong = rng.random(len(_TARGET)) > correct
    return np.where(wrong, (_TARGET + 1) % 3, _TARGET)


def test_the_lift_has_paired_intervals_and_verdicts_from_them():
    from synthaug.evaluation import aggregate_runs
    from synthaug.statistics import VERDICTS

    runs = _runs({"real": [_noisy(0.70, s) for s in range(4)],
                  "classic": [_noisy(0.75, 10 + s) for s in range(4)],
                  "real+synthetic": [_noisy(0.95, 20 + s) for s in range(4)],
                  "synthetic": [_noisy(0.74, 30 + s) for s in range(4)]})
    arms = aggregate_runs(runs)
    lift = compute_lift(arms, runs, _TARGET)
    assert lift["best_baseline"] == "classic" and lift["best_synthetic_arm"] == "real+synthetic"
    versus_real = lift["paired"]["real+synthetic"]["vs_real"]
    low, high = versus_real["ci"]
    assert 0 < low < versus_real["mean"] < high and versus_real["n_seeds"] == 4
    assert versus_real["mean"] == pytest.approx(lift["macro_f1"])  # the paired mean is the difference of means
    assert lift["verdict_vs_real"] == lift["verdict"] == "helps"
    # The synthetic-only arm and the best baseline are about as good: the interval straddles zero.
    assert lift["paired"]["synthetic"]["vs_best_baseline"]["verdict"] == "no clear difference"
    assert set(lift["paired"]) == {"real+synthetic", "synthetic"}
    assert all(cell["verdict"] in VERDICTS for arm in lift["paired"].values() for cell in arm.values())
    # Swapped roles: what helped now hurts.
    swapped = _runs({"real": [_noisy(0.95, s) for s in range(4)],
                     "real+synthetic": [_noisy(0.70, 20 + s) for s in range(4)]})
    assert compute_lift(aggregate_runs(swapped), swapped, _TARGET)["verdict_vs_real"] == "hurts"


def test_each_arm_gets_many_medium_and_few_shot_accuracy():
    from synthaug.evaluation import aggregate_runs
    from synthaug.statistics import shot_groups

    perfect_on_many = np.where(_TARGET == 0, 0, (_TARGET + 1) % 3)  # right on class 0 only
    runs = _runs({"real": [perfect_on_many, perfect_on_many]})
    groups = shot_groups([150, 50, 5])
    arms = aggregate_runs(runs, _TARGET, groups)
    assert arms["real"]["many"] == {"mean": 1.0, "std": 0.0}
    assert arms["real"]["medium"]["mean"] == arms["real"]["few"]["mean"] == 0.0
    assert aggregate_runs(runs, _TARGET, shot_groups([150, 120, 110]))["real"]["few"] is None
    assert "many" not in aggregate_runs(runs)["real"]  # without groups, the DESIGN §5 keys only


def test_the_synthetic_only_arm_trains_on_a_class_balanced_set():
    real = _tiny([6, 3, 1], id_start=0, seed=1)
    synthetic = _tiny([2, 3, 6], id_start=100, seed=2)
    data, _ = arm_training_set("synthetic", real, synthetic, seed=0)
    assert np.bincount(data.y).tolist() == [2, 2, 2]
    assert np.bincount(arm_training_set("real+synthetic", real, synthetic, seed=0)[0].y).tolist() == [8, 6, 7]
