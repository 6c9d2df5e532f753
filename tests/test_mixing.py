"""Using the synthetic data: mix(), load_synthetic(), MixedDataModule, TorchView and push_synthetic_to_hub.

Datasets here are built by hand: 4×4 grey images whose pixel value identifies the row, so a test can tell
which rows a function kept without training anything.
"""

from __future__ import annotations

import io
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import synthaug
from synthaug.errors import SynthaugError
from synthaug.mixing import load_synthetic, push_synthetic_to_hub
from synthaug.torch_data import TorchView

CLASSES = ["cat", "dog", "eel"]
CODE = {"cat": 0, "dog": 1, "eel": 2, "cow": 3}  # synthetic pixel value = 10 × code + index


def png(value: int, size: int = 4) -> dict:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size), value, dtype=np.uint8), mode="L").save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def real_dataset(counts=(4, 2, 1), classes=CLASSES):
    """Real rows: pixel value 200 + row."""
    import datasets

    labels = [c for c, n in enumerate(counts) for _ in range(n)]
    return datasets.Dataset.from_dict(
        {"image": [png(200 + i) for i in range(len(labels))], "label": labels, "id": list(range(len(labels)))},
        features=datasets.Features({"image": datasets.Image(decode=False),
                                    "label": datasets.ClassLabel(names=list(classes)),
                                    "id": datasets.Value("int64")}),
    )


def synthetic_dataset(per_class: int = 3, classes=CLASSES, shuffle: bool = True):
    """Synthetic rows in the layout ``generate`` writes; pixel value 10 × CODE[class] + index.

    With ``shuffle`` the rows are not in index order, so "first by index" differs from "first rows".
    """
    import datasets

    from synthaug.writers import synthetic_features

    rows = [(c, i) for c in range(len(classes)) for i in range(per_class)]
    if shuffle:
        rows = [rows[j] for j in np.random.default_rng(0).permutation(len(rows))]
    n = len(rows)
    return datasets.Dataset.from_dict(
        {
            "image": [png(10 * CODE[classes[c]] + i) for c, i in rows],
            "label": [c for c, _ in rows], "seed": [1000 + k for k in range(n)], "index": [i for _, i in rows],
            "sampler": ["dpmpp"] * n, "steps": [4] * n, "guidance": [2.0] * n, "mode": ["sample"] * n,
            "confidence": [None] * n, "novelty": [None] * n, "source_index": [None] * n,
        },
        features=synthetic_features(classes),
    )


def pixel(image) -> int:
    return int(np.asarray(image).flat[0])


def written(tmp_path: Path, ds, formats=("hf", "parquet", "imagefolder")) -> Path:
    from synthaug.writers import dataset_card, write_synthetic

    names = ds.features["label"].names
    counts = dict(Counter(names[v] for v in ds["label"]))
    card = dataset_card(name="tiny", classes=names, real_counts=dict.fromkeys(names, 5), counts=counts,
                        settings={"sampler": "dpmpp", "steps": 4}, provenance={"seed": 0}, formats=formats)
    return write_synthetic(ds, tmp_path / "synthetic", formats, card)


# --------------------------------------------------------------------------------------------- mix


def test_mix_tags_rows_and_weights_synthetic_ones():
    mixed = synthaug.mix(real_dataset(), synthetic_dataset(), weight=0.25)
    assert mixed.column_names == ["image", "label", "synthetic", "weight"]
    assert mixed.features["label"].names == CLASSES
    assert len(mixed) == 7 + 9
    flags, weights = mixed["synthetic"], mixed["weight"]
    assert flags == [False] * 7 + [True] * 9
    assert weights == [1.0] * 7 + [0.25] * 9
    assert [pixel(img) for img in mixed["image"][:7]] == [200 + i for i in range(7)]  # real rows, in order


def test_mix_weight_defaults_to_one():
    assert set(synthaug.mix(real_dataset(), synthetic_dataset())["weight"]) == {1.0}


