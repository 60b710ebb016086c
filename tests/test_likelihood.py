"""Probability-flow likelihoods and bits/dim against densities known in closed form.

Target. With the exact score of a diffused 2-D Gaussian mixture, the ODE started at
t_eps = t_min_sample computes log p_{t_eps}(x), which `perturbed_log_prob_fn` gives
exactly. Two things separate the two besides solver error:

  * the prior mismatch log N(x_T; 0, I) - log p_T(x_T) at T = 1: p_T is the mixture
    shrunk by alpha(1) = 6.6e-3, i.e. to first order N(alpha m, I) with m the mixture
    mean, so the mismatch is ~ alpha m . x_T. For the mixture of test_samplers.py
    (|m| = 1.3) it reaches 0.012 nats/dim on 200 points; the main mixture here has mean
    zero, where the mismatch is O(alpha^2) and the largest error is ~3e-4 nats/dim.
    `test_prior_mismatch_explains_off_centre_error` (slow) shows the off-centre error
    vanishes when the exact p_T is used at T.
  * log p_{t_eps} - log p_0, the bias of evaluating at t_eps = 1e-3 rather than 0. It is
    computed in closed form here: ~1e-6 nats/dim on average over the points.

Hutchinson. The per-point estimate with K probes has a heavy-tailed error (the sample
std of K = 16 chi-square-like values), so the 4-standard-error check aggregates over the
200 independent points: sum_i (mean_i - exact_i) / sqrt(sum_i se_i^2). The 1/sqrt(K) law
is checked on the actual errors: the 16 probes split into 4 groups of 4 give the RMS
error of K = 4 estimates, which must be ~2x that of K = 16; and the reported standard
error must match the RMS error of the K = 16 mean (calibration, within 30%; seeds 1-4
gave 0.82-1.06).
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from genjax.data.gaussian_mixture import make_gaussian_mixture, perturbed_log_prob_fn, perturbed_score_fn
from genjax.evaluate.bits_per_dim import (
    bin_width,
    bits_per_dim,
    bits_per_dim_offset,
    dequantize,
    nats_per_dim,
    quantize,
    score_sde_offset,
)
from genjax.processes import VPSDE
from genjax.samplers import LikelihoodResult, draw_probes, log_likelihood
from tests.counting import counting

PROCESS = VPSDE()
T_EPS = PROCESS.t_min_sample
DIM = 2
NUM_POINTS = 200
NUM_PROBES = 16
KEY = jax.random.key(11)

# Unequal weights and stds; weights @ means = 0 (see the module docstring).
MIXTURE = make_gaussian_mixture([0.5, 0.3, 0.2], [[-2.0, 0.0], [2.0, 1.5], [2.0, -2.25]], [0.5, 0.8, 0.3])
SCORE = perturbed_score_fn(MIXTURE, PROCESS)
LOG_P = perturbed_log_prob_fn(MIXTURE, PROCESS)
POINTS = MIXTURE.sample(jax.random.key(1), NUM_POINTS)


def analytic(points, t):
    return jax.vmap(LOG_P, in_axes=(0, None))(points, t)


@jax.jit
def scaled_score_likelihood(points, scale):
    """Exact divergence with the score multiplied by `scale` (1: the exact score)."""
    return log_likelihood(PROCESS, lambda x, t: scale * SCORE(x, t), points)


@pytest.fixture(scope="module")
def exact_result():
    return scaled_score_likelihood(POINTS, 1.0)


def _hutchinson_run(probe):
    return jax.jit(
        lambda points, key, first: log_likelihood(
            PROCESS, SCORE, points, key, divergence="hutchinson", probe=probe,
            num_probes=NUM_PROBES, first_index=first,
        )
    )


HUTCHINSON_RUNS = {probe: _hutchinson_run(probe) for probe in ("gaussian", "rademacher")}


@pytest.fixture(scope="module")
def hutchinson_results():
    """probe -> result on all points with K = 16 probes."""
    return {probe: run(POINTS, KEY, 0) for probe, run in HUTCHINSON_RUNS.items()}


# --- exact divergence --------------------------------------------------------------------------


def test_exact_divergence_matches_analytic_log_density(exact_result):
    assert isinstance(exact_result, LikelihoodResult)
    assert bool(jnp.all(exact_result.successful))
    target = analytic(POINTS, T_EPS)
    error = np.abs(np.asarray(exact_result.log_prob - target)) / DIM
    assert error.max() < 0.01  # nats per dimension, every point
    assert error.mean() < 1e-3
    np.testing.assert_array_equal(exact_result.standard_error, 0.0)
    np.testing.assert_array_equal(exact_result.log_prob_per_probe[:, 0], exact_result.log_prob)


def test_exact_divergence_mean_is_close_to_log_p0(exact_result):
    log_p0 = jax.vmap(MIXTURE.log_prob)(POINTS)
    t_eps_bias = float(jnp.mean(analytic(POINTS, T_EPS) - log_p0)) / DIM
    assert abs(t_eps_bias) < 1e-4  # the documented size of the t_eps bias
    gap = float(jnp.mean(exact_result.log_prob - log_p0)) / DIM
    assert abs(gap - t_eps_bias) < 1e-3
    mean_nll, se = nats_per_dim(exact_result.log_prob, DIM)
    assert abs(float(mean_nll) + float(jnp.mean(log_p0)) / DIM) < 1e-3 and float(se) > 0


@pytest.mark.slow
def test_prior_mismatch_explains_off_centre_error():
    """The test_samplers.py mixture (mean (-0.8, 1.0)): the N(0, I) prior at T costs up to
    ~0.01 nats/dim; with the exact p_T at T the error is back to the solver's."""
    mixture = make_gaussian_mixture([0.5, 0.3, 0.2], [[-4.0, 0.0], [4.0, 0.0], [0.0, 5.0]], [0.5, 0.8, 0.3])
    score, log_p = perturbed_score_fn(mixture, PROCESS), perturbed_log_prob_fn(mixture, PROCESS)
    points = mixture.sample(jax.random.key(2), 100)

    @jax.jit
    def run(use_exact_prior):
        exact_p_T = lambda z: log_p(z, PROCESS.t_max)
        terminal = lambda z: jnp.where(use_exact_prior, exact_p_T(z), PROCESS.prior_log_prob(z))
        return log_likelihood(PROCESS, score, points, terminal_log_prob=terminal).log_prob

    target = jax.vmap(log_p, in_axes=(0, None))(points, T_EPS)
    with_exact_prior = np.abs(np.asarray(run(True) - target)) / DIM
    with_process_prior = np.abs(np.asarray(run(False) - target)) / DIM
    assert with_exact_prior.max() < 1e-3
    assert with_process_prior.max() > 3 * with_exact_prior.max()


