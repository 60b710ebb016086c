"""VE, VP, sub-VP and EDM processes against their closed forms.

* The forward SDE, simulated with diffrax (Euler-Maruyama) from a fixed x0, matches the
  Gaussian kernel N(alpha x0, sigma^2 I). Every drift here is linear, f = a(t) x, so the law
  of the Euler-Maruyama chain is known exactly (m <- (1 + a h) m, v <- (1 + a h)^2 v + g^2 h);
  the test checks that this O(h) bias stays below half a standard error and allows it on top
  of 4.5 Monte Carlo standard errors, as tests/test_vp_sde.py does.
* Prior moments and log-density against scipy.
* The discrete SMLD / DDPM schedules against the continuous VE / VP kernels.
* EDM's schedules and preconditioning identities (F = 0 gives c_skip x; the exact Gaussian F
  gives the posterior mean).
* The views round-trip, and the probability-flow velocity of the exact mixture score
  satisfies the continuity equation d/dt log p_t(x(t)) = -div v (automatic differentiation
  of the closed-form mixture), which checks drift, diffusion and kernel for consistency.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from genjax.data.gaussian_mixture import GaussianMixture, make_gaussian_mixture, perturbed_log_prob_fn, perturbed_score_fn
from genjax.nets.preconditioning import c_in, c_noise, c_out, c_skip, edm_denoiser, edm_loss_weight
from genjax.processes.simulate import simulate_forward
from genjax.processes import (
    EDMProcess,
    SubVPSDE,
    VESDE,
    VPSDE,
    ddpm_marginal_coefficients,
    smld_marginal_coefficients,
    smld_sigmas,
)
from genjax.processes import views

Z = 4.5
NUM_PATHS = 4000


class ScaledEDM(EDMProcess):
    """An EDM-style process with a non-trivial scale, s(t) = 1 / sqrt(1 + t^2) (the VP-like
    row of Karras et al. Table 1 with sigma(t) = t), to exercise the derived drift/diffusion."""

    def scale(self, t):
        return 1.0 / jnp.sqrt(1.0 + jnp.asarray(t) ** 2)


PROCESSES = {
    "vp": VPSDE(),
    "subvp": SubVPSDE(),
    "ve": VESDE(),
    "edm": EDMProcess(),
    "scaled_edm": ScaledEDM(),
}


def _grid(process):
    """Time grid of the simulation and the indices saved."""
    if isinstance(process, EDMProcess):
        grid = np.concatenate([[0.0], np.geomspace(1e-3, process.t_max, 2000)])
        return grid, (1000, 1400, 1800, 2000)  # t ~ 0.09, 0.8, 8.5, 80
    if isinstance(process, SubVPSDE):  # sigma ~ t^2 near 0: the mean's EM bias needs t >= 0.1
        return np.linspace(0.0, process.t_max, 2001), (200, 400, 1000, 2000)  # t = 0.1, 0.2, 0.5, 1
    return np.linspace(0.0, process.t_max, 2001), (100, 400, 1000, 2000)  # t = 0.05, 0.2, 0.5, 1


_simulate = jax.jit(simulate_forward, static_argnums=(0, 4))


def euler_maruyama_law(process, m0, grid, save_indices):
    """Exact mean and variance of the EM chain from the point m0, for a drift a(t) x."""
    t = jnp.asarray(grid[:-1], jnp.float32)
    a = np.asarray(jax.vmap(lambda s: process.drift(jnp.float32(1.0), s))(t), np.float64)
    g2 = np.asarray(jax.vmap(process.diffusion)(t), np.float64) ** 2
    h = np.diff(grid)
    m, v, out = np.asarray(m0, np.float64), 0.0, {}
    for k in range(len(h)):
        m, v = (1.0 + a[k] * h[k]) * m, (1.0 + a[k] * h[k]) ** 2 * v + g2[k] * h[k]
        out[k + 1] = (m, v)
    return [out[i] for i in save_indices]


@pytest.mark.parametrize("name", ["vp", "subvp", "ve", "edm", pytest.param("scaled_edm", marks=pytest.mark.slow)])
def test_forward_sde_from_fixed_point_matches_marginal(name):
    process = PROCESSES[name]
    x0_point = np.array([2.0, -1.0])
    grid, save = _grid(process)
    x0 = jnp.broadcast_to(jnp.asarray(x0_point, jnp.float32), (NUM_PATHS, 2))
    xs = np.asarray(_simulate(process, x0, jax.random.key(0), jnp.asarray(grid, jnp.float32), save), np.float64)
    for x, i, (m_em, v_em) in zip(xs, save, euler_maruyama_law(process, x0_point, grid, save)):
        alpha, sigma = (float(c) for c in process.marginal_coefficients(jnp.float32(grid[i])))
        m_exact, v_exact = alpha * x0_point, sigma**2
        se_mean, se_var = np.sqrt(v_exact / NUM_PATHS), v_exact * np.sqrt(2.0 / (NUM_PATHS - 1))
        assert np.all(np.abs(m_em - m_exact) < 0.5 * se_mean), (grid[i], m_em, m_exact)
        assert np.abs(v_em - v_exact) < 0.5 * se_var, (grid[i], v_em, v_exact)
        mean, var = x.mean(0), x.var(0, ddof=1)
        assert np.all(np.abs(mean - m_exact) < Z * se_mean + np.abs(m_em - m_exact)), (grid[i], mean, m_exact)
        assert np.all(np.abs(var - v_exact) < Z * se_var + np.abs(v_em - v_exact)), (grid[i], var, v_exact)


def test_ve_kernel_variance_is_exact_integral_of_g_squared():
    """sigma(t)^2 = sigma_ve(t)^2 - sigma_min^2 = int_0^t g^2, zero at t = 0."""
    process = VESDE()
    t = np.linspace(0.0, 1.0, 20_001)
    g2 = np.asarray(process.diffusion(jnp.asarray(t, jnp.float32)), np.float64) ** 2
    integral = np.concatenate([[0.0], np.cumsum(0.5 * (g2[1:] + g2[:-1]) * np.diff(t))])
    _, sigma = process.marginal_coefficients(jnp.asarray(t, jnp.float32))
    np.testing.assert_allclose(np.asarray(sigma, np.float64) ** 2, integral, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(
        np.asarray(sigma, np.float64) ** 2,
        np.asarray(process.noise_level(jnp.asarray(t, jnp.float32)), np.float64) ** 2 - process.sigma_min**2,
        rtol=1e-4,
        atol=1e-9,
    )
    assert float(process.marginal_coefficients(jnp.float32(0.0))[1]) == 0.0


PRIOR_STDS = {"vp": 1.0, "subvp": 1.0, "ve": np.sqrt(50.0**2 - 0.01**2), "edm": 80.0}


@pytest.mark.parametrize("name", list(PRIOR_STDS))
def test_prior_moments_and_log_density(name):
    process, std = PROCESSES[name], PRIOR_STDS[name]
    n = 20_000
    z = np.asarray(process.prior_sample(jax.random.key(4), (n, 3)), np.float64)
    assert z.shape == (n, 3)
    assert np.all(np.abs(z.mean(0)) < Z * std / np.sqrt(n))
    assert np.all(np.abs(z.var(0, ddof=1) / std**2 - 1.0) < Z * np.sqrt(2.0 / (n - 1)))
    for shape in [(2,), (4, 4, 3)]:
        point = jax.random.normal(jax.random.key(3), shape) * 1.7 * std
        expected = scipy.stats.norm.logpdf(np.asarray(point, np.float64), scale=std).sum()
        np.testing.assert_allclose(float(process.prior_log_prob(point)), expected, rtol=1e-5)


def test_subvp_closed_forms():
    process, vp = SubVPSDE(), VPSDE()
    t = jnp.linspace(0.0, 1.0, 11)
    alpha, sigma = process.marginal_coefficients(t)
    alpha_vp, sigma_vp = vp.marginal_coefficients(t)
    np.testing.assert_allclose(alpha, alpha_vp, rtol=1e-6)
    np.testing.assert_allclose(sigma, sigma_vp**2, rtol=1e-5, atol=1e-7)  # sigma = 1 - alpha^2
    assert np.all(np.asarray(sigma) <= np.asarray(sigma_vp) + 1e-7)
    np.testing.assert_allclose(
        process.diffusion(t) ** 2, vp.beta(t) * (1.0 - np.exp(-2.0 * (-2.0 * vp.log_alpha(t)))), rtol=1e-5, atol=1e-7
    )


def test_smld_sigmas_are_the_ve_noise_levels_at_grid_points():
    process = VESDE()
    times, alphas, sigmas = smld_marginal_coefficients(process, 10)
    np.testing.assert_allclose(smld_sigmas(process, 10)[jnp.array([0, -1])], [0.01, 50.0], rtol=1e-6)
    np.testing.assert_allclose(sigmas, process.noise_level(times), rtol=1e-5)
    np.testing.assert_array_equal(alphas, 1.0)
    # The SMLD kernel variance sigma_i^2 and the exact VE one differ by sigma_min^2.
    _, sigma_ve = process.marginal_coefficients(times)
    np.testing.assert_allclose(sigmas**2 - sigmas[0] ** 2, sigma_ve**2, rtol=1e-5, atol=1e-8)


def test_ddpm_schedule_converges_to_vp_kernel():
    process = VPSDE()
    errors = []
    for n in (1000, 4000):
        times, alphas, sigmas = ddpm_marginal_coefficients(process, n)
        alpha, sigma = process.marginal_coefficients(times)
        errors.append(max(float(jnp.max(jnp.abs(alphas - alpha))), float(jnp.max(jnp.abs(sigmas - sigma)))))
    assert errors[0] < 2e-3, errors  # documented accuracy at DDPM's N = 1000
    assert 3.0 < errors[0] / errors[1] < 5.0, errors  # first order in 1/N


def test_edm_schedules():
    process = EDMProcess()
    assert process.t_max == 80.0 and abs(process.t_min_sample - 0.002) < 1e-9
    steps = np.asarray(process.sigma_steps(18), np.float64)
    i = np.arange(18)
    expected = (80.0 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80.0 ** (1 / 7))) ** 7
    np.testing.assert_allclose(steps, expected, rtol=1e-5)
    assert np.all(np.diff(steps) < 0)
    t = jnp.float32(3.0)
    assert float(process.diffusion(t)) == pytest.approx(np.sqrt(6.0), rel=1e-6)
    np.testing.assert_array_equal(process.drift(jnp.ones(2), t), 0.0)
    np.testing.assert_allclose(process.marginal_coefficients(t), (1.0, 3.0))
    n = 20_000
    log_sigma = np.log(np.asarray(process.training_times(jax.random.key(0), (n,)), np.float64))
    assert abs(log_sigma.mean() + 1.2) < Z * 1.2 / np.sqrt(n)
    assert abs(log_sigma.std(ddof=1) / 1.2 - 1.0) < Z / np.sqrt(2 * n)
    assert process.sample_training_time(jax.random.key(1)).shape == ()


@pytest.mark.parametrize("name", list(PROCESSES))
def test_time_grid(name):
    """Every grid runs from t_max down to t_min_sample in N strictly decreasing steps; it is
    uniform in t for the SDEs of Song et al. and the rho = 7 noise grid of Karras et al.
    eq. 5 (with its N + 1 levels) for EDM, in sigma (and so in t = sigma^{-1})."""
    process = PROCESSES[name]
    grid = np.asarray(process.time_grid(10), np.float64)
    assert grid.shape == (11,)
    assert grid[0] == np.float32(process.t_max) and grid[-1] == np.float32(process.t_min_sample)
    assert np.all(np.diff(grid) < 0)
    if isinstance(process, EDMProcess):
        sigmas = np.asarray(process.sigma(jnp.asarray(grid, jnp.float32)), np.float64)
        i = np.arange(11)
        lo, hi = process.sigma_min ** (1 / 7), process.sigma_max ** (1 / 7)
        np.testing.assert_allclose(sigmas, (hi + i / 10 * (lo - hi)) ** 7, rtol=1e-4)
    else:
        np.testing.assert_allclose(grid, np.linspace(process.t_max, process.t_min_sample, 11), rtol=1e-6)
    with pytest.raises(ValueError, match="num_steps"):
        process.time_grid(0)


def test_preconditioning_identities():
    sigma_data = 0.5
    sigma = jnp.geomspace(0.002, 80.0, 7)
    np.testing.assert_allclose(edm_loss_weight(sigma, sigma_data) * c_out(sigma, sigma_data) ** 2, 1.0, rtol=1e-5)
    np.testing.assert_allclose(c_in(sigma, sigma_data) ** 2 * (sigma**2 + sigma_data**2), 1.0, rtol=1e-5)
    # With Var(x_0) = sigma_data^2, the network's target (x_0 - c_skip x_hat) / c_out has unit variance.
    target_var = ((1 - c_skip(sigma, sigma_data)) ** 2 * sigma_data**2 + c_skip(sigma, sigma_data) ** 2 * sigma**2) / c_out(
        sigma, sigma_data
    ) ** 2
    np.testing.assert_allclose(target_var, 1.0, rtol=1e-5)
    np.testing.assert_allclose(c_noise(jnp.float32(np.e**4)), 1.0, rtol=1e-6)
    process = EDMProcess()
    x = jnp.array([0.7, -1.3])
    denoiser = edm_denoiser(lambda y, c: jnp.zeros_like(y), process.sigma, sigma_data)
    np.testing.assert_allclose(denoiser(x, jnp.float32(2.0)), c_skip(2.0, sigma_data) * x, rtol=1e-6)


@pytest.mark.parametrize("name", ["edm", "scaled_edm", "vp"])
def test_exact_network_gives_posterior_mean_and_exact_score(name):
    """Data N(mu, v I): the F that makes D the posterior mean E[x_0 | x_hat] = mu + v (x_hat -
    mu) / (v + sigma~^2); through score_fn_from_output(..., "denoised") D gives the exact score."""
    process, sigma_data = PROCESSES[name], 0.5
    mu, var = jnp.array([0.3, -0.2]), 0.8
    gaussian = GaussianMixture(jnp.array([1.0]), mu[None], var * jnp.eye(2)[None])

    def posterior_mean(x_hat, sigma):
        return mu + var / (var + sigma**2) * (x_hat - mu)

    def exact_f(y, c):
        sigma = jnp.exp(4.0 * c)
        x_hat = y / c_in(sigma, sigma_data)
        return (posterior_mean(x_hat, sigma) - c_skip(sigma, sigma_data) * x_hat) / c_out(sigma, sigma_data)

    def sigma_tilde(t):
        alpha, sigma = process.marginal_coefficients(t)
        return views.sigma_tilde_from_coefficients(alpha, sigma)

    def scale(t):
        return process.marginal_coefficients(t)[0]

    denoiser = edm_denoiser(exact_f, sigma_tilde, sigma_data, scale_of_t=scale)
    score_fn = views.score_fn_from_output(process, denoiser, "denoised")
    exact_score = perturbed_score_fn(gaussian, process)
    for t in (0.05, 0.5, 0.9):
        t = jnp.float32(t * process.t_max if name != "vp" else t)
        x = jnp.array([1.1, -0.4])
        alpha = scale(t)
        np.testing.assert_allclose(denoiser(x, t), posterior_mean(x / alpha, sigma_tilde(t)), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(score_fn(x, t), exact_score(x, t), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("name", list(PROCESSES))
def test_views_round_trip(name):
    process = PROCESSES[name]
    keys = jax.random.split(jax.random.key(7), 2)
    x, score = jax.random.normal(keys[0], (3,)), jax.random.normal(keys[1], (3,))
    t = jnp.float32(0.3 * process.t_max)
    alpha, sigma = process.marginal_coefficients(t)
    back = views.score_from_noise(views.noise_from_score(score, sigma), sigma)
    np.testing.assert_allclose(back, score, rtol=1e-5)
    back = views.score_from_denoised(x, views.denoised_from_score(x, score, alpha, sigma), alpha, sigma)
    np.testing.assert_allclose(back, score, rtol=1e-3, atol=1e-5)
    velocity = views.velocity_from_score(process, x, t, score)
    np.testing.assert_allclose(velocity, process.probability_flow_drift(x, t, score), rtol=1e-6)
    np.testing.assert_allclose(views.score_from_velocity(process, x, t, velocity), score, rtol=1e-3, atol=1e-5)
    for kind, output in (("noise", lambda y, s: views.noise_from_score(score, sigma)),
                         ("denoised", lambda y, s: views.denoised_from_score(x, score, alpha, sigma)),
                         ("score", lambda y, s: score)):
        np.testing.assert_allclose(views.score_fn_from_output(process, output, kind)(x, t), score, rtol=1e-3, atol=1e-5)


MIXTURE = make_gaussian_mixture([0.3, 0.7], [[-1.0, 0.5], [1.0, -0.5]], [0.4, 0.6])


@pytest.mark.parametrize("name", list(PROCESSES))
def test_probability_flow_satisfies_continuity_equation(name):
    """Along x'(t) = v(x, t), d/dt log p_t(x(t)) = d_t log p_t + v . grad log p_t = -div v."""
    process = PROCESSES[name]
    log_prob = perturbed_log_prob_fn(MIXTURE, process)
    velocity = views.velocity_fn(process, perturbed_score_fn(MIXTURE, process))

    @jax.jit
    def residual(x, t):
        d_t = jax.grad(log_prob, argnums=1)(x, t)
        v = velocity(x, t)
        along_flow = d_t + jnp.dot(v, jax.grad(log_prob)(x, t))
        divergence = jnp.trace(jax.jacfwd(velocity)(x, t))
        scale = jnp.abs(d_t) + jnp.abs(divergence) + 1e-3 * jnp.abs(divergence).max()
        return along_flow + divergence, scale

    points = jax.random.normal(jax.random.key(5), (4, 2)) * 1.5
    for frac in (0.02, 0.1, 0.4, 0.9):
        t = jnp.float32(frac * process.t_max)
        for x in points:
            alpha, sigma = process.marginal_coefficients(t)
            x = alpha * x + sigma * x  # points where p_t has mass
            r, scale = residual(x, t)
            assert abs(float(r)) < 2e-3 * float(scale), (name, float(t), x, float(r), float(scale))


def test_mixture_score_is_the_gradient_of_its_log_density():
    """GaussianMixture.score (one Cholesky factor per component, shared with the density)
    equals autodiff of log_prob for full, unequal covariances."""
    keys = jax.random.split(jax.random.key(0), 3)
    factors = jax.random.normal(keys[0], (3, 4, 4))
    covariances = factors @ factors.transpose(0, 2, 1) + 0.5 * jnp.eye(4)
    mixture = GaussianMixture(jnp.array([0.2, 0.3, 0.5]), jax.random.normal(keys[1], (3, 4)), covariances)
    x = 2.0 * jax.random.normal(keys[2], (32, 4))
    np.testing.assert_allclose(jax.vmap(mixture.score)(x), jax.vmap(jax.grad(mixture.log_prob))(x), rtol=1e-4, atol=1e-5)
