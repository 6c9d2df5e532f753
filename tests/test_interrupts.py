"""Ctrl-C and SIGTERM on the real command, mid-work: exit 130 and one line; ``--resume`` then finishes
to the result an uninterrupted run gives (training: same final step and weights; generation: the same
image bytes; evaluation: the same metrics.json, less the clock).

Each interrupted command is a real ``python -m synthaug.cli`` process, signalled once its files show it
is mid-work. The uninterrupted reference and the resume run in this process on one torch thread, as the
subprocess does (``OMP_NUM_THREADS=1``), so float sums are the same.

An evaluation with a pool of workers is signalled in its main process alone (as ``kill PID`` does): every
process it started must end within seconds, and SIGKILL to the main process must end the workers too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import datasets
import pytest
import torch
from click.testing import CliRunner
from helpers import SMOKE, copy_run
from safetensors.torch import load_file
from test_eval_faults import descendants, pool_workers, wait_until_gone

from synthaug import runs, stages
from synthaug.cli import cli
from synthaug.config import load_recipe

SIGNALS = [pytest.param(signal.SIGINT, id="SIGINT"), pytest.param(signal.SIGTERM, id="SIGTERM")]

# Just enough work after the first sign of progress for the signal to land mid-work.
TRAIN = [f"train.max_steps={120}"]  # the first checkpoint is at step 10 (smoke: checkpoint_every 10)
GENERATE = ["generate.batch_size=2", "generate.quota.per_class=20", "generate.steps=8"]  # 100 shards


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def resume(*args) -> None:
    result = CliRunner().invoke(cli, [str(a) for a in args], prog_name="synthaug")
    assert result.exit_code == 0, result.output


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextmanager
def synthaug_process(tmp_path: Path, args: list, ready: Callable[[int], bool],
                     limit: float = 180) -> Iterator[subprocess.Popen]:
    """``synthaug ARGS`` in a subprocess (stderr to tmp_path/stderr.txt), yielded once ``ready(its pid)``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    err_path = tmp_path / "stderr.txt"
    with open(tmp_path / "stdout.txt", "w") as out, open(err_path, "w") as err:
        # A shell starts background jobs with SIGINT ignored, and Python then never raises KeyboardInterrupt:
        # give the child the disposition it has when run from a terminal, wherever the tests run.
        proc = subprocess.Popen([sys.executable, "-m", "synthaug.cli", *map(str, args)], stdout=out, stderr=err,
                                env=env, preexec_fn=_sigint_default)
        try:
            deadline = time.monotonic() + limit
            while not ready(proc.pid):
                assert proc.poll() is None, f"finished before it could be interrupted:\n{err_path.read_text()[-3000:]}"
                assert time.monotonic() < deadline, "no sign of progress in time"
                time.sleep(0.02)
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def interrupt(tmp_path: Path, args: list, ready: Callable[[int], bool], sig: int, limit: float = 180) -> str:
    """Run ``synthaug ARGS`` in a subprocess, send ``sig`` once ``ready(pid)``, check exit 130; return the
    one line it printed."""
    with synthaug_process(tmp_path, args, ready, limit) as proc:
        proc.send_signal(sig)
        code = proc.wait(timeout=120)
    stderr = (tmp_path / "stderr.txt").read_text()
    assert code == 130, f"exit {code}:\n{stderr[-3000:]}"
    assert "Traceback" not in stderr, stderr[-3000:]
    ours = [line.split("\r")[-1].strip() for line in stderr.splitlines() if "synthaug:" in line]
    assert len(ours) == 1 and ours[0].startswith("synthaug: interrupted"), stderr[-3000:]
    return ours[0]


# --------------------------------------------------------------------------------------------- train


def weights(run: Path) -> dict[str, torch.Tensor]:
    (path,) = (run / "model" / "unet").glob("*.safetensors")
    return load_file(path)


