"""The evaluation report: PNG plots and one self-contained ``index.html``, from files in the report folder.

Inputs (all in ``report_dir``; only ``metrics.json`` is required, every other file and every key of
``assets.npz`` may be missing, and the page then leaves that section out):

``metrics.json``
    DESIGN §5 shape: ``dataset`` (classes, train/test counts), ``generation`` (any subset of its keys),
    ``quality`` (may be null), ``arms`` ({arm: {accuracy, macro_f1, balanced_accuracy: {mean, std},
    per_class_f1: [...], runs: [per-seed dicts, optional]}}), ``lift``.
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
written: escaped in the HTML, and with mathtext off in the plots.
"""

from __future__ import annotations

import csv
import functools
import html
import io
import json
import math
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from synthaug.errors import SynthaugError
from synthaug.io import atomic_write_bytes, atomic_write_text

METRICS, RECIPE, ASSETS, LOSS, INDEX = "metrics.json", "recipe.yaml", "assets.npz", "loss.csv", "index.html"
PER_CLASS_IN_GRID = 8  # examples per class and kind in the real-vs-synthetic grid
TILE_PIXELS = 48  # small images are upscaled (nearest neighbour) to about this size
BASELINE_COLOUR, SYNTHETIC_COLOUR = "#7f8c8d", "#2e86de"


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
        for metric in ("accuracy", "macro_f1", "balanced_accuracy"):
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


