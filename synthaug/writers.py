"""Writing synthetic data: atomic shards while sampling, then the dataset in every requested format.

Layout, all below ``run_dir``::

    synthetic.parts/        work in progress: plan.json + shard-*.parquet (one per finished batch)
    synthetic/              datasets.load_from_disk() works; README.md is the dataset card
    synthetic/parquet/      format "parquet": train-*.parquet shards (pandas / datasets load them)
    synthetic/imagefolder/  format "imagefolder": CLASS/000000.png + metadata.csv

A shard is written to a temporary file and renamed, so a shard on disk is always whole; ``--resume``
skips the plan positions already in shards, and the final dataset is assembled in plan order. Assembly
streams: ``Parts`` indexes the shards by their small columns, and ``write_synthetic`` writes every format
from tables of ``BATCH_ROWS`` rows, so memory holds a few batches of images whatever the image count.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import html
import io
import json
import re
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthaug.errors import SynthaugError
from synthaug.images import png_bytes
from synthaug.io import atomic_dir, atomic_write_bytes, atomic_write_text

PLAN_FILE = "plan.json"
BATCH_ROWS = 256  # rows per table while streaming: what assembly holds in memory, besides a few shards
MAX_OPEN_SHARDS = 8  # shards kept read while streaming rows out of plan order (one per rank in plan order)
MAX_SHARD_BYTES = 500 * 2**20  # per data file of the HF dataset, datasets' own default for save_to_disk
PARQUET_ROWS = 10_000  # per parquet file


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


@dataclass
class Parts:
    """The shards of a parts folder indexed by plan position, with only their small columns in memory.

    One entry per plan position, ascending; a position in two shards (a batch made twice) counts once, from
    the first shard in name order. ``tables(take)`` streams the rows ``take`` (indices into the entries),
    images included, reading a shard when it is first needed and dropping it after its last use.
    """

    paths: list[Path]
    position: np.ndarray  # int64 plan positions
    label: np.ndarray
    index: np.ndarray  # the image's index within its class
    shard: np.ndarray  # which of ``paths`` holds the row
    row: np.ndarray  # the row in that shard

    @classmethod
    def read(cls, parts_dir: Path) -> Parts:
        import pyarrow.parquet as pq

        paths = sorted(Path(parts_dir).glob("shard-*.parquet"))
        small = [pq.read_table(p, columns=["position", "label", "index"]) for p in paths]

        def column(name: str) -> np.ndarray:
            values = [t.column(name).to_numpy() for t in small]
            return np.concatenate([*values, np.zeros(0, np.int64)]).astype(np.int64)

        lengths = [t.num_rows for t in small]
        shard = np.repeat(np.arange(len(paths)), lengths)
        row = np.concatenate([*(np.arange(n) for n in lengths), np.zeros(0, np.int64)])
        position = column("position")
        _, first = np.unique(position, return_index=True)  # ascending, each position's first occurrence
        return cls(paths, position[first], column("label")[first], column("index")[first], shard[first], row[first])

    def __len__(self) -> int:
        return len(self.position)

    def tables(self, take: np.ndarray | None = None, rows: int = BATCH_ROWS) -> Iterator:
        """The shard rows of entries ``take`` (default: all, in plan order) as pyarrow tables of ``rows`` rows."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        take = np.arange(len(self)) if take is None else np.asarray(take, dtype=np.int64)
        last_use = np.full(len(self.paths), -1)
        np.maximum.at(last_use, self.shard[take], np.arange(len(take)))
        shards: OrderedDict[int, Any] = OrderedDict()  # read shards, least recently used first
        pool = pa.default_memory_pool()
        for start in range(0, len(take), rows):
            chunk = take[start:start + rows]
            pieces = []
            for run in np.split(chunk, np.flatnonzero(np.diff(self.shard[chunk])) + 1):
                s = int(self.shard[run[0]])
                if s not in shards:
                    shards[s] = pq.read_table(self.paths[s])
                    if len(shards) > MAX_OPEN_SHARDS:  # out of plan order (a filtered set in class order)
                        shards.popitem(last=False)
                shards.move_to_end(s)
                pieces.append(shards[s].take(pa.array(self.row[run])))
            for s in [s for s in shards if last_use[s] < start + rows]:
                del shards[s]
            yield pa.concat_tables(pieces, promote_options="default")
            pool.release_unused()  # mimalloc (pyarrow's default) keeps freed pages: ~25 MB more at the peak


