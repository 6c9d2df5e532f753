"""The evaluation report: PNG plots and one self-contained ``index.html``, from files in the report folder.

Inputs (all in ``report_dir``; only ``metrics.json`` is required, every other file and every key of
``assets.npz`` may be missing, and the page then leaves that section out):

``metrics.json``
    DESIGN §5 shape: ``dataset`` (classes, train/test counts), ``generation`` (any subset of its keys),
    ``quality`` (may be null), ``arms`` ({arm: {accuracy, macro_f1, balanced_accuracy: {mean, std},
    per_class_f1: [...], many/medium/few: {mean, std} (optional), runs: [per-seed dicts, optional]}}),
    ``lift`` (with ``paired``: {arm: {vs_real, vs_best_baseline: {mean, ci: [low, high], verdict, ...}}}, optional).
``recipe.yaml``
    The resolved recipe, shown verbatim.
``assets.npz``
    ``real_x``, ``synth_x``: uint8 (N, H, W, C) examples, a few per class, with int labels ``real_y``,
    ``synth_y`` (N,). ``mem_synthetic``, ``mem_train``: uint8 (P, H, W, C) the synthetic images closest
    to copying and their nearest training images, ``mem_ratio``: float (P,) nearest/second-nearest
    distance ratio. ``forward``, ``reverse``: uint8 (K, T, H, W, C), per class the forward noising strip
    (clean → noise) and the reverse denoising strip (noise → sample).
``loss.csv``
    A header row with ``step`` and ``train_loss`` at least; every column ending in ``_loss`` is plotted
    against ``step``; empty cells are skipped.

Outputs (beside the inputs): ``arms.png``, ``per_class_f1.png``, ``class_counts.png``, ``samples.png``,
``diffusion.png``, ``loss.png``, ``memorization.png`` (each only when its inputs exist) and ``index.html``,
written last, with relative ``<img src>`` links. Every write is atomic.

A value of the wrong type in a key the page reads (a string where a number belongs) is refused with the
file and the key named. Text from the data (class, arm and column names, the recipe, notes) shows as
written: escaped in the HTML, and with mathtext off in the plots. The figures are drawn by ``plots``.
"""

from __future__ import annotations

import csv
import html
import json
import math
from pathlib import Path

import numpy as np

from synthaug.errors import SynthaugError
from synthaug.io import atomic_write_bytes, atomic_write_text
from synthaug.plots import (
    arm_macro_f1,
    class_name,
    plot_arms,
    plot_class_counts,
    plot_diffusion,
    plot_loss,
    plot_memorization,
    plot_per_class_f1,
    plot_samples,
)
from synthaug.runs import METRICS, RECIPE_FILE

ASSETS, LOSS, INDEX = "assets.npz", "loss.csv", "index.html"
RECIPE = RECIPE_FILE  # the recipe, copied beside the metrics it produced
GROUPS = ("many", "medium", "few")  # many/medium/few-shot accuracy per arm (statistics.shot_groups)


# ------------------------------------------------------------------------------------------- inputs


