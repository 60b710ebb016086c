"""The fast entropic OT coupling: the plan with one exponential pass per epsilon level (Sinkhorn
in the scaling domain between them) equals the textbook two-pass log-domain iteration, and rows
are drawn with the plan's probabilities."""
import jax
import jax.numpy as jnp
import numpy as np

from genjax.couplings import sample_rows, sinkhorn_conditional_plan, squared_distances


def two_pass_reference_log_plan(cost, relative_epsilon, num_levels, iterations_per_level):
    """The textbook annealed log-domain Sinkhorn (one logsumexp pass for rows, one for columns,
    per iteration), then log P(j | i) = log_softmax_j((g_j - C_ij) / epsilon) at the last
    level's epsilon (relative_epsilon * mean cost when there are two levels or more)."""
    cost = np.asarray(cost, np.float64)
    cost = cost - cost.min(axis=1, keepdims=True)
    n, m = cost.shape
    scale = cost.mean()
    f, g = np.zeros(n), np.zeros(m)
    for level in range(num_levels):
        epsilon = scale * relative_epsilon ** (level / max(num_levels - 1, 1))
        for _ in range(iterations_per_level):
            z = (g[None, :] - cost) / epsilon
            f = -epsilon * (np.log(n) + np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1))
            z = (f[:, None] - cost) / epsilon
            g = -epsilon * (np.log(m) + np.log(np.exp(z - z.max(0, keepdims=True)).sum(0)) + z.max(0))
    z = (g[None, :] - cost) / epsilon
    return z - (np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)) + z.max(1, keepdims=True))


def test_conditional_plan_equals_the_two_pass_log_domain_iteration():
    x0 = jax.random.normal(jax.random.key(0), (64, 2))
    x1 = 2.0 * jax.random.normal(jax.random.key(1), (64, 2)) + 1.0
    cost = squared_distances(x0, x1)
    for schedule in [(0.01, 5, 10), (0.1, 3, 2), (0.5, 1, 1)]:
        plan = np.asarray(jax.jit(sinkhorn_conditional_plan, static_argnums=(1, 2, 3))(cost, *schedule))
        reference = np.exp(two_pass_reference_log_plan(cost, *schedule))
        np.testing.assert_allclose(plan.sum(axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(plan, reference, atol=2e-4, err_msg=f"epsilon, levels, iterations {schedule}")


def test_rows_are_drawn_with_the_weights_probabilities():
    weights = jnp.array([[1.0, 0.0, 3.0, 0.0, 4.0],  # unnormalised, with zero-weight entries
                         [0.0, 0.0, 0.0, 0.0, 2.5],
                         [5.0, 1.0, 1.0, 1.0, 2.0],
                         [1e-3, 1e-3, 2e-3, 0.0, 0.0]])
    draws = np.asarray(jax.jit(jax.vmap(sample_rows, in_axes=(0, None)))(jax.random.split(jax.random.key(3), 40_000), weights))
    probabilities = np.asarray(weights / weights.sum(axis=1, keepdims=True))
    frequencies = np.stack([np.bincount(draws[:, i], minlength=5) for i in range(4)]) / len(draws)
    standard_error = np.sqrt(probabilities * (1 - probabilities) / len(draws))
    assert np.all(frequencies[probabilities == 0] == 0), "a zero-weight entry was drawn"
    assert np.all(np.abs(frequencies - probabilities) <= 5 * standard_error + 1e-12), (frequencies, probabilities)
