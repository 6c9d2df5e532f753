"""Generation on Lightning's predict loop: plan rows in, finished shards out, on one process or many.

Each rank takes every ``world_size``-th remaining plan row (no padding, so no row is made twice) and
writes its own shards through ``ShardWriter``; the images do not depend on which rank made them,
because every row carries its own seed. With ``generate.feedback`` on, the plan holds several candidate rows
per wanted image and ``filter_samples`` keeps one of them (its docstring has the rule).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter, Callback

from synthaug.config import GenerateConfig, Recipe
from synthaug.sampling import Generator, PlanRow
from synthaug.seeds import derive_seed
from synthaug.writers import write_shard


class PlanRows(torch.utils.data.Dataset):
    """Plan rows as tensors. For variation mode, ``train`` = (images uint8 NHWC, ids) of the real training
    split and ``source_rows`` the training row each plan row starts from: an image is read when its row
    is, so memory holds a batch of sources, not one per plan row."""

    def __init__(self, rows: Sequence[PlanRow], train: tuple[np.ndarray, np.ndarray] | None = None,
                 source_rows: np.ndarray | None = None):
        self.rows, self.train, self.source_rows = rows, train, source_rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        row = self.rows[i]
        item = {"position": row.position, "label": row.label, "index": row.index, "seed": row.seed}
        if self.train is not None:
            images, ids = self.train
            k = int(self.source_rows[i])
            item["source"] = torch.from_numpy(np.array(images[k]))  # a copy: the training images may be a memmap
            item["source_index"] = int(ids[k])
        return item


class SamplingModule(pl.LightningModule):
    """Wraps a ``Generator`` for ``trainer.predict``: a batch of plan rows → uint8 images."""

    def __init__(self, generator: Generator, *, sampler: str, steps: int, guidance: float, strength: float,
                 autocast: bool, guidance_interval: tuple[float, float] = (0.0, 1.0)):
        super().__init__()
        self.generator = generator
        self.unet = generator.unet  # registered so Lightning moves it to the rank's device
        self.settings = {"sampler": sampler, "steps": steps, "guidance": guidance, "strength": strength,
                         "guidance_interval": tuple(guidance_interval)}
        self.autocast = autocast

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        init = batch["source"].numpy() if "source" in batch else None
        images = self.generator.sample_arrays(
            batch["label"].tolist(), batch["seed"].tolist(), guidance=self.settings["guidance"],
            steps=self.settings["steps"], sampler=self.settings["sampler"], init=init,
            strength=self.settings["strength"] if init is not None else 1.0, autocast=self.autocast,
            guidance_interval=self.settings["guidance_interval"],
        )
        out = {k: batch[k].tolist() for k in ("position", "label", "index", "seed")}
        if "source_index" in batch:
            out["source_index"] = batch["source_index"].tolist()
        out["image"] = images
        return out


class ShardWriter(BasePredictionWriter):
    """Writes each finished batch as one atomic parquet shard in ``parts_dir``."""

    def __init__(self, parts_dir: Path):
        super().__init__(write_interval="batch")
        self.parts_dir = parts_dir

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        write_shard(self.parts_dir, trainer.global_rank, prediction)


class ImagesProgress(Callback):
    """A progress bar of images done / total and images per second (rank 0; counts all ranks' work)."""

    def __init__(self, total: int, done: int = 0, show: bool = True):
        self.total, self.done, self.show = total, done, show
        self.bar = None
        self.started = 0.0
        self.made = 0

    def on_predict_start(self, trainer, pl_module) -> None:
        self.started = time.perf_counter()
        if trainer.is_global_zero and self.show:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, initial=self.done, desc="generate", unit="img", dynamic_ncols=True)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        n = len(outputs["position"]) * trainer.world_size
        self.made += len(outputs["position"])
        if self.bar is not None:
            self.bar.update(min(n, self.total - self.bar.n))

    def on_predict_end(self, trainer, pl_module) -> None:
        if self.bar is not None:
            self.bar.close()

    @property
    def images_per_second(self) -> float:
        elapsed = time.perf_counter() - self.started
        return self.made / elapsed if elapsed > 0 else 0.0


