"""The worker pool's data path, in-process: the arm inputs reach a worker whole and memory-mapped, and the
spill folders of evaluations that died are removed. Processes, signals and dead workers are in
test_eval_faults.py and test_interrupts.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import synthaug.evaluation as evaluation
import synthaug.workers as workers
from synthaug.config import EvaluateConfig
from synthaug.evaluation import EvalData


def _data(n: int, id_start: int, weight: float | None = None) -> EvalData:
    rng = np.random.default_rng(id_start)
    weights = None if weight is None else np.full(n, weight, dtype=np.float32)
    return EvalData(rng.integers(0, 256, size=(n, 8, 8, 1), dtype=np.uint8), np.arange(n) % 3,
                    id_start + np.arange(n), weights)


def _assert_same(got: EvalData, expected: EvalData) -> None:
    for field in ("x", "y", "ids", "weight"):
        a, b = getattr(got, field), getattr(expected, field)
        assert (a is None) == (b is None) and (a is None or np.array_equal(a, b)), field


def test_arm_inputs_reach_a_worker_whole_and_memory_mapped(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(evaluation, "_WORKER_INPUTS", None)
    cfg = EvaluateConfig(steps=3)
    for synthetic, cas in ((_data(5, 200, weight=0.25), _data(6, 300)), (None, None)):
        parts = (_data(12, 0), _data(6, 100), synthetic, cas)  # train, test, synthetic, the CAS set
        with workers._spilled(evaluation._as_arrays(parts), tmp_path) as folder:
            evaluation._load_worker_inputs(workers._unspill(folder), 3, cfg)
            got, num_classes, got_cfg = evaluation._WORKER_INPUTS
            assert (num_classes, got_cfg) == (3, cfg)
            assert isinstance(got[0].x, np.memmap), "one copy in memory for every worker, not one each"
            for mine, theirs in zip(got, parts, strict=True):
                assert (mine is None) == (theirs is None)
                if theirs is not None:
                    _assert_same(mine, theirs)
        assert not folder.exists()


def test_the_spill_folder_of_a_dead_evaluation_is_removed_and_others_are_kept(tmp_path: Path):
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, alive = int(ended.stdout), os.getpid()
    folders = {name: tmp_path / f"{workers._SPILL_PREFIX}{name}-x"
               for name in (str(dead), str(alive), "not-a-pid")}
    for folder in folders.values():
        folder.mkdir()
    workers._remove_orphaned_spills(tmp_path)
    assert [name for name, folder in folders.items() if folder.exists()] == [str(alive), "not-a-pid"]
