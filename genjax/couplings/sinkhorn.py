"""Entropic optimal transport between two uniform point sets: Sinkhorn in the log domain.

The plan P = argmin_P <P, C> - epsilon H(P) with marginals 1/n, 1/m (Cuturi 2013) is
P_ij = exp((f_i + g_j - C_ij) / epsilon) with potentials updated alternately,

    f_i = -epsilon logsumexp_j ((g_j - C_ij) / epsilon) + epsilon log(1/n),
    g_j = -epsilon logsumexp_i ((f_i - C_ij) / epsilon) + epsilon log(1/m),

which never exponentiates a large number, so small epsilon is safe (Peyre and Cuturi 2019,
"Computational Optimal Transport", section 4.4). The iteration stops when the row marginal
of P is within `tolerance` (L1) of uniform, or after `max_iterations`. The Schrodinger-bridge
coupling of SB-CFM (Tong et al. 2024) is this plan with epsilon = 2 sigma^2.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def sinkhorn_log_plan(
    cost: jax.Array, epsilon: float | jax.Array, tolerance: float = 1e-4, max_iterations: int = 2000
) -> jax.Array:
    """log P [n, m] of the entropic plan (rows sum to 1/n, columns to 1/m up to `tolerance`)."""
    if isinstance(epsilon, (int, float)) and not epsilon > 0:
        raise ValueError(f"epsilon={epsilon!r} must be > 0")
    n, m = cost.shape
    cost = cost.astype(jnp.float32)
    log_a, log_b = -jnp.log(float(n)), -jnp.log(float(m))

    def update(f, g):
        f = epsilon * (log_a - jax.nn.logsumexp((g[None, :] - cost) / epsilon, axis=1))
        g = epsilon * (log_b - jax.nn.logsumexp((f[:, None] - cost) / epsilon, axis=0))
        return f, g

    def row_error(f, g):
        log_rows = jax.nn.logsumexp((f[:, None] + g[None, :] - cost) / epsilon, axis=1)
        return jnp.sum(jnp.abs(jnp.exp(log_rows) - 1.0 / n))

    def running(state):
        f, g, iteration = state
        return (iteration < max_iterations) & (row_error(f, g) > tolerance)

    def body(state):
        f, g, iteration = state
        f, g = update(f, g)
        return f, g, iteration + 1

    f, g = update(jnp.zeros((n,), jnp.float32), jnp.zeros((m,), jnp.float32))
    f, g, _ = jax.lax.while_loop(running, body, (f, g, jnp.ones((), jnp.int32)))
    return (f[:, None] + g[None, :] - cost) / epsilon


def sample_plan_rows(key: jax.Array, log_plan: jax.Array) -> jax.Array:
    """For each row i an index j ~ P(j | i) (independently): a draw from the plan that keeps
    every row (data point) once, so the batch is not resampled."""
    return jax.random.categorical(key, log_plan, axis=1)