def _read_metrics(report_dir: Path) -> dict:
    path = report_dir / METRICS
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SynthaugError(f"{path}: not found; run `synthaug evaluate` first to write it") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SynthaugError(
            f"{path}: not valid JSON ({exc}); rerun `synthaug evaluate --overwrite`"
        ) from None
    if not isinstance(metrics, dict):
        raise SynthaugError(f"{path}: expected a JSON object, got {type(metrics).__name__}")
    _check_metrics(metrics, path)
    return metrics


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_metrics(metrics: dict, path: Path) -> None:
    """Refuse values of the wrong type in the keys the page reads, naming the key; a missing or null
    section or key is fine (the page leaves it out), and so are keys the page does not read."""

    def bad(key: str, expected: str, value) -> None:
        shown = json.dumps(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise SynthaugError(f"{path}: {key}: expected {expected}, got {shown}; "
                            "rerun `synthaug evaluate --overwrite` to write it afresh")

    def section(key: str) -> dict:
        value = metrics.get(key)
        if value is not None and not isinstance(value, dict):
            bad(key, "an object", value)
        return value or {}

    def number(key: str, value) -> None:
        if value is not None and not _is_number(value):
            bad(key, "a number", value)

    def numbers(key: str, value, kind: type) -> None:
        """A list (``kind`` list) or an object (``kind`` dict) of numbers, or null."""
        if value is None:
            return
        if not isinstance(value, kind):
            bad(key, "a list" if kind is list else "an object", value)
        for k, v in enumerate(value) if kind is list else value.items():
            number(f"{key}[{k}]" if kind is list else f"{key}.{k}", v)

    dataset = section("dataset")
    classes = dataset.get("classes")
    if classes is not None and not isinstance(classes, list):
        bad("dataset.classes", "a list of class names", classes)
    for i, name in enumerate(classes or []):
        if not isinstance(name, (str, int)) or isinstance(name, bool):
            bad(f"dataset.classes[{i}]", "a class name", name)
    numbers("dataset.train_counts", dataset.get("train_counts"), dict)
    numbers("dataset.test_counts", dataset.get("test_counts"), dict)
    numbers("generation.counts", section("generation").get("counts"), dict)
    quality = section("quality")
    for key in ("judge_accuracy", "fid_judge", "precision", "recall", "memorization_rate"):
        number(f"quality.{key}", quality.get(key))
    numbers("quality.per_class_judge_accuracy", quality.get("per_class_judge_accuracy"), list)
    for arm, result in section("arms").items():
        if not isinstance(result, dict):
            bad(f"arms.{arm}", "an object", result)
        if not isinstance(result.get("macro_f1"), dict) or result["macro_f1"].get("mean") is None:
            bad(f"arms.{arm}.macro_f1", 'an object with a "mean"', result.get("macro_f1"))
        for metric in ("accuracy", "macro_f1", "balanced_accuracy", *GROUPS):
            cell = result.get(metric)
            if cell is not None and not isinstance(cell, dict):
                bad(f"arms.{arm}.{metric}", 'an object with "mean" and "std"', cell)
            for stat in ("mean", "std"):
                number(f"arms.{arm}.{metric}.{stat}", (cell or {}).get(stat))
        numbers(f"arms.{arm}.per_class_f1", result.get("per_class_f1"), list)
        if result.get("runs") is not None and not isinstance(result["runs"], list):
            bad(f"arms.{arm}.runs", "a list", result["runs"])
    lift = section("lift")
    for key in ("macro_f1", "accuracy", "vs_best_baseline_macro_f1"):
        number(f"lift.{key}", lift.get(key))
    paired = lift.get("paired")
    if paired is not None and not isinstance(paired, dict):
        bad("lift.paired", "an object", paired)
    for arm, versus in (paired or {}).items():
        for against, cell in (versus or {}).items() if isinstance(versus, dict) else [("", versus)]:
            key = f"lift.paired.{arm}.{against}".rstrip(".")
            if cell is None:
                continue
            if not isinstance(cell, dict):
                bad(key, "an object", cell)
            number(f"{key}.mean", cell.get("mean"))
            ci = cell.get("ci")
            if not (isinstance(ci, list) and len(ci) == 2):
                bad(f"{key}.ci", "a [low, high] pair", ci)
            numbers(f"{key}.ci", ci, list)
    for key in ("best_baseline", "best_synthetic_arm"):
        if lift.get(key) is not None and not isinstance(lift[key], str):
            bad(f"lift.{key}", "an arm name", lift[key])


def _read_assets(report_dir: Path, notes: list[str]) -> dict[str, np.ndarray]:
    path = report_dir / ASSETS
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (OSError, ValueError) as exc:
        notes.append(f"{ASSETS} could not be read ({exc.__class__.__name__}); images are left out.")
        return {}


def _read_loss(report_dir: Path, notes: list[str]) -> dict[str, tuple[list[float], list[float]]]:
    """``{column: (steps, values)}`` for every ``*_loss`` column of loss.csv, or {}."""
    path = report_dir / LOSS
    if not path.is_file():
        return {}
    curves: dict[str, tuple[list[float], list[float]]] = {}
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = [c for c in reader.fieldnames or [] if c.endswith("_loss")]
            if "step" not in (reader.fieldnames or []) or not columns:
                notes.append(f"{LOSS} has no step and *_loss columns; the loss curve is left out.")
                return {}
            curves = {c: ([], []) for c in columns}
            for row in reader:
                for column in columns:
                    if row.get(column) not in (None, "") and row.get("step") not in (None, ""):
                        curves[column][0].append(float(row["step"]))
                        curves[column][1].append(float(row[column]))
    except (OSError, ValueError, UnicodeDecodeError, csv.Error) as exc:
        notes.append(f"{LOSS} could not be read ({exc.__class__.__name__}); the loss curve is left out.")
        return {}
    return {column: curve for column, curve in curves.items() if curve[0]}


# -------------------------------------------------------------------------------------------- html


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _mean_std(cell: dict | None) -> str:
    if not isinstance(cell, dict):
        return "–"
    return f"{_fmt(cell.get('mean'))} ± {_fmt(cell.get('std'))}"


def _table(header: list[str], rows: list[list[str]], css: str = "") -> str:
    """An HTML table; cells are already escaped."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _verdict(diff: float | None, std_a: float, std_b: float) -> str:
    """Words for a difference of means, honest about seed-to-seed noise (metrics.json without intervals)."""
    if diff is None:
        return ""
    noise = max(std_a, std_b)
    if abs(diff) <= noise:
        return f"within one std across seeds ({noise:.3f}), i.e. no clear difference"
    return f"{'ahead' if diff > 0 else 'behind'} by more than one std across seeds ({noise:.3f})"


def _interval(paired: dict | None) -> str:
    """``+0.012 [-0.004, +0.028]``, the paired difference and its 95% interval, or "–"."""
    if not isinstance(paired, dict) or not _is_number(paired.get("mean")):
        return "–"
    low, high = paired["ci"]
    return f"{paired['mean']:+.3f} [{low:+.3f}, {high:+.3f}]"


def _paired_words(paired: dict | None) -> str | None:
    """"helps / hurts / no clear difference (95% interval over N seeds and the test images)", or None."""
    if not isinstance(paired, dict) or not _is_number(paired.get("mean")):
        return None
    return (f"<b>{html.escape(str(paired.get('verdict')))}</b> (95% interval over {paired.get('n_seeds')} seeds "
            "and the test images)")


def _headline(arms: dict, lift: dict) -> str:
    def stat(arm: str) -> tuple[float, float]:
        return arm_macro_f1(arms[arm])

    paired = lift.get("paired") if isinstance(lift.get("paired"), dict) else {}
    n_seeds = max((len(a.get("runs", [])) for a in arms.values()), default=0)
    seeds = f" over {n_seeds} seeds" if n_seeds else ""
    lines = []
    if "real" in arms and "real+synthetic" in arms:
        (m0, s0), (m1, s1) = stat("real"), stat("real+synthetic")
        versus = (paired.get("real+synthetic") or {}).get("vs_real")
        words = _paired_words(versus)
        lines.append(
            f"Macro-F1 <b>real {m0:.3f} ± {s0:.3f} → real+synthetic {m1:.3f} ± {s1:.3f}</b> "
            + (f"({_interval(versus)}): {words}." if words else f"({m1 - m0:+.3f}{seeds}): {_verdict(m1 - m0, s0, s1)}.")
        )
    best_syn, best_base = lift.get("best_synthetic_arm"), lift.get("best_baseline")
    if best_syn in arms and best_base in arms:
        (m1, s1), (m0, s0) = stat(best_syn), stat(best_base)
        versus = (paired.get(best_syn) or {}).get("vs_best_baseline")
        words = _paired_words(versus)
        lines.append(
            f"Best arm with synthetic data <b>{html.escape(best_syn)} {m1:.3f} ± {s1:.3f}</b> vs best without "
            f"<b>{html.escape(best_base)} {m0:.3f} ± {s0:.3f}</b> "
            + (f"({_interval(versus)}): {words}." if words else f"({m1 - m0:+.3f}): {_verdict(m1 - m0, s0, s1)}.")
        )
    return "".join(f'<p class="headline">{line}</p>' for line in lines) or "<p>No arms to compare.</p>"



def _arms_table(arms: dict, lift: dict) -> str:
    paired = lift.get("paired") if isinstance(lift.get("paired"), dict) else {}
    groups = [g for g in GROUPS if any(isinstance(result.get(g), dict) for result in arms.values())]
    rows = []
    for arm, result in arms.items():
        tag = " (best baseline)" if arm == lift.get("best_baseline") else ""
        tag += " (best synthetic arm)" if arm == lift.get("best_synthetic_arm") else ""
        row = [
            html.escape(arm) + f"<small>{tag}</small>",
            _mean_std(result.get("accuracy")),
            _mean_std(result.get("macro_f1")),
            _mean_std(result.get("balanced_accuracy")),
            *(_mean_std(result.get(g)) for g in groups),
            str(len(result.get("runs", []))) if result.get("runs") else "–",
        ]
        if paired:
            row += [_interval((paired.get(arm) or {}).get(key)) for key in ("vs_real", "vs_best_baseline")]
        rows.append(row)
    header = ["arm", "accuracy", "macro-F1", "balanced accuracy", *(f"{g}-shot accuracy" for g in groups), "seeds"]
    if paired:
        header += ["macro-F1 vs real [95% CI]", "vs best baseline [95% CI]"]
    return _table(header, rows, css="arms")


def _counts_table(classes: list[str], dataset: dict, generation: dict) -> str:
    train, test, synth = (
        d or {} for d in (dataset.get("train_counts"), dataset.get("test_counts"), generation.get("counts"))
    )
    names = classes or sorted(set(train) | set(test) | set(synth))
    rows = [[html.escape(n), _fmt(train.get(n)), _fmt(synth.get(n)), _fmt(test.get(n))] for n in names]
    return _table(["class", "real train", "synthetic", "test"], rows)


def _key_values(mapping: dict) -> str:
    rows = [[html.escape(str(k)), _fmt(v)] for k, v in mapping.items() if not isinstance(v, (dict, list))]
    return _table(["", "value"], rows)


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.8em; text-align: left; }
td small { color: #2e86de; }
.headline { font-size: 1.15em; }
img { max-width: 100%; image-rendering: pixelated; display: block; margin: 0.5em 0 1.5em; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
.note { color: #a65; }
"""


def write_report_inputs(report_dir: Path, recipe: dict, metrics: dict, assets: dict[str, np.ndarray],
                        loss_csv: str) -> None:
    """Write what ``build_report`` draws: the image assets, the loss log, the recipe, then ``metrics.json``
    last, after the files it describes (the evaluate stage's own marker comes after the page)."""
    import io

    import yaml

    buf = io.BytesIO()
    np.savez_compressed(buf, **assets)
    atomic_write_bytes(report_dir / ASSETS, buf.getvalue())
    atomic_write_text(report_dir / LOSS, loss_csv)
    atomic_write_text(report_dir / RECIPE, yaml.safe_dump(recipe, sort_keys=False))
    atomic_write_text(report_dir / METRICS, json.dumps(metrics, indent=2))


def build_report(report_dir: Path) -> Path:
    """Render the plots and ``index.html`` from the files in ``report_dir`` (see the module docstring).

    Returns ``report_dir / "index.html"``. Missing optional inputs leave their sections out.
    """
    report_dir = Path(report_dir)
    metrics = _read_metrics(report_dir)
    notes: list[str] = []
    assets = _read_assets(report_dir, notes)
    curves = _read_loss(report_dir, notes)
    recipe_path = report_dir / RECIPE
    recipe = recipe_path.read_text(encoding="utf-8", errors="replace") if recipe_path.is_file() else None
    classes = [str(c) for c in (metrics.get("dataset") or {}).get("classes") or []]

    drawn = _draw_figures(report_dir, metrics, classes, assets, curves)
    sections = ["<h1>synthaug report</h1>", *(f'<p class="note">{html.escape(n)}</p>' for n in notes)]
    sections += _sections(metrics, classes, drawn)
    if recipe is not None:
        sections += ["<h2>Recipe</h2>", f"<pre>{html.escape(recipe)}</pre>"]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>synthaug report</title>'
        f"<style>{STYLE}</style></head><body>\n" + "\n".join(s for s in sections if s) + "\n</body></html>\n"
    )
    return atomic_write_text(report_dir / INDEX, page)


