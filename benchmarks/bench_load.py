"""Load: peak memory of ``synthaug generate`` and ``synthaug train`` as the image count grows, and lazy loading.

1. **Generation**: one ``synthaug generate`` process per size (default 2,000 and 100,000 images) of 64×64
   RGB images from a tiny model (UNet blocks [4, 8], trained here for 2 steps on ``builtin:digits`` converted
   to 64 px RGB, unless ``--model`` names a run directory), 1 DPM-Solver++ step, batches of 256.
2. **Training**: one ``synthaug train`` process per size (default 5,000 and 50,000 real images) on an image
   folder of 64×64 RGB PNGs of noise (10 classes, built in a temporary folder; the smaller folder hard-links
   the first files of the larger), the same tiny model, 2 steps. ``data.test_fraction`` (25%) is held out,
   so the model trains on three quarters of the folder.
3. **Lazy loading**: ``synthaug.data.load_source("imagefolder:...")`` on a folder of 50,000 zero-byte
   ``.png`` files while ``PIL.Image.open`` is counted: it opens none.

Peak resident memory is each child's own ``ru_maxrss`` (``os.wait4``), so it covers the whole command:
imports, sampling or training, and writing; its anonymous part (``RssAnon``, read every 20 ms) leaves out
the pages of files it maps, such as the finished dataset that ``datasets.load_from_disk`` memory-maps. The
target is flat memory: the larger run of each pair peaks less than 10% above the smaller in anonymous memory. The full run takes about 35 minutes on a CPU (each child has one thread
unless ``OMP_NUM_THREADS`` says otherwise), nearly all of it sampling 100,000 images at 64 px (~60 images/s);
``--sample-size 32`` samples at 32 px and fits to 64, about 4× faster. A batch's sampling peak varies by a few
percent with the heap's state (glibc), and a run's peak is its highest batch's.

Run from the repository root: ``.venv/bin/python benchmarks/bench_load.py [--gen-images 2000 100000]
[--train-images 5000 50000] [--no-write]``; a quick check: ``--gen-images 200 1000 --train-images 200 1000
--files 1000 --no-write``. Writes the ``bench_load`` section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import load_average, machine_line, note, table, update_section

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "smoke.yaml"
MB = 2**20
TARGET = 0.10  # the larger run of a pair may peak at most this much above the smaller


def tiny_model_overrides(size: int, sample_size: int | None) -> list[str]:
    """``--set`` arguments for the tiny model at ``size`` px RGB (sampled at ``sample_size``, if given)."""
    values = [f"data.image_size={size}", "data.channels=3", "model.block_out_channels=[4, 8]",
              "train.max_steps=2", "train.batch_size=4", "train.warmup_steps=0"]
    if sample_size and sample_size != size:
        values.append(f"model.sample_size={sample_size}")
    return [arg for value in values for arg in ("--set", value)]


def _anonymous_bytes(pid: int) -> int | None:
    """The process's resident anonymous memory (``RssAnon``: heap, tensors, arrays; not the pages of files
    it maps), or None once it has ended."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def measured(command: list[str], what: str) -> dict:
    """Run ``synthaug COMMAND`` as a child → its peak RSS (``ru_maxrss``, bytes), its peak anonymous memory
    (``RssAnon`` read every 20 ms) and wall time; exit on failure."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "synthaug.cli", *command], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    anonymous, ended = [0], threading.Event()

    def watch() -> None:  # until the child is reaped (or a zombie: its status then has no RssAnon)
        while not ended.is_set() and (now := _anonymous_bytes(proc.pid)) is not None:
            anonymous[0] = max(anonymous[0], now)
            ended.wait(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)  # this child's rusage alone
    ended.set()
    watcher.join()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{what} failed:\n{stderr.decode(errors='replace')[-3000:]}")
    return {"peak": usage.ru_maxrss * 1024, "anon": anonymous[0], "seconds": time.perf_counter() - started}


def generation(run: Path, images: list[int], steps: int, batch_size: int) -> list[dict]:
    results = []
    for n in images:
        note(f"generating {n:,} images")
        r = measured(["generate", str(run), "--overwrite", "--set", f"generate.quota={{total: {n}}}",
                      "--set", f"generate.steps={steps}", "--set", f"generate.batch_size={batch_size}"],
                     f"generate {n}")
        r.update(images=n, disk=sum(p.stat().st_size for p in (run / "synthetic").glob("*.arrow")))
        note(f"{n:,} images: peak RSS {r['peak'] / MB:.0f} MB, anonymous {r['anon'] / MB:.0f} MB, {r['seconds']:.0f} s")
        results.append(r)
    return results


def noise_folder(root: Path, images: int, size: int, classes: int = 10) -> None:
    """``root/classK/NNNNNN.png``: ``images`` RGB PNGs of noise around a colour per class."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for k in range(classes):
        (root / f"class{k}").mkdir(parents=True)
    for i in range(images):
        k = i % classes
        pixels = np.clip(rng.normal(25 * k, 60, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / f"class{k}" / f"{i:06d}.png", compress_level=1)


def linked_subset(source: Path, dest: Path, images: int) -> None:
    """The first ``images`` files of ``source`` (in ``noise_folder``'s order), hard-linked into ``dest``."""
    for folder in sorted(source.iterdir()):
        (dest / folder.name).mkdir(parents=True)
        for path in sorted(folder.iterdir()):
            if int(path.stem) < images:
                os.link(path, dest / folder.name / path.name)


def training(tmp: Path, images: list[int], size: int, sample_size: int | None) -> list[dict]:
    biggest = tmp / f"real-{max(images)}"
    note(f"writing {max(images):,} {size}×{size} RGB PNGs")
    noise_folder(biggest, max(images), size)
    results = []
    for n in images:
        folder = biggest if n == max(images) else tmp / f"real-{n}"
        if not folder.exists():
            linked_subset(biggest, folder, n)
        note(f"training on a folder of {n:,} images")
        r = measured(["train", str(RECIPE), "--out", str(tmp / f"train-{n}"), "--set", f"data.source=imagefolder:{folder}",
                      *tiny_model_overrides(size, sample_size)], f"train on {n}")
        r.update(images=n)
        note(f"{n:,} images: peak RSS {r['peak'] / MB:.0f} MB, anonymous {r['anon'] / MB:.0f} MB, {r['seconds']:.0f} s")
        results.append(r)
    return results


def lazy_folder(files: int, classes: int = 10) -> dict:
    """Time ``load_source`` on ``files`` zero-byte PNGs and count the images it opens."""
    from PIL import Image

    from synthaug.sources import load_source

    with tempfile.TemporaryDirectory(prefix="bench-load-folder-") as tmp:
        root = Path(tmp)
        for c in range(classes):
            (root / f"class{c}").mkdir()
            for i in range(files // classes):
                (root / f"class{c}" / f"{i:06d}.png").touch()
        opened = []
        real_open = Image.open
        Image.open = lambda *a, **k: opened.append(a) or real_open(*a, **k)
        try:
            started = time.perf_counter()
            ds, _ = load_source(f"imagefolder:{root}")
            seconds = time.perf_counter() - started
        finally:
            Image.open = real_open
    return {"rows": len(ds), "seconds": seconds, "opened": len(opened)}


def growth_line(name: str, results: list[dict], per_image_bytes: float) -> str:
    """The target is on the anonymous memory (what the process allocates); the RSS peak also counts the
    pages of files it maps, which grow with the dataset it writes and reads back, and the kernel reclaims."""
    first, last = results[0], results[-1]
    growth = last["anon"] / first["anon"] - 1
    slope = (last["anon"] - first["anon"]) / max(1, last["images"] - first["images"])
    verdict = "yes" if growth < TARGET else "**no**"
    return (f"- **{name}:** {first['images']:,} → {last['images']:,} images: peak anonymous memory "
            f"{first['anon'] / MB:.0f} → {last['anon'] / MB:.0f} MB ({growth:+.1%}; target < {TARGET:.0%}: "
            f"{verdict}), {slope:.0f} bytes per extra image ({slope / per_image_bytes:.2f}× its "
            f"{per_image_bytes:,.0f} bytes); peak RSS {first['peak'] / MB:.0f} → {last['peak'] / MB:.0f} MB "
            f"({last['peak'] / first['peak'] - 1:+.1%}).")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gen-images", type=int, nargs="*", default=[2000, 100_000], help="none: skip")
    parser.add_argument("--train-images", type=int, nargs="*", default=[5000, 50_000], help="none: skip")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--sample-size", type=int, default=None, help="the UNet's resolution (model.sample_size)")
    parser.add_argument("--steps", type=int, default=1, help="sampler steps")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--model", type=Path, default=None, help="a run directory with a trained model/")
    parser.add_argument("--files", type=int, default=50_000, help="zero-byte images for the lazy-loading check")
    parser.add_argument("--no-write", action="store_true", help="print the section only")
    args = parser.parse_args(argv)
    os.chdir(ROOT)

    load_before = load_average()
    size, gen, train = args.image_size, [], []
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        tmp = Path(tmp)
        if args.gen_images:
            run = tmp / "run"
            if args.model is not None:
                shutil.copytree(args.model, run, ignore=shutil.ignore_patterns("synthetic*", "report", "checkpoints"))
            else:
                note(f"training the tiny {size} px RGB model")
                measured(["train", str(RECIPE), "--out", str(run), *tiny_model_overrides(size, args.sample_size)],
                         "training the tiny model")
            gen = generation(run, args.gen_images, args.steps, args.batch_size)
        if args.train_images:
            train = training(tmp, args.train_images, size, args.sample_size)
    note(f"loading {args.files:,} zero-byte images")
    lazy = lazy_folder(args.files)
    load_after = load_average()

    rows = [["generate", f"{r['images']:,}", f"{r['seconds']:.0f}", f"{r['peak'] / MB:.0f}", f"{r['anon'] / MB:.0f}",
             f"{(r['anon'] - gen[0]['anon']) / MB:+.0f}", f"{r['disk'] / MB:.1f}"] for r in gen]
    rows += [["train", f"{r['images']:,}", f"{r['seconds']:.0f}", f"{r['peak'] / MB:.0f}", f"{r['anon'] / MB:.0f}",
              f"{(r['anon'] - train[0]['anon']) / MB:+.0f}", "—"] for r in train]
    sampled = f"sampled at {args.sample_size} px and fitted" if args.sample_size else "sampled at that size"
    lines = [
        "## Load: peak memory as the image count grows, and lazy data loading",
        "",
        f"`OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')} benchmarks/bench_load.py"
        f"{f' --sample-size {args.sample_size}' if args.sample_size else ''} --gen-images "
        f"{' '.join(map(str, args.gen_images))} --train-images {' '.join(map(str, args.train_images))}` on "
        f"{machine_line()}. One `synthaug` process per row; peak RSS "
        "is the child's own `ru_maxrss`; peak anonymous is its `RssAnon` (heap, tensors, arrays) read every 20 ms, "
        "the measure of the flat-memory target: RSS also counts the pages of the files a process maps (the "
        "finished dataset, which `datasets` reads back memory-mapped), which grow with the dataset and which the "
        f"kernel can drop. Images {size}×{size} RGB; tiny model (UNet blocks [4, 8], 2 training "
        f"steps); generation: {sampled}, DPM-Solver++ {args.steps} step(s), batch {args.batch_size}; training: "
        "an image folder of noise PNGs, 75% of it the training split, 2 steps.",
        "",
        table(["command", "images", "wall s", "peak RSS MB", "peak anonymous MB", "Δ anonymous MB",
               "dataset on disk MB"], rows),
        "",
    ]
    if gen:
        stored = gen[-1]["disk"] / gen[-1]["images"]
        lines.append(growth_line("Generation", gen, stored) + " The shards are streamed into every format "
                     "(`writers.Parts`, `writers.write_synthetic`): a few batches of images in memory, whatever the count.")
    if train:
        lines.append(growth_line("Training", train, size * size * 3) + " Per-image bytes here are the decoded "
                     "uint8 pixels of one training image.")
    lines += [
        f"- **Lazy loading:** `load_source('imagefolder:…')` on {lazy['rows']:,} zero-byte `.png` files in 10 "
        f"class folders took {lazy['seconds']:.1f} s and opened {lazy['opened']} images.",
        f"- Load average before {load_before}, after {load_after}.",
    ]
    markdown = "\n".join(lines)
    print(markdown)
    if not args.no_write:
        print(f"wrote {update_section('bench_load', markdown)}", file=sys.stderr)


if __name__ == "__main__":
    main()
