"""Item 2: Brownian motion as the limit of the rescaled walk (Donsker); quadratic variation -> t."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.stochastic import brownian, random_walk, statistics


def excess_kurtosis(x):
    c = x - jnp.mean(x)
    return jnp.mean(c**4) / jnp.mean(c**2) ** 2 - 3.0


@jax.jit
def _rescaled_walk_increment_statistics():
    n = 256
    walk = random_walk.random_walk_paths(jax.random.key(20), 20000, n)
    values = brownian.rescaled_random_walk(walk, n, jnp.array([0.25, 0.75]))
    increment = values[:, 1] - values[:, 0]
    one_step = random_walk.random_walk_steps(jax.random.key(21), 20000, 1)[:, 0].astype(jnp.float32)
    return (statistics.variance_and_standard_error(increment),
            statistics.jackknife_standard_error(excess_kurtosis, increment), excess_kurtosis(one_step))


def test_rescaled_walk_increment_variance_is_elapsed_time_and_law_gaussian():
    (variance, variance_se), (kurtosis, kurtosis_se), one_step_kurtosis = jax.tree.map(
        float, _rescaled_walk_increment_statistics())
    assert abs(variance - 0.5) < 4 * variance_se
    assert abs(kurtosis) < 4 * kurtosis_se
    # control: a single +-1 step (n = 1) is as far from Gaussian as can be, excess kurtosis -2
    assert one_step_kurtosis == pytest.approx(-2.0, abs=0.01)


def test_exact_walk_to_normal_distance_matches_float64_and_decays_like_inverse_sqrt():
    n = 64
    k = np.arange(n + 1)
    pmf = np.array([math.comb(n, j) for j in k], dtype=np.float64) / 2.0**n
    atoms = (2 * k - n) / math.sqrt(n)
    normal = np.array([0.5 * (1 + math.erf(a / math.sqrt(2))) for a in atoms])
    cdf = np.cumsum(pmf)
    reference = max(np.abs(cdf - normal).max(), np.abs(cdf - pmf - normal).max())
    ns = 4 ** np.arange(2, 6)  # 16, 64 (= n), 256, 1024

    @jax.jit
    def distances_and_slope():
        distances = jnp.stack([brownian.walk_normal_kolmogorov_distance(int(m)) for m in ns])
        return distances, statistics.least_squares_slope(jnp.log(jnp.asarray(ns, jnp.float32)), jnp.log(distances))[0]

    distances, slope = distances_and_slope()
    distances = np.asarray(distances, np.float64)
    assert distances[list(ns).index(n)] == pytest.approx(reference, abs=1e-5)
    assert np.all(np.diff(distances) < 0)
    assert abs(float(slope) + 0.5) < 0.01


@jax.jit
def _variations():
    t = 2.0
    paths = brownian.brownian_paths(jax.random.key(22), 20000, 512, t)
    qv = brownian.quadratic_variation(paths)
    return (statistics.mean_and_standard_error(qv), statistics.mean_and_standard_error((qv - t) ** 2),
            statistics.mean_and_standard_error(brownian.first_variation(paths)))


def test_quadratic_variation_converges_to_t_first_variation_diverges():
    t, n = 2.0, 512
    (mean, se), (msq, msq_se), (fv_mean, fv_se) = jax.tree.map(float, _variations())
    assert abs(mean - t) < 4 * se
    assert abs(msq - 2 * t**2 / n) < 4 * msq_se  # L2 convergence at rate 1/N
    assert abs(fv_mean - math.sqrt(2 * n * t / math.pi)) < 4 * fv_se


def test_rescaled_walk_quadratic_variation_is_floor_nt_over_n():
    n = 100
    qv = jax.jit(lambda key: brownian.quadratic_variation(
        random_walk.random_walk_paths(key, 5, n)[:, :51].astype(jnp.float32) / jnp.sqrt(n)))(jax.random.key(23))
    assert np.allclose(np.asarray(qv), 0.5, atol=1e-5)
