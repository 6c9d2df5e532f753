"""Writing synthetic data: atomic shards while sampling, then the dataset in every requested format.

Layout, all below ``run_dir``::

    synthetic.parts/        work in progress: plan.json + shard-*.parquet (one per finished batch)
    synthetic/              datasets.load_from_disk() works; README.md is the dataset card
    synthetic/parquet/      format "parquet": train-*.parquet shards (pandas / datasets load them)
    synthetic/imagefolder/  format "imagefolder": CLASS/000000.png + metadata.csv

A shard is written to a temporary file and renamed, so a shard on disk is always whole; ``--resume``
skips the plan positions already in shards, and the final dataset is assembled in plan order.
"""

from __future__ import annotations

import io
import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from synthaug.errors import SynthaugError
from synthaug.io import atomic_dir, atomic_write_bytes, atomic_write_text, writing

PARTS = "synthetic.parts"
PLAN_FILE = "plan.json"


def png_bytes(array: np.ndarray) -> bytes:
    from synthaug.sampling import to_pil

    buf = io.BytesIO()
    to_pil(array).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        arr = np.asarray(img)
    return arr[..., None] if arr.ndim == 2 else arr


# --------------------------------------------------------------------------------------------- shards


def open_parts(parts_dir: Path, fingerprint: dict[str, Any], resume: bool) -> set[int]:
    """Prepare ``parts_dir`` for a plan; return the plan positions already written.

    A parts folder left by a different plan (another recipe, model or quota) is refused, so a resume
    never mixes images of two plans.
    """
    plan_path = parts_dir / PLAN_FILE
    if plan_path.exists():
        previous = json.loads(plan_path.read_text())
        if previous != fingerprint:
            changed = sorted(k for k in set(previous) | set(fingerprint) if previous.get(k) != fingerprint.get(k))
            raise SynthaugError(
                f"{parts_dir}: unfinished generation of a different plan (changed: {', '.join(changed)}); "
                "rerun with --overwrite to start again"
            )
        if not resume:
            raise SynthaugError(f"{parts_dir}: an interrupted generation exists; rerun with --resume or --overwrite")
        return done_positions(parts_dir)
    atomic_write_text(plan_path, json.dumps(fingerprint, indent=2, sort_keys=True))
    return set()


def done_positions(parts_dir: Path) -> set[int]:
    import pyarrow.parquet as pq

    done: set[int] = set()
    for shard in sorted(parts_dir.glob("shard-*.parquet")):
        done.update(pq.read_table(shard, columns=["position"]).column("position").to_pylist())
    return done


def write_shard(parts_dir: Path, rank: int, rows: dict[str, Sequence]) -> Path:
    """Write one finished batch atomically. ``rows`` holds equal-length columns; ``image`` is uint8 NHWC."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = dict(rows)
    columns["image"] = [png_bytes(a) for a in rows["image"]]
    table = pa.table(columns)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    first = int(min(rows["position"]))
    return atomic_write_bytes(parts_dir / f"shard-{first:09d}-r{rank}.parquet", buf.getvalue())


def read_parts(parts_dir: Path):
    """All shards → one pyarrow table in plan order, duplicates (a re-run batch) dropped."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    tables = [pq.read_table(p) for p in sorted(parts_dir.glob("shard-*.parquet"))]
    if not tables:
        return None
    table = pa.concat_tables(tables, promote_options="default")
    positions = table.column("position").to_numpy()
    if (np.diff(positions) > 0).all():
        return table  # one rank's shards, already in plan order: no copy of the images
    table = table.take(pc.sort_indices(table, sort_keys=[("position", "ascending")]))
    positions = table.column("position").to_numpy()
    keep = np.concatenate([[True], positions[1:] != positions[:-1]]) if len(positions) else positions
    return table.filter(pa.array(keep))


# --------------------------------------------------------------------------------------------- names


def safe_name(name: str) -> str:
    """A class name made safe as one folder name: no separators, no ``..``, no control characters."""
    text = unicodedata.normalize("NFC", str(name))
    text = re.sub(r"[^\w.\- ]", "_", text).strip(" .")
    return text or "_"


def safe_names(names: Sequence[str]) -> list[str]:
    """``safe_name`` for each class, made unique (case-insensitively) with a ``-N`` suffix."""
    out: list[str] = []
    taken = {safe_name(n).casefold() for n in names}
    seen: set[str] = set()
    for name in names:
        candidate = base = safe_name(name)
        n = 1
        while candidate.casefold() in seen or (candidate != base and candidate.casefold() in taken):
            n += 1
            candidate = f"{base}-{n}"
        seen.add(candidate.casefold())
        out.append(candidate)
    return out


# --------------------------------------------------------------------------------------------- datasets


def synthetic_features(classes: Sequence[str]):
    import datasets

    return datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=list(classes)),
            "seed": datasets.Value("int64"),
            "index": datasets.Value("int64"),
            "sampler": datasets.Value("string"),
            "steps": datasets.Value("int32"),
            "guidance": datasets.Value("float32"),
            "mode": datasets.Value("string"),
            "confidence": datasets.Value("float32"),
            "novelty": datasets.Value("float32"),
            "source_index": datasets.Value("int64"),
        }
    )


