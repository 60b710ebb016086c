"""Bits per dimension of discrete data under a continuous density, with uniform dequantisation.

Setting. Data are integer arrays k in {0, ..., L - 1}^D (8-bit images: L = 256); the model is
a density p_model on the continuous data range [lo, hi]^D it was trained on (here usually
[-1, 1]). Every constant below follows from the one affine map

    x = lo + (k + u) * h,      h = (hi - lo) / L,      u ~ U[0, 1)^D,                  (1)

so bin k is [lo + k h, lo + (k + 1) h) and the bins tile [lo, hi) exactly. (For [-1, 1],
L = 256: x = (k + u) / 256 * 2 - 1, h = 2 / 256 = 1 / 128. For [0, 1]: x = (k + u) / 256,
h = 1 / 256; this is also score_sde's dequantisation, (255 * (k / 255) + u) / 256.)

Bound (Theis et al. 2016; Ho et al. 2019). The discrete model P(k) = int_bin p_model(x) dx
= h^D E_u[p_model(x)], so by Jensen

    -log P(k) <= -E_u[log p_model(x)] - D log h,                                        (2)

and the bits per dimension reported are the right-hand side divided by D ln 2:

    bpd = -E_u[log p_model(x)] / (D ln 2) + log2(L / (hi - lo)).                       (3)

The offset log2(L / (hi - lo)) = -log2 h is 7 bits for [-1, 1] and 8 bits for [0, 1] with
L = 256: the offset depends on the data range, not only on L. score_sde (Song et al. 2021,
`likelihood.py`) adds `offset = 7. - inverse_scaler(-1.)`, where inverse_scaler maps the model
range back to [0, 1]: for centred data ([-1, 1], inverse_scaler(x) = (x + 1) / 2) that is
7 - 0 = 7, for uncentred data ([0, 1], identity) 7 - (-1) = 8. Both agree with (3); the
bpd of a model is the same whichever range it is expressed in, because log p_model changes
by exactly D log of the range ratio. Models reporting "bits/dim" without the offset, or with
L = 255 bins, are not comparable with these numbers.

E_u is estimated by averaging `log_prob` over one or more dequantisation draws (`dequantize`
with different keys); a single draw per example gives an unbiased estimate of (3).

References:
  L. Theis, A. van den Oord, M. Bethge, "A note on the evaluation of generative models",
    ICLR 2016.
  J. Ho, X. Chen, A. Srinivas, Y. Duan, P. Abbeel, "Flow++: Improving Flow-Based Generative
    Models with Variational Dequantization and Architecture Design", ICML 2019.
  Y. Song et al., "Score-Based Generative Modeling through Stochastic Differential
    Equations", ICLR 2021.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

LN2 = math.log(2.0)


def bin_width(num_levels: int = 256, data_range: tuple[float, float] = (-1.0, 1.0)) -> float:
    """h = (hi - lo) / L, the width of one bin of map (1) in the model's data range."""
    lo, hi = data_range
    if not hi > lo:
        raise ValueError(f"need data_range (lo, hi) with hi > lo, got {data_range}")
    if num_levels < 1:
        raise ValueError(f"num_levels must be >= 1, got {num_levels}")
    return (hi - lo) / num_levels


def dequantize(
    key: jax.Array,
    pixels: jax.Array,
    num_levels: int = 256,
    data_range: tuple[float, float] = (-1.0, 1.0),
) -> jax.Array:
    """x = lo + (k + u) h with u ~ U[0, 1) drawn independently per entry (map (1)).

    `pixels` are integers in {0, ..., L - 1} (any shape, any integer or float dtype);
    the result is float32 in [lo, hi). For draws that do not depend on batching, call it
    per example with per-example keys (e.g. `genjax.samplers.example_keys`).
    """
    h = bin_width(num_levels, data_range)
    u = jax.random.uniform(key, jnp.shape(pixels), dtype=jnp.float32)
    x = data_range[0] + (jnp.asarray(pixels, jnp.float32) + u) * h
    # float32 rounding can land exactly on hi for u close to 1; keep x inside its bin.
    return jnp.minimum(x, jnp.nextafter(jnp.float32(data_range[1]), jnp.float32(data_range[0])))


def quantize(
    x: jax.Array, num_levels: int = 256, data_range: tuple[float, float] = (-1.0, 1.0)
) -> jax.Array:
    """The bin index k = floor((x - lo) / h), clipped to {0, ..., L - 1} (int32)."""
    h = bin_width(num_levels, data_range)
    k = jnp.floor((x - data_range[0]) / h)
    return jnp.clip(k, 0, num_levels - 1).astype(jnp.int32)


def bits_per_dim_offset(num_levels: int = 256, data_range: tuple[float, float] = (-1.0, 1.0)) -> float:
    """log2(L / (hi - lo)) = -log2 h: 7.0 for L = 256 on [-1, 1], 8.0 on [0, 1]."""
    return -math.log2(bin_width(num_levels, data_range))


def score_sde_offset(centered: bool) -> float:
    """score_sde's `7. - inverse_scaler(-1.)`: 7 for centred data ([-1, 1]), 8 for [0, 1].

    It equals `bits_per_dim_offset(256, (-1, 1))` and `bits_per_dim_offset(256, (0, 1))`."""
    inverse_scaler = (lambda v: (v + 1.0) / 2.0) if centered else (lambda v: v)
    return 7.0 - inverse_scaler(-1.0)


def bits_per_dim(
    log_prob_of_dequantized: jax.Array,
    num_dims: int,
    num_levels: int = 256,
    data_range: tuple[float, float] = (-1.0, 1.0),
) -> jax.Array:
    """Upper bound (3) on the discrete NLL in bits per dimension, elementwise.

    Args:
      log_prob_of_dequantized: log p_model(x) in nats at dequantised points x (any shape,
        e.g. [N] per example; average the result, or average log_prob over several
        dequantisation draws of the same example first).
      num_dims: D, the number of dimensions of one example (e.g. 32 * 32 * 3).
      num_levels, data_range: L and [lo, hi] of map (1), as passed to `dequantize`.
    """
    offset = bits_per_dim_offset(num_levels, data_range)
    return -jnp.asarray(log_prob_of_dequantized) / (num_dims * LN2) + offset


def nats_per_dim(log_prob: jax.Array, num_dims: int) -> tuple[jax.Array, jax.Array]:
    """NLL of continuous data in nats per dimension: (mean over examples of -log p / D,
    its standard error std(ddof=1) / sqrt(N)). No dequantisation or offset: for
    low-dimensional continuous data the density itself is the target."""
    values = -jnp.asarray(log_prob).reshape(-1) / num_dims
    count = values.shape[0]
    se = jnp.std(values, ddof=1) / jnp.sqrt(count) if count > 1 else jnp.full((), jnp.nan)
    return jnp.mean(values), se
