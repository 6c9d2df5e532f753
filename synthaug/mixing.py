"""Using the synthetic data: load any written format, mix it with the real data, view it as tensors, share it.

``load_synthetic`` reads what ``generate`` wrote (the ``save_to_disk`` folder, the parquet shards or the
imagefolder export) back into one ``datasets.Dataset`` with a named ``ClassLabel``. ``mix`` joins real and
synthetic rows into one dataset whose ``synthetic`` and ``weight`` columns let a training loss tell them
apart. Classes are always matched by *name*, never by label id: a synthetic set written with another class
order is re-mapped onto the real one.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from synthaug.errors import SynthaugError, did_you_mean

MIXED_COLUMNS = ("image", "label", "synthetic", "weight")


# --------------------------------------------------------------------------------------------- loading


def load_synthetic(path: str | Path):
    """Load a synthetic dataset in any format ``generate`` writes → ``datasets.Dataset`` (image, label, …).

    ``path`` is one of:

    - ``run_dir/synthetic``: the ``save_to_disk`` folder (always written);
    - ``run_dir/synthetic/parquet`` (a folder of ``*.parquet`` shards) or a single ``.parquet`` file;
    - ``run_dir/synthetic/imagefolder``: ``CLASS/*.png`` plus ``metadata.csv``.

    The ``label`` column is a ``ClassLabel`` with the class names restored. From an imagefolder export the
    names come from ``metadata.csv``'s ``class_name`` (or, when it sits inside the ``save_to_disk`` folder,
    from that folder's features, so classes without images keep their ids).
    """
    path = Path(path)
    if path.is_file() and path.suffix == ".parquet":
        return _from_parquet([path])
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            return _from_disk(path)
        if (path / "metadata.csv").is_file():
            return _from_imagefolder(path)
        shards = sorted(path.glob("*.parquet"))
        if shards:
            return _from_parquet(shards)
    what = "folder" if path.is_dir() else "file" if path.exists() else "no such file or folder"
    raise SynthaugError(
        f"{path}: not a synthetic dataset ({what}); give run_dir/synthetic, a folder of .parquet files "
        "or an imagefolder export with metadata.csv"
    )


def _from_disk(path: Path):
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds and len(ds) != 1:
            raise SynthaugError(f"{path}: a DatasetDict with splits {list(ds)}; load one split and pass it instead")
        ds = ds["train"] if "train" in ds else next(iter(ds.values()))
    return ds


def _from_parquet(shards: Sequence[Path]):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pa.concat_tables([pq.read_table(p) for p in shards])
    except (pa.ArrowInvalid, OSError) as exc:
        raise SynthaugError(f"{shards[0].parent}: cannot read the parquet shards ({str(exc).splitlines()[0]})") from None
    # Files written by `datasets` carry their features (ClassLabel names included) in the schema metadata.
    return datasets.Dataset(table)


def _from_imagefolder(folder: Path):
    import datasets

    with open(folder / "metadata.csv", newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    required = ("file_name", "label", "class_name")
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:  # a header without rows is an export of an empty synthetic set (a quota that asked for none)
        raise SynthaugError(
            f"{folder / 'metadata.csv'}: no {', '.join(missing)} column(s); expected the columns "
            f"{', '.join(required)} written by synthaug's imagefolder export"
        )
    named: dict[int, str] = {}
    for row in rows:
        label, name = int(row["label"]), row["class_name"]
        if named.setdefault(label, name) != name:
            raise SynthaugError(f"{folder / 'metadata.csv'}: label {label} is both {named[label]!r} and {name!r}")
    classes = _parent_classes(folder) or [named[k] for k in sorted(named)]
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(named.values()) - set(index))
    if unknown:
        raise SynthaugError(f"{folder / 'metadata.csv'}: classes {unknown} are not in {folder.parent}'s features")
    images = []
    for row in rows:
        file = folder / row["file_name"]
        if not file.is_file():
            raise SynthaugError(f"{folder}: {row['file_name']} is listed in metadata.csv but missing")
        images.append({"path": str(file.resolve()), "bytes": None})
    data: dict[str, list] = {"image": images, "label": [index[r["class_name"]] for r in rows]}
    features = {"image": datasets.Image(), "label": datasets.ClassLabel(names=classes)}
    for column in ("seed", "index"):
        if column in reader.fieldnames:
            data[column] = [int(r[column]) for r in rows]
            features[column] = datasets.Value("int64")
    return datasets.Dataset.from_dict(data, features=datasets.Features(features))


def _parent_classes(folder: Path) -> list[str] | None:
    """Class names of the ``save_to_disk`` folder an imagefolder export sits in, when it is there."""
    info = folder.parent / "dataset_info.json"
    if not info.is_file():
        return None
    try:
        label = json.loads(info.read_text())["features"]["label"]
    except (KeyError, TypeError, json.JSONDecodeError):
        return None
    return list(label["names"]) if label.get("_type") == "ClassLabel" else None


def as_dataset(data, what: str):
    """A ``datasets.Dataset`` or something that names one → the ``Dataset``.

    Strings with a source scheme (``builtin:digits``, ``imagefolder:DIR``, ``hf:…``, ``csv:…``) go through
    ``synthaug.sources.load_source``; a folder of class folders is read as an image folder; any other path
    through ``load_synthetic``.
    """
    import datasets

    if isinstance(data, datasets.DatasetDict):
        raise SynthaugError(f"{what}: a DatasetDict with splits {list(data)}; pass one split, e.g. ds['train']")
    if isinstance(data, datasets.Dataset):
        return data
    if not isinstance(data, (str, Path)):
        raise SynthaugError(f"{what}: expected a datasets.Dataset or a path, got {type(data).__name__}")
    from synthaug.config import SOURCE_SCHEMES
    from synthaug.sources import load_imagefolder, load_source

    if isinstance(data, str) and data.split(":", 1)[0] in SOURCE_SCHEMES and ":" in data:
        return load_source(data)[0]
    path = Path(data)
    written = ("dataset_info.json", "dataset_dict.json", "metadata.csv")
    if path.is_dir() and not any((path / f).is_file() for f in written) and not any(path.glob("*.parquet")):
        return load_imagefolder(path)[0]
    return load_synthetic(path)


def check_columns(ds, what: str) -> list[str]:
    import datasets

    missing = [c for c in ("image", "label") if c not in ds.column_names]
    if missing:
        raise SynthaugError(
            f"{what}: no {', '.join(map(repr, missing))} column (columns: {', '.join(ds.column_names)}); "
            "rename yours with ds.rename_column(old, new)"
        )
    if not isinstance(ds.features["label"], datasets.ClassLabel):
        raise SynthaugError(
            f"{what}: the 'label' column is {ds.features['label']}, not a ClassLabel, so its classes have no names; "
            "cast it with ds.cast_column('label', datasets.ClassLabel(names=[...]))"
        )
    return list(ds.features["label"].names)


def align_labels(ds, classes: Sequence[str], what: str = "synthetic"):
    """Re-map ``ds``'s labels onto ``classes`` by class name; a class not in ``classes`` is an error."""
    import datasets

    names = check_columns(ds, what)
    classes = list(classes)
    if names == classes:
        return ds
    unknown = [n for n in names if n not in classes]
    if unknown:
        raise SynthaugError(
            f"{what}: classes {unknown} are missing from the real classes {classes}"
            f"{did_you_mean(unknown[0], classes, quoted=True)}; "
            "rename them or drop their rows"
        )
    mapping = np.array([classes.index(n) for n in names], dtype=np.int64)
    labels = mapping[np.asarray(ds["label"], dtype=np.int64)].tolist()
    ds = ds.remove_columns("label").add_column("label", labels)
    return ds.cast_column("label", datasets.ClassLabel(names=classes))


# --------------------------------------------------------------------------------------------- mixing


def cap_rows(labels: np.ndarray, order: np.ndarray, caps: Sequence[int]) -> np.ndarray:
    """Rows kept when class c keeps at most ``caps[c]`` rows, the smallest ``order`` values first (sorted)."""
    keep = []
    for c, cap in enumerate(caps):
        rows = np.flatnonzero(labels == c)
        keep.append(rows[np.argsort(order[rows], kind="stable")][:cap])
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def _tagged(ds, synthetic: bool, weight: float):
    import datasets

    ds = ds.select_columns(["image", "label"]).cast_column("image", datasets.Image())
    ds = ds.add_column("synthetic", [synthetic] * len(ds), feature=datasets.Value("bool"))
    return ds.add_column("weight", [weight] * len(ds), feature=datasets.Value("float32"))


def mix(real, synthetic, ratio: float | None = None, weight: float | None = None):
    """Real + synthetic rows → one ``datasets.Dataset`` with columns image, label, synthetic, weight.

    Args:
        real: a ``datasets.Dataset`` with ``image`` and a ``label`` ``ClassLabel``, or a path / source spec
            (``builtin:digits``, ``imagefolder:DIR``, a ``save_to_disk`` folder…). Its class order is kept.
        synthetic: a ``datasets.Dataset`` or a path in any format ``generate`` writes (see ``load_synthetic``).
            Its labels are re-mapped onto the real classes by name.
        ratio: optional cap: class c keeps at most ``floor(ratio × real count of c)`` synthetic rows, those
            with the smallest ``index`` (the order they were generated in), so the choice is deterministic.
        weight: the ``weight`` of synthetic rows (real rows have 1.0); default 1.0.

    Returns:
        The real rows (in their order), then the synthetic rows. ``synthetic`` is a bool column, ``weight``
        a float32 column to multiply a per-sample loss with.
    """
    import datasets

    real_ds, synthetic_ds = as_dataset(real, "real"), as_dataset(synthetic, "synthetic")
    classes = check_columns(real_ds, "real")
    synthetic_ds = align_labels(synthetic_ds, classes, "synthetic")
    weight = 1.0 if weight is None else float(weight)
    if not (math.isfinite(weight) and weight >= 0):
        raise SynthaugError(f"mix: weight must be a finite number ≥ 0, got {weight}")
    if ratio is not None:
        if not (math.isfinite(ratio) and ratio >= 0):
            raise SynthaugError(f"mix: ratio must be a finite number ≥ 0, got {ratio}")
        real_counts = np.bincount(np.asarray(real_ds["label"], dtype=np.int64), minlength=len(classes))
        caps = [math.floor(ratio * int(n) + 1e-9) for n in real_counts]  # 1e-9: 0.3 × 10 is 2.9999…
        labels = np.asarray(synthetic_ds["label"], dtype=np.int64)
        order = (np.asarray(synthetic_ds["index"], dtype=np.int64) if "index" in synthetic_ds.column_names
                 else np.arange(len(synthetic_ds)))
        keep = cap_rows(labels, order, caps)
        if len(keep) != len(synthetic_ds):
            synthetic_ds = synthetic_ds.select(keep)
    mixed = datasets.concatenate_datasets([_tagged(real_ds, False, 1.0), _tagged(synthetic_ds, True, weight)])
    return mixed.select_columns(list(MIXED_COLUMNS))


# --------------------------------------------------------------------------------------------- hub


def _card_text(path: Path) -> tuple[Path, str]:
    for folder in (path, path.parent, path.parent.parent):  # synthetic/, synthetic/parquet/, a shard file
        card = folder / "README.md"
        if card.is_file() and (folder / "dataset_info.json").is_file():
            return card, card.read_text(encoding="utf-8")
    raise SynthaugError(f"{path}: no dataset card (synthetic/README.md) found; regenerate the synthetic set")


def push_synthetic_to_hub(path: str | Path, repo_id: str, private: bool = True, token: str | None = None) -> None:
    """Push a synthetic dataset to the Hugging Face Hub as parquet, then its dataset card as ``README.md``.

    The card (which says plainly that the images are synthetic) replaces the one ``push_to_hub`` writes;
    its YAML header gets the full ``dataset_info`` and ``configs`` so ``load_dataset(repo_id)`` works.
    A repository is private unless ``private=False``.
    """
    from datasets import DatasetInfo, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard, HfApi

    path = Path(path)
    ds = load_synthetic(path)
    card_path, text = _card_text(path)
    try:
        card = DatasetCard(text)
    except Exception as exc:  # huggingface_hub raises ValueError or yaml errors for a broken header
        raise SynthaugError(f"{card_path}: the dataset card's YAML header is invalid ({exc}); fix or regenerate it") from None
    splits = SplitDict()
    splits.add(SplitInfo(name="train", num_bytes=ds.data.nbytes, num_examples=len(ds)))
    DatasetInfosDict({"default": DatasetInfo(features=ds.features, splits=splits)}).to_dataset_card_data(card.data)
    MetadataConfigs({"default": {"data_files": [{"split": "train", "path": "data/train-*"}]}}).to_dataset_card_data(
        card.data
    )
    card.text = card.text.rstrip("\n") + (  # the card's own snippet loads the local folder
        f'\n\nOn the Hub: `datasets.load_dataset("{repo_id}", split="train")`.\n'
    )
    ds.push_to_hub(repo_id, split="train", private=private, token=token)
    HfApi(token=token).upload_file(
        path_or_fileobj=str(card).encode("utf-8"), path_in_repo="README.md", repo_id=repo_id,
        repo_type="dataset", commit_message="Add the synthaug dataset card",
    )


def __getattr__(name: str):
    # TorchView moved to synthaug.torch_data with MixedDataModule; the old import path keeps working.
    if name == "TorchView":
        import warnings

        from synthaug.torch_data import TorchView

        warnings.warn("synthaug.mixing.TorchView moved to synthaug.torch_data.TorchView", DeprecationWarning,
                      stacklevel=2)
        return TorchView
    raise AttributeError(f"module 'synthaug.mixing' has no attribute {name!r}")
