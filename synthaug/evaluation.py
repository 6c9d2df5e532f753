"""Does the synthetic data help? Downstream classifiers per arm and their test metrics.

An *arm* is one way of composing a classifier's training data from the real training split (and the
synthetic images): ``real``, ``classic`` (real + augmentation), ``oversample``, ``smote``, ``synthetic``,
``real+synthetic``, ... Every arm trains the same classifier (``classifiers.fit_classifier``) for exactly
``cfg.steps`` optimizer steps (more data is not more compute), on the same seeds, and is scored once on the
held-out test split. The ``X-then-Y`` arms split those steps between two phases (``arm_phases``): pre-training
on the synthetic set then fine-tuning on real rows, or re-training the last layer on real rows. Finished runs
are cached by the content they read; with ``evaluate.workers > 1`` they run in a pool of worker processes
(``workers.run_pool``).

Invariant (DESIGN §8): the test split never reaches any training. Model selection uses a validation
slice carved from the real training data only; test images are used for the final metrics alone.

Images everywhere are ``uint8`` arrays of shape ``(N, H, W, C)`` with ``C`` = 1 or 3.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from synthaug.budget import resolve_steps
from synthaug.classifiers import classification_metrics, fit_classifier, one_thread, predict
from synthaug.config import ARMS, EvaluateConfig
from synthaug.errors import EnvironmentFailure, SynthaugError
from synthaug.io import atomic_write_text
from synthaug.seeds import run_seeds
from synthaug.statistics import group_accuracy, paired_difference
from synthaug.workers import WorkerDied, exit_if_reimported_in_worker, run_pool

SYNTHETIC_ARMS = tuple(arm for arm in ARMS if "synthetic" in arm)
BASELINE_ARMS = tuple(arm for arm in ARMS if "synthetic" not in arm)
VALIDATION_FRACTION = 0.1
# synthetic-then-real: half the steps pre-train on the synthetic set, half fine-tune on the real rows. An
# even split gives the synthetic features as much training as the real fit, without starving either phase.
PRETRAIN_FRACTION = 0.5
# real+synthetic-then-head: the last fifth re-trains the last layer alone. A linear layer on fixed features
# converges in a few passes (SYNAuG and cRT re-train it for a few epochs), so most steps go to the features.
HEAD_FRACTION = 0.2

# ------------------------------------------------------------------------------------------------ data


@dataclass
class EvalData:
    """Labelled images for evaluation.

    Attributes:
        x: uint8 images, shape (N, H, W, C), C = 1 or 3.
        y: int64 labels, shape (N,).
        ids: int64 ids of the source rows, shape (N,), for leak checks. Real rows keep their dataset ids;
            synthetic rows use their own ids; rows that copy a real row (oversampling) repeat its id;
            rows interpolated by SMOTE have no single source and get negative ids.
        weight: float32 loss weight per row, shape (N,), or None for all 1 (synthetic rows may weigh less,
            ``evaluate.synthetic_weight``).
    """

    x: np.ndarray
    y: np.ndarray
    ids: np.ndarray
    weight: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.x.ndim != 4 or self.x.shape[-1] not in (1, 3) or self.x.dtype != np.uint8:
            raise SynthaugError(
                f"evaluation images must be uint8 (N, H, W, C) with C = 1 or 3, got {self.x.dtype} {self.x.shape}"
            )
        self.y = np.asarray(self.y, dtype=np.int64)
        self.ids = np.asarray(self.ids, dtype=np.int64)
        if not len(self.x) == len(self.y) == len(self.ids):
            raise SynthaugError(
                f"evaluation data has {len(self.x)} images, {len(self.y)} labels and {len(self.ids)} ids"
            )
        if self.weight is not None:
            self.weight = np.asarray(self.weight, dtype=np.float32)
            if self.weight.shape != self.y.shape:
                raise SynthaugError(f"evaluation data has {len(self.y)} labels and {len(self.weight)} weights")

    @property
    def weights(self) -> np.ndarray:
        """The loss weight of every row (1 where none was given)."""
        return self.weight if self.weight is not None else np.ones(len(self.y), dtype=np.float32)

    def __len__(self) -> int:
        return len(self.y)

    def take(self, index: np.ndarray) -> EvalData:
        weight = self.weight[index] if self.weight is not None else None
        return EvalData(self.x[index], self.y[index], self.ids[index], weight)

    @staticmethod
    def concat(*parts: EvalData) -> EvalData:
        weighted = any(p.weight is not None for p in parts)
        return EvalData(
            np.concatenate([p.x for p in parts]),
            np.concatenate([p.y for p in parts]),
            np.concatenate([p.ids for p in parts]),
            np.concatenate([p.weights for p in parts]) if weighted else None,
        )


def validation_split(
    y: np.ndarray, seed: int, fraction: float = VALIDATION_FRACTION
) -> tuple[np.ndarray, np.ndarray]:
    """A seeded stratified split of row indices into (fit, validation).

    Each class with at least 2 rows gives ``max(1, round(fraction * n))`` rows to validation; a class
    with a single row keeps it for training. Both index arrays are sorted.
    """
    rng = np.random.default_rng(seed)
    val: list[np.ndarray] = []
    for label in np.unique(y):
        rows = np.flatnonzero(y == label)
        if len(rows) >= 2:
            val.append(rng.choice(rows, size=max(1, round(fraction * len(rows))), replace=False))
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    fit_idx = np.setdiff1d(np.arange(len(y)), val_idx)
    return fit_idx, val_idx


def _random_oversample(data: EvalData, rng: np.random.Generator, target: int, labels=None) -> EvalData:
    """Append copies of randomly drawn rows (with replacement) until each class has ``target`` rows."""
    extra = []
    for label in np.unique(data.y) if labels is None else labels:
        rows = np.flatnonzero(data.y == label)
        if len(rows) < target:
            extra.append(rng.choice(rows, size=target - len(rows), replace=True))
    if not extra:
        return data
    return EvalData.concat(data, data.take(np.concatenate(extra)))


def _smote(data: EvalData, seed: int) -> EvalData:
    """SMOTE (Chawla et al. 2002) on flattened pixels, every class up to the largest class's count."""
    from imblearn.over_sampling import SMOTE

    labels, counts = np.unique(data.y, return_counts=True)
    target = counts.max()
    smote_labels = labels[(counts < target) & (counts >= 2)]
    # SMOTE interpolates between a row and one of its class neighbours, so a class with one image has
    # no neighbour to interpolate with: those classes fall back to random oversampling.
    single = labels[counts == 1]
    rng = np.random.default_rng(seed)
    data = _random_oversample(data, rng, target, labels=single)
    if len(smote_labels) == 0:
        return data
    n_min = counts[np.isin(labels, smote_labels)].min()
    sampler = SMOTE(
        sampling_strategy={int(label): int(target) for label in smote_labels},
        k_neighbors=int(min(5, n_min - 1)),
        random_state=seed,
    )
    flat = data.x.reshape(len(data), -1).astype(np.float32)
    x_res, y_res = sampler.fit_resample(flat, data.y)
    # imblearn returns the input rows first, then the new ones.
    new_x = np.clip(np.rint(x_res[len(data) :]), 0, 255).astype(np.uint8).reshape(-1, *data.x.shape[1:])
    new_y = np.asarray(y_res[len(data) :], dtype=np.int64)
    new_ids = -1 - np.arange(len(new_y), dtype=np.int64)
    return EvalData.concat(data, EvalData(new_x, new_y, new_ids))


