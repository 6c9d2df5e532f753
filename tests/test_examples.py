"""The examples in examples/ run end to end on a freshly trained smoke run (``--steps 2``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ["lightning_classifier.py", "pytorch_loop.py", "hf_trainer.py"]


def test_a_generated_run_loads_and_its_card_parses(smoke_synthetic):
    from huggingface_hub import DatasetCard

    from synthaug.mixing import load_synthetic

    ds = load_synthetic(smoke_synthetic / "synthetic")
    assert len(ds) == 30 and ds.features["label"].names == [str(d) for d in range(10)]
    card = DatasetCard((smoke_synthetic / "synthetic" / "README.md").read_text(encoding="utf-8"))
    assert "synthetic" in card.data.tags


@pytest.mark.slow
@pytest.mark.parametrize("script", EXAMPLES)
def test_example_runs(smoke_synthetic, script):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, str(ROOT / "examples" / script), "--run", str(smoke_synthetic), "--steps", "2"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "real test accuracy after 2 steps" in done.stdout