@pytest.fixture(scope="module")
def trained_uninterrupted(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("train") / "whole"
    stages.train(load_recipe(SMOKE, overrides=TRAIN, out=run), progress=False)
    return run


@pytest.mark.slow
@pytest.mark.parametrize("sig", SIGNALS)
def test_interrupted_training_resumes_to_the_same_weights(sig, trained_uninterrupted: Path, tmp_path: Path):
    run = tmp_path / "run"
    args = ["train", SMOKE, "--out", run, *(x for o in TRAIN for x in ("--set", o))]
    line = interrupt(tmp_path, args, lambda pid: any((run / "checkpoints").glob("step-*.ckpt")), sig)
    assert "training stopped at step" in line and "--resume" in line
    stopped = runs.checkpoint_step(run / "checkpoints" / "last.ckpt")
    assert 10 <= stopped < 120, stopped
    assert not (run / "model").exists(), "no model is saved from an interrupted run"

    resume("train", run, "--resume")
    assert runs.checkpoint_step(run / "checkpoints" / "last.ckpt") == 120
    a, b = weights(trained_uninterrupted), weights(run)
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-6, f"resumed weights differ by {worst}"


def test_resumed_training_keeps_the_loss_log_of_the_steps_before(tmp_path: Path, monkeypatch):
    """logs/metrics.csv (and so report/loss.csv) must cover the whole run, not only the resumed part.

    Lightning's CSVLogger deletes an existing metrics.csv when it starts in the same folder, so today a
    resume loses the loss rows written before the interruption.
    """
    import csv

    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import Callback

    from synthaug.errors import Interrupted

    class SignalAt(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 7:
                os.kill(os.getpid(), signal.SIGINT)

    real_init = pl.Trainer.__init__

    def with_signal(self, *args, callbacks=None, **kwargs):
        real_init(self, *args, callbacks=[*(callbacks or []), SignalAt()], **kwargs)

    run = tmp_path / "run"
    monkeypatch.setattr(pl.Trainer, "__init__", with_signal)
    with pytest.raises(Interrupted):
        stages.train(load_recipe(SMOKE, out=run), progress=False)
    monkeypatch.setattr(pl.Trainer, "__init__", real_init)
    stages.train(load_recipe(run), resume=True, progress=False)
    with open(run / "logs" / "metrics.csv", newline="") as fh:
        steps = sorted(int(row["step"]) for row in csv.DictReader(fh) if row.get("train_loss"))
    assert steps[0] == 0 and steps[-1] == 19, f"loss rows cover steps {steps[0]}..{steps[-1]}"


# --------------------------------------------------------------------------------------------- generate


@pytest.fixture(scope="module")
def generated_uninterrupted(smoke_model: Path, tmp_path_factory) -> Path:
    run = copy_run(smoke_model, tmp_path_factory.mktemp("generate") / "whole")
    stages.generate(load_recipe(run, overrides=GENERATE), progress=False)
    return run


def image_bytes(run: Path) -> tuple[list[bytes], list[int]]:
    ds = datasets.load_from_disk(str(run / "synthetic")).cast_column("image", datasets.Image(decode=False))
    return [cell["bytes"] for cell in ds["image"]], ds["seed"]


@pytest.mark.parametrize("sig", SIGNALS)
def test_interrupted_generation_resumes_to_identical_images(sig, smoke_model: Path, generated_uninterrupted: Path,
                                                           tmp_path: Path):
    run = copy_run(smoke_model, tmp_path / "run")
    parts = run / "synthetic.parts"
    args = ["generate", run, *(x for o in GENERATE for x in ("--set", o))]
    line = interrupt(tmp_path, args, lambda pid: any(parts.glob("shard-*.parquet")), sig)
    assert "generation stopped" in line and "--resume" in line
    shards = len(list(parts.glob("shard-*.parquet")))
    assert 1 <= shards < 100, f"{shards} shards: the signal did not land mid-work"
    assert not (run / "synthetic").exists()

    resume("generate", run, "--resume")
    images, seeds = image_bytes(run)
    expected_images, expected_seeds = image_bytes(generated_uninterrupted)
    assert seeds == expected_seeds and len(images) == 200
    assert images == expected_images, "resumed images are not bit-identical to an uninterrupted run's"
    assert not parts.exists()


# --------------------------------------------------------------------------------------------- evaluate


@pytest.fixture(scope="module")
def evaluated_uninterrupted(smoke_synthetic: Path, tmp_path_factory) -> Path:
    run = copy_run(smoke_synthetic, tmp_path_factory.mktemp("evaluate") / "whole")
    stages.evaluate(load_recipe(run), progress=False)
    return run


def comparable_metrics(run: Path) -> dict:
    """metrics.json less what measures the clock (``evaluation.seconds``, the budget's estimate)."""
    metrics = json.loads((run / "report" / "metrics.json").read_text())
    for key in ("seconds", "estimated_minutes"):
        metrics["evaluation"].pop(key)
    return metrics


@pytest.mark.slow
@pytest.mark.parametrize("sig", SIGNALS)
def test_interrupted_evaluation_resumes_to_the_same_metrics(sig, smoke_synthetic: Path, evaluated_uninterrupted: Path,
                                                           tmp_path: Path):
    run = copy_run(smoke_synthetic, tmp_path / "run")
    runs = run / "report" / ".runs"
    line = interrupt(tmp_path, ["evaluate", run], lambda pid: any(runs.rglob("*@*.json")), sig)
    assert "--resume" in line
    finished = len(list(runs.rglob("*@*.json")))
    assert 1 <= finished < 8, f"{finished} of 8 arm runs: the signal did not land mid-work"
    assert not (run / "report" / "metrics.json").exists()

    resume("evaluate", run, "--resume")
    assert comparable_metrics(run) == comparable_metrics(evaluated_uninterrupted)


# Two workers, and runs long enough that both are mid-run when the first result is cached.
POOLED = ["evaluate.workers=2", "evaluate.steps=100", "evaluate.seeds=[0, 1]",
          "evaluate.arms=[real, classic, oversample, smote]"]


@pytest.fixture(scope="module")
def evaluated_by_workers(smoke_synthetic: Path, tmp_path_factory) -> Path:
    run = copy_run(smoke_synthetic, tmp_path_factory.mktemp("evaluate-pooled") / "whole")
    stages.evaluate(load_recipe(run, overrides=POOLED), progress=False)
    return run


class WorkersMidRun:
    """``ready`` for ``synthaug_process``: two pool workers alive and a run cached. Remembers, at that moment,
    every process below the main one (the workers, multiprocessing's resource tracker) and the time."""

    def __init__(self, runs: Path):
        self.runs, self.processes, self.at = runs, set(), 0.0

    def __call__(self, pid: int) -> bool:
        if len(pool_workers(pid)) < 2 or not any(self.runs.rglob("*@*.json")):
            return False
        self.processes, self.at = descendants(pid), time.monotonic()
        return True


@pytest.mark.slow
@pytest.mark.parametrize("sig", SIGNALS)
def test_a_signal_to_the_main_process_alone_stops_every_worker(sig, smoke_synthetic: Path, evaluated_by_workers: Path,
                                                               tmp_path: Path):
    run = copy_run(smoke_synthetic, tmp_path / "run")
    runs = run / "report" / ".runs"
    mid_run = WorkersMidRun(runs)
    line = interrupt(tmp_path, ["evaluate", run, *(x for o in POOLED for x in ("--set", o))], mid_run, sig)
    assert "--resume" in line
    assert len(mid_run.processes) >= 2
    left = wait_until_gone(mid_run.processes, 10 - (time.monotonic() - mid_run.at))
    assert not left, f"processes {left} still run 10 s after the signal"
    assert not list(runs.rglob(".arm-inputs-*")), "the workers' copy of the data is removed"
    finished = len(list(runs.rglob("*@*.json")))
    assert 1 <= finished < 8, f"{finished} of 8 arm runs: the signal did not land mid-work"

    resume("evaluate", run, "--resume")
    assert comparable_metrics(run) == comparable_metrics(evaluated_by_workers)


@pytest.mark.slow
def test_workers_end_on_their_own_when_the_main_process_is_killed(smoke_synthetic: Path, evaluated_by_workers: Path,
                                                                  tmp_path: Path):
    run = copy_run(smoke_synthetic, tmp_path / "run")
    runs = run / "report" / ".runs"
    mid_run = WorkersMidRun(runs)
    with synthaug_process(tmp_path, ["evaluate", run, *(x for o in POOLED for x in ("--set", o))], mid_run) as proc:
        proc.kill()
        proc.wait(timeout=10)
    left = wait_until_gone(mid_run.processes, 10)
    assert not left, f"processes {left} outlived the killed main process by 10 s"
    orphaned = list(runs.rglob(f".arm-inputs-{proc.pid}-*"))
    assert orphaned, "SIGKILL leaves the workers' copy of the data (no cleanup runs) ..."

    resume("evaluate", run, "--resume")
    assert comparable_metrics(run) == comparable_metrics(evaluated_by_workers)
    assert not any(folder.exists() for folder in orphaned), "... and the next evaluation removes it"
