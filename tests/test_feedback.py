"""Feedback-guided selection (``generate.feedback``): per wanted image, the candidate the judge finds hardest.

The candidates of slot (class c, image i) are the rows of indices i*K … i*K+K-1, so a plain run (feedback
off) with a quota of K × q per class samples exactly the candidates of a feedback run's first q slots, in
the same batches: the tests read the candidates from there and score them with a judge trained here.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from helpers import copy_run, invoke
from pytorch_lightning.callbacks import Callback

from synthaug import stages
from synthaug.config import load_recipe
from synthaug.errors import Interrupted
from synthaug.seeds import derive_seed

K, QUOTA, FLOOR = 4, 3, 0.07  # candidates per image; the smoke recipe's per-class quota; a confidence floor
FEEDBACK = ("generate.feedback.criterion=entropy", f"generate.filter.min_confidence={FLOOR}")


def gen(run: Path, *overrides: str, **kwargs):
    return stages.generate(load_recipe(run, overrides=list(overrides)), progress=False, **kwargs)


def table(run: Path) -> dict[str, np.ndarray]:
    """The synthetic set's columns as arrays; images uint8 (N, 8, 8, 1)."""
    ds = datasets.load_from_disk(str(run / "synthetic"))
    images = [np.asarray(im, dtype=np.uint8)[..., None] for im in ds["image"]]
    return {"image": np.stack(images) if images else np.zeros((0, 8, 8, 1), np.uint8),
            **{k: np.asarray(ds[k]) for k in ("label", "index", "seed")},
            "confidence": np.asarray(ds["confidence"], dtype=float)}