def test_wrong_score_gives_wrong_likelihood(exact_result):
    target = analytic(POINTS, T_EPS)
    for scale in (0.0, 0.5):
        wrong = scaled_score_likelihood(POINTS, scale)
        assert float(jnp.mean(jnp.abs(wrong.log_prob - target))) / DIM > 0.1


# --- Hutchinson --------------------------------------------------------------------------------


@pytest.mark.parametrize("probe", list(HUTCHINSON_RUNS))
def test_hutchinson_agrees_with_exact_divergence(probe, hutchinson_results, exact_result):
    result = hutchinson_results[probe]
    assert bool(jnp.all(result.successful))
    assert result.log_prob_per_probe.shape == (NUM_POINTS, NUM_PROBES)
    np.testing.assert_allclose(result.log_prob, jnp.mean(result.log_prob_per_probe, 1), rtol=1e-6)
    error = result.log_prob - exact_result.log_prob
    z = float(jnp.sum(error) / jnp.sqrt(jnp.sum(result.standard_error**2)))
    assert abs(z) < 4.0


@pytest.mark.parametrize("probe", list(HUTCHINSON_RUNS))
def test_hutchinson_error_shrinks_as_one_over_sqrt_k(probe, hutchinson_results, exact_result):
    result = hutchinson_results[probe]
    exact = exact_result.log_prob[:, None]
    groups_of_4 = result.log_prob_per_probe.reshape(NUM_POINTS, 4, NUM_PROBES // 4).mean(-1)
    rms_4 = float(jnp.sqrt(jnp.mean((groups_of_4 - exact) ** 2)))
    rms_16 = float(jnp.sqrt(jnp.mean((result.log_prob - exact[:, 0]) ** 2)))
    assert 0.4 < rms_16 / rms_4 < 0.7  # 1/sqrt(4) = 0.5
    calibration = float(jnp.sqrt(jnp.mean(result.standard_error**2))) / rms_16
    assert 0.7 < calibration < 1.3


@pytest.mark.parametrize("probe", list(HUTCHINSON_RUNS))
def test_rademacher_has_lower_variance_than_gaussian(probe, hutchinson_results):
    """For a 2x2 matrix A (here the time integral of dv/dx), eps^T A eps has variance
    (A12 + A21)^2 for Rademacher probes and 2 (A11^2 + A22^2) + (A12 + A21)^2 for Gaussian
    ones. Mean standard errors measured at K = 16: 0.09 and 0.28 nats."""
    result = hutchinson_results[probe]
    mean_se = float(jnp.mean(result.standard_error))
    assert mean_se < (0.15 if probe == "rademacher" else 0.5)
    assert mean_se > (0.02 if probe == "rademacher" else 0.15)


def test_result_does_not_depend_on_batch_composition(hutchinson_results):
    run, full = HUTCHINSON_RUNS["gaussian"], hutchinson_results["gaussian"]
    half = NUM_POINTS // 2
    parts = [run(POINTS[:half], KEY, 0), run(POINTS[half:], KEY, half)]
    joined = np.asarray(jnp.concatenate([p.log_prob_per_probe for p in parts]))
    # Same probes (bitwise, test_probes_follow_per_example_keys); the values agree to
    # rounding, which an adaptive solve can amplify to the order of its tolerance in a few
    # solves (seen: < 1% of the values, by < 4e-4). Other probes would differ by ~0.3.
    difference = np.abs(joined - np.asarray(full.log_prob_per_probe))
    assert np.median(difference) < 1e-4 and difference.max() < 2e-3


def test_probes_follow_per_example_keys():
    draw = jax.jit(lambda first, probe: draw_probes(KEY, 10, 8, (3,), probe, first), static_argnums=1)
    probes = draw(0, "rademacher")
    assert probes.shape == (10, 8, 3) and set(np.unique(probes).tolist()) == {-1.0, 1.0}
    np.testing.assert_array_equal(draw(6, "rademacher")[:4], probes[6:])  # batch split
    # Probe k of example i comes from fold_in(fold_in(fold_in(key, i), 2), k): it depends
    # neither on the batch nor on the number of probes.
    i, k = 7, 5
    own_key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(KEY, i), 2), k)
    np.testing.assert_array_equal(jax.random.rademacher(own_key, (3,), jnp.float32), probes[i, k])
    gaussian = draw(0, "gaussian")
    assert abs(float(jnp.mean(gaussian))) < 0.3 and abs(float(jnp.var(gaussian)) - 1.0) < 0.3
    assert not np.allclose(np.abs(gaussian), 1.0)


