"""Item 1: the discrete random walk has zero mean, linear variance and stationary independent increments."""
import jax
import jax.numpy as jnp

from genjax.stochastic import markov, random_walk, statistics

NUM_PATHS, NUM_STEPS = 20000, 60


def walk():
    return random_walk.random_walk_paths(jax.random.key(10), NUM_PATHS, NUM_STEPS)


def test_steps_are_plus_minus_one_and_paths_start_at_zero():
    paths = walk()
    assert paths.shape == (NUM_PATHS, NUM_STEPS + 1)
    assert bool(jnp.all(paths[:, 0] == 0))
    assert bool(jnp.all(jnp.abs(jnp.diff(paths, axis=1)) == 1))


def test_mean_zero_and_variance_linear_in_steps():
    paths = walk().astype(jnp.float32)
    mean, mean_se = statistics.mean_and_standard_error(paths[:, -1])
    assert abs(float(mean)) < 4 * float(mean_se)
    for n in (10, 30, 60):
        variance, variance_se = statistics.variance_and_standard_error(paths[:, n])
        assert abs(float(variance) - n) < 4 * float(variance_se)
    steps = jnp.arange(1, NUM_STEPS + 1, dtype=jnp.float32)
    slope_fn = lambda p: statistics.least_squares_slope(steps, jnp.var(p[:, 1:], axis=0, ddof=1))[0]
    slope, slope_se = statistics.jackknife_standard_error(slope_fn, paths)
    assert abs(float(slope) - 1.0) < 4 * float(slope_se)
    assert float(slope_se) < 0.05  # the check has power


def test_disjoint_increments_independent_overlapping_ones_not():
    paths = walk()
    first = random_walk.increments(paths, 0, 20).astype(jnp.float32)
    second = random_walk.increments(paths, 20, 40).astype(jnp.float32)
    for a, b in ((first, second), (first**2, second**2), (jnp.abs(first), jnp.abs(second))):
        r, se = statistics.correlation_and_standard_error(a, b)
        assert abs(float(r)) < 4 * float(se)
    # control: overlapping windows [0, 20] and [10, 30] share 10 steps, corr = 10/20
    overlapping = random_walk.increments(paths, 10, 20).astype(jnp.float32)
    r, se = statistics.correlation_and_standard_error(first, overlapping)
    assert abs(float(r) - 0.5) < 4 * float(se)


def test_increment_law_depends_only_on_length():
    paths = walk()
    kernel = markov.random_walk_kernel(20)
    for start in (0, 17, 40):
        inc = random_walk.increments(paths, start, 20)
        _, _, p_value = statistics.chi_square_test(jnp.bincount(inc + 20, length=41), kernel)
        assert float(p_value) > 1e-3
    # control: the law over 24 steps is a different one, and the test sees it
    inc = random_walk.increments(paths, 0, 24)
    wrong = jnp.pad(markov.random_walk_kernel(20), 2)  # laid out on -22..22 as if 24 steps were 20
    _, _, p_value = statistics.chi_square_test(jnp.bincount(inc + 22, length=45), wrong)
    assert float(p_value) < 1e-6
