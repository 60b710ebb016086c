"""The simple symmetric random walk, the discrete start of the chain.

    S_0 = 0,    S_n = xi_1 + ... + xi_n,    xi_k i.i.d. with P(xi = +1) = P(xi = -1) = 1/2.

Hence E[S_n] = 0 and Var[S_n] = n (variance linear in the number of steps), and increments
S_{m+h} - S_m over disjoint index intervals are independent with a law, (2 Bin(h, 1/2) - h),
that depends only on the length h (stationary independent increments; Oksendal,
"Stochastic Differential Equations", 6th ed., sec. 2.2; Feller vol. 1, ch. III).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def random_walk_steps(key: jax.Array, num_paths: int, num_steps: int) -> jax.Array:
    """i.i.d. steps xi in {-1, +1} with probability 1/2 each, shape [num_paths, num_steps], int32."""
    return 2 * jax.random.bernoulli(key, 0.5, (num_paths, num_steps)).astype(jnp.int32) - 1


def random_walk_paths(key: jax.Array, num_paths: int, num_steps: int) -> jax.Array:
    """Positions S_0 = 0, S_n = sum_{k <= n} xi_k, shape [num_paths, num_steps + 1], int32."""
    steps = random_walk_steps(key, num_paths, num_steps)
    return jnp.concatenate([jnp.zeros((num_paths, 1), jnp.int32), jnp.cumsum(steps, axis=1)], axis=1)


def increments(paths: jax.Array, start: int, length: int) -> jax.Array:
    """S_{start + length} - S_start for every path (the last axis indexes steps)."""
    return paths[..., start + length] - paths[..., start]