def _balanced(data: EvalData, num_classes: int) -> EvalData:
    """The first ``n`` rows of every class, ``n`` the smallest class's count, when every one of
    ``num_classes`` classes has rows: a class-balanced set, as CAS asks (Ravuri & Vinyals 2019). Else
    ``data`` as it is (a synthetic set without some class cannot be balanced; ``quality.cas_ratio`` is then None)."""
    counts = np.bincount(data.y, minlength=num_classes)
    if num_classes == 0 or counts.min() == 0 or counts.min() == counts.max():
        return data
    keep = np.sort(np.concatenate([np.flatnonzero(data.y == c)[: counts.min()] for c in range(num_classes)]))
    return data.take(keep)


def _check_arm(arm: str, synthetic: EvalData | None) -> None:
    if arm not in ARMS:
        raise SynthaugError(f"unknown arm {arm!r}; arms are {', '.join(ARMS)}")
    if "synthetic" in arm and (synthetic is None or len(synthetic) == 0):
        raise SynthaugError(f"arm {arm!r} needs synthetic images; generate them first or drop the arm")


def arm_training_set(
    arm: str, real: EvalData, synthetic: EvalData | None, seed: int, synthetic_weight: float = 1.0,
    cas: EvalData | None = None,
) -> tuple[EvalData, bool]:
    """The training data of one arm and whether classic augmentation is applied to it.

    Args:
        arm: one of ``synthaug.config.ARMS`` without "-then-" (those train in phases: ``arm_phases``).
        real: the real training rows the arm may use (already without the validation slice).
        synthetic: generated rows, or None; arms with "synthetic" in their name need them.
        seed: seeds the random oversampling and SMOTE.
        synthetic_weight: the loss weight of synthetic rows beside real ones in ``real+synthetic`` arms
            (He et al. 2023 down-weight synthetic data); 1 treats them like real rows.

    Returns:
        (data, classic): the rows to train on (images (N, H, W, C)), and True for "+classic" arms.
    """
    _check_arm(arm, synthetic)
    if "-then-" in arm:
        raise SynthaugError(f"arm {arm!r} trains in phases, each on its own data: see arm_phases")
    classic = arm in ("classic",) or arm.endswith("+classic")
    base = arm.removesuffix("+classic")
    if base in ("real", "classic"):
        return real, classic
    if base == "oversample":
        target = np.bincount(real.y).max()
        return _random_oversample(real, np.random.default_rng(seed), target), classic
    if base == "smote":
        return _smote(real, seed), classic
    if base == "synthetic":  # synthetic only: the CAS set if there is one, else a balanced draw of the synthetic set
        return (cas if cas is not None else _balanced(synthetic, int(real.y.max()) + 1 if len(real) else 0)), classic
    if base == "real+synthetic":
        if synthetic_weight != 1.0:
            synthetic = EvalData(synthetic.x, synthetic.y, synthetic.ids,
                                 np.full(len(synthetic), synthetic_weight, dtype=np.float32))
        return EvalData.concat(real, synthetic), classic
    raise AssertionError(f"arm {arm!r} has no composition")  # ARMS and this function disagree