@pytest.mark.slow  # exact divergence over 48 dimensions
def test_image_shaped_examples():
    """Examples of shape [2, 2, 3] (D = 12) from N(0, s^2 I), whose diffused density
    N(0, (alpha^2 s^2 + sigma^2) I) is known: both divergences handle multi-axis examples."""
    shape, std = (2, 2, 3), 0.7

    def variance(t):
        alpha, sigma = PROCESS.marginal_coefficients(t)
        return alpha**2 * std**2 + sigma**2

    score = lambda x, t: -x / variance(t)
    points = std * jax.random.normal(jax.random.key(4), (20,) + shape)

    @jax.jit
    def both(points):
        exact = log_likelihood(PROCESS, score, points)
        estimate = log_likelihood(PROCESS, score, points, KEY, divergence="hutchinson", num_probes=4)
        return exact, estimate

    exact, estimate = both(points)
    v = variance(T_EPS)
    target = -0.5 * jnp.sum(points**2, axis=(1, 2, 3)) / v - 0.5 * points[0].size * jnp.log(2 * jnp.pi * v)
    assert float(jnp.max(jnp.abs(exact.log_prob - target))) / points[0].size < 1e-3
    assert estimate.log_prob_per_probe.shape == (20, 4)
    z = jnp.sum(estimate.log_prob - exact.log_prob) / jnp.sqrt(jnp.sum(estimate.standard_error**2))
    assert abs(float(z)) < 4.0


