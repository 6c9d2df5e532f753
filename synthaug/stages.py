"""The stages a run is made of: train → generate → evaluate → report.

Each stage takes a recipe (a ``Recipe``, a dict, a recipe file or a run directory: ``config.load_recipe``),
reads what the previous stage wrote below ``recipe.run_dir`` and writes its own outputs there. No stage reads
the CLI; what they print goes through ``synthaug.console``.
"""

from __future__ import annotations

import functools
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from synthaug import __version__, console
from synthaug.config import Recipe, load_recipe, save_recipe
from synthaug.errors import Interrupted, SynthaugError
from synthaug.io import atomic_write_text, model_digest
from synthaug.runs import (
    LOGS,
    RunDir,
    check_architecture,
    check_checkpoint_fits,
    loss_rows,
    prepend_log,
    read_checkpoint,
    read_log,
)

RecipeLike = Recipe | dict | str | Path


def _any_recipe(stage):
    """Let ``stage`` take a ``Recipe``, a dict, a recipe file or a run directory (``config.load_recipe``); a copy
    launched for another device ends with its launcher (``workers.end_with_launcher``)."""

    @functools.wraps(stage)
    def wrapper(recipe, *args, **kwargs):
        from synthaug.workers import end_with_launcher

        end_with_launcher()
        return stage(recipe if isinstance(recipe, Recipe) else load_recipe(recipe), *args, **kwargs)

    return wrapper


def trainer_kwargs(recipe: Recipe) -> dict[str, Any]:
    """The recipe's ``compute`` section as Lightning ``Trainer`` arguments (every stage uses these)."""
    from synthaug.sampling import resolve_precision, sampling_device

    c = recipe.compute
    precision = resolve_precision(c.precision, sampling_device(c.accelerator))[0]  # auto: what the hardware runs
    return {"accelerator": c.accelerator, "devices": c.devices, "num_nodes": c.num_nodes, "strategy": c.strategy,
            "precision": precision}


def _refuse_existing(path: Path, overwrite: bool, resume: bool, what: str) -> bool:
    """Return True when ``path`` exists and should be kept (a finished stage under --resume)."""
    if not path.exists():
        return False
    if resume:
        return True
    if not overwrite:
        raise SynthaugError(f"{path} exists ({what}); rerun with --overwrite to replace it or --resume to keep it")
    return False


def is_global_zero() -> bool:
    """False in the extra processes a distributed launcher started; they rerun the same command, and
    must neither prepare nor clean shared outputs (rank 0 does) nor run the single-process stages."""
    from pytorch_lightning.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def _seed_everything(seed: int) -> None:
    import pytorch_lightning as pl

    pl.seed_everything(seed, workers=True, verbose=False)


# --------------------------------------------------------------------------------------------- data


def describe_data(recipe: Recipe) -> dict[str, Any]:
    """What ``synthaug data`` shows: classes with train/test counts, the modes and sizes of the images the
    run uses (after ``subset``), problems. Every image is decoded once: the duplicate check's pass."""
    from collections import Counter

    from synthaug.data import load_real_data
    from synthaug.images import convert_mode, resize_crop

    seen: dict[int, tuple[str, str]] = {}

    def look(row_id: int, img) -> None:
        seen[row_id] = (img.mode, f"{img.width}x{img.height}")
        # the road training takes, so a problem shows now
        resize_crop(convert_mode(img, recipe.data.channels), recipe.data.image_size)

    data = load_real_data(recipe.data, recipe.seed, inspect=look)
    used = [seen[int(i)] for split in (data.train, data.test) for i in split["id"]]
    modes = Counter(mode for mode, _ in used)
    sizes = Counter(size for _, size in used)
    problems = []
    for name, n in zip(data.classes, data.train_counts):
        if n < 5:
            problems.append(f"class {name!r} has only {n} training image(s): the model will copy them")
    if data.report.ignored_files:
        problems.append(f"{data.report.ignored_files} non-image file(s) ignored")
    problems.extend(data.report.notes)  # integer CSV labels, skipped links, classes without test images, duplicates
    if len(modes) > 1:
        problems.append(f"mixed image modes {dict(modes)}: all are converted to {recipe.data.channels} channel(s)")
    if len(sizes) > 1:
        problems.append(f"{len(sizes)} different image sizes: all are resized to {recipe.data.image_size}px")
    return {
        "classes": data.classes,
        "train_counts": dict(zip(data.classes, data.train_counts)),
        "test_counts": dict(zip(data.classes, data.test_counts)),
        "modes": dict(modes),
        "sizes": dict(sizes.most_common(5)),
        "problems": problems,
    }