def read_parts(parts_dir: Path):
    """All shards → one pyarrow table in plan order (None without shards). Holds every image: for small sets
    and checks; ``generate`` streams with ``Parts`` instead."""
    import pyarrow as pa

    tables = list(Parts.read(parts_dir).tables())
    return pa.concat_tables(tables) if tables else None


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


def synthetic_table(table, classes: Sequence[str], settings: dict[str, Any],
                    scores: dict[str, np.ndarray] | None = None):
    """Shard rows (position, label, index, seed, image bytes, …) → a pyarrow table of ``synthetic_features``.

    Built in Arrow on the table's own buffers, with no Python object per image (a dict per row costs ~2 KB).
    ``scores``: float columns by plan position (``confidence``, ``novelty``); NaN, a test not applied, is null.
    """
    import pyarrow as pa

    n = table.num_rows
    schema = synthetic_features(classes).arrow_schema
    image_type = schema.field("image").type
    images = [pa.StructArray.from_arrays([chunk, pa.nulls(len(chunk), pa.string())], fields=list(image_type))
              for chunk in table.column("image").chunks]

    def optional(name: str):
        if scores and name in scores:
            values = scores[name][table.column("position").to_numpy()]
            return pa.array(values, pa.float32(), mask=np.isnan(values))
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
    return pa.table([columns[name] for name in schema.names], names=schema.names).cast(schema)


def synthetic_batches(parts: Parts, take: np.ndarray | None, classes: Sequence[str], settings: dict[str, Any],
                      scores: dict[str, np.ndarray] | None = None) -> Iterator:
    """The rows ``take`` of ``parts`` (default all, in plan order) as ``synthetic_table``s, one batch at a time."""
    for table in parts.tables(take):
        yield synthetic_table(table, classes, settings, scores)


def table_to_dataset(table, classes: Sequence[str], settings: dict[str, Any]):
    """A parts table → an in-memory synthetic ``datasets.Dataset`` (for small sets; ``generate`` streams)."""
    import datasets
    from datasets.table import InMemoryTable

    features = synthetic_features(classes)
    return datasets.Dataset(InMemoryTable(synthetic_table(table, classes, settings)),
                            info=datasets.DatasetInfo(features=features))


def _image_bytes(table) -> Iterator:
    """Each row's image bytes as an Arrow buffer, without a Python copy of each image."""
    for chunk in table.column("image").chunks:
        data = chunk.field("bytes")
        for i in range(len(data)):
            yield data[i].as_buffer()


def _update_digest(digest, table) -> None:
    """Hash the rows' content, not their Arrow layout (which depends on how the shards were cut)."""
    for name in table.column_names:
        digest.update(name.encode())
        if name == "image":
            for data in _image_bytes(table):
                digest.update(len(data).to_bytes(8, "little"))
                digest.update(data)
        else:
            digest.update(repr(table.column(name).to_pylist()).encode())


