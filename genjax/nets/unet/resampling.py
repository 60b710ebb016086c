"""Resampling of NHWC images by a factor of 2 with a separable FIR filter.

The 2-D filter is the outer product of a 1-D filter f with itself, normalised to sum to 1
(StyleGAN2's upfirdn2d, used by score_sde's NCSN++ and EDM's SongUNet):

    downsample(x, f)[i, j] = sum_{a, b} k[a, b] x_pad[2 i + a, 2 j + b],        k = f f^T / (sum f)^2,
    upsample(x, f)         = (zero-insert x by 2) convolved with 4 k,

so a constant image stays constant away from the borders (pixels outside are zero).
f = (1, 1) is 2x2 average pooling and nearest-neighbour upsampling; f = (1, 3, 3, 1) is
the FIR filter of NCSN++ (Zhang 2019, "Making convolutional networks shift-invariant again").
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def filter_2d(resample_filter: Sequence[float]) -> np.ndarray:
    """k = f f^T / (sum f)^2, a [K, K] float32 array."""
    f = np.asarray(resample_filter, dtype=np.float32)
    if f.ndim != 1 or f.size < 1 or not np.isfinite(f).all() or f.sum() == 0:
        raise ValueError(f"resample_filter={tuple(resample_filter)!r} must be a non-empty 1-D filter with a non-zero sum")
    return np.outer(f, f) / f.sum() ** 2


def _filter_1d(resample_filter: Sequence[float], gain: float) -> np.ndarray:
    """f / sum f times `gain` (the 2-D kernel gain^2 k factors into this along H and along W)."""
    filter_2d(resample_filter)  # validates
    f = np.asarray(resample_filter, dtype=np.float64)
    return (gain * f / f.sum()).astype(np.float32)


def _filter_along(x: jax.Array, taps: np.ndarray, axis: int, *, stride: int, lhs_dilation: int, padding) -> jax.Array:
    """One axis of the depthwise convolution: out[i] = sum_a g[a] x_pad[stride i + a], g the
    filter flipped (a true convolution, as upfirdn2d), x_pad the input zero-inserted by
    `lhs_dilation` and zero-padded by `padding` (lax.conv_general_dilated's conventions).
    Written as a sum of strided slices: XLA:CPU runs grouped (depthwise) convolutions and their
    gradients an order of magnitude slower than these elementwise sums."""
    if lhs_dilation == 2:  # [.., n, ..] -> [.., 2 n - 1, ..] with zeros between the samples
        n = x.shape[axis]
        x = jnp.stack([x, jnp.zeros_like(x)], axis=axis + 1)
        x = x.reshape(*x.shape[:axis], 2 * n, *x.shape[axis + 2:])
        x = jax.lax.slice_in_dim(x, 0, 2 * n - 1, axis=axis)
    widths = [(0, 0)] * x.ndim
    widths[axis] = tuple(padding)
    x = jnp.pad(x, widths)
    g = taps[::-1]
    length = (x.shape[axis] - len(g)) // stride + 1
    out = None
    for a, weight in enumerate(g):
        term = jax.lax.slice_in_dim(x, a, a + stride * (length - 1) + 1, stride, axis=axis) * jnp.asarray(weight, x.dtype)
        out = term if out is None else out + term
    return out


def _separable(x: jax.Array, taps: np.ndarray, *, stride: int, lhs_dilation: int, padding) -> jax.Array:
    for axis in (1, 2):
        x = _filter_along(x, taps, axis, stride=stride, lhs_dilation=lhs_dilation, padding=padding)
    return x


def downsample(x: jax.Array, resample_filter: Sequence[float], pad: bool = True) -> jax.Array:
    """[B, H, W, C] -> [B, H / 2, W / 2, C]; zero padding p = K - 2 split as ((p + 1) // 2, p // 2),
    as upfirdn2d (none when `pad` is False: the caller has padded, [B, H + p, W + p, C] in)."""
    taps = _filter_1d(resample_filter, 1.0)
    p = len(taps) - 2
    pad = ((p + 1) // 2, p // 2) if pad else (0, 0)
    return _separable(x, taps, stride=2, lhs_dilation=1, padding=pad)


def upsample(x: jax.Array, resample_filter: Sequence[float]) -> jax.Array:
    """[B, H, W, C] -> [B, 2 H, 2 W, C]; the zero-inserted image convolved with 4 k."""
    taps = _filter_1d(resample_filter, 2.0)
    p = len(taps) - 2
    # upfirdn2d pads the zero-inserted image (length 2 H) by ((p + 1) // 2 + 1, p // 2); lhs
    # dilation makes length 2 H - 1, so the trailing side gets one more.
    pad = ((p + 1) // 2 + 1, p // 2 + 1)
    return _separable(x, taps, stride=1, lhs_dilation=2, padding=pad)