@dataclass
class Phase:
    """One training phase of an arm: ``steps`` optimizer steps on ``data``, each phase after the first
    starting from the weights the one before it ended with."""

    data: EvalData
    steps: int
    retrain_head: bool = False  # only the last layer, on class-balanced batches (classifiers.fit_classifier)


def arm_phases(
    arm: str, real: EvalData, synthetic: EvalData | None, seed: int, steps: int,
    synthetic_weight: float = 1.0, cas: EvalData | None = None,
) -> tuple[list[Phase], bool]:
    """The training phases of one arm, which share its ``steps``, and whether classic augmentation is
    applied (in every phase). One phase (``arm_training_set``) for all arms but these two families:

    - ``synthetic-then-real``: pre-train on the whole synthetic set (not the CAS set), then fine-tune on
      ``real``; ``PRETRAIN_FRACTION`` of the steps pre-train.
    - ``real+synthetic-then-head``: train on ``real+synthetic`` (``synthetic_weight`` as there), then
      re-train the last layer on ``real`` with class-balanced sampling, the rest frozen (SYNAuG, Ye-Bin et
      al. 2023); ``HEAD_FRACTION`` of the steps (at least one) re-train the head.

    A first phase left with no steps (``steps`` of 1) is dropped.
    """
    _check_arm(arm, synthetic)
    first, _, then = arm.partition("-then-")
    classic = arm.endswith("+classic")
    if then.removesuffix("+classic") == "real":
        pretrain = int(steps * PRETRAIN_FRACTION)
        phases = [Phase(synthetic, pretrain), Phase(real, steps - pretrain)]
    elif then.removesuffix("+classic") == "head":
        head = max(1, round(steps * HEAD_FRACTION))
        mixed, _ = arm_training_set(first, real, synthetic, seed, synthetic_weight)
        phases = [Phase(mixed, steps - head), Phase(real, head, retrain_head=True)]
    else:
        data, classic = arm_training_set(arm, real, synthetic, seed, synthetic_weight, cas)
        phases = [Phase(data, steps)]
    return [phase for phase in phases if phase.steps > 0], classic