def test_mix_ratio_caps_synthetic_rows_per_class_first_by_index():
    mixed = synthaug.mix(real_dataset(counts=(4, 2, 1)), synthetic_dataset(per_class=3), ratio=0.5)
    rows = [(CLASSES[y], pixel(img)) for y, img, s in zip(mixed["label"], mixed["image"], mixed["synthetic"]) if s]
    # caps floor(0.5 × [4, 2, 1]) = [2, 1, 0]; the kept rows are those with the smallest index
    assert sorted(rows) == [("cat", 0), ("cat", 1), ("dog", 10)]


def test_mix_ratio_never_exceeds_the_synthetic_rows_there_are():
    mixed = synthaug.mix(real_dataset(counts=(4, 2, 1)), synthetic_dataset(per_class=3), ratio=10)
    assert sum(mixed["synthetic"]) == 9


def test_mix_remaps_reordered_class_names():
    synthetic = synthetic_dataset(classes=["eel", "cat", "dog"])
    mixed = synthaug.mix(real_dataset(), synthetic)
    names = mixed.features["label"].names
    assert names == CLASSES
    for label, img, s in zip(mixed["label"], mixed["image"], mixed["synthetic"]):
        if s:  # the pixel value says which class the synthetic row was generated for
            assert CLASSES[pixel(img) // 10] == names[label]


def test_mix_a_synthetic_class_missing_from_the_real_data_is_an_error():
    with pytest.raises(SynthaugError, match=r"\['cow'\] are missing from the real classes"):
        synthaug.mix(real_dataset(), synthetic_dataset(classes=["cat", "dog", "cow"]))


def test_mix_needs_a_classlabel_with_names():
    real = real_dataset().cast_column("label", __import__("datasets").Value("int64"))
    with pytest.raises(SynthaugError, match="not a ClassLabel"):
        synthaug.mix(real, synthetic_dataset())


@pytest.mark.parametrize("kwargs", [{"ratio": -1.0}, {"weight": -0.5}, {"weight": float("nan")}])
def test_mix_rejects_negative_ratio_and_weight(kwargs):
    with pytest.raises(SynthaugError, match="≥ 0"):
        synthaug.mix(real_dataset(), synthetic_dataset(), **kwargs)


def test_mix_takes_paths(tmp_path):
    real = real_dataset()
    real.save_to_disk(str(tmp_path / "real"))
    out = written(tmp_path, synthetic_dataset())
    mixed = synthaug.mix(tmp_path / "real", out / "parquet", ratio=1.0)
    assert Counter(zip(mixed["label"], mixed["synthetic"])) == {
        (0, False): 4, (1, False): 2, (2, False): 1, (0, True): 3, (1, True): 2, (2, True): 1,
    }


# --------------------------------------------------------------------------------------------- load_synthetic


@pytest.mark.parametrize("where", [".", "parquet", "imagefolder", "parquet/train-00000-of-00001.parquet"])
def test_load_synthetic_reads_every_written_format(tmp_path, where):
    source = synthetic_dataset(classes=["eel", "cat", "dog"])
    out = written(tmp_path, source)
    ds = load_synthetic(out / where)
    assert ds.features["label"].names == ["eel", "cat", "dog"]
    got = sorted((ds.features["label"].names[y], pixel(img)) for y, img in zip(ds["label"], ds["image"]))
    want = sorted((source.features["label"].names[y], pixel(img)) for y, img in zip(source["label"], source["image"]))
    assert got == want
    assert sorted(ds["seed"]) == sorted(source["seed"])


def test_load_synthetic_imagefolder_moved_away_keeps_the_names_it_has(tmp_path):
    source = synthetic_dataset(classes=["eel", "cat", "dog"]).filter(lambda row: row["label"] != 1)  # no cat
    out = written(tmp_path, source)
    inside = load_synthetic(out / "imagefolder")
    assert inside.features["label"].names == ["eel", "cat", "dog"]  # from the dataset folder around it
    shutil.copytree(out / "imagefolder", tmp_path / "export")
    moved = load_synthetic(tmp_path / "export")
    assert moved.features["label"].names == ["eel", "dog"]  # only metadata.csv: classes with images
    assert Counter(moved.features["label"].names[y] for y in moved["label"]) == {"eel": 3, "dog": 3}


def test_load_synthetic_refuses_other_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SynthaugError, match="not a synthetic dataset"):
        load_synthetic(tmp_path / "empty")
    with pytest.raises(SynthaugError, match="no such file or folder"):
        load_synthetic(tmp_path / "missing")