# --- NFE, failures, arguments ----------------------------------------------------------------


@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_nfe_matches_counted_evaluations(divergence):
    counted, count = counting(SCORE)
    run = jax.jit(
        lambda point: log_likelihood(PROCESS, counted, point, KEY, divergence=divergence, probe="rademacher")
    )
    for i in range(2):  # two points: different step counts
        count[0] = 0
        result = run(POINTS[i : i + 1])
        jax.block_until_ready(result)
        assert int(result.nfe[0]) == count[0]
        assert (count[0] - 1) % 6 == 0  # Tsit5 is FSAL: 6 evaluations per attempted step, plus 1


def test_nfe_of_batch(exact_result, hutchinson_results):
    results = [(exact_result, 1)] + [(r, NUM_PROBES) for r in hutchinson_results.values()]
    for r, solves in results:
        nfe = np.asarray(r.nfe)
        assert nfe.dtype == np.int32 and np.all(nfe > 0)
        assert np.all((nfe - solves) % 6 == 0)  # sum over solves of 6 * steps + 1
        assert len(np.unique(nfe)) > 1  # step control is per example
        assert float(r.mean_nfe) <= int(r.max_nfe)


def test_max_steps_and_throw():
    run = lambda throw: jax.jit(
        lambda points: log_likelihood(PROCESS, SCORE, points, max_steps=3, throw=throw)
    )(POINTS[:2])
    result = run(False)
    assert not np.any(result.successful)
    np.testing.assert_array_equal(result.nfe, 6 * 3 + 1)
    with pytest.raises(RuntimeError, match="max_steps=3"):
        jax.block_until_ready(run(True))


def test_bad_arguments():
    with pytest.raises(ValueError, match="divergence"):
        log_likelihood(PROCESS, SCORE, POINTS, divergence="trace")
    with pytest.raises(ValueError, match="solver"):
        log_likelihood(PROCESS, SCORE, POINTS, solver="euler")
    with pytest.raises(ValueError, match="key"):
        log_likelihood(PROCESS, SCORE, POINTS, divergence="hutchinson")
    with pytest.raises(ValueError, match="probe"):
        log_likelihood(PROCESS, SCORE, POINTS, KEY, divergence="hutchinson", probe="sphere")
    with pytest.raises(ValueError, match="num_probes"):
        log_likelihood(PROCESS, SCORE, POINTS, num_probes=4)
    with pytest.raises(ValueError, match="t0"):
        log_likelihood(PROCESS, SCORE, POINTS, t0=2.0)


# --- bits per dimension ------------------------------------------------------------------------


@pytest.mark.parametrize("data_range", [(-1.0, 1.0), (0.0, 1.0)])
def test_dequantize_stays_in_bin_and_is_uniform(data_range):
    pixels = jax.random.randint(jax.random.key(0), (20000,), 0, 256)
    pixels = pixels.at[:2].set(jnp.array([0, 255]))
    x = dequantize(jax.random.key(1), pixels, 256, data_range)
    lo, hi = data_range
    assert float(jnp.min(x)) >= lo and float(jnp.max(x)) < hi
    np.testing.assert_array_equal(quantize(x, 256, data_range), pixels)
    fraction = np.asarray((x - lo) / bin_width(256, data_range) - pixels, np.float64)
    assert scipy.stats.kstest(np.clip(fraction, 0.0, 1.0), "uniform").pvalue > 1e-3
    assert abs(fraction.mean() - 0.5) < 4 * math.sqrt(1 / 12 / fraction.size)


