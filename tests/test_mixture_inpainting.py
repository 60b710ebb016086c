"""Sampling given a linear observation, checked against a law known exactly: a two-component
Gaussian mixture observed through its first coordinate with noise, y = x_1 + sigma_y n.

p(x_0 | y) is again a mixture and p_t(y | x) is closed-form (genjax/data/mixture_observation.py).
Fed the exact score and this exact likelihood term, the posterior method must draw p(x_0 | y):
the share of each mode and both coordinates' moments within their standard errors. The same
laws are checked here against a direct Kalman update, so a wrong oracle cannot pass both.
`python -m experiments.inpaint_mixture` measures the approximate methods on the same mixture."""
import math

import jax
import jax.numpy as jnp
import numpy as np

from genjax.data.gaussian_mixture import GaussianMixture, perturbed_score_fn
from genjax.data.mixture_observation import observation_log_likelihood_fn, observed_posterior
from genjax.processes.vp import VPSDE
from genjax.samplers.linear_observation import masked, sample_given_observation

WEIGHTS = np.array([0.3, 0.7], np.float32)
MEANS = np.array([[-1.0, -1.5], [1.0, 1.5]], np.float32)
COVARIANCES = np.array([[[0.5, 0.3], [0.3, 0.5]], [[0.5, -0.3], [-0.3, 0.5]]], np.float32)
MIXTURE = GaussianMixture(jnp.asarray(WEIGHTS), jnp.asarray(MEANS), jnp.asarray(COVARIANCES))
A = np.array([[1.0, 0.0]], np.float32)  # observe the first coordinate
NOISE_STD = 0.3
Y = 0.2
NUM = 1000


def posterior_figures(mixture) -> tuple[float, np.ndarray, np.ndarray]:
    """(P(x_2 > 0), mean, std per coordinate) of a Gaussian mixture, in closed form."""
    weights, means, covariances = (np.asarray(a, np.float64) for a in (mixture.weights, mixture.means, mixture.covariances))
    mean = weights @ means
    second = np.einsum("k,kij->ij", weights, covariances + np.einsum("ki,kj->kij", means, means))
    share = sum(w * 0.5 * (1 + math.erf(m[1] / math.sqrt(2 * c[1, 1]))) for w, m, c in zip(weights, means, covariances))
    return share, mean, np.sqrt(np.diag(second) - mean**2)


def test_observed_posterior_is_the_kalman_update_of_each_component():
    posterior = observed_posterior(MIXTURE, A, jnp.array([Y]), NOISE_STD)
    for k in range(2):
        mu, cov = MEANS[k].astype(np.float64), COVARIANCES[k].astype(np.float64)
        predictive = cov[0, 0] + NOISE_STD**2
        np.testing.assert_allclose(posterior.means[k], mu + cov[:, 0] / predictive * (Y - mu[0]), rtol=1e-5)
        np.testing.assert_allclose(posterior.covariances[k], cov - np.outer(cov[:, 0], cov[0]) / predictive, atol=1e-6)
    unnormalised = [w * np.exp(-0.5 * (Y - m[0]) ** 2 / (c[0, 0] + NOISE_STD**2)) / np.sqrt(c[0, 0] + NOISE_STD**2)
                    for w, m, c in zip(WEIGHTS, MEANS, COVARIANCES)]
    np.testing.assert_allclose(posterior.weights, np.array(unnormalised) / np.sum(unnormalised), rtol=1e-5)


def test_exact_likelihood_term_draws_the_exact_mixture_posterior():
    process = VPSDE()
    exact = observation_log_likelihood_fn(MIXTURE, process, A, NOISE_STD)
    y = jnp.broadcast_to(jnp.array([Y, 0.0]), (NUM, 2))  # masked(): y lives in x's shape, observed entry first
    result = jax.jit(lambda key: sample_given_observation(
        process, perturbed_score_fn(MIXTURE, process), key, y, masked(jnp.array([1.0, 0.0]), NOISE_STD), (2,), 100,
        method="posterior", log_likelihood=lambda x, t, y: exact(x, t, y[:1])))(jax.random.key(5))
    assert np.all(result.successful)
    samples = np.asarray(result.samples)

    share, mean, std = posterior_figures(observed_posterior(MIXTURE, A, jnp.array([Y]), NOISE_STD))
    drawn_share = np.mean(samples[:, 1] > 0)
    assert abs(drawn_share - share) < 4 * math.sqrt(share * (1 - share) / NUM), (drawn_share, share)
    np.testing.assert_array_less(np.abs(samples.mean(0) - mean), 4 * std / math.sqrt(NUM))
    np.testing.assert_allclose(samples.std(0), std, rtol=0.06)
