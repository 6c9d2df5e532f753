"""Load: generating 10× more images in one run does not grow peak memory with them, and a folder of
50,000 images loads without opening one. benchmarks/bench_load.py measures the same at 2,000 vs 20,000.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from synthaug import stages
from synthaug.config import load_recipe
from synthaug.data import load_real_data, load_source

SMOKE = Path(__file__).resolve().parents[1] / "recipes" / "smoke.yaml"


def peak_rss_of(args: list[str]) -> tuple[int, float]:
    """Run ``python -m synthaug.cli ARGS`` → (its peak resident memory in bytes, seconds); it must succeed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "synthaug.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not all children's
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, stderr.decode(errors="replace")[-3000:]
    return usage.ru_maxrss * 1024, time.perf_counter() - started  # Linux reports KiB


@pytest.fixture(scope="module")
def model_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("load") / "run"
    stages.train(load_recipe(SMOKE, out=run), progress=False)
    return run


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_number_of_images(model_run: Path):
    import datasets

    peaks = {}
    for n in (300, 3000):
        peaks[n], _ = peak_rss_of(["generate", str(model_run), "--overwrite", "--set", f"generate.quota={{total: {n}}}",
                                   "--set", "generate.batch_size=100"])
        assert len(datasets.load_from_disk(str(model_run / "synthetic"))) == n
    growth = peaks[3000] - peaks[300]
    assert growth < 150 * 2**20, f"peak RSS grew by {growth / 2**20:.0f} MB from 300 to 3,000 images"


def test_a_folder_of_50000_images_loads_without_opening_one(tmp_path: Path, monkeypatch):
    root = tmp_path / "big"
    for c in range(10):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(5000):
            (folder / f"{i:05d}.png").touch()  # zero bytes: opening one would fail loudly
    opened: list = []
    real_open = Image.open

    def counting_open(*args, **kwargs):
        opened.append(args[0] if args else kwargs.get("fp"))
        return real_open(*args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    started = time.perf_counter()
    ds, report = load_source(f"imagefolder:{root}")
    seconds = time.perf_counter() - started
    assert len(ds) == 50_000 and report.ignored_files == 0
    assert ds.features["label"].names == [f"class{c}" for c in range(10)]
    assert not opened, f"{len(opened)} images opened while loading the source"
    assert seconds < 60, f"loading 50,000 paths took {seconds:.1f} s"

    from synthaug.config import DataConfig

    data = load_real_data(DataConfig(source=f"imagefolder:{root}", subset={"per_class": 100}), seed=0)
    assert sum(data.train_counts) == 1000 and sum(data.test_counts) == 12_500
    assert not opened, "splitting and subsetting opened images"
