"""The HTML report renders from the report folder's files, with or without the optional ones."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from synthaug.errors import SynthaugError
from synthaug.report import build_report

CLASSES = ["zero", "one", "two"]
ARMS = ["real", "oversample+classic", "real+synthetic"]


class _Page(HTMLParser):
    """Collects <img src> values, table header cells and the text of the page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.headers: list[str] = []
        self.text: list[str] = []
        self._in_th = False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        self._in_th = tag == "th"

    def handle_endtag(self, tag):
        self._in_th = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_th:
            self.headers.append(data.strip())


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _metrics(quality: bool = True) -> dict:
    def arm(f1: float) -> dict:
        cell = {"mean": f1, "std": 0.01}
        return {
            "accuracy": cell,
            "macro_f1": cell,
            "balanced_accuracy": cell,
            "per_class_f1": [f1, f1 - 0.1, f1 + 0.05],
            "runs": [{"seed": 0, "macro_f1": f1}, {"seed": 1, "macro_f1": f1}],
        }

    return {
        "dataset": {
            "classes": CLASSES,
            "train_counts": {"zero": 20, "one": 5, "two": 2},
            "test_counts": {"zero": 10, "one": 10, "two": 10},
        },
        "generation": {"counts": {"zero": 0, "one": 15, "two": 18}, "sampler": "dpmpp"},  # other keys missing
        "quality": {
            "judge_accuracy": 0.9,
            "fid_judge": 3.2,
            "precision": 0.8,
            "recall": 0.7,
            "memorization_rate": 0.05,
            "per_class_judge_accuracy": [None, 0.9, 0.8],
        }
        if quality
        else None,
        "arms": {"real": arm(0.80), "oversample+classic": arm(0.86), "real+synthetic": arm(0.84)},
        "lift": {
            "macro_f1": 0.04,
            "accuracy": 0.04,
            "best_baseline": "oversample+classic",
            "best_synthetic_arm": "real+synthetic",
            "vs_best_baseline_macro_f1": -0.02,
        },
    }


def _write_full_report_inputs(report_dir: Path) -> None:
    rng = np.random.default_rng(0)
    report_dir.mkdir(parents=True)
    (report_dir / "metrics.json").write_text(json.dumps(_metrics()))
    (report_dir / "recipe.yaml").write_text("name: tiny\ndata:\n  source: builtin:digits <&>\n")
    images = lambda n: rng.integers(0, 256, size=(n, 8, 8, 1), dtype=np.uint8)  # noqa: E731
    np.savez(
        report_dir / "assets.npz",
        real_x=images(9),
        real_y=np.repeat([0, 1, 2], 3),
        synth_x=images(6),
        synth_y=np.repeat([1, 2], 3),
        mem_synthetic=images(4),
        mem_train=images(4),
        mem_ratio=np.array([0.0, 0.2, 0.5, 0.9]),
        forward=rng.integers(0, 256, size=(3, 5, 8, 8, 1), dtype=np.uint8),
        reverse=rng.integers(0, 256, size=(3, 5, 8, 8, 1), dtype=np.uint8),
    )
    rows = ["step,train_loss,val_loss"] + [f"{s},{1.0 / (s + 1)},{'' if s % 5 else 0.5}" for s in range(20)]
    (report_dir / "loss.csv").write_text("\n".join(rows) + "\n")


def test_full_report_links_only_existing_images_and_shows_the_arms(tmp_path):
    report_dir = tmp_path / "report"
    _write_full_report_inputs(report_dir)
    index = build_report(report_dir)
    assert index == report_dir / "index.html"
    page = _parse(index)
    assert len(page.images) == 7  # arms, per-class F1, counts, samples, memorization, diffusion, loss
    for src in page.images:
        assert not Path(src).is_absolute()
        assert (report_dir / src).is_file() and (report_dir / src).read_bytes()[:4] == b"\x89PNG", src
    assert {"arm", "accuracy", "macro-F1", "balanced accuracy"} <= set(page.headers)
    text = "".join(page.text)
    for arm in ARMS:
        assert arm in text
    assert "0.800 ± 0.010" in text  # the arms table gives mean ± std
    assert "real 0.800 ± 0.010 → real+synthetic 0.840 ± 0.010" in text  # the headline
    assert "source: builtin:digits <&>" in text  # the recipe, verbatim (escaped in the HTML, not lost)


def test_minimal_report_from_metrics_json_alone(tmp_path):
    metrics = _metrics(quality=False)
    del metrics["generation"]
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    page = _parse(build_report(tmp_path))
    for src in page.images:
        assert (tmp_path / src).is_file(), src
    assert "samples.png" not in page.images and "loss.png" not in page.images
    assert "macro-F1" in page.headers


def test_missing_or_broken_optional_files_never_crash(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"arms": {}, "quality": None}))
    (tmp_path / "assets.npz").write_bytes(b"not a zip")
    (tmp_path / "loss.csv").write_text("epoch,accuracy\n1,0.5\n")
    page = _parse(build_report(tmp_path))
    assert page.images == []
    assert "could not be read" in "".join(page.text)