# --------------------------------------------------------------------------------------------- Lightning


def module(**kwargs):
    from synthaug.torch_data import MixedDataModule

    args = {"fraction": 0.25, "batch_size": 8, "weight": 0.5, "seed": 3, "steps_per_epoch": 4, **kwargs}
    dm = MixedDataModule(real_dataset(counts=(6, 6, 6)), synthetic_dataset(), **args)
    return dm, list(dm.train_dataloader())


def test_mixed_datamodule_batches_have_the_synthetic_fraction_and_weights():
    dm, batches = module()
    assert dm.classes == CLASSES and len(batches) == 4
    for b in batches:
        assert set(b) == {"image", "label", "weight", "synthetic"}
        assert b["image"].shape == (8, 1, 4, 4) and b["image"].dtype == torch.float32
        assert b["image"].min() >= -1.0 and b["image"].max() <= 1.0
        assert int(b["synthetic"].sum()) == 2  # round(0.25 × 8)
        assert torch.equal(b["weight"], torch.where(b["synthetic"], 0.5, 1.0))
        # synthetic pixel values are < 100, real ones ≥ 200: the flag matches the image
        values = (b["image"][:, 0, 0, 0] + 1.0) * 127.5
        assert torch.equal(values < 100, b["synthetic"])


@pytest.mark.parametrize("fraction, expected", [(0.0, 0), (0.5, 4), (1.0, 8)])
def test_mixed_datamodule_fraction_extremes(fraction, expected):
    _, batches = module(fraction=fraction)
    assert all(int(b["synthetic"].sum()) == expected for b in batches)


def test_mixed_datamodule_is_deterministic_per_seed():
    _, first = module(transforms=[{"Affine": {"translate_px": 1}}])
    _, again = module(transforms=[{"Affine": {"translate_px": 1}}])
    _, other = module(seed=4, transforms=[{"Affine": {"translate_px": 1}}])
    for a, b in zip(first, again):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a["image"], b["image"]) for a, b in zip(first, other))


def test_mixed_datamodule_epochs_draw_new_batches():
    dm, first = module()
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(1)
    second = list(loader)
    assert any(not torch.equal(a["image"], b["image"]) for a, b in zip(first, second))


def test_mixed_datamodule_resizes_and_serves_validation():
    dm, batches = module(image_size=2, channels=3, val=real_dataset(counts=(1, 1, 1)))
    assert batches[0]["image"].shape == (8, 3, 2, 2)
    (val,) = list(dm.val_dataloader())
    assert val["image"].shape == (3, 3, 2, 2) and not val["synthetic"].any() and val["weight"].tolist() == [1.0] * 3


def test_mixed_datamodule_needs_synthetic_rows_for_a_synthetic_fraction():
    with pytest.raises(SynthaugError, match="synthetic rows but there are none"):
        module(ratio=0.0)


# --------------------------------------------------------------------------------------------- TorchView


def test_torchview_normalises_with_the_models_normalization(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "synthaug.json").write_text(json.dumps(
        {"classes": CLASSES, "image_size": 2, "channels": 1, "null_class_id": 3,
         "normalization": {"mean": 0.2, "std": 0.4}}))
    view = TorchView(real_dataset(), model_dir=model)
    x, y = view[0]
    assert x.shape == (1, 2, 2) and x.dtype == torch.float32 and y == 0
    assert torch.allclose(x, torch.full_like(x, (200 / 255 - 0.2) / 0.4))
    assert len(view) == 7 and view[6][1] == 2


def test_torchview_defaults_to_minus_one_one_and_native_size():
    view = TorchView(synthetic_dataset(shuffle=False))
    x, y = view[0]
    assert x.shape == (1, 4, 4) and y == 0
    assert torch.allclose(x, torch.full_like(x, -1.0))  # pixel value 0
    x3, _ = TorchView(synthetic_dataset(shuffle=False), image_size=2, channels=3)[1]
    assert x3.shape == (3, 2, 2) and torch.allclose(x3, torch.full_like(x3, 1 / 127.5 - 1.0))


