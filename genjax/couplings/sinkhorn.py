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


def _row_update(cost, g, epsilon, log_a):
    """f_i = epsilon (log a - logsumexp_j ((g_j - C_ij) / epsilon)): rows of P sum to a."""
    return epsilon * (log_a - jax.nn.logsumexp((g[None, :] - cost) / epsilon, axis=1))


def _column_update(cost, f, epsilon, log_b):
    """g_j = epsilon (log b - logsumexp_i ((f_i - C_ij) / epsilon)): columns of P sum to b."""
    return epsilon * (log_b - jax.nn.logsumexp((f[:, None] - cost) / epsilon, axis=0))


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
        f = _row_update(cost, g, epsilon, log_a)
        return f, _column_update(cost, f, epsilon, log_b)

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


def sinkhorn_conditional_plan(cost: jax.Array, relative_epsilon: float, num_iterations: int) -> jax.Array:
    """P(j | i) [n, m] of an annealed entropic plan (rows sum to 1): a fast, near-exact OT coupling.

    Sinkhorn with epsilon scaling (Schmitzer 2019; ott-jax's `epsilon_scheduler`): iteration
    k = 0 .. K-1 uses epsilon_k = mean(C) * relative_epsilon^(k / (K - 1)), falling
    geometrically from the mean cost to relative_epsilon * mean(C), so the potentials reach
    the small epsilon in a few iterations. Each iteration is ONE exponential pass over C,

        E_ij = exp((f_i + g_j - C_ij) / epsilon),     r_i = sum_j E_ij,
        f_i <- f_i - epsilon log(n r_i)                                 (rows to 1/n),
        c_j = sum_i E_ij / (n r_i),      g_j <- g_j - epsilon log(m c_j)   (columns to 1/m),

    since after the row update the plan is E_ij / (n r_i) exactly: its column sums are a
    matrix-vector product, not a second pass of exponentials. The potentials of the previous
    iteration stabilise the exponent (after each column update f_i + g_j - C_ij <= -epsilon
    log m < 0, and epsilon falls by a factor of relative_epsilon^(1/(K-1)) per iteration), so
    no term overflows; a sum that underflows is floored at the smallest float and corrected by
    the next update. The result is the plan after the last column update with its rows
    normalised, E_ij / c_j / sum_j' (E_ij' / c_j'): again no further pass of exponentials.

    No convergence test (it would cost another pass per iteration): the rows are exact (they
    are the distributions drawn from), the columns are uniform up to the iterations' residual.
    Both the plan's cost over the exact assignment's and its column error at the defaults are
    measured in tests/test_couplings.py and experiments/benchmark_flow_matching.py.
    """
    if not 0 < relative_epsilon <= 1:
        raise ValueError(f"relative_epsilon={relative_epsilon!r} must lie in (0, 1] (it is relative to the mean cost)")
    if not (isinstance(num_iterations, int) and num_iterations >= 1):
        raise ValueError(f"num_iterations={num_iterations!r} must be a positive integer")
    n, m = cost.shape
    cost = cost.astype(jnp.float32)
    cost = cost - jnp.min(cost, axis=1, keepdims=True)  # P(j | i) is unchanged by a shift per row
    scale = jnp.maximum(jnp.mean(cost), jnp.finfo(jnp.float32).tiny)
    tiny = jnp.finfo(jnp.float32).tiny
    log_n, log_m = jnp.log(float(n)), jnp.log(float(m))  # C >= 0 and f = g = 0: every term starts <= 0

    def iteration(k, f, g):
        epsilon = scale * relative_epsilon ** (k / max(num_iterations - 1, 1))
        kernel = jnp.exp((f[:, None] + g[None, :] - cost) / epsilon)
        rows = jnp.maximum(jnp.sum(kernel, axis=1), tiny)
        f = f - epsilon * (jnp.log(rows) + log_n)
        columns = jnp.maximum((1.0 / (n * rows)) @ kernel, tiny)
        g = g - epsilon * (jnp.log(columns) + log_m)
        return f, g, kernel, columns

    zeros = (jnp.zeros((n,), jnp.float32), jnp.zeros((m,), jnp.float32))
    f, g = jax.lax.fori_loop(0, num_iterations - 1, lambda k, fg: iteration(k, *fg)[:2], zeros)
    _, _, kernel, columns = iteration(num_iterations - 1, f, g)
    plan = kernel / columns[None, :]
    return plan / jnp.maximum(jnp.sum(plan, axis=1, keepdims=True), tiny)


def sinkhorn_conditional_log_plan(cost: jax.Array, relative_epsilon: float, num_iterations: int) -> jax.Array:
    """log P(j | i) of `sinkhorn_conditional_plan` (-inf where the plan underflows)."""
    return jnp.log(sinkhorn_conditional_plan(cost, relative_epsilon, num_iterations))


def sample_rows(key: jax.Array, weights: jax.Array) -> jax.Array:
    """For each row i an index j with probability weights_ij / sum_j weights_ij (weights >= 0),
    independently per row, by inversion: one uniform per row against the row's cumulative sum
    (no Gumbel noise per entry: n random numbers instead of n m)."""
    cumulative = jnp.cumsum(weights, axis=1)
    u = jax.random.uniform(key, (weights.shape[0], 1), dtype=cumulative.dtype) * cumulative[:, -1:]
    return jnp.minimum(jnp.sum(cumulative <= u, axis=1), weights.shape[1] - 1)


def sample_plan_rows(key: jax.Array, log_plan: jax.Array) -> jax.Array:
    """For each row i an index j ~ P(j | i) (independently): a draw from the plan that keeps
    every row (data point) once, so the batch is not resampled."""
    return sample_rows(key, jnp.exp(log_plan - jnp.max(log_plan, axis=1, keepdims=True)))
