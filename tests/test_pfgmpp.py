"""PFGM++ against the exact field of a weighted point set (Xu et al. 2023).

The kernel's law (KS tests with computed p-values, normalisation, scipy's multivariate t),
the samplers fed the exact posterior mean (mode shares within binomial error), D -> inf
being EDM, the ODE likelihood against the exact log p_{sigma_min}, and the DSM objective
minimised by the posterior mean. Each check is also run on a wrong field or law and must
fail there.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.stats

from genjax.data import point_set_oracle as oracle
from genjax.objectives import denoising_score_matching_loss
from genjax.processes import EDMProcess, PFGMPPProcess
from genjax.processes.views import score_fn_from_output
from genjax.samplers import (
    log_likelihood,
    sample_ddim,
    sample_edm_heun,
    sample_predictor_corrector,
    sample_probability_flow,
    sample_reverse_sde,
    solve_probability_flow,
)

POINTS = oracle.make_point_set([[-1.0, -0.5], [1.0, -0.5], [0.0, 1.0]], [0.5, 0.3, 0.2])
P_MIN = 1e-3  # a check passes when its p-value exceeds this


# Student-t draws stay outside jax.jit in these tests: jax.random.gamma costs seconds to
# compile inside every program, while eagerly its compiled kernel is shared by all D.
def noise_draws(process, num, dim=2, seed=0):
    keys = jax.random.split(jax.random.key(seed), num)
    return np.asarray(jax.vmap(lambda k: process.perturbation_noise(k, (dim,)))(keys), np.float64)


# --- 1. the kernel ----------------------------------------------------------------------------
def radial_ks_pvalue(process, reference_d, num=20_000):
    """KS test of |n|^2 / N against F(N, reference_d) (the law of |n|^2 / N for a t_D kernel)."""
    n = noise_draws(process, num)
    return scipy.stats.kstest(np.sum(n**2, axis=1) / 2, scipy.stats.f(2, reference_d).cdf).pvalue


@pytest.mark.parametrize("d", [1.0, 8.0, 128.0, 2048.0])
def test_kernel_radial_law_is_the_analytic_one(d):
    assert radial_ks_pvalue(PFGMPPProcess(augment_dim=d), d) > P_MIN


@pytest.mark.parametrize("d", [1.0, 4.0])
def test_radial_check_rejects_wrong_degrees_of_freedom(d):
    assert radial_ks_pvalue(PFGMPPProcess(augment_dim=d), d + 1) < 1e-6


def test_kernel_approaches_the_gaussian_as_d_grows():
    """KS distance of |n|^2 to chi2_2 (the Gaussian's law) falls with D, as the analytic
    sup-distance between the two CDFs does, down to the sampling floor."""
    num = 50_000
    grid = np.linspace(0, 60, 100_001)
    measured, analytic = [], []
    for d in (1.0, 8.0, 128.0, 2048.0):
        squared = np.sum(noise_draws(PFGMPPProcess(augment_dim=d), num, seed=1) ** 2, axis=1)
        measured.append(scipy.stats.kstest(squared, scipy.stats.chi2(2).cdf).statistic)
        analytic.append(np.max(np.abs(scipy.stats.f(2, d).cdf(grid / 2) - scipy.stats.chi2(2).cdf(grid))))
    floor = 1.63 / math.sqrt(num)  # the KS statistic's 1% critical value
    assert measured[0] > measured[1] > measured[2]
    for m, a in zip(measured, analytic):
        assert abs(m - a) < floor, (measured, analytic)
    assert measured[1] > floor > measured[3]


@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize("d", [1.0, 8.0, 128.0])
def test_kernel_log_density_integrates_to_one(dim, d):
    process = PFGMPPProcess(augment_dim=d)
    log_prob = jax.jit(lambda n: process.perturbation_noise_log_prob(n))
    if dim == 1:
        density = lambda u: float(np.exp(log_prob(jnp.array([u], jnp.float32))))
        total = scipy.integrate.quad(density, -np.inf, np.inf, limit=200)[0]
    else:  # radial: int 2 pi rho p(rho) d rho
        density = lambda rho: 2 * np.pi * rho * float(np.exp(log_prob(jnp.array([rho, 0.0], jnp.float32))))
        total = scipy.integrate.quad(density, 0, np.inf, limit=200)[0]
    assert abs(total - 1.0) < 1e-4


@pytest.mark.parametrize("d", [1.0, 8.0, 128.0, 2048.0, 1e6])
def test_kernel_and_prior_log_density_match_scipy_multivariate_t(d):
    process = PFGMPPProcess(augment_dim=d, sigma_max=20.0)
    x = np.asarray(jax.random.normal(jax.random.key(2), (8, 2))) * np.array([[0.5], [3.0]] * 4)
    expected_kernel = scipy.stats.multivariate_t(np.zeros(2), np.eye(2), df=d).logpdf(x)
    expected_prior = scipy.stats.multivariate_t(np.zeros(2), 20.0**2 * np.eye(2), df=d).logpdf(20 * x)
    got_kernel = jax.vmap(process.perturbation_noise_log_prob)(jnp.asarray(x, jnp.float32))
    got_prior = jax.vmap(process.prior_log_prob)(jnp.asarray(20 * x, jnp.float32))
    np.testing.assert_allclose(got_kernel, expected_kernel, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_prior, expected_prior, rtol=1e-5, atol=1e-5)


def test_augment_dim_must_be_positive():
    with pytest.raises(ValueError, match="augment_dim"):
        PFGMPPProcess(augment_dim=0.0)


@pytest.mark.parametrize(
    "sampler, options",
    [
        (sample_reverse_sde, {"num_steps": 4}),
        (sample_predictor_corrector, {"num_steps": 4}),
        (sample_ddim, {"num_steps": 4, "eta": 0.5}),
        (sample_edm_heun, {"num_steps": 4, "s_churn": 1.0}),
    ],
)
def test_stochastic_samplers_refuse_a_process_without_reverse_sde(sampler, options):
    process = PFGMPPProcess(augment_dim=8.0)
    with pytest.raises(ValueError, match="no reverse-time SDE"):
        sampler(process, oracle.score_fn(POINTS, process), jax.random.key(0), 4, (2,), **options)


# --- 2. samplers with the exact field recover the weights ---------------------------------------
def share_test(shares, weights, num):
    """(chi-square p-value of the observed shares against the weights, max |error| / SE)."""
    counts = np.round(np.asarray(shares) * num)
    expected = np.asarray(weights) * num
    p_value = scipy.stats.chisquare(counts, expected).pvalue
    se = np.sqrt(np.asarray(weights) * (1 - np.asarray(weights)) / num)
    return p_value, float(np.max(np.abs(np.asarray(shares) - np.asarray(weights)) / se))


def draw_shares(process, field_points, sampler, num, **options):
    score = oracle.score_fn(field_points, process)
    result = sampler(process, score, jax.random.key(3), num, (2,), **options)
    assert bool(jnp.all(result.successful))
    return oracle.nearest_point_shares(POINTS, result.samples)


SLOW = pytest.mark.slow


@pytest.mark.parametrize("d", [1.0, 128.0])
@pytest.mark.parametrize(
    "sampler, options, num",
    [pytest.param(sample_probability_flow, {"rtol": 1e-4, "atol": 1e-4}, 4_000, marks=SLOW),
     (sample_edm_heun, {"num_steps": 32}, 20_000)],
    ids=["probability_flow", "edm_heun"],
)
def test_samplers_with_the_exact_field_recover_the_weights(d, sampler, options, num):
    process = PFGMPPProcess(augment_dim=d, sigma_max=80.0)
    shares = draw_shares(process, POINTS, sampler, num, **options)
    p_value, worst = share_test(shares, POINTS.weights, num)
    assert p_value > P_MIN and worst < 4.0, (shares, p_value, worst)


def test_share_check_rejects_a_misweighted_field():
    """The same check fails when the field's weights are off by 10 % (0.5 -> 0.55, renormalised)."""
    process = PFGMPPProcess(augment_dim=8.0, sigma_max=80.0)
    wrong = oracle.make_point_set(POINTS.points, POINTS.weights * jnp.array([1.1, 1.0, 1.0]))
    shares = draw_shares(process, wrong, sample_edm_heun, 20_000, num_steps=32)
    p_value, _ = share_test(shares, POINTS.weights, 20_000)
    assert p_value < P_MIN, shares


# --- 3. D -> infinity is EDM ----------------------------------------------------------------
def test_large_d_gives_edm_samples_from_the_same_prior_draws():
    """Same denoiser oracle, same x_T: the PFGM++ and EDM solves agree to O(1/D)."""
    edm = EDMProcess(sigma_max=20.0)
    x_T = jax.vmap(lambda k: edm.prior_sample(k, (2,)))(jax.random.split(jax.random.key(4), 256))

    def solve(process):
        return solve_probability_flow(process, oracle.score_fn(POINTS, process), x_T, solver="heun", num_steps=64).samples

    reference = solve(edm)
    gaps = {d: float(jnp.max(jnp.abs(solve(PFGMPPProcess(augment_dim=d, sigma_max=20.0)) - reference)))
            for d in (1e4, 1e6)}
    assert gaps[1e6] < gaps[1e4] / 10, gaps
    assert gaps[1e6] < 2e-3, gaps


# --- 4. likelihood --------------------------------------------------------------------------
def likelihood_gap(process, field_points):
    """max over points of |ODE log p_{sigma_min} - exact| / N, with the exact log p at sigma_max."""
    t_min, t_max = jnp.float32(process.t_min_sample), jnp.float32(process.t_max)
    key_y, key_n = jax.random.split(jax.random.key(5))
    y = POINTS.sample(key_y, 16)
    n = jax.vmap(lambda k: process.perturbation_noise(k, (2,)))(jax.random.split(key_n, 16))
    x = y + process.sigma_min * n
    exact = jax.vmap(lambda xi: POINTS.log_prob(process, xi, t_min))(x)
    result = log_likelihood(
        process, oracle.score_fn(field_points, process), x, divergence="exact", rtol=1e-6, atol=1e-6,
        terminal_log_prob=lambda z: POINTS.log_prob(process, z, t_max),
    )
    return float(jnp.max(jnp.abs(result.log_prob - exact)) / 2)


@pytest.mark.parametrize("d", [1.0, pytest.param(128.0, marks=SLOW)])
def test_ode_likelihood_with_the_exact_field_matches_the_exact_density(d):
    process = PFGMPPProcess(augment_dim=d, sigma_min=0.05, sigma_max=20.0)
    assert likelihood_gap(process, POINTS) < 0.01


def test_likelihood_check_rejects_a_misweighted_field():
    process = PFGMPPProcess(augment_dim=1.0, sigma_min=0.05, sigma_max=20.0)
    wrong = oracle.make_point_set(POINTS.points, POINTS.weights * jnp.array([1.1, 1.0, 1.0]))
    assert likelihood_gap(process, wrong) > 0.01


# --- 5. the objective -----------------------------------------------------------------------
def paired_dsm_difference(process, first, second, seed, num_keys=16, batch=8192):
    """DSM(first) - DSM(second) of two denoisers with the EDM weighting, on common random
    numbers: num_keys independent batches, one difference each."""
    first_score = score_fn_from_output(process, first, "denoised")
    second_score = score_fn_from_output(process, second, "denoised")

    @jax.vmap
    def difference(key):
        key_data, key_loss = jax.random.split(key)
        x0 = POINTS.sample(key_data, batch)
        keys = jax.random.split(key_loss, batch)
        loss = lambda s: denoising_score_matching_loss(s, process, x0, keys, weighting="edm")
        return loss(first_score) - loss(second_score)

    return np.asarray(difference(jax.random.split(jax.random.key(seed), num_keys)), np.float64)


def objective_excess(process, denoiser, delta):
    """DSM(denoiser + delta) - DSM(denoiser)."""
    return paired_dsm_difference(process, lambda x, t: denoiser(x, t) + delta, denoiser, seed=6)


def expected_excess(process, delta):
    """E_sigma[lambda(sigma)] |delta|^2 / N: lambda = 1/sigma_data^2 + 1/sigma^2 and
    E[sigma^-2] = exp(-2 P_mean + 2 P_std^2) for ln sigma ~ N(P_mean, P_std^2)."""
    mean_weight = 1 / process.sigma_data**2 + math.exp(-2 * process.p_mean + 2 * process.p_std**2)
    return mean_weight * float(jnp.sum(delta**2)) / 2


@pytest.mark.parametrize("d", [1.0, pytest.param(128.0, marks=SLOW)])
def test_objective_is_minimised_by_the_exact_posterior_mean(d):
    process = PFGMPPProcess(augment_dim=d, p_mean=0.0, p_std=0.5)
    delta = jnp.array([0.1, -0.05])
    excess = objective_excess(process, oracle.denoiser_fn(POINTS, process), delta)
    se = excess.std(ddof=1) / math.sqrt(len(excess))
    assert abs(excess.mean() - expected_excess(process, delta)) < 4 * se, (excess.mean(), se)


def antisymmetric_difference(process, denoiser, shift):
    """DSM(D + h) - DSM(D - h) = 4 E[lambda (D(x_t) - x_0) . h(x_t)] / N, zero for every h
    exactly when D is the posterior mean E[x_0 | x_t]."""
    return paired_dsm_difference(process, lambda x, t: denoiser(x, t) + shift(x),
                                 lambda x, t: denoiser(x, t) - shift(x), seed=7)


def linear_shift(x):
    return 0.1 * x


@pytest.mark.parametrize("d", [1.0, pytest.param(8.0, marks=SLOW)])
def test_objective_residual_is_orthogonal_to_functions_of_x_t(d):
    """The exact Student-t posterior mean makes the DSM residual orthogonal to h(x_t) = 0.1 x_t;
    with Gaussian noise in the objective (or a Gaussian-kernel denoiser) it would not be."""
    process = PFGMPPProcess(augment_dim=d, p_mean=0.0, p_std=0.5)
    diff = antisymmetric_difference(process, oracle.denoiser_fn(POINTS, process), linear_shift)
    se = diff.std(ddof=1) / math.sqrt(len(diff))
    assert abs(diff.mean()) < 4 * se, (diff.mean(), se)


def test_orthogonality_check_rejects_the_gaussian_posterior_mean():
    process = PFGMPPProcess(augment_dim=1.0, p_mean=0.0, p_std=0.5)
    gaussian_denoiser = oracle.denoiser_fn(POINTS, EDMProcess(p_mean=0.0, p_std=0.5))
    diff = antisymmetric_difference(process, gaussian_denoiser, linear_shift)
    se = diff.std(ddof=1) / math.sqrt(len(diff))
    assert abs(diff.mean()) > 4 * se, (diff.mean(), se)


def test_objective_check_rejects_a_misweighted_denoiser():
    """From a wrong denoiser the excess of the same shift differs from |delta|^2 E[lambda]."""
    process = PFGMPPProcess(augment_dim=1.0, p_mean=0.0, p_std=0.5)
    delta = jnp.array([0.1, -0.05])
    wrong = oracle.make_point_set(POINTS.points, POINTS.weights * jnp.array([1.1, 1.0, 1.0]))
    excess = objective_excess(process, oracle.denoiser_fn(wrong, process), delta)
    se = excess.std(ddof=1) / math.sqrt(len(excess))
    assert abs(excess.mean() - expected_excess(process, delta)) > 4 * se, (excess.mean(), se)


# --- the config -----------------------------------------------------------------------------
def test_config_builds_pfgmpp_with_an_overridable_augment_dim():
    from configs import pfgmpp
    from genjax.experiment import build_experiment
    from genjax.factory import ConfigError

    config = pfgmpp.get_config()
    config.process.kwargs.augment_dim = 8.0
    experiment = build_experiment(config)
    assert isinstance(experiment.process, PFGMPPProcess) and experiment.process.augment_dim == 8.0
    config.evaluate.samplers = "edm_heun,euler_maruyama"
    with pytest.raises(ConfigError, match="euler_maruyama.*no reverse-time SDE"):
        build_experiment(config)
    config.evaluate.samplers = "edm_heun"
    config.process.kwargs.augment_dim = -1.0
    with pytest.raises(ConfigError, match="augment_dim"):
        build_experiment(config)