def test_uniform_density_is_eight_bits_per_dim():
    num_dims = 3 * 8 * 8
    for lo, hi in ((-1.0, 1.0), (0.0, 1.0), (-3.0, 5.0)):
        log_uniform = -num_dims * math.log(hi - lo)
        np.testing.assert_allclose(bits_per_dim(log_uniform, num_dims, 256, (lo, hi)), 8.0, rtol=1e-6)
    uniform_16_levels = bits_per_dim(-num_dims * math.log(2.0), num_dims, 16, (-1.0, 1.0))
    np.testing.assert_allclose(uniform_16_levels, 4.0, rtol=1e-6)


def test_score_sde_offset_conversion():
    assert bits_per_dim_offset(256, (-1.0, 1.0)) == 7.0 == score_sde_offset(centered=True)
    assert bits_per_dim_offset(256, (0.0, 1.0)) == 8.0 == score_sde_offset(centered=False)
    # The same model expressed on [0, 1] (x' = (x + 1) / 2, log p' = log p + D log 2) has the
    # same bits/dim: the offsets differ by exactly the Jacobian term.
    log_p = jnp.array([-300.0, -120.5])
    num_dims = 100
    np.testing.assert_allclose(
        bits_per_dim(log_p, num_dims, 256, (-1.0, 1.0)),
        bits_per_dim(log_p + num_dims * math.log(2.0), num_dims, 256, (0.0, 1.0)),
        rtol=1e-6,
    )


def test_discretised_gaussian_bound():
    """A 1-D Gaussian density on [-1, 1] data, evaluated on dequantised pixels: the Monte
    Carlo bpd matches the closed form of E_u[-log p(x)] in every bin, and lies above the
    exact discrete NLL -log2 P(k), P(k) = Phi(b_{k+1}) - Phi(b_k), by at most a little
    (the Jensen gap log E_u p - E_u log p is ~ (x - mean)^2 h^2 / (24 s^4) nats for bins
    much narrower than s)."""
    mean, std, levels, data_range = 0.1, 0.3, 256, (-1.0, 1.0)
    pixels = jnp.arange(96, 176)  # bins within ~2 std of the mean
    draws = 4000
    keys = jax.random.split(jax.random.key(5), draws)
    x = jax.vmap(lambda k: dequantize(k, pixels, levels, data_range))(keys)  # [draws, bins]
    log_p = scipy.stats.norm.logpdf(np.asarray(x, np.float64), mean, std)
    bpd_mc = np.asarray(bits_per_dim(jnp.asarray(log_p.mean(0)), 1, levels, data_range))

    h = bin_width(levels, data_range)
    a = data_range[0] + np.asarray(pixels, np.float64) * h - mean
    second_moment = ((a + h) ** 3 - a**3) / (3 * h)  # E_u[(x - mean)^2] over the bin
    expected_log_p = -second_moment / (2 * std**2) - math.log(std * math.sqrt(2 * math.pi))
    bpd_closed = -expected_log_p / math.log(2) + 7.0
    np.testing.assert_allclose(bpd_mc, bpd_closed, atol=2e-3)

    edges = data_range[0] + (96 + np.arange(81)) * h
    prob = np.diff(scipy.stats.norm.cdf(edges, mean, std))
    exact_bits = -np.log2(prob)
    gap = bpd_closed - exact_bits
    largest = (np.max(np.abs(np.concatenate([a, a + h]))) / std) ** 2 + 1.0
    assert np.all(gap >= 0) and np.all(gap < largest * h**2 / (24 * std**2 * math.log(2)))