@dataclass
class ArmRun:
    """One arm trained at one seed: its test metrics and what it was trained on."""

    arm: str
    seed: int
    metrics: dict  # classification_metrics on the test split
    steps: int  # of all phases together
    images_seen: int
    best_step: int | None  # counted from the first phase's first step
    train_ids: np.ndarray  # ids of every training row of every phase (repeats for oversampled rows)
    val_ids: np.ndarray  # ids of the validation slice
    preds: np.ndarray  # int64 class predictions on the test split, (N_test,): for paired statistics

    def to_json(self) -> dict:
        return {"arm": self.arm, "seed": self.seed, "metrics": self.metrics, "steps": self.steps,
                "images_seen": self.images_seen, "best_step": self.best_step,
                "train_size": len(self.train_ids), "val_ids": self.val_ids.tolist(),
                "preds": self.preds.tolist()}

    @classmethod
    def from_json(cls, d: dict) -> ArmRun:
        # Training ids are not kept in the cache (the leak check ran when the run was made).
        return cls(d["arm"], d["seed"], d["metrics"], d["steps"], d["images_seen"], d["best_step"],
                   np.zeros(d["train_size"], dtype=np.int64), np.asarray(d["val_ids"], dtype=np.int64),
                   np.asarray(d["preds"], dtype=np.int64))

    def summary(self) -> dict:
        return {
            "seed": self.seed,
            **{k: self.metrics[k] for k in ("accuracy", "macro_f1", "balanced_accuracy")},
            "steps": self.steps,
            "best_step": self.best_step,
            "train_size": len(self.train_ids),
        }


def run_arm(
    arm: str,
    seed: int,
    train: EvalData,
    test: EvalData,
    synthetic: EvalData | None,
    num_classes: int,
    cfg: EvaluateConfig,
    accelerator: str = "cpu",
    cas: EvalData | None = None,
) -> ArmRun:
    """Train one arm at one seed and score it on the test split (``cas``: see ``arm_training_set``).

    The validation slice comes from ``train`` (real rows) with a split that depends on the seed only,
    so every arm at a seed is selected on the same slice. Trains on one torch thread (``one_thread``), or
    on ``accelerator`` (a Lightning accelerator name; ``classifiers.classifier_accelerator``).

    An arm in phases (``arm_phases``) selects its weights on the validation slice in its last phase only;
    an earlier phase hands on its final weights (its one-cycle schedule has annealed by then). Each phase
    after the first draws from its own seeds, derived from ``seed``.
    """
    cfg = resolve_steps(cfg, len(train))
    leaked = np.intersect1d(train.ids, test.ids)
    if len(leaked):
        raise SynthaugError(
            f"{len(leaked)} test images are also in the training split (ids {leaked[:5].tolist()}...)"
        )
    fit_idx, val_idx = validation_split(train.y, run_seeds(seed)["split"])
    real_fit, val = train.take(fit_idx), train.take(val_idx)
    phases, classic = arm_phases(arm, real_fit, synthetic, seed, cfg.steps, cfg.synthetic_weight, cas)
    fits = []
    with one_thread():
        for i, phase in enumerate(phases):
            last = i == len(phases) - 1
            phase_seed = seed if i == 0 else int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
            fits.append(fit_classifier(
                phase.data, val if last else None, num_classes, cfg, steps=phase.steps, seed=phase_seed,
                classic=classic, accelerator=accelerator, start=fits[-1].model if fits else None,
                retrain_head=phase.retrain_head,
            ))
        preds = predict(fits[-1].model, test.x)
    metrics = classification_metrics(preds, test.y, num_classes)
    before_last = sum(fit.steps for fit in fits[:-1])
    best_step = None if fits[-1].best_step is None else before_last + fits[-1].best_step
    return ArmRun(arm, seed, metrics, before_last + fits[-1].steps, sum(fit.images_seen for fit in fits),
                  best_step, np.concatenate([phase.data.ids for phase in phases]), val.ids, preds)


# --------------------------------------------------------------------------------------- the arm cache