def _images(assets: dict[str, np.ndarray], key: str, ndim: int) -> np.ndarray | None:
    """``assets[key]`` as uint8 with a channel axis (… H, W, C), or None when missing or malformed."""
    arr = assets.get(key)
    if arr is None or arr.size == 0 or arr.ndim not in (ndim - 1, ndim):
        return None
    if arr.ndim == ndim - 1:  # no channel axis: grey
        arr = arr[..., None]
    if arr.shape[-1] not in (1, 3):
        return None
    return np.clip(arr, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------- drawing


def _literal_text(plot):
    """Draw ``plot``'s figure with mathtext off: class names, arm names and loss columns come from the
    data, and a name like ``$HOME_$USER`` must show as written, not fail to parse as TeX."""

    @functools.wraps(plot)
    def drawn(*args, **kwargs):
        with matplotlib.rc_context({"text.parse_math": False}):
            return plot(*args, **kwargs)

    return drawn


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _rgb_tile(image: np.ndarray, scale: int) -> np.ndarray:
    """uint8 (H, W, C) → uint8 (H*scale, W*scale, 3), nearest-neighbour upscaled."""
    rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
    return rgb.repeat(scale, axis=0).repeat(scale, axis=1)


def _mosaic(rows: list[list[np.ndarray]], pad: int = 2) -> tuple[np.ndarray, list[float]]:
    """Rows of uint8 (H, W, C) images (rows may be ragged or empty) → one RGB image on white, and the
    y pixel centre of each row (for labels). All images share one size."""
    first = next(image for row in rows for image in row)
    h, w = first.shape[:2]
    scale = max(1, TILE_PIXELS // max(h, w))
    cell_h, cell_w = h * scale + pad, w * scale + pad
    cols = max(1, max(len(row) for row in rows))
    canvas = np.full((len(rows) * cell_h + pad, cols * cell_w + pad, 3), 255, dtype=np.uint8)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            y, x = pad + r * cell_h, pad + c * cell_w
            canvas[y : y + h * scale, x : x + w * scale] = _rgb_tile(image, scale)
    return canvas, [pad + r * cell_h + h * scale / 2 for r in range(len(rows))]


def _show_mosaic(ax, mosaic: np.ndarray, centres: list[float], labels: list[str], title: str) -> None:
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks(centres, labels)
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)


def _figure_for(mosaic_width: int, mosaic_height: int, panels: int = 1, vertical: bool = False) -> Figure:
    """A figure that shows mosaics at about one screen pixel per image pixel."""
    width = mosaic_width / 100 * (1 if vertical else panels) + 1.2
    height = mosaic_height / 100 * (panels if vertical else 1) + 0.8
    return Figure(figsize=(max(width, 3.0), max(height, 2.0)))


def _class_name(classes: list[str], label: int) -> str:
    return classes[label] if 0 <= label < len(classes) else str(label)


def _macro_f1(result: dict) -> tuple[float, float]:
    """(mean, std) of an arm's macro-F1; a missing std counts as 0."""
    cell = result["macro_f1"]
    return float(cell["mean"]), float(cell.get("std") or 0.0)


@_literal_text
def plot_arms(arms: dict) -> bytes:
    """Horizontal bars: macro-F1 mean ± std over seeds per arm; arms with synthetic data in blue."""
    names = list(arms)
    means, stds = zip(*(_macro_f1(arms[a]) for a in names), strict=True)
    fig = Figure(figsize=(7.5, 0.45 * len(names) + 1.2))
    ax = fig.add_subplot()
    colours = [SYNTHETIC_COLOUR if "synthetic" in a else BASELINE_COLOUR for a in names]
    ax.barh(names, means, xerr=stds, color=colours, capsize=4)
    for y, (mean, std) in enumerate(zip(means, stds, strict=True)):
        ax.text(min(mean + std, 1.0) + 0.01, y, f"{mean:.3f} ± {std:.3f}", va="center", fontsize=9)
    ax.set_xlim(0, 1.2)
    ax.set_xticks(np.linspace(0, 1, 6))
    ax.invert_yaxis()
    ax.set_xlabel("test macro-F1 (mean ± std over seeds)")
    return _png(fig)


@_literal_text
def plot_per_class_f1(arms: dict, classes: list[str]) -> bytes | None:
    """Heatmap of test F1 per arm (rows) and class (columns), means over seeds."""
    rows = {a: r["per_class_f1"] for a, r in arms.items() if r.get("per_class_f1")}
    if not rows:
        return None
    k = max(len(v) for v in rows.values())
    values = np.full((len(rows), k), np.nan)
    for i, v in enumerate(rows.values()):
        values[i, : len(v)] = [np.nan if x is None else x for x in v]
    fig = Figure(figsize=(max(5.0, 0.55 * k + 3), 0.45 * len(rows) + 1.5))
    ax = fig.add_subplot()
    im = ax.imshow(values, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_yticks(range(len(rows)), list(rows))
    ax.set_xticks(range(k), [_class_name(classes, c) for c in range(k)], rotation=45 if k > 12 else 0)
    ax.set_xlabel("class")
    if k <= 20:
        for (i, j), v in np.ndenumerate(values):
            if not np.isnan(v):
                ax.text(
                    j,
                    i,
                    f"{v:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if v < 0.6 else "black",
                )
    fig.colorbar(im, ax=ax, label="test F1")
    return _png(fig)


@_literal_text
def plot_class_counts(classes: list[str], real: dict, synthetic: dict) -> bytes | None:
    """Grouped bars: real training images and synthetic images per class."""
    if not real and not synthetic:
        return None
    names = classes or sorted(set(real) | set(synthetic))
    x = np.arange(len(names))
    fig = Figure(figsize=(max(5.0, 0.5 * len(names) + 2), 3.5))
    ax = fig.add_subplot()
    ax.bar(x - 0.2, [real.get(n, 0) for n in names], 0.4, label="real (train)", color=BASELINE_COLOUR)
    ax.bar(x + 0.2, [synthetic.get(n, 0) for n in names], 0.4, label="synthetic", color=SYNTHETIC_COLOUR)
    ax.set_xticks(x, names, rotation=45 if len(names) > 12 else 0)
    ax.set_ylabel("images")
    ax.legend()
    return _png(fig)


@_literal_text
def plot_samples(assets: dict[str, np.ndarray], classes: list[str]) -> bytes | None:
    """Per class (rows): real examples on the left panel, synthetic on the right."""
    sets = {}
    for kind in ("real", "synth"):
        x, y = _images(assets, f"{kind}_x", 4), assets.get(f"{kind}_y")
        if x is not None and y is not None and y.ndim == 1 and len(y) == len(x):
            sets[kind] = (x, np.asarray(y).astype(np.int64))
    if not sets:
        return None
    labels = sorted(set().union(*(np.unique(y).tolist() for _, y in sets.values())))
    panels = []
    for kind, (x, y) in sets.items():
        rows = [list(x[y == label][:PER_CLASS_IN_GRID]) for label in labels]
        panels.append((kind, *_mosaic(rows)))
    fig = _figure_for(
        max(m.shape[1] for _, m, _ in panels), max(m.shape[0] for _, m, _ in panels), len(panels)
    )
    for i, (kind, mosaic, centres) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        title = "real" if kind == "real" else "synthetic"
        _show_mosaic(ax, mosaic, centres, [_class_name(classes, label) for label in labels], title)
    return _png(fig)


@_literal_text
def plot_diffusion(assets: dict[str, np.ndarray], classes: list[str]) -> bytes | None:
    """Forward (noising) and reverse (denoising) strips, one row per class, time left to right."""
    strips = [(key, _images(assets, key, 5)) for key in ("forward", "reverse")]
    strips = [(key, s) for key, s in strips if s is not None]
    if not strips:
        return None
    panels = [(key, *_mosaic([list(row) for row in s])) for key, s in strips]
    fig = _figure_for(
        max(m.shape[1] for _, m, _ in panels), max(m.shape[0] for _, m, _ in panels), len(panels), True
    )
    titles = {"forward": "forward process: image → noise", "reverse": "reverse process: noise → image"}
    for i, (key, mosaic, centres) in enumerate(panels):
        ax = fig.add_subplot(len(panels), 1, i + 1)
        _show_mosaic(ax, mosaic, centres, [_class_name(classes, k) for k in range(len(centres))], titles[key])
    return _png(fig)


@_literal_text
def plot_loss(curves: dict[str, tuple[list[float], list[float]]]) -> bytes | None:
    """Every ``*_loss`` column of loss.csv against the step."""
    if not curves:
        return None
    fig = Figure(figsize=(7, 3.5))
    ax = fig.add_subplot()
    for column, (steps, values) in curves.items():
        ax.plot(steps, values, label=column, linewidth=1)
    if all(v > 0 for _, values in curves.values() for v in values):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    return _png(fig)


@_literal_text
def plot_memorization(assets: dict[str, np.ndarray]) -> bytes | None:
    """Synthetic images closest to a training image (top) above that training image (bottom)."""
    synthetic, train = _images(assets, "mem_synthetic", 4), _images(assets, "mem_train", 4)
    ratio = assets.get("mem_ratio")
    if synthetic is None or train is None or len(synthetic) != len(train):
        return None
    n = len(synthetic)
    mosaic, centres = _mosaic([list(synthetic), list(train)])
    fig = _figure_for(mosaic.shape[1], mosaic.shape[0])
    ax = fig.add_subplot()
    _show_mosaic(ax, mosaic, centres, ["synthetic", "nearest train"], "closest synthetic-to-training pairs")
    if ratio is not None and len(ratio) == n:
        cell_w = (mosaic.shape[1] - 2) / n
        ax.set_xticks([2 + cell_w * (i + 0.5) for i in range(n)], [f"{float(r):.2f}" for r in ratio])
        ax.set_xlabel("nearest / second-nearest distance ratio (small = copy)")
    return _png(fig)


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
    """Words for a difference of means, honest about seed-to-seed noise."""
    if diff is None:
        return ""
    noise = max(std_a, std_b)
    if abs(diff) <= noise:
        return f"within one std across seeds ({noise:.3f}), i.e. no clear difference"
    return f"{'ahead' if diff > 0 else 'behind'} by more than one std across seeds ({noise:.3f})"


def _headline(arms: dict, lift: dict) -> str:
    def stat(arm: str) -> tuple[float, float]:
        return _macro_f1(arms[arm])

    n_seeds = max((len(a.get("runs", [])) for a in arms.values()), default=0)
    seeds = f" over {n_seeds} seeds" if n_seeds else ""
    lines = []
    if "real" in arms and "real+synthetic" in arms:
        (m0, s0), (m1, s1) = stat("real"), stat("real+synthetic")
        lines.append(
            f"Macro-F1 <b>real {m0:.3f} ± {s0:.3f} → real+synthetic {m1:.3f} ± {s1:.3f}</b> "
            f"({m1 - m0:+.3f}{seeds}): {_verdict(m1 - m0, s0, s1)}."
        )
    best_syn, best_base = lift.get("best_synthetic_arm"), lift.get("best_baseline")
    if best_syn in arms and best_base in arms:
        (m1, s1), (m0, s0) = stat(best_syn), stat(best_base)
        lines.append(
            f"Best arm with synthetic data <b>{html.escape(best_syn)} {m1:.3f} ± {s1:.3f}</b> vs best without "
            f"<b>{html.escape(best_base)} {m0:.3f} ± {s0:.3f}</b> ({m1 - m0:+.3f}): {_verdict(m1 - m0, s0, s1)}."
        )
    return "".join(f'<p class="headline">{line}</p>' for line in lines) or "<p>No arms to compare.</p>"


def _arms_table(arms: dict, lift: dict) -> str:
    rows = []
    for arm, result in arms.items():
        tag = " (best baseline)" if arm == lift.get("best_baseline") else ""
        tag += " (best synthetic arm)" if arm == lift.get("best_synthetic_arm") else ""
        rows.append(
            [
                html.escape(arm) + f"<small>{tag}</small>",
                _mean_std(result.get("accuracy")),
                _mean_std(result.get("macro_f1")),
                _mean_std(result.get("balanced_accuracy")),
                str(len(result.get("runs", []))) if result.get("runs") else "–",
            ]
        )
    header = ["arm", "accuracy", "macro-F1", "balanced accuracy", "seeds"]
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

    dataset = metrics.get("dataset") or {}
    generation = metrics.get("generation") or {}
    quality = metrics.get("quality")
    arms = metrics.get("arms") or {}
    lift = metrics.get("lift") or {}
    classes = [str(c) for c in dataset.get("classes") or []]

    plots = {
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
    for name, png in plots.items():
        if png is not None:
            atomic_write_bytes(report_dir / name, png)

    def img(name: str, alt: str) -> str:
        return f'<img src="{name}" alt="{html.escape(alt)}">' if plots.get(name) is not None else ""

    sections = ["<h1>synthaug report</h1>"]
    sections += [f'<p class="note">{html.escape(n)}</p>' for n in notes]
    sections.append(_headline(arms, lift))
    if arms:
        sections += ["<h2>Downstream classifiers (test split)</h2>", _arms_table(arms, lift)]
        sections += [img("arms.png", "macro-F1 per arm"), img("per_class_f1.png", "F1 per class and arm")]
    if classes or dataset.get("train_counts"):
        sections += [
            "<h2>Data</h2>",
            _counts_table(classes, dataset, generation),
            img("class_counts.png", "class counts"),
        ]
    if plots["samples.png"]:
        sections += [
            "<h2>Real and synthetic images</h2>",
            img("samples.png", "real vs synthetic images per class"),
        ]
    if quality:
        shown = {k: v for k, v in quality.items() if k != "per_class_judge_accuracy"}
        sections += ["<h2>Sample quality</h2>", _key_values(shown)]
        per_class = quality.get("per_class_judge_accuracy")
        if per_class:
            rows = [[html.escape(_class_name(classes, c)), _fmt(v)] for c, v in enumerate(per_class)]
            sections.append(_table(["class", "judge accuracy"], rows))
    if plots["memorization.png"]:
        sections += [
            "<h3>Memorization check</h3>",
            img("memorization.png", "closest synthetic-training pairs"),
        ]
    if plots["diffusion.png"] or plots["loss.png"]:
        sections += [
            "<h2>Diffusion model</h2>",
            img("diffusion.png", "forward and reverse process"),
            img("loss.png", "training loss"),
        ]
    if generation:
        sections += ["<h2>Generation</h2>", _key_values(generation)]
    if recipe is not None:
        sections += ["<h2>Recipe</h2>", f"<pre>{html.escape(recipe)}</pre>"]

    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>synthaug report</title>'
        f"<style>{STYLE}</style></head><body>\n" + "\n".join(s for s in sections if s) + "\n</body></html>\n"
    )
    return atomic_write_text(report_dir / INDEX, page)
