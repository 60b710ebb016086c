"""Sample grids of images as PNG files.

Images in the model's range [lo, hi] (the data pipeline's [-1, 1]) are mapped back to 8-bit
pixels by the inverse of the pipeline's scaling, k = round((x - lo) / (hi - lo) * 255),
clipped to [0, 255] (samples can leave the data range), and tiled row by row into one image
with a one-pixel border between tiles.
"""
from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from genjax import workdir as workdir_lib


def to_uint8(images: np.ndarray, data_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """[n, H, W, C] floats in `data_range` -> uint8 pixels (NaNs become 0)."""
    lo, hi = data_range
    pixels = np.round((np.asarray(images, np.float64) - lo) / (hi - lo) * 255.0)
    return np.clip(np.nan_to_num(pixels, nan=0.0), 0, 255).astype(np.uint8)


def tile(pixels: np.ndarray, columns: int | None = None, border: int = 1) -> np.ndarray:
    """[n, H, W, C] uint8 -> one [rows (H + b) + b, columns (W + b) + b, C] image, tiles in
    row-major order on a black background (`columns` defaults to ceil(sqrt(n)))."""
    if pixels.ndim != 4:
        raise ValueError(f"a sample grid needs images [n, H, W, C], got shape {pixels.shape}")
    n, height, width, channels = pixels.shape
    columns = columns or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / columns))
    grid = np.zeros((rows * (height + border) + border, columns * (width + border) + border, channels), np.uint8)
    for index in range(n):
        row, column = divmod(index, columns)
        top, left = border + row * (height + border), border + column * (width + border)
        grid[top:top + height, left:left + width] = pixels[index]
    return grid


def class_rows(images: np.ndarray, labels: np.ndarray, max_columns: int = 16) -> tuple[np.ndarray, int]:
    """A class-conditional set arranged for `tile`: row k holds the first images of the k-th
    smallest label present (up to `max_columns` per row, as many as the rarest class has), so the
    grid has one row per class. Returns (images in row-major order, columns)."""
    labels = np.asarray(labels)
    if labels.shape != (len(images),):
        raise ValueError(f"labels must be [n] = [{len(images)}], got shape {labels.shape}")
    classes = np.unique(labels)
    columns = min(max_columns, min(int((labels == c).sum()) for c in classes))
    order = np.concatenate([np.flatnonzero(labels == c)[:columns] for c in classes])
    return np.asarray(images)[order], columns


def png_bytes(images: np.ndarray, columns: int | None = None, scale: int = 1,
              data_range: tuple[float, float] = (-1.0, 1.0)) -> bytes:
    """The PNG of the grid of `images` (floats in `data_range`), each pixel drawn as a
    scale x scale block (8x8 digits are unreadable at scale 1)."""
    grid = tile(to_uint8(images, data_range), columns)
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    picture = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def save_image_grid(path, images: np.ndarray, columns: int | None = None, scale: int = 1,
                    data_range: tuple[float, float] = (-1.0, 1.0)) -> None:
    """Writes the grid PNG to `path` (a local path or a URL, through genjax.workdir)."""
    workdir_lib.write_bytes(workdir_lib.resolve(path), png_bytes(images, columns, scale, data_range))