CACHE_FORMAT = 3  # bump when ArmRun's JSON changes: entries of another format then sit in other folders
_HASH_CHUNK_BYTES = 1 << 24
# Settings no arm's result depends on: changing them must not retrain anything.
_NOT_ARM_SETTINGS = frozenset({"arms", "seeds", "workers", "judge_steps", "memorization_threshold", "max_minutes"})


def _hash_array(h, a: np.ndarray) -> None:
    """Feed an array's dtype, shape and bytes to the hash ``h``, a few MB at a time, so a large or
    memory-mapped array is never copied whole."""
    a = np.atleast_1d(np.asarray(a))
    h.update(f"{a.dtype.str}{a.shape};".encode())
    rows = max(1, _HASH_CHUNK_BYTES // max(1, a[:1].nbytes))
    for i in range(0, len(a), rows):
        h.update(np.ascontiguousarray(a[i : i + rows]).data)


def arms_fingerprint(
    parts: tuple[EvalData, ...], num_classes: int, cfg: EvaluateConfig, *, synthetic: bool,
    accelerator: str = "cpu",
) -> str:
    """A digest of the content of everything an arm reads: the images, labels, ids and weights of
    ``parts``, the classifier settings (``synthetic_weight`` only for arms with synthetic data) and the
    accelerator (a GPU's float sums differ from the CPU's)."""
    exclude = set(_NOT_ARM_SETTINGS) | (set() if synthetic else {"synthetic_weight"})
    settings = {"format": CACHE_FORMAT, "classes": num_classes, "accelerator": accelerator,
                "evaluate": cfg.model_dump(mode="json", exclude=exclude)}
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for data in parts:
        for array in (data.x, data.y, data.ids, data.weights):
            _hash_array(h, array)
    return h.hexdigest()[:16]


def _cache_paths(cache_dir, train, test, synthetic, num_classes, cfg, accelerator, cas=None) -> dict[tuple[str, int], Path]:
    """``{(arm, seed): cache file}``: ``cache_dir/FINGERPRINT/ARM@SEED.json``. Arms without synthetic
    data do not depend on it, so a new synthetic set reruns only the arms that use it."""
    if cache_dir is None:
        return {}
    folders = {False: arms_fingerprint((train, test), num_classes, cfg, synthetic=False, accelerator=accelerator)}
    if any("synthetic" in arm for arm in cfg.arms):
        parts = (train, test, synthetic) if cas is None else (train, test, synthetic, cas)
        folders[True] = arms_fingerprint(parts, num_classes, cfg, synthetic=True, accelerator=accelerator)
    return {(arm, seed): Path(cache_dir) / folders["synthetic" in arm] / f"{arm}@{seed}.json"
            for arm in cfg.arms for seed in cfg.seeds}


def _cached(path: Path | None, job: tuple[str, int]) -> ArmRun | None:
    if path is None or not path.exists():
        return None
    try:
        run = ArmRun.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError):
        return None  # a damaged cache entry is simply redone
    return run if (run.arm, run.seed) == job else None


# ------------------------------------------------------------------------------------ arms in workers

_PARTS = ("train", "test", "synthetic", "cas")
_FIELDS = ("x", "y", "ids", "weight")
_WORKER_INPUTS: tuple | None = None


def _as_arrays(parts: tuple[EvalData | None, ...]) -> dict[str, np.ndarray]:
    """train, test, synthetic, cas → ``{"train.x": ..., "train.y": ..., ...}``, what the workers map."""
    return {f"{name}.{field}": getattr(data, field)
            for name, data in zip(_PARTS, parts) if data is not None
            for field in _FIELDS if getattr(data, field) is not None}


def _load_worker_inputs(arrays: dict[str, np.ndarray], num_classes: int, cfg: EvaluateConfig) -> None:
    """A worker's setup (``workers.run_pool``): the inputs of every arm run it will be given."""
    global _WORKER_INPUTS
    parts = [EvalData(**{field: arrays.get(f"{name}.{field}") for field in _FIELDS})
             if f"{name}.x" in arrays else None for name in _PARTS]
    _WORKER_INPUTS = (parts, num_classes, cfg)