class RankSlice(torch.utils.data.Sampler):
    """Every ``world``-th index starting at ``rank``: a split of the plan with no padding."""

    def __init__(self, n: int, rank: int, world: int):
        self.indices = range(rank, n, world)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class PlanDataModule(pl.LightningDataModule):
    def __init__(self, dataset: PlanRows, batch_size: int):
        super().__init__()
        self.dataset, self.batch_size = dataset, batch_size

    def predict_dataloader(self):
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        return torch.utils.data.DataLoader(
            self.dataset, batch_size=self.batch_size, sampler=RankSlice(len(self.dataset), rank, world), num_workers=0
        )


def run_plan(generator: Generator, rows: Sequence[PlanRow], parts_dir: Path, trainer_kwargs: dict, *, sampler: str,
             steps: int, guidance: float, batch_size: int, strength: float = 1.0, autocast: bool = False,
             guidance_interval: tuple[float, float] = (0.0, 1.0),
             train: tuple[np.ndarray, np.ndarray] | None = None, source_rows: np.ndarray | None = None,
             total: int | None = None, progress: bool = True) -> float:
    """Sample ``rows`` into shards in ``parts_dir`` on a Lightning predict loop → images per second (this rank).
    Variations: ``train`` = (training images, ids) and ``source_rows`` (``PlanRows``)."""
    module = SamplingModule(generator, sampler=sampler, steps=steps, guidance=guidance, strength=strength,
                            autocast=autocast, guidance_interval=guidance_interval)
    total = total if total is not None else len(rows)
    from synthaug.callbacks import GracefulStop

    callbacks: list[Callback] = [ShardWriter(parts_dir), GracefulStop()]
    meter = ImagesProgress(total, total - len(rows), show=progress)
    callbacks.append(meter)
    trainer = pl.Trainer(
        **trainer_kwargs, logger=False, enable_progress_bar=False, enable_model_summary=False,
        use_distributed_sampler=False, callbacks=callbacks, inference_mode=True,
    )
    trainer.predict(module, datamodule=PlanDataModule(PlanRows(rows, train, source_rows), batch_size),
                    return_predictions=False)
    trainer.strategy.barrier("shards written")  # rank 0 assembles only after every rank's last shard
    return meter.images_per_second


class PlanSampler:
    """Samples plan rows into the shards of ``parts_dir``: the first pass of ``generate`` and every refill
    round of the filters call it. In variation mode each row starts from a real training image
    (``variation_sources``); ``rates`` collects the images per second of each call."""

    def __init__(self, generator: Generator, parts_dir: Path, cfg: GenerateConfig, trainer_kwargs: dict, *,
                 seed: int, autocast: bool, train: tuple[np.ndarray, np.ndarray, np.ndarray], progress: bool = True):
        self.generator, self.parts_dir, self.cfg, self.trainer_kwargs = generator, parts_dir, cfg, trainer_kwargs
        self.seed, self.autocast, self.progress = seed, autocast, progress
        self.train_x, self.train_y, self.train_ids = train
        self.rates: list[float] = []

    def __call__(self, rows: Sequence[PlanRow], total: int) -> None:
        g = self.cfg
        train = source_rows = None
        if g.mode == "variation":
            train, source_rows = (self.train_x, self.train_ids), variation_sources(self.train_y, rows, self.seed)
        self.rates.append(run_plan(
            self.generator, rows, self.parts_dir, self.trainer_kwargs, sampler=g.sampler, steps=g.steps,
            guidance=g.guidance, batch_size=g.batch_size, strength=g.strength, autocast=self.autocast,
            guidance_interval=g.guidance_interval,
            train=train, source_rows=source_rows, total=total, progress=self.progress))

    @property
    def images_per_second(self) -> float:
        return float(np.mean(self.rates)) if self.rates else 0.0


# --------------------------------------------------------------------------------------------- filters


def variation_sources(train_labels: np.ndarray, rows, seed: int) -> np.ndarray:
    """For variation mode: the training row each plan row starts from (int64, one per row).

    Class c's images cycle through a seeded permutation of its training rows, so the sources spread
    evenly (image i of class c starts from source i mod n_c).
    """
    by_class: dict[int, np.ndarray] = {}
    out = np.empty(len(rows), dtype=np.int64)
    for i, row in enumerate(rows):
        if row.label not in by_class:
            members = np.flatnonzero(train_labels == row.label)
            by_class[row.label] = np.random.default_rng([seed, row.label, 0xA11]).permutation(members)
        members = by_class[row.label]
        out[i] = members[row.index % len(members)]
    return out


