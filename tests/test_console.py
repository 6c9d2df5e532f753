"""The console: a line per stage and progress bars, not Lightning's banners, tips, model summaries or
library deprecation warnings, unless --verbose."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings

from helpers import SMOKE

from synthaug import console

CHATTER = ("GPU available", "TPU available", "Tip:", "litlogger", "┏", "Total params", "LeafSpec",
           "weights_only", "`Trainer.fit` stopped", "DeprecationWarning", "FutureWarning", "Epoch 0", "Training:")


def test_run_prints_stages_and_the_summary_only(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONWARNINGS", None)
    result = subprocess.run(
        [sys.executable, "-m", "synthaug.cli", "run", str(SMOKE), "--out", str(tmp_path / "run"),
         "--set", "evaluate.arms=[real, real+synthetic]"],
        capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    shown = result.stdout + result.stderr
    for text in CHATTER:
        assert text not in shown, f"{text!r} reached the console:\n{shown}"
    for line in ("synthaug train: 20 steps on 200 images", "synthaug generate: 30 of 30 images",
                 "synthaug evaluate: 2 arm runs of 20 classifier steps", "report:", "macro-F1: real"):
        assert line in result.stdout, f"{line!r} missing:\n{result.stdout}"
    for bar in ("train:", "generate:", "arm runs:"):
        assert bar in shown


def test_verbose_lets_the_libraries_speak(monkeypatch):
    monkeypatch.setattr(console, "_state", {"verbose": False})
    saved_filters = warnings.filters[:]
    saved_env = os.environ.get("PYTHONWARNINGS")
    import pytorch_lightning  # noqa: F401  (its logger exists, as in a run)

    try:
        console.configure(verbose=False)
        assert logging.getLogger("pytorch_lightning").getEffectiveLevel() == logging.WARNING
        assert not console.verbose()
        with warnings.catch_warnings(record=True) as caught:  # keeps the filters configure set
            warnings.filterwarnings("default", category=UserWarning)  # the suite's pyproject ignores them
            warnings.warn("a library's deprecation, test_console", DeprecationWarning, stacklevel=1)
            warnings.warn("about your data, test_console", UserWarning, stacklevel=1)
        assert [str(w.message) for w in caught] == ["about your data, test_console"]
        assert "ignore::DeprecationWarning" in os.environ["PYTHONWARNINGS"]  # for spawned workers
        console.configure(verbose=True)
        assert console.verbose()
        assert logging.getLogger("pytorch_lightning").getEffectiveLevel() == logging.INFO
        handlers = [h for h in logging.getLogger().handlers if isinstance(h, console._StderrHandler)]
        assert len(handlers) == 1 and handlers[0].level == logging.INFO  # configured twice, one handler
    finally:
        warnings.filters[:] = saved_filters
        logging.getLogger("pytorch_lightning").setLevel(logging.INFO)
        for h in [h for h in logging.getLogger().handlers if isinstance(h, console._StderrHandler)]:
            logging.getLogger().removeHandler(h)
        if saved_env is None:
            os.environ.pop("PYTHONWARNINGS", None)
        else:
            os.environ["PYTHONWARNINGS"] = saved_env