def _run_in_worker(arm: str, seed: int) -> ArmRun:
    (train, test, synthetic, cas), num_classes, cfg = _WORKER_INPUTS
    return run_arm(arm, seed, train, test, synthetic, num_classes, cfg, "cpu", cas)


# ------------------------------------------------------------------------------------ every arm, seed


def _mean_std(values: list[float]) -> dict:
    """Mean and sample standard deviation (ddof = 1; 0.0 for one value) over seeds."""
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0}


def aggregate_runs(runs: list[ArmRun], target: np.ndarray | None = None,
                   groups: dict[str, list[int]] | None = None) -> dict:
    """Per-arm mean ± std over seeds (DESIGN §5 "arms" shape) plus the per-seed ``runs`` summaries.

    With the test labels ``target`` and ``groups`` (``statistics.shot_groups`` of the real training counts),
    each arm also gets ``many`` / ``medium`` / ``few``: the mean ± std over seeds of the group's
    class-balanced accuracy (None for an empty group).
    """
    result: dict = {}
    for arm in dict.fromkeys(run.arm for run in runs):
        mine = [run for run in runs if run.arm == arm]
        result[arm] = {
            key: _mean_std([run.metrics[key] for run in mine])
            for key in ("accuracy", "macro_f1", "balanced_accuracy")
        }
        result[arm]["per_class_f1"] = np.mean([run.metrics["per_class_f1"] for run in mine], axis=0).tolist()
        if target is not None and groups is not None:
            k = len(result[arm]["per_class_f1"])
            per_run = [group_accuracy(run.preds, target, groups, k) for run in mine]
            for group in groups:
                values = [r[group] for r in per_run]
                result[arm][group] = None if values[0] is None else _mean_std(values)
        result[arm]["runs"] = [run.summary() for run in mine]
    return result


def run_arms(*args, **kwargs) -> dict:
    """``aggregate_runs`` of ``arm_runs`` (same arguments): per-arm mean ± std over seeds, DESIGN §5 "arms"."""
    return aggregate_runs(arm_runs(*args, **kwargs))


def arm_runs(
    train: EvalData,
    test: EvalData,
    synthetic: EvalData | None,
    num_classes: int,
    cfg: EvaluateConfig,
    *,
    progress: bool = True,
    cache_dir: Path | None = None,
    accelerator: str = "cpu",
    cas: EvalData | None = None,
) -> list[ArmRun]:
    """Train and test every arm in ``cfg.arms`` at every seed in ``cfg.seeds``.

    With ``cache_dir``, each finished run is saved below it (atomically) in a folder named by the
    content of everything the run read (``arms_fingerprint``): an interrupted evaluation resumes without
    retraining the runs it finished, and changed data or settings are never answered from the cache.

    Runs are independent: with ``cfg.workers > 1`` they go to a pool of spawned one-thread processes
    (``workers.run_pool``: no worker outlives the call; a worker that dies raises ``EnvironmentFailure``,
    with the finished runs kept), else they run in this process. Results do not depend on completion order.
    On a GPU (``accelerator`` other than ``"cpu"``) they run one after another in this process.
    ``cas``: the class-balanced synthetic set the ``synthetic`` arm trains on (CAS), if not a balanced draw
    of ``synthetic`` (``generation.sample_cas_set``).

    Returns:
        the ``ArmRun`` of every (arm, seed), arms in ``cfg.arms`` order, seeds in ``cfg.seeds`` order.
    """
    exit_if_reimported_in_worker()
    cfg = resolve_steps(cfg, len(train))
    needs_synthetic = [arm for arm in cfg.arms if "synthetic" in arm]
    if needs_synthetic and (synthetic is None or len(synthetic) == 0):
        raise SynthaugError(
            f"arms {', '.join(needs_synthetic)} need synthetic images; run `synthaug generate` first "
            "or set evaluate.arms without them"
        )
    jobs = [(arm, seed) for arm in cfg.arms for seed in cfg.seeds]
    paths = _cache_paths(cache_dir, train, test, synthetic, num_classes, cfg, accelerator, cas)
    done: dict[tuple[str, int], ArmRun] = {job: run for job in jobs if (run := _cached(paths.get(job), job))}

    def finished(job: tuple[str, int], run: ArmRun) -> None:
        done[job] = run
        if job in paths:
            atomic_write_text(paths[job], json.dumps(run.to_json()))
        bar.update()

    todo = [job for job in jobs if job not in done]
    workers = min(cfg.workers, len(todo)) if accelerator == "cpu" else 1
    with tqdm(total=len(jobs), initial=len(done), desc="arm runs", unit="run", disable=not progress) as bar:
        if workers <= 1:
            for arm, seed in todo:
                finished((arm, seed), run_arm(arm, seed, train, test, synthetic, num_classes, cfg, accelerator, cas))
        else:
            try:
                run_pool(_run_in_worker, todo, workers, finished, arrays=_as_arrays((train, test, synthetic, cas)),
                         setup=_load_worker_inputs, setup_args=(num_classes, cfg), scratch=cache_dir)
            except WorkerDied as died:
                kept = (f"; {len(done)} of {len(jobs)} arm runs finished and are kept in {cache_dir}, "
                        "rerun with --resume to continue") if paths else ""
                raise EnvironmentFailure(died.describe() + kept) from None
    return [done[job] for job in jobs]


