"""Item 1: the discrete random walk has zero mean, linear variance and stationary independent increments."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.stochastic import markov, random_walk, statistics

NUM_PATHS, NUM_STEPS = 20000, 60


@pytest.fixture(scope="module")
def paths():
    return jax.jit(random_walk.random_walk_paths, static_argnums=(1, 2))(jax.random.key(10), NUM_PATHS, NUM_STEPS)


def test_steps_are_plus_minus_one_and_paths_start_at_zero(paths):
    host = np.asarray(paths)
    assert host.shape == (NUM_PATHS, NUM_STEPS + 1)
    assert np.all(host[:, 0] == 0)
    assert np.all(np.abs(np.diff(host, axis=1)) == 1)


@jax.jit
def _moments(paths):
    """(mean and SE of S_N, variances and SEs of S_10, S_30, S_60, jackknifed slope of Var S_n in n)."""
    paths = paths.astype(jnp.float32)
    steps = jnp.arange(1, NUM_STEPS + 1, dtype=jnp.float32)
    slope_fn = lambda p: statistics.least_squares_slope(steps, jnp.var(p[:, 1:], axis=0, ddof=1))[0]
    variances = [statistics.variance_and_standard_error(paths[:, n]) for n in (10, 30, 60)]
    return (statistics.mean_and_standard_error(paths[:, -1]), variances,
            statistics.jackknife_standard_error(slope_fn, paths))


def test_mean_zero_and_variance_linear_in_steps(paths):
    (mean, mean_se), variances, (slope, slope_se) = jax.tree.map(float, _moments(paths))
    assert abs(mean) < 4 * mean_se
    for n, (variance, variance_se) in zip((10, 30, 60), variances):
        assert abs(variance - n) < 4 * variance_se, n
    assert abs(slope - 1.0) < 4 * slope_se
    assert slope_se < 0.05  # the check has power


@jax.jit
def _increment_correlations(paths):
    first = random_walk.increments(paths, 0, 20).astype(jnp.float32)
    second = random_walk.increments(paths, 20, 40).astype(jnp.float32)
    overlapping = random_walk.increments(paths, 10, 20).astype(jnp.float32)
    disjoint = [statistics.correlation_and_standard_error(a, b)
                for a, b in ((first, second), (first**2, second**2), (jnp.abs(first), jnp.abs(second)))]
    return disjoint, statistics.correlation_and_standard_error(first, overlapping)


def test_disjoint_increments_independent_overlapping_ones_not(paths):
    disjoint, (r_overlap, se_overlap) = jax.tree.map(float, _increment_correlations(paths))
    for r, se in disjoint:
        assert abs(r) < 4 * se
    # control: overlapping windows [0, 20] and [10, 30] share 10 steps, corr = 10/20
    assert abs(r_overlap - 0.5) < 4 * se_overlap


@jax.jit
def _increment_law_p_values(paths):
    kernel = markov.random_walk_kernel(20)
    p_values = []
    for start in (0, 17, 40):
        inc = random_walk.increments(paths, start, 20)
        p_values.append(statistics.chi_square_test(jnp.bincount(inc + 20, length=41), kernel)[2])
    # control: the law over 24 steps is a different one, and the test sees it
    inc = random_walk.increments(paths, 0, 24)
    wrong = jnp.pad(kernel, 2)  # laid out on -22..22 as if 24 steps were 20
    return p_values, statistics.chi_square_test(jnp.bincount(inc + 22, length=45), wrong)[2]


def test_increment_law_depends_only_on_length(paths):
    p_values, p_wrong = jax.tree.map(float, _increment_law_p_values(paths))
    assert all(p > 1e-3 for p in p_values), p_values
    assert p_wrong < 1e-6
