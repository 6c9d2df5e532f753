"""The report's figures, each drawn to PNG bytes from ``metrics.json`` values and ``assets.npz`` arrays
(shapes in ``report``'s docstring); a figure whose inputs are missing or malformed is None, not an error.

Text from the data (class, arm and column names) is drawn as written: mathtext is off (``_literal_text``).
Figures are made without pyplot, so drawing never opens a window or touches global figure state.
"""

from __future__ import annotations

import functools
import io

import matplotlib
import numpy as np
from matplotlib.figure import Figure

PER_CLASS_IN_GRID = 8  # examples per class and kind in the real-vs-synthetic grid
TILE_PIXELS = 48  # small images are upscaled (nearest neighbour) to about this size
BASELINE_COLOUR, SYNTHETIC_COLOUR = "#7f8c8d", "#2e86de"


# ----------------------------------------------------------------------------------------- helpers


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


def _mosaic(rows: list[list[np.ndarray]], pad: int = 2) -> tuple[np.ndarray, list[float]]:
    """``images.mosaic`` with small images upscaled to about ``TILE_PIXELS``."""
    from synthaug.images import mosaic

    first = next(image for row in rows for image in row)
    return mosaic(rows, max(1, TILE_PIXELS // max(first.shape[:2])), pad)


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


def class_name(classes: list[str], label: int) -> str:
    return classes[label] if 0 <= label < len(classes) else str(label)


def arm_macro_f1(result: dict) -> tuple[float, float]:
    """(mean, std) of an arm's macro-F1; a missing std counts as 0."""
    cell = result["macro_f1"]
    return float(cell["mean"]), float(cell.get("std") or 0.0)


# ----------------------------------------------------------------------------------------- figures


@_literal_text
def plot_arms(arms: dict) -> bytes:
    """Horizontal bars: macro-F1 mean ± std over seeds per arm; arms with synthetic data in blue."""
    names = list(arms)
    means, stds = zip(*(arm_macro_f1(arms[a]) for a in names), strict=True)
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
    ax.set_xticks(range(k), [class_name(classes, c) for c in range(k)], rotation=45 if k > 12 else 0)
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
        _show_mosaic(ax, mosaic, centres, [class_name(classes, label) for label in labels], title)
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
        _show_mosaic(ax, mosaic, centres, [class_name(classes, k) for k in range(len(centres))], titles[key])
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