def _draw_figures(report_dir: Path, metrics: dict, classes: list[str], assets: dict[str, np.ndarray],
                  curves: dict[str, tuple[list[float], list[float]]]) -> set[str]:
    """Write each figure whose inputs exist into ``report_dir``; returns the names of those written."""
    dataset, generation = metrics.get("dataset") or {}, metrics.get("generation") or {}
    arms = metrics.get("arms") or {}
    figures = {
        "arms.png": plot_arms(arms) if arms else None,
        "per_class_f1.png": plot_per_class_f1(arms, classes) if arms else None,
        "class_counts.png": plot_class_counts(
            classes, dataset.get("train_counts") or {}, generation.get("counts") or {}
        ),
        "samples.png": plot_samples(assets, classes),
        "memorization.png": plot_memorization(assets),
        "diffusion.png": plot_diffusion(assets, classes),
        "loss.png": plot_loss(curves),
    }
    for name, png in figures.items():
        if png is not None:
            atomic_write_bytes(report_dir / name, png)
    return {name for name, png in figures.items() if png is not None}


def _sections(metrics: dict, classes: list[str], drawn: set[str]) -> list[str]:
    """The page's HTML sections from the headline to the generation settings, each only when its inputs
    exist; ``drawn`` names the figures that were written."""
    dataset, generation = metrics.get("dataset") or {}, metrics.get("generation") or {}
    quality, arms, lift = metrics.get("quality"), metrics.get("arms") or {}, metrics.get("lift") or {}

    def img(name: str, alt: str) -> str:
        return f'<img src="{name}" alt="{html.escape(alt)}">' if name in drawn else ""

    sections = [_headline(arms, lift)]
    if arms:
        sections += ["<h2>Downstream classifiers (test split)</h2>", _arms_table(arms, lift)]
        sections += [img("arms.png", "macro-F1 per arm"), img("per_class_f1.png", "F1 per class and arm")]
    if classes or dataset.get("train_counts"):
        sections += [
            "<h2>Data</h2>",
            _counts_table(classes, dataset, generation),
            img("class_counts.png", "class counts"),
        ]
    if "samples.png" in drawn:
        sections += ["<h2>Real and synthetic images</h2>", img("samples.png", "real vs synthetic images per class")]
    if quality:
        shown = {k: v for k, v in quality.items() if k != "per_class_judge_accuracy"}
        sections += ["<h2>Sample quality</h2>", _key_values(shown)]
        per_class = quality.get("per_class_judge_accuracy")
        if per_class:
            rows = [[html.escape(class_name(classes, c)), _fmt(v)] for c, v in enumerate(per_class)]
            sections.append(_table(["class", "judge accuracy"], rows))
    if "memorization.png" in drawn:
        sections += ["<h3>Memorization check</h3>", img("memorization.png", "closest synthetic-training pairs")]
    if "diffusion.png" in drawn or "loss.png" in drawn:
        sections += [
            "<h2>Diffusion model</h2>",
            img("diffusion.png", "forward and reverse process"),
            img("loss.png", "training loss"),
        ]
    if generation:
        sections += ["<h2>Generation</h2>", _key_values(generation)]
    return sections
