"""Monte Carlo statistics with honest error bars.

Every claim checked in `genjax.stochastic` compares an estimate with an expected value. The
estimate's uncertainty comes from its standard error (SE), never from a hand-tuned
tolerance: for i.i.d. samples Y_1..Y_n with variance s^2,

    mean = (1/n) sum_i Y_i,        SE = s / sqrt(n),                     (central limit theorem)

and a two-sided confidence interval at level 1 - alpha has half-width z_{1 - alpha/2} SE.
Statistics without a simple SE formula (a fitted convergence order, a ratio of means) get a
grouped jackknife SE. Distributional claims use chi-square or Kolmogorov-Smirnov tests.
All functions are pure and jit-able.
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

Z_95 = 1.959963984540054  # two-sided 95% normal quantile


def mean_and_standard_error(samples: jax.Array, axis: int = 0) -> tuple[jax.Array, jax.Array]:
    """Sample mean and its standard error s / sqrt(n) (s with Bessel's correction)."""
    n = samples.shape[axis]
    mean = jnp.mean(samples, axis=axis)
    std = jnp.std(samples, axis=axis, ddof=1)
    return mean, std / jnp.sqrt(n)


def variance_and_standard_error(samples: jax.Array, axis: int = 0) -> tuple[jax.Array, jax.Array]:
    """Unbiased sample variance s^2 and its large-sample SE sqrt((m_4 - s^4) / n), where
    m_4 = E[(Y - mean)^4] is the fourth central moment (delta method)."""
    n = samples.shape[axis]
    centred = samples - jnp.mean(samples, axis=axis, keepdims=True)
    variance = jnp.sum(centred**2, axis=axis) / (n - 1)
    fourth = jnp.mean(centred**4, axis=axis)
    return variance, jnp.sqrt(jnp.maximum(fourth - variance**2, 0.0) / n)


def correlation_and_standard_error(x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Pearson correlation r of paired samples and its large-sample SE (1 - r^2) / sqrt(n)."""
    n = x.shape[0]
    xc, yc = x - jnp.mean(x), y - jnp.mean(y)
    r = jnp.sum(xc * yc) / jnp.sqrt(jnp.sum(xc**2) * jnp.sum(yc**2))
    return r, (1.0 - r**2) / jnp.sqrt(n)


def normal_quantile(level: float) -> jax.Array:
    """z with P(|N(0,1)| <= z) = level (two-sided)."""
    return jax.scipy.stats.norm.ppf(0.5 + 0.5 * level)


def confidence_half_width(standard_error: jax.Array, level: float = 0.95) -> jax.Array:
    """Half-width z_{(1 + level)/2} * SE of the normal confidence interval."""
    return normal_quantile(level) * standard_error


def least_squares_slope(x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Ordinary least squares fit y = slope x + intercept; returns (slope, intercept)."""
    xc = x - jnp.mean(x)
    slope = jnp.sum(xc * (y - jnp.mean(y))) / jnp.sum(xc**2)
    return slope, jnp.mean(y) - slope * jnp.mean(x)


def jackknife_standard_error(
    statistic: Callable[[jax.Array], jax.Array], samples: jax.Array, num_groups: int = 20
) -> tuple[jax.Array, jax.Array]:
    """Statistic of the full sample and its delete-one-group jackknife SE (Efron & Tibshirani,
    "An Introduction to the Bootstrap", ch. 11):

        SE^2 = (G - 1)/G sum_g (theta_{-g} - mean_g theta_{-g})^2,

    with theta_{-g} the statistic computed with group g (of G equal groups along axis 0)
    left out. `num_groups` must divide the number of samples.
    """
    n = samples.shape[0]
    if n % num_groups:
        raise ValueError(f"num_groups={num_groups} must divide the number of samples {n}")
    groups = samples.reshape((num_groups, n // num_groups) + samples.shape[1:])

    def leave_out(g):
        kept = jnp.take(groups, (g + 1 + jnp.arange(num_groups - 1)) % num_groups, axis=0)
        return statistic(kept.reshape((-1,) + samples.shape[1:]))

    replicates = jax.vmap(leave_out)(jnp.arange(num_groups))
    spread = jnp.sum((replicates - jnp.mean(replicates, axis=0)) ** 2, axis=0)
    return statistic(samples), jnp.sqrt((num_groups - 1) / num_groups * spread)


def chi_square_test(counts: jax.Array, probabilities: jax.Array, min_expected: float = 5.0):
    """Pearson's chi-square goodness-of-fit test of observed bin counts against probabilities.

        X^2 = sum_b (n_b - N q_b)^2 / (N q_b)  ~  chi^2_{B - 1}   under the null.

    Bins whose expected count N q_b is below `min_expected` are pooled into one bin (the
    usual validity rule). Returns (X^2, degrees of freedom, p-value); pass q summing to 1.
    """
    counts = counts.ravel().astype(jnp.float32)
    probabilities = probabilities.ravel()
    total = jnp.sum(counts)
    expected = total * probabilities
    keep = expected >= min_expected
    pooled_counts = jnp.sum(jnp.where(keep, 0.0, counts))
    pooled_expected = jnp.sum(jnp.where(keep, 0.0, expected))
    terms = jnp.where(keep, (counts - expected) ** 2 / jnp.where(keep, expected, 1.0), 0.0)
    pooled_term = jnp.where(
        pooled_expected > 0, (pooled_counts - pooled_expected) ** 2 / jnp.maximum(pooled_expected, 1e-30), 0.0
    )
    statistic = jnp.sum(terms) + pooled_term
    dof = jnp.sum(keep) + (pooled_expected > 0) - 1
    p_value = jax.scipy.special.gammaincc(dof / 2.0, statistic / 2.0)
    return statistic, dof, p_value


def chi_square_per_dof_half_width(dof: jax.Array, level: float = 0.95) -> jax.Array:
    """Normal-approximation half-width of X^2 / dof under the null (Var X^2 = 2 dof)."""
    return normal_quantile(level) * jnp.sqrt(2.0 / dof)


def kolmogorov_smirnov_statistic(samples: jax.Array, cdf: Callable[[jax.Array], jax.Array]) -> jax.Array:
    """D_n = sup_x |F_n(x) - F(x)| for the empirical CDF F_n of 1-D samples and a continuous CDF F
    (the sup is attained just before or at a sample point)."""
    x = jnp.sort(samples)
    n = x.shape[0]
    f = cdf(x)
    above = jnp.arange(1, n + 1) / n - f
    below = f - jnp.arange(n) / n
    return jnp.maximum(jnp.max(above), jnp.max(below))


def kolmogorov_smirnov_critical_value(num_samples: int, level: float = 0.99) -> float:
    """Asymptotic critical value c(alpha) / sqrt(n) of D_n, c(alpha) = sqrt(-ln(alpha/2) / 2)
    with alpha = 1 - level (Kolmogorov 1933; Smirnov 1948)."""
    alpha = 1.0 - level
    return math.sqrt(-math.log(alpha / 2.0) / 2.0) / math.sqrt(num_samples)
