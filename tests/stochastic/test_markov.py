"""Item 6: transition kernels compose (Chapman-Kolmogorov): exactly for the walk's binomial kernel,
to rounding for the Gaussian (Brownian, Ornstein-Uhlenbeck) kernels."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.stochastic import markov, models, random_walk, statistics

FLOAT32_EPS = float(np.finfo(np.float32).eps)


def test_path_counts_are_binomial_coefficients():
    counts = np.asarray(markov.random_walk_path_counts(7))
    expected = np.zeros(15, dtype=np.int64)
    expected[0::2] = [math.comb(7, j) for j in range(8)]
    np.testing.assert_array_equal(counts, expected)
    np.testing.assert_allclose(markov.random_walk_kernel(7), expected / 2.0**7, rtol=1e-6)
    assert float(jnp.sum(markov.random_walk_kernel(500))) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("m,n", [(3, 8), (16, 17)])
def test_walk_chapman_kolmogorov_is_exact_in_integers(m, n):
    composed = markov.compose_kernels(markov.random_walk_path_counts(m), markov.random_walk_path_counts(n))
    assert composed.dtype == jnp.int32
    assert bool(jnp.array_equal(composed, markov.random_walk_path_counts(m + n)))
    # control: composing m and n steps is not the (m + n - 2)-step kernel
    shorter = jnp.pad(markov.random_walk_path_counts(m + n - 2), 2) * 4
    assert not bool(jnp.array_equal(composed, shorter))


@jax.jit
def _markov_p_values():
    before, after = 10, 16
    walk = random_walk.random_walk_paths(jax.random.key(60), 40000, before + after)
    increment = random_walk.increments(walk, before, after)
    kernel = markov.random_walk_kernel(after)
    p_values = []
    for k in (-2, 0, 4):  # the future increment's law does not depend on the present position
        given = walk[:, before] == k
        counts = jnp.bincount(jnp.where(given, increment + after, 2 * after + 1), length=2 * after + 2)[:-1]
        p_values.append(statistics.chi_square_test(counts, kernel)[2])
    return p_values


def test_walk_is_markov_empirically():
    p_values = [float(p) for p in _markov_p_values()]
    assert all(p > 1e-3 for p in p_values), p_values


@pytest.mark.parametrize("process", ["brownian", "ou"])
def test_gaussian_kernels_compose_to_rounding(process):
    points = jnp.linspace(-8.0, 8.0, 401)
    interior = jnp.abs(points) <= 3.0
    if process == "brownian":
        density = lambda t: (lambda y, x: markov.gaussian_transition_density(y, x, t))
    else:
        ou = models.OrnsteinUhlenbeck(theta=1.5, sigma=0.8, mean=0.5)
        density = lambda t: (lambda y, x: ou.transition_density(y, x, t))
    kernel = lambda t: markov.transition_matrix(density(t), points)
    s, t = 0.3, 0.7
    bound = points.shape[0] * FLOAT32_EPS * float(jnp.max(kernel(s + t))) / float(points[1] - points[0])
    defect = markov.chapman_kolmogorov_defect(kernel(s), kernel(t), kernel(s + t), points, interior)
    assert float(defect) <= bound
    control = markov.chapman_kolmogorov_defect(kernel(s), kernel(t), kernel(s + t - 0.1), points, interior)
    assert float(control) > 100 * bound
