"""The Monte Carlo helpers every other test leans on: standard errors, jackknife, chi-square, KS."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from genjax.stochastic import statistics

chi_square_test = jax.jit(statistics.chi_square_test)  # one compiled program per input shape


def test_mean_standard_error_matches_formula():
    x = jax.random.normal(jax.random.key(0), (4000,)) * 2.0 + 1.0
    mean, se = statistics.mean_and_standard_error(x)
    assert abs(float(mean) - 1.0) < 4 * float(se)
    assert float(se) == pytest.approx(2.0 / np.sqrt(4000), rel=0.05)


def test_variance_standard_error_covers_truth():
    x = jax.random.normal(jax.random.key(1), (20000,)) * 3.0
    variance, se = statistics.variance_and_standard_error(x)
    # Gaussian: Var(s^2) = 2 sigma^4 / n
    assert float(se) == pytest.approx(np.sqrt(2 * 81 / 20000), rel=0.05)
    assert abs(float(variance) - 9.0) < 4 * float(se)


def test_jackknife_of_the_mean_equals_the_standard_error():
    x = jax.random.normal(jax.random.key(2), (2000,))
    _, se = statistics.mean_and_standard_error(x)
    value, jack_se = statistics.jackknife_standard_error(jnp.mean, x, num_groups=20)
    assert float(value) == pytest.approx(float(jnp.mean(x)))
    # grouped jackknife SE of the mean is itself an estimate with 19 degrees of freedom
    assert float(jack_se) == pytest.approx(float(se), rel=0.4)


def test_jackknife_rejects_uneven_groups():
    with pytest.raises(ValueError):
        statistics.jackknife_standard_error(jnp.mean, jnp.ones(101), num_groups=20)


def test_chi_square_accepts_the_true_law_and_rejects_a_wrong_one():
    probabilities = jnp.array([0.1, 0.2, 0.3, 0.4])
    counts = jax.jit(lambda key: jnp.bincount(jax.random.choice(key, 4, (5000,), p=probabilities), length=4))(
        jax.random.key(3))
    _, dof, p_true = chi_square_test(counts, probabilities)
    _, _, p_wrong = chi_square_test(counts, jnp.array([0.15, 0.2, 0.3, 0.35]))
    assert int(dof) == 3
    assert float(p_true) > 1e-3
    assert float(p_wrong) < 1e-6


def test_chi_square_matches_scipy_and_pools_small_bins():
    counts = jnp.array([30, 50, 15, 3, 2])
    probabilities = jnp.array([0.3, 0.5, 0.15, 0.03, 0.02])  # last two expect 3 and 2 -> pooled
    statistic, dof, p_value = chi_square_test(counts, probabilities)
    expected = np.array([30, 50, 15, 5.0])
    reference = stats.chisquare(np.array([30, 50, 15, 5]), expected)
    assert int(dof) == 3
    assert float(statistic) == pytest.approx(reference.statistic, abs=1e-5)
    assert float(p_value) == pytest.approx(reference.pvalue, rel=1e-4)


def test_kolmogorov_smirnov_matches_scipy():
    x = jax.random.normal(jax.random.key(4), (500,))
    ours = jax.jit(lambda x: statistics.kolmogorov_smirnov_statistic(x, jax.scipy.stats.norm.cdf))(x)
    assert float(ours) == pytest.approx(stats.kstest(np.asarray(x, np.float64), "norm").statistic, abs=1e-5)
    assert statistics.kolmogorov_smirnov_critical_value(10000, 0.95) == pytest.approx(0.01358, rel=1e-3)


def test_least_squares_slope_recovers_a_line():
    x = jnp.linspace(0.0, 1.0, 11)
    slope, intercept = statistics.least_squares_slope(x, 3.0 * x - 2.0)
    assert float(slope) == pytest.approx(3.0, abs=1e-5)
    assert float(intercept) == pytest.approx(-2.0, abs=1e-5)