def judge_scores(judge, images: np.ndarray, labels: np.ndarray, batch: int = 512) -> dict[str, np.ndarray]:
    """The judge's view of each image → float32 (N,) arrays: ``confidence`` (softmax probability of its own
    label), ``entropy`` (of the predictive distribution, nats), ``loss`` (cross-entropy on its own label) and
    ``correct`` (1.0 where the judge's argmax is the label)."""
    from synthaug.images import to_model_input

    names = ("confidence", "entropy", "loss", "correct")
    out: dict[str, list] = {name: [] for name in names}
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            logits = judge(to_model_input(images[i:i + batch]))
            logp, own, rows = logits.log_softmax(dim=1), torch.as_tensor(labels[i:i + batch]), torch.arange(len(logits))
            at_label = logp[rows, own]
            out["confidence"].append(logits.softmax(dim=1)[rows, own].numpy())
            out["entropy"].append(-(logp.exp() * logp).sum(dim=1).numpy())
            out["loss"].append((-at_label).numpy())
            out["correct"].append((logp.argmax(dim=1) == own).float().numpy())
    return {k: np.concatenate(v).astype(np.float32) if v else np.zeros(0, np.float32) for k, v in out.items()}


def judge_confidence(judge, images: np.ndarray, labels: np.ndarray, batch: int = 512) -> np.ndarray:
    """The judge's softmax probability of each image's own label → float32 (N,)."""
    return judge_scores(judge, images, labels, batch)["confidence"]


def selects(g: GenerateConfig) -> bool:
    """Whether ``generate`` keeps a selection of the rows it samples (``filter``, ``feedback``), not all of them."""
    return g.filter.min_confidence is not None or g.filter.min_novelty is not None or g.feedback.criterion is not None


def candidates_per_image(g: GenerateConfig) -> int:
    """Rows sampled per wanted image: ``feedback.candidates`` with feedback on, else 1."""
    return g.feedback.candidates if g.feedback.criterion is not None else 1


def feedback_text(g: GenerateConfig, prefix: str = "") -> str:
    """Feedback selection in words ("" when off), for the stage line and the dataset card."""
    fb = g.feedback
    return f"{prefix}{fb.criterion}, the hardest of {fb.candidates} candidates per image" if fb.criterion else ""


def interval_text(g: GenerateConfig) -> str:
    """The guidance interval in words ("" when every step is guided), for the stage line and the dataset card."""
    start, stop = g.guidance_interval
    return "" if (start, stop) == (0.0, 1.0) else f" on steps {start:.0%}–{stop:.0%} (noisiest first)"


