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


def sinkhorn_conditional_plan(cost: jax.Array, relative_epsilon: float, num_levels: int,
                              iterations_per_level: int) -> jax.Array:
    """P(j | i) [n, m] of an annealed entropic plan (rows sum to 1): a fast, near-exact OT coupling.

    Sinkhorn with epsilon scaling and absorption (Schmitzer 2019; ott-jax's
    `epsilon_scheduler`): level l = 0 .. L-1 uses epsilon_l = mean(C) * relative_epsilon^(l / (L-1)),
    falling geometrically from the mean cost to relative_epsilon * mean(C). Each level is ONE
    exponential pass over C, the kernel with the potentials absorbed,

        K_ij = exp((f_i + g_j - C_ij) / epsilon_l),

    then `iterations_per_level` Sinkhorn iterations in the scaling domain, which are matrix-vector
    products only (P = diag(u) K diag(v); Cuturi 2013):

        u_i = 1 / (n sum_j K_ij v_j)   (rows to 1/n),      v_j = 1 / (m sum_i u_i K_ij)   (columns to 1/m),

    and the scalings are absorbed, f += epsilon log u, g += epsilon log v, before the next level.
    The absorbed potentials keep K bounded (after a level's last update f_i + g_j - C_ij <= 0 up to
    the iterations' residual), so nothing overflows; a sum that underflows is floored at the
    smallest float and corrected by the next update. The result is the last level's plan with its
    rows normalised, K_ij v_j / sum_j' K_ij' v_j'.

    No convergence test (it would cost another pass per iteration): the rows are exact (they
    are the distributions drawn from), the columns are uniform up to the iterations' residual.
    The plan's cost over the exact assignment's and its column error at the defaults are
    measured in tests/test_couplings.py and experiments/benchmark_flow_matching.py.
    """
    if not 0 < relative_epsilon <= 1:
        raise ValueError(f"relative_epsilon={relative_epsilon!r} must lie in (0, 1] (it is relative to the mean cost)")
    for name, value in (("num_levels", num_levels), ("iterations_per_level", iterations_per_level)):
        if not (isinstance(value, int) and value >= 1):
            raise ValueError(f"{name}={value!r} must be a positive integer")
    n, m = cost.shape
    cost = cost.astype(jnp.float32)
    cost = cost - jnp.min(cost, axis=1, keepdims=True)  # P(j | i) is unchanged by a shift per row
    tiny = jnp.finfo(jnp.float32).tiny
    scale = jnp.maximum(jnp.mean(cost), tiny)

    def level(index, f, g):
        epsilon = scale * relative_epsilon ** (index / max(num_levels - 1, 1))
        kernel = jnp.exp((f[:, None] + g[None, :] - cost) / epsilon)

        def iteration(_, scalings):
            u, v = scalings
            u = 1.0 / (n * jnp.maximum(kernel @ v, tiny))
            return u, 1.0 / (m * jnp.maximum(u @ kernel, tiny))

        u, v = jax.lax.fori_loop(0, iterations_per_level, iteration,
                                 (jnp.ones((n,), jnp.float32), jnp.ones((m,), jnp.float32)))
        return f + epsilon * jnp.log(u), g + epsilon * jnp.log(v), kernel, v

    zeros = (jnp.zeros((n,), jnp.float32), jnp.zeros((m,), jnp.float32))
    f, g = jax.lax.fori_loop(0, num_levels - 1, lambda index, fg: level(index, *fg)[:2], zeros)
    _, _, kernel, v = level(num_levels - 1, f, g)
    plan = kernel * v[None, :]
    return plan / jnp.maximum(jnp.sum(plan, axis=1, keepdims=True), tiny)


def sinkhorn_conditional_log_plan(cost: jax.Array, relative_epsilon: float, num_levels: int,
                                  iterations_per_level: int) -> jax.Array:
    """log P(j | i) of `sinkhorn_conditional_plan` (-inf where the plan underflows)."""
    return jnp.log(sinkhorn_conditional_plan(cost, relative_epsilon, num_levels, iterations_per_level))


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