class _HFSink:
    """``save_to_disk``'s layout, written batch by batch: data-NNNNN-of-NNNNN.arrow, dataset_info.json, state.json.

    ``datasets`` writes the metadata files itself (saving a dataset of no rows with the features); the rows go
    to data files beside them. A ``save_to_disk`` of every row would map them all into this process's memory.
    """

    def __init__(self, folder: Path, features):
        import datasets
        from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

        quiet = are_progress_bars_disabled()
        disable_progress_bars()  # "Saving the dataset (0/0 shards)" would only confuse
        try:
            datasets.Dataset.from_dict({k: [] for k in features}, features=features).save_to_disk(str(folder))
        finally:
            if not quiet:
                enable_progress_bars()
        self.folder, self.features, self.max_bytes = folder, features, MAX_SHARD_BYTES
        self.files: list[Path] = []
        self.writer, self.size = None, 0
        self.digest = hashlib.blake2b(digest_size=8)  # the dataset's fingerprint: evaluate's cache key reads it

    def write(self, table) -> None:
        if self.writer is None or self.size >= self.max_bytes:
            self._next_file()
        self.writer.write_table(table)
        self.size += table.nbytes
        _update_digest(self.digest, table)

    def _next_file(self) -> None:
        from datasets.arrow_writer import ArrowWriter

        self._end_file()
        self.files.append(self.folder / f".data-{len(self.files):05d}.arrow")
        self.writer, self.size = ArrowWriter(features=self.features, path=str(self.files[-1])), 0

    def _end_file(self) -> None:
        if self.writer is not None:
            self.writer.finalize()
            self.close()

    def finish(self) -> None:
        if self.writer is None:
            self._next_file()  # no rows: load_from_disk still needs one data file
        self._end_file()
        names = [f"data-{i:05d}-of-{len(self.files):05d}.arrow" for i in range(len(self.files))]
        for path, name in zip(self.files, names):
            path.rename(self.folder / name)
        state = json.loads((self.folder / "state.json").read_text())
        state.update(_data_files=[{"filename": name} for name in names], _fingerprint=self.digest.hexdigest())
        (self.folder / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class _ParquetSink:
    """train-NNNNN-of-NNNNN.parquet files of ``rows`` rows; the schema carries the features (class names)."""

    def __init__(self, folder: Path, features):
        folder.mkdir()
        self.folder, self.schema, self.rows = folder, features.arrow_schema, PARQUET_ROWS
        self.files: list[Path] = []
        self.writer, self.count = None, 0

    def write(self, table) -> None:
        while table.num_rows:
            if self.writer is None or self.count >= self.rows:
                self._next_file()
            part = table.slice(0, self.rows - self.count)
            self.writer.write_table(part)
            self.count += part.num_rows
            table = table.slice(part.num_rows)

    def _next_file(self) -> None:
        import pyarrow.parquet as pq

        self.close()
        self.files.append(self.folder / f".train-{len(self.files):05d}.parquet")
        self.writer, self.count = pq.ParquetWriter(str(self.files[-1]), self.schema), 0

    def finish(self) -> None:
        if self.writer is None:
            self._next_file()  # no rows: one file with the schema, so readers see the columns
        self.close()
        for i, path in enumerate(self.files):
            path.rename(self.folder / f"train-{i:05d}-of-{len(self.files):05d}.parquet")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class _ImageFolderSink:
    """``CLASS/000000.png`` per image plus ``metadata.csv`` (loadable by ``datasets``' imagefolder)."""

    def __init__(self, folder: Path, features):
        folder.mkdir(exist_ok=True)
        self.folder, self.root = folder, folder.resolve()
        self.classes = features["label"].names
        self.dirs = safe_names(self.classes)
        self.fh = open(folder / "metadata.csv", "w", newline="", encoding="utf-8")
        self.csv = csv.writer(self.fh)
        self.csv.writerow(["file_name", "label", "class_name", "seed", "index"])

    def write(self, table) -> None:
        columns = [table.column(name).to_pylist() for name in ("label", "seed", "index")]
        for image, label, seed, index in zip(_image_bytes(table), *columns):
            rel = Path(self.dirs[label]) / f"{index:06d}.png"
            target = (self.folder / rel).resolve()
            if self.root not in target.parents:  # belt and braces: safe_names already forbids this
                raise SynthaugError(f"class name {self.classes[label]!r} would escape {self.folder}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(image)
            self.csv.writerow([rel.as_posix(), label, self.classes[label], seed, index])

    def finish(self) -> None:
        self.close()

    def close(self) -> None:
        self.fh.close()


def _dataset_tables(dataset) -> Iterator:
    from datasets.table import embed_table_storage

    for table in dataset.with_format("arrow").iter(batch_size=BATCH_ROWS):
        yield embed_table_storage(table)  # images given by path are stored by value, as save_to_disk does


def write_imagefolder(dataset, folder: Path) -> Path:
    """A ``datasets.Dataset`` of ``synthetic_features`` → ``CLASS/000000.png`` files plus ``metadata.csv``."""
    with contextlib.closing(_ImageFolderSink(folder, dataset.features)) as sink:
        for table in _dataset_tables(dataset):
            sink.write(table)
    return folder


def write_synthetic(data, out_dir: Path, formats: Iterable[str], card: str, *, features=None,
                    files: dict[str, str] | None = None) -> Path:
    """Write ``out_dir`` atomically: the HF dataset (always, so load_from_disk works), the other formats, the
    card (README.md) and ``files`` (name → text), so the folder appears only with all of them.

    ``data`` is a ``datasets.Dataset`` or tables of ``features`` (``synthetic_batches``), read once and
    written to every format as they come: memory holds one table, whatever the number of rows.
    """
    import datasets

    if isinstance(data, datasets.Dataset):
        features, data = data.features, _dataset_tables(data)
    formats = list(formats)
    with atomic_dir(out_dir) as tmp, contextlib.ExitStack() as stack:
        sinks = [stack.enter_context(contextlib.closing(_HFSink(tmp, features)))]
        if "parquet" in formats:
            sinks.append(stack.enter_context(contextlib.closing(_ParquetSink(tmp / "parquet", features))))
        if "imagefolder" in formats:
            sinks.append(stack.enter_context(contextlib.closing(_ImageFolderSink(tmp / "imagefolder", features))))
        for table in data:
            for sink in sinks:
                sink.write(table)
        for sink in sinks:
            sink.finish()
        for name, text in {"README.md": card, **(files or {})}.items():
            (tmp / name).write_text(text, encoding="utf-8")
    return out_dir


def _size_category(n: int) -> str:
    """The Hub's ``size_categories`` value for ``n`` rows."""
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


def _markdown_text(text: str) -> str:
    """Text from the data (class names, the run's name) as literal text in a card: the Hub renders markdown
    to HTML, so HTML is escaped, and a ``|`` would split a table cell."""
    return html.escape(str(text), quote=False).replace("|", "\\|")


def dataset_card(*, name: str, classes: Sequence[str], real_counts: dict[str, int], counts: dict[str, int],
                 settings: dict[str, Any], provenance: dict[str, Any], acceptance: dict[str, float] | None = None,
                 formats: Sequence[str] = ("hf",), note: str | None = None) -> str:
    """A Hugging Face dataset card (YAML header + markdown) that says plainly the images are synthetic.
    ``note``: a paragraph after the counts (why an empty set has no images, say)."""
    import yaml

    header = {
        "tags": ["synthetic", "synthaug", "diffusion", "image-classification"],
        "task_categories": ["image-classification"],
        "size_categories": [_size_category(sum(counts.values()))],
    }
    rows = "\n".join(
        f"| {_markdown_text(c)} | {real_counts.get(c, 0)} | {counts.get(c, 0)} |"
        + (f" {acceptance.get(c, 1.0):.0%} |" if acceptance else "")
        for c in classes
    )
    acc_head = " acceptance |" if acceptance else ""
    acc_rule = "---|" if acceptance else ""
    prov = "\n".join(f"- **{k}**: `{v}`" for k, v in provenance.items())
    gen = "\n".join(f"- **{k}**: `{v}`" for k, v in settings.items())
    remark = f"\n{_markdown_text(note)}\n" if note else ""
    return f"""---
{yaml.safe_dump(header, sort_keys=False).strip()}
---

# {_markdown_text(name)}: synthetic images

**These images are synthetic.** They were sampled from a class-conditional diffusion model trained by
[synthaug](https://github.com/synthaug/synthaug) on a small real dataset; they are not photographs or scans of
real objects. Do not use them as evaluation data, and keep them apart from real test sets.

## Counts per class

| class | real (train) | synthetic |{acc_head}
|---|---|---|{acc_rule}
{rows}

Total synthetic images: {sum(counts.values())}.
{remark}
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