def filter_samples(recipe: Recipe, parts_dir: Path, quotas: dict[str, int], classes: list[str], x, y, ids, sample):
    """Keep per wanted image the candidate ``generate.feedback`` prefers among those ``generate.filter`` passes;
    refill with new seeds.

    Filters, each applied when set. ``min_confidence``: a judge trained on the real training split gives
    the sample its label with at least this probability. ``min_novelty``: the sample is no near-copy, its
    nearest / second-nearest training-image distance ratio (``quality.nearest_neighbour_ratio``, the
    report's memorization test) is at least this.

    Feedback (``feedback.criterion``, after Askari-Hemmat et al. 2024, "Feedback-guided data synthesis"):
    the plan holds K = ``feedback.candidates`` rows per wanted image (slot), slot i of class c being the rows
    of indices i*K … i*K+K-1, each with its own seed ``derive_seed(seed, c, i*K + j)``. The same judge scores
    every candidate (``entropy``: its predictive entropy; ``loss``: its cross-entropy on the candidate's
    label) and the slot keeps its eligible candidate of highest score, the lowest j on a tie. So the image at
    slot (c, i) depends on the seed, c, i and the settings only, never on batch size, processes or
    interruption. The paper steers the sampler with the judge's gradient; selecting among whole samples
    instead costs no backward pass through judge and UNet, works with every sampler, and keeps one seed per
    image, so each kept image is reproduced from its own row. Eligible: passes the filters set and, unless
    ``min_confidence`` sets a floor of its own, the judge's argmax is the label: the hardest sample by
    entropy or loss is otherwise most often one of another class, or noise.

    Without feedback a slot is one row (K = 1) and the rule reduces to the filters. A slot with no eligible
    candidate is empty; each round plans, per class, enough new slots (new indices, so new seeds) to cover the
    shortfall at the class's slot fill rate so far, for at most ``filter.max_tries`` rounds. A slot an
    interrupted round left incomplete gets its missing candidates in the next round before it can be chosen.
    The shards are scored batch by batch, so memory holds one batch of images.

    Returns ``(parts, take, scores, acceptance, feedback)``: the ``Parts`` of ``parts_dir``; the entries kept
    (at most the quota per class, in class then plan order); ``confidence``, ``novelty`` (and ``feedback``)
    by plan position (NaN where not computed), for ``writers.synthetic_batches``; the share of candidates
    eligible per class; a summary of the feedback scores for generation.json (None with feedback off).
    """
    from synthaug.classifiers import train_judge
    from synthaug.evaluation import EvalData
    from synthaug.writers import Parts

    g = recipe.generate
    f, criterion, k_cand = g.filter, g.feedback.criterion, candidates_per_image(g)
    judge = None
    if f.min_confidence is not None or criterion is not None:
        judge = train_judge(EvalData(x, y, ids), len(classes), recipe.evaluate, recipe.seed)
    names = ("confidence", "novelty") + (("feedback", "correct") if criterion else ())
    scores = {name: np.zeros(0) for name in names}  # by plan position; NaN = not computed
    scored = np.zeros(0, dtype=bool)
    for round_ in range(f.max_tries + 1):
        parts = Parts.read(parts_dir)
        size = int(parts.position.max()) + 1 if len(parts) else 0
        scored = np.concatenate([scored, np.zeros(size - len(scored), dtype=bool)])
        for name in scores:
            scores[name] = np.concatenate([scores[name], np.full(size - len(scores[name]), np.nan)])
        _score(parts, np.flatnonzero(~scored[parts.position]), scores, judge,
               x if f.min_novelty is not None else None, criterion)
        scored[parts.position] = True
        ok = np.ones(len(parts), dtype=bool)
        if f.min_confidence is not None:
            ok &= scores["confidence"][parts.position] >= f.min_confidence
        elif criterion is not None:
            ok &= scores["correct"][parts.position] == 1.0
        if f.min_novelty is not None:
            ok &= scores["novelty"][parts.position] >= f.min_novelty
        labels, slots = parts.label, parts.index // k_cand
        feedback = scores["feedback"][parts.position] if criterion else np.zeros(len(parts))
        chosen, missing_rows = _best_candidates(labels, parts.index, ok, feedback, k_cand)
        short = {k: quotas[c] - int((labels[chosen] == k).sum()) for k, c in enumerate(classes)}
        if all(v <= 0 for v in short.values()) or round_ == f.max_tries:
            break
        extra = [PlanRow(size + n, k, index, derive_seed(recipe.seed, k, index))
                 for n, (k, index) in enumerate(missing_rows)]
        for k, missing in short.items():
            if missing <= 0:
                continue
            tried = len(np.unique(slots[labels == k]))
            rate = max((labels[chosen] == k).sum() / tried if tried else 1.0, 0.1)
            first = int(slots[labels == k].max()) + 1 if tried else 0
            for slot in range(first, first + int(np.ceil(missing / rate))):
                for index in range(slot * k_cand, (slot + 1) * k_cand):
                    extra.append(PlanRow(size + len(extra), k, index, derive_seed(recipe.seed, k, index)))
        sample(extra, len(extra))

    take = np.concatenate([chosen[labels[chosen] == k][: quotas[c]] for k, c in enumerate(classes)]
                          + [np.zeros(0, dtype=np.int64)])
    acceptance = {c: float(ok[labels == k].mean()) if (labels == k).any() else 1.0 for k, c in enumerate(classes)}
    summary = None
    if criterion is not None:
        summary = {"criterion": criterion, "candidates": k_cand,
                   "eligible": "judge confidence >= filter.min_confidence" if f.min_confidence is not None
                   else "judge argmax == label",
                   "mean_score_kept": float(feedback[take].mean()) if len(take) else None,
                   "mean_score_candidates": float(feedback.mean()) if len(parts) else None}
    return parts, take, scores, acceptance, summary


