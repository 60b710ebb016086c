"""Figures of 2-D point clouds: model samples next to the data, and a gallery of data sets.

Every panel of one figure shares the same axis limits and histogram bins, so densities can
be compared by eye. Inputs may be numpy or jax arrays of shape [N, 2]; non-finite points are
dropped (and counted in the panel title). Files are small PNGs (about 100 dpi), written
through `genjax.workdir` (a local path or a gs:// URL).
"""
from __future__ import annotations

import io
import math
import os
from typing import Mapping, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import PowerNorm  # noqa: E402

DEFAULT_BINS = 100
DEFAULT_SCATTER_POINTS = 2000
_PANEL_INCHES = 2.6
_DPI = 100


def _finite_points(points) -> tuple[np.ndarray, int]:
    """The finite rows of points as a float64 [N, 2] array, and how many rows were dropped."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    finite = np.all(np.isfinite(points), axis=1)
    return points[finite], int(np.sum(~finite))


Limits = tuple[tuple[float, float], tuple[float, float]]  # ((x_low, x_high), (y_low, y_high))


def _shared_limits(point_sets: Sequence[np.ndarray], margin: float = 0.1) -> Limits:
    """Square axis limits (equal spans, so shapes are not distorted) covering the 0.1-99.9
    percentile range of the given sets, widened by a margin on each side."""
    non_empty = [points for points in point_sets if len(points)]
    stacked = np.concatenate(non_empty, axis=0) if non_empty else np.zeros((1, 2))
    low = np.percentile(stacked, 0.1, axis=0)
    high = np.percentile(stacked, 99.9, axis=0)
    centre = 0.5 * (low + high)
    half_span = max(0.5 * float(np.max(high - low)), 1e-3) * (1.0 + 2.0 * margin)
    return (
        (float(centre[0] - half_span), float(centre[0] + half_span)),
        (float(centre[1] - half_span), float(centre[1] + half_span)),
    )


def _draw_histogram(axis, points: np.ndarray, limits, bins: int, title: str) -> None:
    """A 2-D histogram of points over limits, colour on a square-root scale so that thin
    tails stay visible."""
    (x_low, x_high), (y_low, y_high) = limits
    counts, _, _ = np.histogram2d(
        points[:, 0], points[:, 1], bins=bins, range=[[x_low, x_high], [y_low, y_high]]
    )
    axis.imshow(
        counts.T,
        origin="lower",
        extent=(x_low, x_high, y_low, y_high),
        aspect="equal",
        cmap="magma",
        norm=PowerNorm(gamma=0.5, vmin=0.0, vmax=max(float(counts.max()), 1.0)),
        interpolation="nearest",
    )
    axis.set_title(title, fontsize=9)
    axis.tick_params(labelsize=7)


def _draw_scatter(axis, points: np.ndarray, limits, max_points: int) -> None:
    """Up to max_points of the points (an even stride through the set), as small dots."""
    stride = max(1, math.ceil(len(points) / max_points))
    shown = points[::stride]
    axis.scatter(shown[:, 0], shown[:, 1], s=1.0, alpha=0.4, linewidths=0, color="tab:blue", rasterized=True)
    axis.set_xlim(*limits[0])
    axis.set_ylim(*limits[1])
    axis.set_aspect("equal")
    axis.tick_params(labelsize=7)


def _panel_title(name: str, points: np.ndarray, dropped: int, limits) -> str:
    (x_low, x_high), (y_low, y_high) = limits
    inside = (points[:, 0] >= x_low) & (points[:, 0] <= x_high)
    inside &= (points[:, 1] >= y_low) & (points[:, 1] <= y_high)
    notes = []
    outside = len(points) - int(np.sum(inside))
    if outside:
        notes.append(f"{outside} outside")
    if dropped:
        notes.append(f"{dropped} non-finite")
    return f"{name} (n={len(points) + dropped})" + (f"\n{', '.join(notes)}" if notes else "")


def save_samples_figure(
    path: str | os.PathLike,
    data,
    samples,
    title: Optional[str] = None,
    extra_panels: Optional[Mapping[str, object]] = None,
    bins: int = DEFAULT_BINS,
    max_scatter_points: int = DEFAULT_SCATTER_POINTS,
) -> str:
    """Write a PNG comparing data [N, 2] with samples [M, 2] (and any extra_panels, e.g.
    {"prior": prior_samples}): a top row of 2-D histograms and a bottom row of scatter plots,
    one column per set, all over the data's axis limits. Returns the path written."""
    panels = [("data", data), ("samples", samples)] + list((extra_panels or {}).items())
    cleaned = [(name, *_finite_points(points)) for name, points in panels]
    limits = _shared_limits([cleaned[0][1]])
    columns = len(cleaned)
    figure, axes = plt.subplots(
        2,
        columns,
        figsize=(_PANEL_INCHES * columns, 2 * _PANEL_INCHES + 0.4),
        squeeze=False,
        constrained_layout=True,
    )
    for column, (name, points, dropped) in enumerate(cleaned):
        _draw_histogram(axes[0, column], points, limits, bins, _panel_title(name, points, dropped, limits))
        _draw_scatter(axes[1, column], points, limits, max_scatter_points)
    if title:
        figure.suptitle(title, fontsize=10)
    return _save(figure, path)


def save_grid_of_datasets(
    path: str | os.PathLike, arrays_by_name: Mapping[str, object], bins: int = DEFAULT_BINS, columns: int = 4
) -> str:
    """Write a PNG with one 2-D histogram per named point set [N, 2], all over one shared set
    of axis limits (so relative scales show). Returns the path written."""
    cleaned = [(name, *_finite_points(points)) for name, points in arrays_by_name.items()]
    limits = _shared_limits([points for _, points, _ in cleaned])
    columns = max(1, min(columns, len(cleaned)))
    rows = math.ceil(len(cleaned) / columns)
    figure, axes = plt.subplots(
        rows,
        columns,
        figsize=(_PANEL_INCHES * columns, _PANEL_INCHES * rows),
        squeeze=False,
        constrained_layout=True,
    )
    for index, axis in enumerate(axes.flat):
        if index < len(cleaned):
            name, points, dropped = cleaned[index]
            _draw_histogram(axis, points, limits, bins, _panel_title(name, points, dropped, limits))
        else:
            axis.set_axis_off()
    return _save(figure, path)


def _save(figure, path: str | os.PathLike) -> str:
    from genjax import workdir  # here: plots stay importable without the run machinery

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI)
    plt.close(figure)
    workdir.write_bytes(workdir.resolve(path), buffer.getvalue())
    return os.fspath(path)
