"""Brownian motion, as sampled paths and as the limit of the rescaled random walk.

Standard Brownian motion W has W_0 = 0, independent increments and W_t - W_s ~ N(0, t - s).
Donsker's invariance principle (Donsker 1951; Billingsley, "Convergence of Probability
Measures", ch. 2): for the simple random walk S,

    W^{(n)}(t) = S_{floor(n t)} / sqrt(n)   ->   W(t)   in law, as n -> infinity,

so increments of the rescaled walk become Gaussian with variance equal to the elapsed time.
The quadratic variation over a partition 0 = t_0 < ... < t_N = t,

    [W]_t^{(N)} = sum_i (W_{t_{i+1}} - W_{t_i})^2,    E = t,  Var = 2 sum_i (t_{i+1} - t_i)^2,

converges to t in L^2 as the mesh shrinks (Oksendal, exercise 2.17), while the first
variation sum_i |W_{t_{i+1}} - W_{t_i}| grows like sqrt(2 N t / pi).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from genjax.stochastic.markov import random_walk_kernel


def brownian_increments(key: jax.Array, num_paths: int, num_steps: int, t_max: float) -> jax.Array:
    """i.i.d. increments W_{t_{i+1}} - W_{t_i} ~ N(0, t_max / num_steps), shape [num_paths, num_steps]."""
    return jnp.sqrt(t_max / num_steps) * jax.random.normal(key, (num_paths, num_steps))


def brownian_paths(key: jax.Array, num_paths: int, num_steps: int, t_max: float) -> jax.Array:
    """W at t_i = i t_max / num_steps, i = 0..num_steps (W_0 = 0), shape [num_paths, num_steps + 1]."""
    steps = brownian_increments(key, num_paths, num_steps, t_max)
    return jnp.concatenate([jnp.zeros((num_paths, 1)), jnp.cumsum(steps, axis=1)], axis=1)


def rescaled_random_walk(walk_paths: jax.Array, steps_per_unit_time: int, times: jax.Array) -> jax.Array:
    """Donsker rescaling W^{(n)}(t) = S_{floor(n t)} / sqrt(n) at the given times, n = steps_per_unit_time.

    walk_paths: integer walk positions [..., num_steps + 1] with num_steps >= n max(times).
    Returns float32 [..., len(times)].
    """
    index = jnp.floor(steps_per_unit_time * times + 1e-6).astype(jnp.int32)
    return walk_paths[..., index].astype(jnp.float32) / jnp.sqrt(steps_per_unit_time)


def quadratic_variation(paths: jax.Array) -> jax.Array:
    """sum_i (X_{t_{i+1}} - X_{t_i})^2 along the last axis."""
    return jnp.sum(jnp.diff(paths, axis=-1) ** 2, axis=-1)


def first_variation(paths: jax.Array) -> jax.Array:
    """sum_i |X_{t_{i+1}} - X_{t_i}| along the last axis (diverges for Brownian paths)."""
    return jnp.sum(jnp.abs(jnp.diff(paths, axis=-1)), axis=-1)


def walk_normal_kolmogorov_distance(num_steps: int) -> jax.Array:
    """Exact sup_x |P(S_n / sqrt(n) <= x) - Phi(x)| for the simple random walk after n steps.

    S_n has atoms at k = -n, -n + 2, ..., n; the sup of the CDF gap is attained at an atom,
    just before or at it. It decays like n^{-1/2} (Berry-Esseen), the rate of Donsker's limit
    for one time marginal. Jit with num_steps static.
    """
    pmf = random_walk_kernel(num_steps)
    cdf_at = jnp.cumsum(pmf)
    cdf_before = cdf_at - pmf
    normal = jax.scipy.stats.norm.cdf(jnp.arange(-num_steps, num_steps + 1) / jnp.sqrt(num_steps))
    gap = jnp.maximum(jnp.abs(cdf_at - normal), jnp.abs(cdf_before - normal))
    return jnp.max(jnp.where(pmf > 0, gap, 0.0))