def compute_lift(arms: dict, runs: list[ArmRun] | None = None, target: np.ndarray | None = None) -> dict:
    """DESIGN §5 "lift": what the synthetic data adds.

    ``macro_f1``/``accuracy``: real+synthetic minus real (means). ``vs_best_baseline_macro_f1``: the best arm
    using synthetic data minus the best arm without it (both named, chosen by mean macro-F1). Missing arms
    give None. With the ``runs`` (their test predictions) and the test labels ``target``, also ``paired``:
    per synthetic arm its paired macro-F1 difference to ``real`` and to the best baseline, with a 95%
    interval over seeds and test images (``statistics.paired_difference``), and the verdicts the intervals
    give: ``verdict_vs_real`` (real+synthetic vs real) and ``verdict`` (best synthetic arm vs best baseline).
    """

    def mean(arm: str, key: str) -> float | None:
        return arms[arm][key]["mean"] if arm in arms else None

    def best(candidates: tuple[str, ...]) -> str | None:
        present = [arm for arm in candidates if arm in arms]
        return max(present, key=lambda arm: mean(arm, "macro_f1")) if present else None

    def diff(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else a - b

    best_baseline, best_synthetic = best(BASELINE_ARMS), best(SYNTHETIC_ARMS)
    lift = {
        "macro_f1": diff(mean("real+synthetic", "macro_f1"), mean("real", "macro_f1")),
        "accuracy": diff(mean("real+synthetic", "accuracy"), mean("real", "accuracy")),
        "best_baseline": best_baseline,
        "best_synthetic_arm": best_synthetic,
        "vs_best_baseline_macro_f1": diff(
            mean(best_synthetic, "macro_f1") if best_synthetic else None,
            mean(best_baseline, "macro_f1") if best_baseline else None,
        ),
    }
    if runs is not None and target is not None and arms:
        k = len(next(iter(arms.values()))["per_class_f1"])
        lift.update(_paired_lift(runs, target, k, best_baseline, best_synthetic))
    return lift


def _paired_lift(runs: list[ArmRun], target: np.ndarray, k: int, best_baseline: str | None,
                 best_synthetic: str | None) -> dict:
    """``paired``, ``verdict_vs_real`` and ``verdict`` of ``compute_lift``."""
    preds: dict[str, dict[int, np.ndarray]] = {}
    for run in runs:
        preds.setdefault(run.arm, {})[run.seed] = run.preds

    def compare(a: str, b: str | None) -> dict | None:
        if b is None or b not in preds:
            return None
        seeds = [seed for seed in preds[a] if seed in preds[b]]
        return paired_difference([preds[a][s] for s in seeds], [preds[b][s] for s in seeds], target, k)

    paired = {arm: {"vs_real": compare(arm, "real"), "vs_best_baseline": compare(arm, best_baseline)}
              for arm in SYNTHETIC_ARMS if arm in preds}

    def word(arm: str | None, against: str) -> str | None:
        return ((paired.get(arm) or {}).get(against) or {}).get("verdict")

    return {"paired": paired, "verdict_vs_real": word("real+synthetic", "vs_real"),
            "verdict": word(best_synthetic, "vs_best_baseline")}