def real_arrays(recipe: Recipe, split: str = "train", size: int | None = None):
    """The real data as arrays: (images uint8 NHWC, labels int64, ids int64, RealData). Images are fitted to
    ``size`` (default ``data.image_size``) and memory-mapped from the run's decode cache."""
    from synthaug.data import load_real_data
    from synthaug.images import to_array

    data = load_real_data(recipe.data, recipe.seed, cache_dir=_decode_cache(recipe))
    ds = data.train if split == "train" else data.test
    x = to_array(ds, size or recipe.data.image_size, recipe.data.channels, cache_dir=_decode_cache(recipe))
    return x, np.asarray(ds["label"], dtype=np.int64), np.asarray(ds["id"], dtype=np.int64), data


def _decode_cache(recipe: Recipe) -> Path:
    return RunDir(recipe.run_dir).decode_cache


def data_classes(recipe: Recipe) -> list[str]:
    """The data's class names from paths and labels alone: no image is decoded, nothing is written."""
    from synthaug.data import load_real_data

    return load_real_data(recipe.data, recipe.seed, check_duplicates=False).classes


# --------------------------------------------------------------------------------------------- train


def build_module(recipe: Recipe, classes: list[str]):
    """The LightningModule ``model.backbone`` trains: a pixel ``ClassConditionalDiffusion`` or a
    ``LatentTextDiffusion`` (LoRA and class tokens on ``model.base``)."""
    from synthaug.diffusion import ClassConditionalDiffusion, build_unet, load_base_unet

    cfg = recipe.model
    if cfg.backbone == "latent-text":
        from synthaug.latent_text import LatentTextDiffusion

        module = LatentTextDiffusion(cfg, classes, recipe.train, recipe.data.image_size, seed=recipe.seed)
    else:
        if cfg.base:
            unet = load_base_unet(cfg, len(classes), recipe.model_size, recipe.data.channels)
        else:
            unet = build_unet(cfg, len(classes), recipe.model_size, recipe.data.channels)
        module = ClassConditionalDiffusion(unet, len(classes), recipe.train, cfg.prediction_type, seed=recipe.seed)
    if recipe.train.gradient_checkpointing:  # diffusers' own: activations recomputed in the backward pass
        module.unet.enable_gradient_checkpointing()
    return module


@_any_recipe
def train(recipe: RecipeLike, *, resume: bool = False, overwrite: bool = False, progress: bool = True) -> Path:
    """Train the diffusion model → ``run_dir/model`` (diffusers format, EMA weights)."""
    from synthaug.callbacks import keep_best_callback
    from synthaug.data import LabelledImageDataModule
    from synthaug.diffusion import save_model
    from synthaug.loggers import check_logger_packages, log_hyperparameters
    from synthaug.workers import exit_if_reimported_in_worker

    exit_if_reimported_in_worker()  # a worker re-running a script without a main guard stops here
    out = RunDir(recipe.run_dir)
    if out.model.exists() and not resume and not overwrite:
        raise SynthaugError(f"{out.model} exists (a trained model); rerun with --overwrite to retrain or --resume")
    ckpt_path, start_step, saved = None, 0, None
    if resume and (out.last_checkpoint.exists() or out.model.exists()):
        check_architecture(recipe, "checkpoint" if out.last_checkpoint.exists() else "model")
    if resume and out.last_checkpoint.exists():
        saved = read_checkpoint(out.last_checkpoint)
        start_step, ckpt_path = int(saved["global_step"]), str(out.last_checkpoint)
        if start_step >= recipe.train.max_steps and out.model.exists():
            return out.model  # finished earlier: nothing to resume
    elif resume and out.model.exists():
        return out.model  # finished earlier and its checkpoints were cleared: nothing to resume

    check_logger_packages(recipe.train.logger)  # a missing package is refused before anything is written
    classes = data_classes(recipe)  # checks first: decoding writes run_dir/cache
    _seed_everything(recipe.seed)  # the UNet's initial weights come from the global RNG
    module = build_module(recipe, classes)
    if saved is not None:
        check_checkpoint_fits(module, saved, out.last_checkpoint, len(classes))
    x, y, ids, data = real_arrays(recipe, size=recipe.model_size)  # decoded from the originals at the model's size
    if overwrite and is_global_zero():
        for path in (out.model, out.checkpoints, out.logs):
            shutil.rmtree(path, ignore_errors=True)
    save_recipe(recipe, recipe.run_dir)  # only once the inputs are known good: a refused command changes nothing
    earlier_log = read_log(out.loss_log, before_step=start_step) if start_step else []

    t = recipe.train
    if progress and is_global_zero():
        steps = f"steps {start_step}→{t.max_steps}" if start_step else f"{t.max_steps} steps"
        console.stage("train", f"{steps} on {len(x)} images, {len(data.classes)} classes, {recipe.model_size} px")
    datamodule = LabelledImageDataModule(x, y, t.batch_size, t.max_steps, recipe.seed, t.class_balance, t.augment,
                                         start_step=start_step)
    keeper = keep_best_callback(recipe, x, y, ids, data.train_counts, data.classes)  # None unless train.keep_best
    trainer, stop = _training_trainer(recipe, data.classes, progress, keeper)
    log_hyperparameters(trainer.loggers, recipe)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    finally:
        if earlier_log and trainer.is_global_zero:  # CSVLogger starts metrics.csv afresh; keep the steps before
            prepend_log(out.loss_log, earlier_log)
    trainer.save_checkpoint(out.last_checkpoint, weights_only=False)  # the full state --resume continues from
    if stop.requested:
        raise Interrupted(f"training stopped at step {trainer.global_step}; rerun with --resume to finish")
    if trainer.is_global_zero and recipe.model.backbone == "latent-text":
        module.save_model(out.model, recipe.data.image_size, recipe.data.channels)
    elif trainer.is_global_zero:  # image_size: the size its samples are written at (the UNet has its own)
        unet = keeper.best_unet(trainer, module) if keeper else module.sampling_unet()
        save_model(unet, module.scheduler, out.model, data.classes, recipe.data.image_size, recipe.data.channels)
        if keeper and progress:
            console.stage("train", f"kept the weights of step {keeper.best_step} (rare classes recognised and new: "
                                   f"{keeper.best_score:.2f}; train.keep_best)")
    if trainer.is_global_zero:
        _write_model_card(recipe, out)
    return out.model