def test_torchview_feeds_a_dataloader():
    loader = torch.utils.data.DataLoader(TorchView(synthaug.mix(real_dataset(), synthetic_dataset())), batch_size=16)
    x, y = next(iter(loader))
    assert x.shape == (16, 1, 4, 4) and y.dtype == torch.int64


# --------------------------------------------------------------------------------------------- Hub


def test_the_dataset_card_has_a_valid_yaml_header(tmp_path):
    from huggingface_hub import DatasetCard

    out = written(tmp_path, synthetic_dataset())
    data = DatasetCard((out / "README.md").read_text(encoding="utf-8")).data
    assert "synthetic" in data.tags and data.task_categories == ["image-classification"]


def test_push_synthetic_to_hub_pushes_the_dataset_then_the_card(tmp_path, monkeypatch):
    import datasets
    import huggingface_hub

    calls = []
    monkeypatch.setattr(datasets.Dataset, "push_to_hub",
                        lambda self, repo_id, **kw: calls.append(("push", repo_id, len(self), kw)))
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_file", lambda self, **kw: calls.append(("upload", kw)))
    out = written(tmp_path, synthetic_dataset())
    push_synthetic_to_hub(out / "parquet", "me/tiny-synthetic", token="t0ken")

    (_, repo_id, rows, push_kw), (_, upload_kw) = calls
    assert (repo_id, rows, push_kw["private"], push_kw["token"]) == ("me/tiny-synthetic", 9, True, "t0ken")
    assert upload_kw["repo_id"] == "me/tiny-synthetic" and upload_kw["repo_type"] == "dataset"
    assert upload_kw["path_in_repo"] == "README.md"
    card = huggingface_hub.DatasetCard(upload_kw["path_or_fileobj"].decode("utf-8"))
    assert "These images are synthetic" in card.text
    info = card.data.dataset_info
    assert [f["name"] for f in info["features"]][:4] == ["image", "label", "seed", "index"]
    assert [(s["name"], s["num_examples"]) for s in info["splits"]] == [("train", 9)]
    assert 'load_dataset("me/tiny-synthetic", split="train")' in card.text
    assert card.data.configs[0]["data_files"][0]["path"] == "data/train-*"


def test_the_pushed_card_loads_with_load_dataset(tmp_path, monkeypatch):
    """The Hub layout push_to_hub makes (data/train-*.parquet) plus the uploaded card, read back by datasets."""
    import datasets
    import huggingface_hub

    repo = tmp_path / "repo"
    monkeypatch.setattr(datasets.Dataset, "push_to_hub", lambda self, repo_id, **kw: self.to_parquet(
        str(repo / "data" / "train-00000-of-00001.parquet")))
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_file",
                        lambda self, **kw: (repo / kw["path_in_repo"]).write_bytes(kw["path_or_fileobj"]))
    (repo / "data").mkdir(parents=True)
    push_synthetic_to_hub(written(tmp_path, synthetic_dataset()), "me/tiny-synthetic")
    ds = datasets.load_dataset(str(repo), split="train", cache_dir=str(tmp_path / "cache"))
    assert len(ds) == 9 and ds.features["label"].names == CLASSES


def test_push_synthetic_to_hub_refuses_a_broken_card(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.Dataset, "push_to_hub", lambda *a, **kw: pytest.fail("pushed"))
    out = written(tmp_path, synthetic_dataset())
    (out / "README.md").write_text("---\ntags: [unclosed\n---\n# card\n", encoding="utf-8")
    with pytest.raises(SynthaugError, match="YAML header is invalid"):
        push_synthetic_to_hub(out, "me/tiny-synthetic")


def test_the_old_import_paths_still_work_and_say_where_the_names_moved():
    import importlib
    import sys

    from synthaug import torch_data

    sys.modules.pop("synthaug.lightning", None)
    with pytest.warns(DeprecationWarning, match="synthaug.torch_data"):
        lightning = importlib.import_module("synthaug.lightning")
    assert lightning.MixedDataModule is torch_data.MixedDataModule
    import synthaug.mixing

    with pytest.warns(DeprecationWarning, match="synthaug.torch_data.TorchView"):
        assert synthaug.mixing.TorchView is torch_data.TorchView
