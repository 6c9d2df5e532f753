"""Load: generating 10× more images in one run does not grow peak memory with them (the shards are streamed
into the synthetic set), and a folder of 50,000 images loads without opening one. benchmarks/bench_load.py
measures generation at 2,000 vs 100,000 images of 64×64 RGB, and training on 5,000 vs 50,000 real images.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import copy_run
from PIL import Image

from synthaug.data import load_real_data
from synthaug.sources import load_source


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


@pytest.fixture
def model_run(smoke_model: Path, tmp_path: Path) -> Path:
    return copy_run(smoke_model, tmp_path / "run")


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_number_of_images(model_run: Path):
    import datasets

    peaks = {}
    for n in (300, 3000):
        peaks[n], _ = peak_rss_of(["generate", str(model_run), "--overwrite", "--set", f"generate.quota={{total: {n}}}",
                                   "--set", "generate.batch_size=100"])
        assert len(datasets.load_from_disk(str(model_run / "synthetic"))) == n
    growth = peaks[3000] - peaks[300]
    assert growth < 0.1 * peaks[300], f"peak RSS grew by {growth / 2**20:.0f} MB from 300 to 3,000 images"


ASSEMBLE = """
import sys
from pathlib import Path

import datasets.arrow_writer
import pyarrow.parquet

from synthaug import writers

def kib(key):
    return int(next(line for line in open("/proc/self/status") if line.startswith(key)).split()[1])

classes = [f"c{k}" for k in range(10)]
settings = {"sampler": "dpmpp", "steps": 1, "guidance": 2.0, "mode": "sample"}
open("/proc/self/clear_refs", "w").write("5")  # the peak from here on: assembly, not imports
before = kib("VmRSS:")
parts = writers.Parts.read(Path(sys.argv[1]))
writers.write_synthetic(writers.synthetic_batches(parts, None, classes, settings), Path(sys.argv[2]),
                        ["hf", "parquet", "imagefolder"], "card", features=writers.synthetic_features(classes))
print((kib("VmHWM:") - before) * 1024)
"""


@pytest.mark.slow
def test_assembling_the_synthetic_set_holds_a_few_batches_not_every_image(tmp_path: Path):
    """Shards of incompressible 64×64 RGB images (12 KB each), assembled in every format in a fresh process:
    6,000 more images (74 MB) add less than a quarter of their bytes to the peak (one in-memory table: ~3×)."""
    import numpy as np

    from synthaug.writers import write_shard

    rng = np.random.default_rng(0)
    growth, data = {}, {}
    for n in (2000, 8000):
        parts = tmp_path / f"parts-{n}"
        parts.mkdir()
        for start in range(0, n, 100):
            positions = list(range(start, start + 100))
            write_shard(parts, 0, {"position": positions, "label": [p % 10 for p in positions],
                                   "index": [p // 10 for p in positions], "seed": positions,
                                   "image": rng.integers(0, 256, (100, 64, 64, 3), dtype=np.uint8)})
        data[n] = sum(p.stat().st_size for p in parts.glob("*.parquet"))
        env = {**os.environ, "ARROW_DEFAULT_MEMORY_POOL": "system"}  # mimalloc's retained pages are noise here
        done = subprocess.run([sys.executable, "-c", ASSEMBLE, str(parts), str(tmp_path / f"out-{n}")],
                              capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        growth[n] = int(done.stdout.split()[-1])
    added = growth[8000] - growth[2000]
    assert added < 0.25 * (data[8000] - data[2000]), (
        f"assembly peak grew by {added / 2**20:.0f} MB for {(data[8000] - data[2000]) / 2**20:.0f} MB more images")


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

    # check_duplicates=False: the train/test content check decodes every image by design (and these are empty)
    data = load_real_data(DataConfig(source=f"imagefolder:{root}", subset={"per_class": 100}), seed=0,
                          check_duplicates=False)
    assert sum(data.train_counts) == 1000 and sum(data.test_counts) == 12_500
    assert not opened, "splitting and subsetting opened images"
