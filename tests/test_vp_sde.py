"""The VP SDE against its closed forms.

The forward SDE is simulated with diffrax (Euler-Maruyama) and compared with the Gaussian
marginal N(alpha(t) x0, sigma(t)^2 I). The tolerance is a multiple of the Monte Carlo
standard error plus the Euler-Maruyama bias. For this linear SDE the bias is known exactly:
EM maps N(m, v) to N((1 - beta h / 2) m, (1 - beta h / 2)^2 v + beta h) per step, so the
EM law can be iterated in float64 and compared with the closed form; the test also checks
that this O(h) bias stays below half a standard error at the chosen step size (h = 1/4000;
the largest relative bias is in the variance at small t, where beta changes fastest
relative to its value).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.stats

from genjax.processes.simulate import simulate_forward as genjax_simulate_forward
from genjax.processes import VPSDE

Z = 4.5  # standard errors allowed per check
NUM_PATHS = 10_000
NUM_STEPS = 4000
SAVE_INDICES = (200, 800, 2000, 4000)  # t = 0.05, 0.2, 0.5, 1.0


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _simulate_forward(process, x0, key, num_steps, save_indices):
    return genjax_simulate_forward(process, x0, key, jnp.linspace(0.0, process.t_max, num_steps + 1), save_indices)


def simulate_forward(process, x0, key, num_steps=NUM_STEPS, save_indices=SAVE_INDICES):
    """x0 [N, D] -> states at grid[save_indices], [len(save_indices), N, D] (one batched
    Euler-Maruyama solve), and those times."""
    ys = _simulate_forward(process, x0, key, num_steps, tuple(save_indices))
    ts = np.linspace(0.0, process.t_max, num_steps + 1, dtype=np.float32)[np.array(save_indices)]
    return np.asarray(ys, np.float64), ts


def euler_maruyama_law(process, m0, v0, num_steps=NUM_STEPS, save_indices=SAVE_INDICES):
    """Exact mean and variance of the EM chain for the VP SDE, started from N(m0, v0)."""
    grid = np.linspace(0.0, process.t_max, num_steps + 1)
    m, v = np.asarray(m0, np.float64), np.asarray(v0, np.float64)
    out = {0: (m, v)}
    for k in range(num_steps):
        h = grid[k + 1] - grid[k]
        beta = process.beta_min + grid[k] * (process.beta_max - process.beta_min)
        a = 1.0 - 0.5 * beta * h
        m, v = a * m, a * a * v + beta * h
        out[k + 1] = (m, v)
    return [out[i] for i in save_indices]


def closed_form(process, m0, v0, ts):
    law = []
    for t in ts:
        alpha, sigma = (float(c) for c in process.marginal_coefficients(jnp.float32(t)))
        law.append((alpha * np.asarray(m0), alpha**2 * np.asarray(v0) + sigma**2))
    return law


def check_marginals(process, x0, m0, v0, key):
    xs, ts = simulate_forward(process, x0, key)
    n = xs.shape[1]
    for x, t, (m_exact, v_exact), (m_em, v_em) in zip(
        xs, ts, closed_form(process, m0, v0, ts), euler_maruyama_law(process, m0, v0)
    ):
        se_mean = np.sqrt(v_exact / n)
        se_var = v_exact * np.sqrt(2.0 / (n - 1))
        # The step size keeps the EM bias small next to the Monte Carlo error ...
        assert np.all(np.abs(m_em - m_exact) < 0.5 * se_mean), t
        assert np.all(np.abs(v_em - v_exact) < 0.5 * se_var), t
        # ... and the simulation matches the closed-form marginal within that error.
        mean, var = x.mean(0), x.var(0, ddof=1)
        assert np.all(np.abs(mean - m_exact) < Z * se_mean + np.abs(m_em - m_exact)), (t, mean, m_exact)
        assert np.all(np.abs(var - v_exact) < Z * se_var + np.abs(v_em - v_exact)), (t, var, v_exact)


def test_forward_sde_from_fixed_point_matches_marginal():
    process = VPSDE()
    x0_point = np.array([2.0, -1.0])
    x0 = jnp.broadcast_to(jnp.asarray(x0_point, jnp.float32), (NUM_PATHS, 2))
    check_marginals(process, x0, x0_point, np.zeros(2), jax.random.key(0))


def test_forward_sde_from_gaussian_matches_marginal():
    process = VPSDE()
    m0, s0 = np.array([1.5, -0.5]), 0.6
    x0 = jnp.asarray(m0, jnp.float32) + s0 * jax.random.normal(jax.random.key(1), (NUM_PATHS, 2))
    check_marginals(process, x0, m0, np.full(2, s0**2), jax.random.key(2))


def test_log_alpha_is_half_integral_of_beta():
    process = VPSDE()
    beta = lambda s: process.beta_min + s * (process.beta_max - process.beta_min)
    for t in (0.0, 0.1, 0.5, 1.0):
        integral, _ = scipy.integrate.quad(beta, 0.0, t)
        log_alpha = float(process.log_alpha(jnp.float32(t)))
        np.testing.assert_allclose(log_alpha, -0.5 * integral, rtol=1e-6, atol=1e-7)


def test_marginal_coefficients_endpoints():
    process = VPSDE()
    alpha0, sigma0 = process.marginal_coefficients(jnp.float32(0.0))
    assert float(alpha0) == 1.0 and float(sigma0) == 0.0
    alpha_T, sigma_T = process.marginal_coefficients(jnp.float32(process.t_max))
    assert float(alpha_T) < 1e-2  # exp(-5.025) = 6.6e-3 for the default VP
    assert abs(float(sigma_T) - 1.0) < 1e-4
    ts = jnp.linspace(0.0, 1.0, 11)
    alpha, sigma = process.marginal_coefficients(ts)
    np.testing.assert_allclose(alpha**2 + sigma**2, 1.0, atol=1e-6)  # variance preserving
    # sigma^2 ~ integral of beta near 0 (expm1 keeps it accurate)
    _, sigma_small = process.marginal_coefficients(jnp.float32(1e-5))
    np.testing.assert_allclose(float(sigma_small) ** 2, 1e-5 * 0.1, rtol=1e-3)


@pytest.mark.parametrize("shape", [(2,), (4, 4, 3)])
def test_prior_log_prob_is_standard_normal(shape):
    process = VPSDE()
    z = jax.random.normal(jax.random.key(3), shape) * 1.7
    expected = scipy.stats.norm.logpdf(np.asarray(z, np.float64)).sum()
    np.testing.assert_allclose(float(process.prior_log_prob(z)), expected, rtol=1e-5)


def test_prior_sample_moments():
    process = VPSDE()
    n = 20_000
    z = np.asarray(process.prior_sample(jax.random.key(4), (n, 3)), np.float64)
    assert z.shape == (n, 3)
    assert np.all(np.abs(z.mean(0)) < Z / np.sqrt(n))
    assert np.all(np.abs(z.var(0, ddof=1) - 1.0) < Z * np.sqrt(2.0 / (n - 1)))


def test_reverse_and_probability_flow_drifts_by_hand():
    process = VPSDE()
    x = jnp.array([1.0, -2.0])
    score = jnp.array([0.5, 0.25])
    t = jnp.float32(0.3)
    # beta(0.3) = 0.1 + 0.3 * 19.9 = 6.07; f = -3.035 x; g^2 = 6.07
    np.testing.assert_allclose(process.drift(x, t), [-3.035, 6.07], rtol=1e-6)
    np.testing.assert_allclose(process.diffusion(t) ** 2, 6.07, rtol=1e-6)
    # f - g^2 s = [-3.035 - 3.035, 6.07 - 1.5175]
    np.testing.assert_allclose(process.reverse_drift(x, t, score), [-6.07, 4.5525], rtol=1e-6)
    # f - g^2 s / 2 = [-3.035 - 1.5175, 6.07 - 0.75875]
    np.testing.assert_allclose(process.probability_flow_drift(x, t, score), [-4.5525, 5.31125], rtol=1e-6)
