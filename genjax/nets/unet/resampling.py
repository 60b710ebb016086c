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


def _depthwise(x: jax.Array, kernel: np.ndarray, *, stride: int, lhs_dilation: int, padding) -> jax.Array:
    channels = x.shape[-1]
    # A true convolution (the filter flipped, as upfirdn2d does); [K, K, 1, C] for a depthwise conv.
    k = jnp.asarray(kernel[::-1, ::-1].copy(), dtype=x.dtype)
    k = jnp.tile(k[:, :, None, None], (1, 1, 1, channels))
    return jax.lax.conv_general_dilated(
        x, k, window_strides=(stride, stride), padding=padding, lhs_dilation=(lhs_dilation, lhs_dilation),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=channels)


def downsample(x: jax.Array, resample_filter: Sequence[float], pad: bool = True) -> jax.Array:
    """[B, H, W, C] -> [B, H / 2, W / 2, C]; zero padding p = K - 2 split as ((p + 1) // 2, p // 2),
    as upfirdn2d (none when `pad` is False: the caller has padded, [B, H + p, W + p, C] in)."""
    kernel = filter_2d(resample_filter)
    p = kernel.shape[0] - 2
    pad = ((p + 1) // 2, p // 2) if pad else (0, 0)
    return _depthwise(x, kernel, stride=2, lhs_dilation=1, padding=(pad, pad))


def upsample(x: jax.Array, resample_filter: Sequence[float]) -> jax.Array:
    """[B, H, W, C] -> [B, 2 H, 2 W, C]; the zero-inserted image convolved with 4 k."""
    kernel = 4.0 * filter_2d(resample_filter)
    p = kernel.shape[0] - 2
    # upfirdn2d pads the zero-inserted image (length 2 H) by ((p + 1) // 2 + 1, p // 2); lhs
    # dilation makes length 2 H - 1, so the trailing side gets one more.
    pad = ((p + 1) // 2 + 1, p // 2 + 1)
    return _depthwise(x, kernel, stride=1, lhs_dilation=2, padding=(pad, pad))
