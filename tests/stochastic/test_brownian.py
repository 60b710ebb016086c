"""Item 2: Brownian motion as the limit of the rescaled walk (Donsker); quadratic variation -> t."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.stochastic import brownian, random_walk, statistics


def test_rescaled_walk_increment_variance_is_elapsed_time_and_law_gaussian():
    n = 256
    walk = random_walk.random_walk_paths(jax.random.key(20), 20000, n)
    values = brownian.rescaled_random_walk(walk, n, jnp.array([0.25, 0.75]))
    increment = values[:, 1] - values[:, 0]
    variance, variance_se = statistics.variance_and_standard_error(increment)
    assert abs(float(variance) - 0.5) < 4 * float(variance_se)

    def excess_kurtosis(x):
        c = x - jnp.mean(x)
        return jnp.mean(c**4) / jnp.mean(c**2) ** 2 - 3.0

    kurtosis, kurtosis_se = jax.jit(lambda x: statistics.jackknife_standard_error(excess_kurtosis, x))(increment)
    assert abs(float(kurtosis)) < 4 * float(kurtosis_se)
    # control: a single +-1 step (n = 1) is as far from Gaussian as can be, excess kurtosis -2
    one_step = random_walk.random_walk_steps(jax.random.key(21), 20000, 1)[:, 0].astype(jnp.float32)
    assert float(excess_kurtosis(one_step)) == pytest.approx(-2.0, abs=0.01)


def test_exact_walk_to_normal_distance_matches_float64_and_decays_like_inverse_sqrt():
    n = 64
    k = np.arange(n + 1)
    pmf = np.array([math.comb(n, j) for j in k], dtype=np.float64) / 2.0**n
    atoms = (2 * k - n) / math.sqrt(n)
    normal = np.array([0.5 * (1 + math.erf(a / math.sqrt(2))) for a in atoms])
    cdf = np.cumsum(pmf)
    reference = max(np.abs(cdf - normal).max(), np.abs(cdf - pmf - normal).max())
    assert float(brownian.walk_normal_kolmogorov_distance(n)) == pytest.approx(reference, abs=1e-5)
    ns = 4 ** np.arange(2, 6)
    distances = np.array([float(jax.jit(brownian.walk_normal_kolmogorov_distance, static_argnums=0)(int(m))) for m in ns])
    assert np.all(np.diff(distances) < 0)
    slope = float(statistics.least_squares_slope(jnp.log(ns), jnp.log(distances))[0])
    assert abs(slope + 0.5) < 0.01


def test_quadratic_variation_converges_to_t_first_variation_diverges():
    t, n = 2.0, 512
    paths = brownian.brownian_paths(jax.random.key(22), 20000, n, t)
    qv = brownian.quadratic_variation(paths)
    mean, se = statistics.mean_and_standard_error(qv)
    assert abs(float(mean) - t) < 4 * float(se)
    msq, msq_se = statistics.mean_and_standard_error((qv - t) ** 2)
    assert abs(float(msq) - 2 * t**2 / n) < 4 * float(msq_se)  # L2 convergence at rate 1/N
    fv_mean, fv_se = statistics.mean_and_standard_error(brownian.first_variation(paths))
    assert abs(float(fv_mean) - math.sqrt(2 * n * t / math.pi)) < 4 * float(fv_se)


def test_rescaled_walk_quadratic_variation_is_floor_nt_over_n():
    n = 100
    walk = random_walk.random_walk_paths(jax.random.key(23), 5, n)
    scaled = walk.astype(jnp.float32) / jnp.sqrt(n)
    assert np.allclose(np.asarray(brownian.quadratic_variation(scaled[:, :51])), 0.5, atol=1e-5)