def judge_view(run: Path, images: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """The judge ``generate`` trains (same data, settings and seed), trained again; its scores in float64."""
    from synthaug.classifiers import train_judge
    from synthaug.evaluation import EvalData
    from synthaug.images import to_model_input

    recipe = load_recipe(run)
    x, y, ids, _ = stages.real_arrays(recipe)
    judge = train_judge(EvalData(x, y, ids), 10, recipe.evaluate, recipe.seed)
    with torch.inference_mode():
        logits = judge(to_model_input(images)).double().numpy()
    logp = logits - logits.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    own = logp[np.arange(len(labels)), labels]
    return {"confidence": np.exp(own), "entropy": -(np.exp(logp) * logp).sum(axis=1), "loss": -own,
            "correct": logits.argmax(axis=1) == labels}


@pytest.fixture(scope="module")
def candidates(smoke_model: Path, tmp_path_factory) -> dict[str, np.ndarray]:
    """Feedback off, K × quota images per class: the candidates of the first ``QUOTA`` slots, with the judge's
    scores."""
    run = copy_run(smoke_model, tmp_path_factory.mktemp("candidates") / "run")
    gen(run, f"generate.quota.per_class={K * QUOTA}")
    rows = table(run)
    return {**rows, **judge_view(run, rows["image"], rows["label"])}


@pytest.fixture(scope="module")
def feedback_run(smoke_model: Path, tmp_path_factory) -> Path:
    """Feedback by entropy with a confidence floor (refills included), batch size 16. Read it, do not change it."""
    run = copy_run(smoke_model, tmp_path_factory.mktemp("feedback") / "run")
    gen(run, *FEEDBACK)
    return run


def best(cands: dict[str, np.ndarray], label: int, slot: int, score: str, eligible: np.ndarray) -> int | None:
    """The row of ``cands`` slot (label, slot) should keep: highest ``score`` among eligible, lowest j on a tie."""
    rows = np.flatnonzero((cands["label"] == label) & (cands["index"] // K == slot))
    assert len(rows) == K and (cands["index"][rows] % K == np.arange(K)).all()
    rows = rows[eligible[rows]]
    return int(rows[np.argmax(cands[score][rows])]) if len(rows) else None  # argmax: the first of equals


def test_each_image_is_the_hardest_eligible_candidate_of_its_slot(feedback_run: Path, candidates: dict):
    kept = table(feedback_run)
    eligible = candidates["confidence"] >= FLOOR
    assert (kept["confidence"] >= FLOOR).all()
    checked, not_first = 0, 0
    for c in range(10):
        mine = np.flatnonzero(kept["label"] == c)
        kept_slots = kept["index"][mine] // K
        assert (np.diff(kept_slots) > 0).all(), "one image per slot, in slot order"
        for slot in range(QUOTA):
            row = best(candidates, c, slot, "entropy", eligible)
            if row is None:  # no candidate passes the floor: the slot stays empty, a refill slot replaces it
                assert slot not in kept_slots
                continue
            assert slot in kept_slots, "a slot with an eligible candidate is kept (the first slots come first)"
            k = mine[kept_slots == slot][0]
            assert kept["seed"][k] == candidates["seed"][row] == derive_seed(0, c, int(candidates["index"][row]))
            np.testing.assert_array_equal(kept["image"][k], candidates["image"][row])
            checked += 1
            not_first += int(candidates["index"][row] % K != 0)
    assert checked >= 20 and not_first >= 5, "the selection is checked on many slots and is not always j = 0"
    info = json.loads((feedback_run / "synthetic" / "generation.json").read_text())
    assert info["feedback"]["criterion"] == "entropy" and info["feedback"]["candidates"] == K
    assert info["feedback"]["eligible"].startswith("judge confidence")


def test_counts_per_class_equal_the_quota(feedback_run: Path):
    kept = table(feedback_run)
    assert np.bincount(kept["label"], minlength=10).tolist() == [QUOTA] * 10
    assert (kept["index"] // K >= QUOTA).any(), "some slot came from a refill round"
    card = (feedback_run / "synthetic" / "README.md").read_text()
    assert [line for line in card.splitlines() if "**feedback**" in line] == [
        f"- **feedback**: `entropy, the hardest of {K} candidates per image`"]


def test_without_a_floor_only_candidates_the_judge_labels_right_are_eligible(smoke_model: Path, tmp_path: Path,
                                                                            candidates: dict):
    """Feedback alone: the highest-loss candidate is nearly always one the judge puts in another class, so a
    candidate is eligible only where the judge's argmax is its label."""
    run = copy_run(smoke_model, tmp_path / "alone")
    gen(run, "generate.feedback.criterion=loss", 'generate.quota={counts: {"5": 3, "0": 1}}',
        "generate.filter.max_tries=1")
    kept = table(run)
    assert len(kept["label"]) >= 3 and set(kept["label"].tolist()) <= {0, 5}
    assert judge_view(run, kept["image"], kept["label"])["correct"].all()
    assert (kept["confidence"] > 0).all(), "the judge's confidence is recorded"
    # The slots sampled in the first pass: the kept candidate is the highest loss among the right ones,
    # which is not always the highest loss of all.
    overruled = 0
    for c, slot in [(5, 0), (5, 1), (5, 2), (0, 0)]:
        row = best(candidates, c, slot, "loss", candidates["correct"])
        hardest = best(candidates, c, slot, "loss", np.ones(len(candidates["label"]), dtype=bool))
        at = np.flatnonzero((kept["label"] == c) & (kept["index"] // K == slot))
        if row is None:
            assert len(at) == 0
        else:
            assert len(at) == 1 and kept["seed"][at[0]] == candidates["seed"][row]
            overruled += int(row != hardest)
    assert overruled, "the rule changed some slot's choice"
    info = json.loads((run / "synthetic" / "generation.json").read_text())
    assert info["feedback"]["eligible"] == "judge argmax == label"


def test_same_dataset_whatever_the_batch_size(feedback_run: Path, tmp_path: Path):
    run = copy_run(feedback_run, tmp_path / "b7", "synthetic*")
    gen(run, "generate.batch_size=7")
    a, b = table(feedback_run), table(run)
    assert (a["seed"] == b["seed"]).all() and (a["label"] == b["label"]).all()
    assert np.abs(a["image"].astype(int) - b["image"].astype(int)).max() <= 1


def test_feedback_off_leaves_generation_unchanged(smoke_synthetic: Path, tmp_path: Path):
    """The default (criterion null) samples one row per image, seed derive_seed(seed, class, i), whatever
    ``candidates`` says; no feedback line on the card, none in generation.json."""
    import synthaug

    plain = table(smoke_synthetic)
    labels = np.repeat(np.arange(10), QUOTA)
    index = np.tile(np.arange(QUOTA), 10)
    assert (plain["label"] == labels).all() and (plain["index"] == index).all()
    assert plain["seed"].tolist() == [derive_seed(0, int(c), int(i)) for c, i in zip(labels, index)]
    generator = synthaug.Generator.from_pretrained(smoke_synthetic / "model")
    direct = generator.sample_arrays(labels.tolist(), plain["seed"].tolist(), guidance=2.0, steps=4)
    assert np.abs(direct.astype(int) - plain["image"].astype(int)).max() <= 1
    assert json.loads((smoke_synthetic / "synthetic" / "generation.json").read_text())["feedback"] is None
    assert "**feedback**" not in (smoke_synthetic / "synthetic" / "README.md").read_text()
    run = copy_run(smoke_synthetic, tmp_path / "off", "synthetic*")
    gen(run, "generate.feedback.candidates=8")
    again = table(run)
    assert (again["seed"] == plain["seed"]).all() and (again["image"] == plain["image"]).all()


class SignalAfterFirstBatch(Callback):
    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0:
            os.kill(os.getpid(), signal.SIGINT)


def test_interrupted_then_resumed_equals_uninterrupted(feedback_run: Path, tmp_path: Path, monkeypatch):
    import pytorch_lightning as pl

    run = copy_run(feedback_run, tmp_path / "resumed", "synthetic*")
    real_init = pl.Trainer.__init__

    def with_signal(self, *args, callbacks=None, **kwargs):
        real_init(self, *args, callbacks=[SignalAfterFirstBatch(), *(callbacks or [])], **kwargs)

    monkeypatch.setattr(pl.Trainer, "__init__", with_signal)
    with pytest.raises(Interrupted):
        gen(run, *FEEDBACK)
    monkeypatch.setattr(pl.Trainer, "__init__", real_init)
    assert len(list((run / "synthetic.parts").glob("shard-*.parquet"))) == 1
    result = invoke("generate", run, "--resume")  # the saved recipe has feedback on
    assert result.exit_code == 0, result.output
    assert f"feedback entropy, the hardest of {K} candidates per image" in result.stdout
    a, b = table(feedback_run), table(run)
    assert (a["seed"] == b["seed"]).all() and (a["image"] == b["image"]).all()