def _write_model_card(recipe: Recipe, out: RunDir, metrics: dict[str, Any] | None = None) -> None:
    """``run/model/README.md``: the Hub model card, with the downstream figures once ``metrics`` exist."""
    from synthaug.diffusion import read_meta
    from synthaug.model_card import write_model_card

    write_model_card(out.model, read_meta(out.model), recipe=recipe, metrics=metrics)


def _training_trainer(recipe: Recipe, classes: list[str], progress: bool, keeper=None):
    """The Lightning ``Trainer`` of the diffusion model (checkpoints, logs, grids) → (trainer, its GracefulStop)."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint

    from synthaug.callbacks import AtomicCheckpointIO, GracefulStop, SampleGrid, StageProgressBar
    from synthaug.loggers import training_loggers

    out, t, g = RunDir(recipe.run_dir), recipe.train, recipe.generate
    stop = GracefulStop()
    callbacks = [
        stop,
        ModelCheckpoint(dirpath=out.checkpoints, filename="step-{step}", every_n_train_steps=t.checkpoint_every,
                        save_last=True, save_top_k=-1, enable_version_counter=False),
        LearningRateMonitor(logging_interval="step"),
    ]
    if progress:  # tqdm, not Rich: Rich's refresh thread slowed training on a 2-core machine
        callbacks.append(StageProgressBar(refresh_rate=10))
    callbacks += [keeper] if keeper else []
    if t.sample_every:
        callbacks.append(SampleGrid(out.sample_grids, every=t.sample_every, classes=classes, steps=g.steps,
                                    guidance=g.guidance, sampler=g.sampler, seed=recipe.seed,
                                    guidance_interval=g.guidance_interval))
    trainer = pl.Trainer(
        **trainer_kwargs(recipe),
        max_steps=t.max_steps,
        max_time={"minutes": t.max_minutes} if t.max_minutes else None,
        logger=training_loggers(recipe, LOGS),
        callbacks=callbacks,
        enable_progress_bar=progress,
        enable_model_summary=progress and console.verbose(),
        log_every_n_steps=max(1, min(50, t.max_steps // 20)),
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        plugins=[AtomicCheckpointIO()],
    )
    return trainer, stop


# --------------------------------------------------------------------------------------------- generate


@_any_recipe
def generate(recipe: RecipeLike, *, resume: bool = False, overwrite: bool = False, shard: tuple[int, int] | None = None,
             progress: bool = True):
    """Sample the plan → ``run_dir/synthetic`` (HF dataset + card, and the other formats). Returns the dataset,
    or None when this process ran one shard of several and others remain."""
    import datasets

    from synthaug.diffusion import check_model_fits_data
    from synthaug.generation import (
        PlanSampler,
        candidates_per_image,
        feedback_text,
        filter_samples,
        interval_text,
        selects,
    )
    from synthaug.sampling import (
        Generator,
        build_plan,
        empty_quota_note,
        plan_quotas,
        resolve_precision,
        sampling_device,
    )
    from synthaug.workers import exit_if_reimported_in_worker
    from synthaug.writers import Parts, open_parts, synthetic_batches, synthetic_features, write_synthetic

    exit_if_reimported_in_worker()  # a worker re-running a script without a main guard stops here
    out = RunDir(recipe.run_dir)
    if not out.model.exists():
        raise SynthaugError(f"{out.model}: no trained model; run `synthaug train` first")
    check_architecture(recipe, "model")
    if _refuse_existing(out.synthetic, overwrite, resume, "a synthetic dataset"):
        return datasets.load_from_disk(str(out.synthetic))
    g = recipe.generate
    generator = Generator.from_pretrained(out.model)
    check_model_fits_data(out.model, generator.meta, recipe.data.image_size, recipe.data.channels)
    classes = data_classes(recipe)  # checked before decoding: decoding writes run_dir/cache
    if generator.classes != classes:
        raise SynthaugError(
            f"{out.model}: the model's classes {generator.classes} differ from the data's {classes}; "
            "retrain with --overwrite"
        )
    x, y, ids, data = real_arrays(recipe)
    real_counts = dict(zip(data.classes, data.train_counts))
    quotas = plan_quotas(real_counts, g.quota)  # may refuse (an unknown class): before anything is written
    rows = build_plan([quotas[c] * candidates_per_image(g) for c in data.classes], recipe.seed)  # K rows an image
    parts = out.parts
    leader = is_global_zero()
    if overwrite and leader:
        shutil.rmtree(parts, ignore_errors=True)
    save_recipe(recipe, recipe.run_dir)
    precision, why = resolve_precision(g.precision, sampling_device(recipe.compute.accelerator))
    fingerprint = {  # the precision that ran, not "auto": parts made in bf16 and in float32 never mix
        "seed": recipe.seed, "model": model_digest(out.model), "rows": len(rows),
        "generate": {**g.model_dump(mode="json", exclude={"batch_size", "formats"}), "precision": precision},
    }
    done = open_parts(parts, fingerprint, resume=resume or not leader)
    keep = ~np.isin(rows.position, np.fromiter(done, dtype=np.int64, count=len(done)))
    if shard is not None:
        keep &= rows.position % shard[1] == shard[0]
    todo = rows[keep]
    started = time.perf_counter()
    if progress and leader:
        console.stage("generate", f"{len(todo)} of {len(rows)} images to sample ({g.sampler}, {g.steps} steps, "
                                  f"guidance {g.guidance:g}{interval_text(g)}{feedback_text(g, ', feedback ')}; "
                                  f"{precision}, {why})")
    sample = PlanSampler(generator, parts, g, trainer_kwargs(recipe), seed=recipe.seed, train=(x, y, ids),
                         autocast=precision == "bf16-mixed", progress=progress)
    if todo:
        sample(todo, len(rows))
    if not leader:
        return None  # rank 0 assembles the dataset from every rank's shards
    index = Parts.read(parts)  # positions, labels and indices only: the images stay in the shards
    written = int(np.sum(index.position < len(rows)))
    if written < len(rows):
        if shard is not None:
            print(f"shard {shard[0]}/{shard[1]} done; {len(rows) - written} plan rows remain for other shards")
            return None
        raise SynthaugError(f"generation stopped with {written}/{len(rows)} images; rerun with --resume to finish")

    take, scores, acceptance, feedback = None, None, None, None
    if rows and selects(g):
        index, take, scores, acceptance, feedback = filter_samples(recipe, parts, quotas, data.classes, x, y, ids,
                                                                   sample)
    settings = {"sampler": g.sampler, "steps": g.steps, "guidance": g.guidance,
                "guidance_interval": list(g.guidance_interval), "mode": g.mode,
                "precision": precision, "precision_reason": why}
    labels = index.label if take is None else index.label[take]
    counts = dict(zip(data.classes, np.bincount(labels, minlength=len(data.classes)).tolist()))
    note = None if rows else empty_quota_note(real_counts, g.quota)
    card = _synthetic_card(recipe, data.classes, real_counts, counts, settings, sample.images_per_second,
                           acceptance, fingerprint, note, generator.meta)
    info = {"counts": counts, "images_per_second": sample.images_per_second,
            "seconds": time.perf_counter() - started, "acceptance": acceptance, "feedback": feedback, **settings}
    write_synthetic(synthetic_batches(index, take, data.classes, settings, scores), out.synthetic, g.formats, card,
                    features=synthetic_features(data.classes), files={out.generation.name: json.dumps(info, indent=2)})
    shutil.rmtree(parts, ignore_errors=True)
    return datasets.load_from_disk(str(out.synthetic))


def _synthetic_card(recipe: Recipe, classes: list[str], real_counts: dict[str, int], counts: dict[str, int],
                    settings: dict[str, Any], rate: float, acceptance: dict[str, float] | None,
                    fingerprint: dict[str, Any], note: str | None, meta: dict[str, Any]) -> str:
    """The dataset card of ``run_dir/synthetic``: counts, how the images were made, provenance. ``meta``: the
    model's ``synthaug.json``; a latent-text model adds its base, the base's revision, prompts and adapter."""
    from synthaug.generation import feedback_text
    from synthaug.writers import dataset_card

    g = recipe.generate
    text, base = {}, {}
    if meta.get("backbone") == "latent-text":
        lora = meta["lora"]
        text = {"prompts": meta["prompts"], "negative_prompt": meta["negative_prompt"],
                "adapter": f"LoRA rank {lora['rank']}, alpha {lora['alpha']:g} on {', '.join(lora['targets'])}; "
                           f"{len(next(iter(meta['class_tokens'].values())))} learned token(s) per class"}
        base = {"base_model": meta["base"], "base_revision": meta["base_revision"]}
    return dataset_card(
        name=recipe.name, classes=classes, real_counts=real_counts, counts=counts,
        settings={**settings, "strength": g.strength if g.mode == "variation" else None,
                  "images_per_second": round(rate, 2),
                  **({"feedback": feedback_text(g)} if g.feedback.criterion else {}), **text},
        provenance={"recipe_hash": recipe.digest(), "model": str(RunDir(recipe.run_dir).model), **base,
                    "model_digest": fingerprint["model"], "seed": recipe.seed,
                    "seed_rule": "derive_seed(seed, label, index) (synthaug.seeds)",
                    "synthaug_version": __version__},
        acceptance=acceptance, formats=g.formats, note=note,
    )


# --------------------------------------------------------------------------------------------- evaluate

@_any_recipe
def evaluate(recipe: RecipeLike, *, resume: bool = False, overwrite: bool = False, progress: bool = True) -> Path:
    """Quality of the synthetic set, then every arm × seed on the held-out test split → ``report/``."""
    from synthaug.workers import exit_if_reimported_in_worker

    exit_if_reimported_in_worker()  # a worker re-running a script without a main guard stops here
    from synthaug.budget import PLAN_FILE, describe, plan_evaluation
    from synthaug.classifiers import classifier_accelerator
    from synthaug.evaluation import EvalData, aggregate_runs, arm_runs, compute_lift
    from synthaug.evaluation_inputs import cas_set, generation_info, quality_and_assets, synthetic_arrays
    from synthaug.report import build_report, write_report_inputs
    from synthaug.statistics import cas_ratio, shot_groups

    out = RunDir(recipe.run_dir)
    if out.metrics.exists() and not (resume or overwrite):
        _refuse_existing(out.metrics, overwrite, resume, "an evaluation")
    if resume and out.evaluated.exists():
        return out.report  # finished: every output was written before the marker
    needs_synthetic = any("synthetic" in arm for arm in recipe.evaluate.arms)
    if needs_synthetic and not out.synthetic.exists():
        raise SynthaugError(f"{out.synthetic}: no synthetic dataset; run `synthaug generate` first")
    _seed_everything(recipe.seed)
    x, y, ids, data = real_arrays(recipe)
    save_recipe(recipe, recipe.run_dir)
    out.evaluated.unlink(missing_ok=True)  # from here until the page is drawn the report is unfinished
    if overwrite:
        shutil.rmtree(out.arm_cache, ignore_errors=True)  # --overwrite means every arm runs again
    k = len(data.classes)
    train = EvalData(x, y, ids)
    test = EvalData(held_out_images(recipe, data), np.asarray(data.test["label"], dtype=np.int64),
                    np.asarray(data.test["id"], dtype=np.int64))
    synthetic = None
    if out.synthetic.exists():
        synthetic = EvalData(*synthetic_arrays(out.synthetic, recipe.data.image_size, recipe.data.channels))
    started = time.perf_counter()
    accelerator = classifier_accelerator(recipe.compute.accelerator)
    has_synthetic = synthetic is not None and len(synthetic) > 0
    arms = [arm for arm in recipe.evaluate.arms if has_synthetic or "synthetic" not in arm]  # an empty set: none
    cfg, plan = plan_evaluation(recipe.evaluate.model_copy(update={"arms": arms}), x, k, with_judge=has_synthetic,
                                saved=out.arm_cache / PLAN_FILE, accelerator=accelerator)
    if progress:
        left_out = "; the synthetic set is empty, so arms with synthetic data are left out" if arms != recipe.evaluate.arms else ""
        console.stage("evaluate", describe(plan) + left_out)
    quality, assets = quality_and_assets(recipe, cfg, train, synthetic, k, accelerator)
    cas = (cas_set(recipe, len(train), k, synthetic, progress, accelerator)
           if "synthetic" in cfg.arms and has_synthetic else None)
    runs = arm_runs(train, test, synthetic, k, cfg, progress=progress, cache_dir=out.arm_cache, accelerator=accelerator,
                    cas=cas)
    groups = shot_groups(data.train_counts)
    arms = aggregate_runs(runs, test.y, groups)
    if quality is not None:  # CAS: only a synthetic set with every class can train a classifier alone
        covers = cas is not None or len(np.unique(synthetic.y)) == k
        quality["cas_ratio"] = cas_ratio(arms.get("synthetic", {}).get("accuracy", {}).get("mean"),
                                         arms.get("real", {}).get("accuracy", {}).get("mean")) if covers else None
    metrics = {
        "dataset": {"classes": data.classes, "train_counts": dict(zip(data.classes, data.train_counts)),
                    "test_counts": dict(zip(data.classes, data.test_counts)),
                    "duplicates_train_test": data.duplicates_train_test,
                    "shot_groups": {g: [data.classes[c] for c in cs] for g, cs in groups.items()}},
        "generation": generation_info(out.synthetic),
        "quality": quality,
        "arms": arms,
        "lift": compute_lift(arms, runs, test.y),
        "evaluation": {"steps": cfg.steps, "judge_steps": cfg.judge_steps if has_synthetic else None,
                       "max_minutes": cfg.max_minutes, "estimated_minutes": plan.estimated_minutes,
                       "accelerator": accelerator, "seconds": round(time.perf_counter() - started, 1)},
    }
    write_report_inputs(out.report, recipe.to_dict(), metrics, assets, loss_rows(out.logs))
    build_report(out.report)
    from synthaug.diffusion import META_FILE

    if (out.model / META_FILE).exists():  # the model's card shows what its data did downstream
        _write_model_card(recipe, out, metrics)
    atomic_write_text(out.evaluated, json.dumps({"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))
    return out.report


def held_out_images(recipe: Recipe, data) -> np.ndarray:
    """The test split as uint8 NHWC at data.image_size (memory-mapped from the decode cache)."""
    from synthaug.images import to_array

    return to_array(data.test, recipe.data.image_size, recipe.data.channels, cache_dir=_decode_cache(recipe))


@_any_recipe
def report(recipe: RecipeLike) -> Path:
    """Rebuild ``report/index.html`` from ``report/metrics.json`` and the files beside it."""
    from synthaug.report import build_report

    return build_report(RunDir(recipe.run_dir).report)


# --------------------------------------------------------------------------------------------- run


@_any_recipe
def run(recipe: RecipeLike, *, resume: bool = False, overwrite: bool = False, progress: bool = True) -> Path:
    """train → generate → evaluate → report. With ``--resume``, finished stages are kept and an
    interrupted one continues; with ``--overwrite``, every stage starts afresh."""
    out = RunDir(recipe.run_dir)
    if not (resume or overwrite):
        existing = [p for p in (out.model, out.synthetic, out.report) if p.exists()]
        if existing:
            raise SynthaugError(f"{existing[0]} exists; rerun with --resume to finish the run or --overwrite to redo it")
    train(recipe, resume=resume, overwrite=overwrite, progress=progress)
    generate(recipe, resume=resume, overwrite=overwrite, progress=progress)
    if not is_global_zero():
        raise SystemExit(0)  # evaluation runs its own worker pool, in rank 0 alone
    return evaluate(recipe, resume=resume, overwrite=overwrite, progress=progress)