def table_to_dataset(table, classes: Sequence[str], settings: dict[str, Any]):
    """A parts table (position, label, index, seed, image bytes, …) → the synthetic ``datasets.Dataset``.

    Built in Arrow on the table's own buffers, with no Python object per image (a dict per row costs
    ~2 KB of memory), so assembling N images costs about their bytes (benchmarks/bench_load.py).
    """
    import datasets
    import pyarrow as pa
    from datasets.table import InMemoryTable

    n = table.num_rows
    features = synthetic_features(classes)
    schema = features.arrow_schema
    image_type = schema.field("image").type
    images = [pa.StructArray.from_arrays([chunk, pa.nulls(len(chunk), pa.string())], fields=list(image_type))
              for chunk in table.column("image").chunks]

    def optional(name: str):
        return table.column(name) if name in table.column_names else pa.nulls(n)

    columns = {
        "image": pa.chunked_array(images, type=image_type),
        "label": table.column("label"),
        "seed": table.column("seed"),
        "index": table.column("index"),
        "sampler": pa.repeat(settings["sampler"], n),
        "steps": pa.repeat(settings["steps"], n),
        "guidance": pa.repeat(float(settings["guidance"]), n),
        "mode": pa.repeat(settings["mode"], n),
        "confidence": optional("confidence"),
        "novelty": optional("novelty"),
        "source_index": optional("source_index"),
    }
    arrow = pa.table([columns[name] for name in features], names=list(features)).cast(schema)
    return datasets.Dataset(InMemoryTable(arrow), info=datasets.DatasetInfo(features=features))


def write_parquet(dataset, folder: Path, rows_per_shard: int = 10_000) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    n = max(1, -(-len(dataset) // rows_per_shard))
    paths = []
    for i in range(n):
        path = folder / f"train-{i:05d}-of-{n:05d}.parquet"
        dataset.shard(num_shards=n, index=i, contiguous=True).to_parquet(str(path))
        paths.append(path)
    return paths


def write_imagefolder(dataset, folder: Path) -> Path:
    """``CLASS/000000.png`` per image plus ``metadata.csv`` (loadable by ``datasets``' imagefolder)."""
    import csv

    classes = dataset.features["label"].names
    dirs = safe_names(classes)
    root = folder.resolve()
    with open(folder / "metadata.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file_name", "label", "class_name", "seed", "index"])
        plain = dataset.cast_column("image", _raw_image())
        for row in plain:
            rel = Path(dirs[row["label"]]) / f"{row['index']:06d}.png"
            target = (folder / rel).resolve()
            if root not in target.parents:  # belt and braces: safe_names already forbids this
                raise SynthaugError(f"class name {classes[row['label']]!r} would escape {folder}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(row["image"]["bytes"])
            writer.writerow([rel.as_posix(), row["label"], classes[row["label"]], row["seed"], row["index"]])
    return folder


def _raw_image():
    import datasets

    return datasets.Image(decode=False)


def write_synthetic(dataset, out_dir: Path, formats: Iterable[str], card: str) -> Path:
    """Write ``out_dir`` atomically: the HF dataset (always, so load_from_disk works), the other formats and the card."""
    formats = list(formats)
    with atomic_dir(out_dir) as tmp:
        dataset.save_to_disk(str(tmp))
        if "parquet" in formats:
            write_parquet(dataset, tmp / "parquet")
        if "imagefolder" in formats:
            (tmp / "imagefolder").mkdir()
            write_imagefolder(dataset, tmp / "imagefolder")
        with writing(tmp / "README.md"):
            (tmp / "README.md").write_text(card, encoding="utf-8")
    return out_dir


def dataset_card(*, name: str, classes: Sequence[str], real_counts: dict[str, int], counts: dict[str, int],
                 settings: dict[str, Any], provenance: dict[str, Any], acceptance: dict[str, float] | None = None,
                 formats: Sequence[str] = ("hf",)) -> str:
    """A Hugging Face dataset card (YAML header + markdown) that says plainly the images are synthetic."""
    import yaml

    header = {
        "tags": ["synthetic", "synthaug", "diffusion", "image-classification"],
        "task_categories": ["image-classification"],
        "size_categories": ["n<1K" if sum(counts.values()) < 1000 else "1K<n<10K" if sum(counts.values()) < 10_000 else "10K<n<100K"],
    }
    rows = "\n".join(
        f"| {c} | {real_counts.get(c, 0)} | {counts.get(c, 0)} |"
        + (f" {acceptance.get(c, 1.0):.0%} |" if acceptance else "")
        for c in classes
    )
    acc_head = " acceptance |" if acceptance else ""
    acc_rule = "---|" if acceptance else ""
    prov = "\n".join(f"- **{k}**: `{v}`" for k, v in provenance.items())
    gen = "\n".join(f"- **{k}**: `{v}`" for k, v in settings.items())
    return f"""---
{yaml.safe_dump(header, sort_keys=False).strip()}
---

# {name}: synthetic images

**These images are synthetic.** They were sampled from a class-conditional diffusion model trained by
[synthaug](https://github.com/synthaug/synthaug) on a small real dataset; they are not photographs or scans of
real objects. Do not use them as evaluation data, and keep them apart from real test sets.

## Counts per class

| class | real (train) | synthetic |{acc_head}
|---|---|---|{acc_rule}
{rows}

Total synthetic images: {sum(counts.values())}.

## How they were made

{gen}

## Provenance

{prov}

Every row records its own `seed`: the same model, recipe and seed reproduce the same image.

## Load

```python
import datasets
ds = datasets.load_from_disk("synthetic")        # this folder
```
Formats written: {", ".join(formats)}.
"""
