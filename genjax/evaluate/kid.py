"""Kernel Inception Distance: the unbiased squared MMD with a cubic polynomial kernel.

Binkowski et al. 2018, "Demystifying MMD GANs" (sec. 5, KID): with features of dimension d,

    k(x, y) = (x . y / d + 1)^3,
    MMD^2_u = 1/(m(m-1)) sum_{i != j} k(x_i, x_j) + 1/(m(m-1)) sum_{i != j} k(y_i, y_j)
              - 2/m^2 sum_{i, j} k(x_i, y_j),

an unbiased estimate of MMD^2 (its expectation is 0 when both sets come from one
distribution, so it can be negative). As in their code and torch-fidelity, it is averaged over
`num_subsets` pairs of subsets of `subset_size` vectors drawn without replacement from each
set; the result is (mean, std over subsets).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

DEFAULT_SUBSET_SIZE = 1000
DEFAULT_NUM_SUBSETS = 100


def polynomial_kernel(x: jax.Array, y: jax.Array) -> jax.Array:
    """k(x_i, y_j) = (x_i . y_j / d + 1)^3 for x [m, d], y [n, d] -> [m, n]."""
    return (x @ y.T / x.shape[-1] + 1.0) ** 3


def unbiased_mmd2(x: jax.Array, y: jax.Array) -> jax.Array:
    """MMD^2_u of the module docstring for two sets of equal size m >= 2 (x, y [m, d])."""
    m = x.shape[0]
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    off_diagonal = lambda k: (k.sum() - jnp.trace(k)) / (m * (m - 1))
    return off_diagonal(k_xx) + off_diagonal(k_yy) - 2.0 * k_xy.sum() / (m * m)


@functools.partial(jax.jit, static_argnames=("subset_size", "num_subsets"))
def _subset_mmd2(key, x, y, subset_size, num_subsets):
    def one(subset_key):
        key_x, key_y = jax.random.split(subset_key)
        index_x = jax.random.choice(key_x, x.shape[0], (subset_size,), replace=False)
        index_y = jax.random.choice(key_y, y.shape[0], (subset_size,), replace=False)
        return unbiased_mmd2(x[index_x], y[index_y])

    return jax.lax.map(one, jax.random.split(key, num_subsets))


def kernel_inception_distance(key: jax.Array, features1, features2, subset_size: int = DEFAULT_SUBSET_SIZE,
                              num_subsets: int = DEFAULT_NUM_SUBSETS) -> tuple[float, float]:
    """(mean, std) over subsets of MMD^2_u between features1 [N1, d] and features2 [N2, d].

    subset_size is reduced to min(N1, N2) when a set is smaller (torch-fidelity refuses
    instead; the estimate stays unbiased, only noisier). Computed in float32 on the default
    device; multiply by 1000 for the "KID x 10^3" that papers report.
    """
    x = jnp.asarray(features1, jnp.float32)
    y = jnp.asarray(features2, jnp.float32)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"features must be [N, d] with the same d, got {x.shape} and {y.shape}")
    size = min(subset_size, x.shape[0], y.shape[0])
    if size < 2:
        raise ValueError(f"KID needs at least 2 feature vectors per set, got {x.shape[0]} and {y.shape[0]}")
    values = _subset_mmd2(key, x, y, size, num_subsets)
    return float(values.mean()), float(values.std())