def test_a_report_without_metrics_is_a_clear_error(tmp_path):
    with pytest.raises(SynthaugError, match="metrics.json"):
        build_report(tmp_path)


def test_synthaug_run_writes_every_design_key_and_a_page_with_its_images(tmp_path):
    """``synthaug run`` end to end (what ``make demo`` runs, on the smoke recipe): metrics.json carries every
    key of DESIGN §5 for every arm, and index.html shows images that exist."""
    from click.testing import CliRunner

    from synthaug.cli import cli
    from synthaug.config import DEFAULT_ARMS

    smoke = Path(__file__).resolve().parents[1] / "recipes" / "smoke.yaml"
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", str(smoke), "--set", f"output_dir={run}"], prog_name="synthaug")
    assert result.exit_code == 0, result.output
    assert "index.html" in result.output and "macro-F1: real" in result.output  # the demo's headline
    assert "95% CI: " in result.output  # ... states the interval and the verdict it gives

    metrics = json.loads((run / "report" / "metrics.json").read_text())
    design = {
        "dataset": {"classes", "train_counts", "test_counts"},
        "generation": {"counts", "sampler", "steps", "guidance", "images_per_second"},
        "quality": {"judge_accuracy", "fid_judge", "precision", "recall", "memorization_rate"},
        "lift": {"macro_f1", "accuracy", "best_baseline", "best_synthetic_arm", "vs_best_baseline_macro_f1"},
    }
    # DESIGN §9: paired intervals and verdicts, long-tail groups, CAS, the evaluation's resolved budget.
    design["lift"] |= {"paired", "verdict", "verdict_vs_real"}
    design["quality"] |= {"cas_ratio"}
    design["dataset"] |= {"duplicates_train_test", "shot_groups"}
    design["evaluation"] = {"steps", "judge_steps", "max_minutes", "accelerator", "seconds"}
    assert set(metrics["lift"]["paired"]) == {"synthetic", "real+synthetic", "real+synthetic+classic"}
    assert 0 < metrics["quality"]["cas_ratio"] < 2
    # The synthetic-only arm trains on the class-balanced CAS set: as many images per class as real has (20).
    assert {run["train_size"] for run in metrics["arms"]["synthetic"]["runs"]} == {200}
    assert set(metrics["dataset"]["train_counts"].values()) == {20}  # the smoke subset: 20 per class
    assert metrics["dataset"]["shot_groups"] == {"many": [], "medium": metrics["dataset"]["classes"], "few": []}
    for section, keys in design.items():
        assert keys <= set(metrics[section]), (section, keys - set(metrics[section]))
    assert set(metrics["arms"]) == set(DEFAULT_ARMS)  # the recipe lists no arms: the default ones
    for arm, stats in metrics["arms"].items():
        for key in ("accuracy", "macro_f1", "balanced_accuracy"):
            assert {"mean", "std"} <= set(stats[key]), (arm, key)
            assert 0.0 <= stats[key]["mean"] <= 1.0
        assert len(stats["per_class_f1"]) == len(metrics["dataset"]["classes"])
        assert stats["many"] is None and stats["few"] is None and 0 <= stats["medium"]["mean"] <= 1

    page = _parse(run / "report" / "index.html")
    assert len(page.images) >= 6  # arms, per-class F1, counts, samples, diffusion, loss (memorization if any)
    for src in page.images:
        assert (run / "report" / src).is_file(), src


def _paired(mean: float, low: float, high: float, verdict: str) -> dict:
    return {"mean": mean, "ci": [low, high], "n_seeds": 5, "seed_std": 0.01, "test_se": 0.01, "verdict": verdict}


def test_the_report_states_paired_intervals_verdicts_and_long_tail_groups(tmp_path):
    metrics = _metrics()
    metrics["lift"]["paired"] = {"real+synthetic": {"vs_real": _paired(0.04, 0.021, 0.059, "helps"),
                                                    "vs_best_baseline": _paired(-0.02, -0.041, 0.002,
                                                                                "no clear difference")}}
    for arm, few in zip(ARMS, (0.2, 0.5, 0.6)):
        metrics["arms"][arm].update({"many": {"mean": 0.9, "std": 0.0}, "medium": None,
                                     "few": {"mean": few, "std": 0.05}})
    report_dir = tmp_path / "report"
    report_dir.mkdir()
    (report_dir / "metrics.json").write_text(json.dumps(metrics))
    page = _parse(build_report(report_dir))
    text = "".join(page.text)
    assert "+0.040 [+0.021, +0.059]" in text and "helps" in text  # headline: the interval and its verdict
    assert "-0.020 [-0.041, +0.002]" in text and "no clear difference" in text
    assert {"many-shot accuracy", "few-shot accuracy", "macro-F1 vs real [95% CI]"} <= set(page.headers)
    assert "medium-shot accuracy" not in page.headers  # no arm has a medium-shot class
    assert "0.600 ± 0.050" in text
    metrics["lift"]["paired"]["real+synthetic"]["vs_real"]["ci"] = "wide"
    (report_dir / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(SynthaugError, match=r"lift\.paired\.real\+synthetic\.vs_real\.ci"):
        build_report(report_dir)