def _best_candidates(labels: np.ndarray, index: np.ndarray, ok: np.ndarray, score: np.ndarray, k_cand: int):
    """Per (class, slot ``index // k_cand``): the eligible (``ok``) entry of highest ``score``, the lowest
    candidate ``index % k_cand`` on a tie; only complete slots (all ``k_cand`` candidates made) choose.
    Returns the chosen entries in class then slot order, and the (class, index) rows incomplete slots lack."""
    slots, j = index // k_cand, index % k_cand
    groups, inverse, counts = np.unique(np.stack([labels, slots], axis=1).reshape(-1, 2), axis=0,
                                        return_inverse=True, return_counts=True)
    complete = counts[inverse.reshape(-1)] == k_cand
    cand = np.flatnonzero(ok & complete)
    order = cand[np.lexsort((j[cand], -score[cand], slots[cand], labels[cand]))]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (labels[order][1:] != labels[order][:-1]) | (slots[order][1:] != slots[order][:-1])
    missing = []
    for label, slot in groups[counts < k_cand]:
        have = set(index[(labels == label) & (slots == slot)].tolist())
        missing += [(int(label), i) for i in range(slot * k_cand, (slot + 1) * k_cand) if i not in have]
    return order[first], missing


def _score(parts, entries: np.ndarray, scores: dict[str, np.ndarray], judge, train_x: np.ndarray | None,
           criterion: str | None = None) -> None:
    """Fill ``scores`` at the plan positions of ``entries``, one batch of decoded images at a time."""
    from synthaug.images import decode_png
    from synthaug.quality import nearest_neighbour_ratio

    for table in parts.tables(entries):
        positions = table.column("position").to_numpy()
        images = np.stack([decode_png(cell) for cell in table.column("image").to_pylist()])
        if judge is not None:
            view = judge_scores(judge, images, table.column("label").to_numpy())
            scores["confidence"][positions] = view["confidence"]
            if criterion is not None:
                scores["feedback"][positions], scores["correct"][positions] = view[criterion], view["correct"]
        if train_x is not None:
            scores["novelty"][positions] = nearest_neighbour_ratio(images, train_x)[0]


# ------------------------------------------------------------------------------------------- the CAS set

CAS_MAX_PER_CLASS = 500


def cas_per_class(n_train: int, num_classes: int) -> int:
    """Images per class of the CAS set: as many as the real training set has per class on average (CAS
    trains on a set the size of the real one, Ravuri & Vinyals 2019), at most ``CAS_MAX_PER_CLASS``."""
    return max(1, min(CAS_MAX_PER_CLASS, -(-n_train // max(1, num_classes))))


def sample_cas_set(generator: Generator, per_class: int, seed: int, cfg: GenerateConfig, cache: Path | None = None,
                   progress: bool = True, known: dict[tuple[int, int], np.ndarray] | None = None,
                   autocast: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A class-balanced synthetic set with every class: ``per_class`` images of each → (uint8 NHWC, labels).

    Image ``i`` of class ``c`` has seed ``derive_seed(seed, c, i)``: where a quota reached it, it is the image
    ``synthaug generate`` made for that position (in ``sample`` mode), so ``known`` ({(class, index): image},
    from the synthetic set) is reused and only the rest is sampled. Saved to ``cache`` (npz, atomic) and read
    from it when it exists: a resumed evaluation does not sample again. ``cache`` must be named by everything
    the set depends on (model, seed, count, settings, precision). ``autocast``: bf16 on or off, as the synthetic
    set was made; None: what ``precision: auto`` picks here.
    """
    from tqdm import tqdm

    from synthaug.io import atomic_write_bytes
    from synthaug.sampling import build_plan

    if cache is not None and cache.exists():
        with np.load(cache, allow_pickle=False) as saved:
            return saved["x"], saved["y"]
    rows = build_plan([per_class] * len(generator.classes), seed)
    known = known or {}
    todo = [r for r in rows if (r.label, r.index) not in known]
    made: dict[int, np.ndarray] = {}
    with tqdm(total=len(todo), desc="CAS set", unit="img", disable=not progress or not todo) as bar:
        for start in range(0, len(todo), cfg.batch_size):
            batch = todo[start:start + cfg.batch_size]
            images = generator.sample_arrays([r.label for r in batch], [r.seed for r in batch],
                                             guidance=cfg.guidance, steps=cfg.steps, sampler=cfg.sampler,
                                             autocast=autocast, guidance_interval=cfg.guidance_interval)
            made.update(zip((r.position for r in batch), images))
            bar.update(len(batch))
    x = np.stack([made[r.position] if r.position in made else known[(r.label, r.index)] for r in rows])
    y = np.asarray([r.label for r in rows], dtype=np.int64)
    if cache is not None:
        import io

        buf = io.BytesIO()
        np.savez(buf, x=x, y=y)
        atomic_write_bytes(cache, buf.getvalue())
    return x, y
