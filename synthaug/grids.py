"""Image grids as PNG (Pillow only), for training progress and dataset previews."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from synthaug.io import atomic_write_bytes


def grid_image(images: np.ndarray, row_labels: Sequence[str] | None = None, scale: int | None = None,
               pad: int = 2) -> Image.Image:
    """uint8 (R, C, H, W, ch) → one RGB image, rows labelled on the left, upscaled nearest-neighbour."""
    rows, cols, h, w, ch = images.shape
    scale = scale or max(1, 64 // max(h, w))
    cell_h, cell_w = h * scale + pad, w * scale + pad
    label_w = 8 * max((len(s) for s in row_labels), default=0) + 6 if row_labels else 0
    canvas = Image.new("RGB", (label_w + cols * cell_w + pad, rows * cell_h + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for r in range(rows):
        if row_labels:
            draw.text((3, r * cell_h + pad + cell_h // 2 - 6), str(row_labels[r])[:24], fill="black")
        for c in range(cols):
            arr = images[r, c]
            tile = Image.fromarray(arr[..., 0], "L").convert("RGB") if ch == 1 else Image.fromarray(arr, "RGB")
            tile = tile.resize((w * scale, h * scale), Image.Resampling.NEAREST)
            canvas.paste(tile, (label_w + pad + c * cell_w, pad + r * cell_h))
    return canvas


def save_grid(images: np.ndarray, path: Path, row_labels: Sequence[str] | None = None, scale: int | None = None) -> Path:
    import io

    buf = io.BytesIO()
    grid_image(images, row_labels, scale).save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())
