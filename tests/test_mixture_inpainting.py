"""Sampling given a linear observation, checked against a law known exactly: a two-component
Gaussian mixture observed through its first coordinate with noise, y = x_1 + sigma_y n.

p(x_0 | y) is again a mixture (each component updated by the Kalman gain, reweighted by
w_k N(y; mu_k1, Sigma_k11 + sigma_y^2)), and the likelihood of the noisy state is exact too:
(x_t, y) is jointly a Gaussian mixture, so log p_t(y | x) = log p(x_t = x, y) - log p_t(x).
Fed the exact score and this exact likelihood term, the posterior method must draw p(x_0 | y):
the share of each mode and the imputed coordinate's moments within their standard errors."""
import math

import jax
import jax.numpy as jnp
import numpy as np

from genjax.data.gaussian_mixture import GaussianMixture, perturbed_score_fn
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


def exact_posterior() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weights, means, covariances) of p(x_0 | y): the Kalman update of each component."""
    weights, means, covariances = [], [], []
    for w, mu, cov in zip(WEIGHTS.astype(np.float64), MEANS.astype(np.float64), COVARIANCES.astype(np.float64)):
        predictive_var = (A @ cov @ A.T)[0, 0] + NOISE_STD**2
        gain = cov @ A.T / predictive_var
        weights.append(w * np.exp(-0.5 * (Y - mu[0]) ** 2 / predictive_var) / np.sqrt(2 * np.pi * predictive_var))
        means.append(mu + gain[:, 0] * (Y - mu[0]))
        covariances.append(cov - gain @ A @ cov)
    weights = np.array(weights)
    return weights / weights.sum(), np.array(means), np.array(covariances)


def exact_log_likelihood(process):
    """(x, t, y) -> log p_t(y | x_t = x) for y = A x_0 + sigma_y n, by the joint mixture of (x_t, y)."""

    def log_likelihood(x, t, y):
        alpha, sigma = process.marginal_coefficients(t)
        a = jnp.asarray(A)
        covariances = jnp.asarray(COVARIANCES)
        top = alpha**2 * covariances + sigma**2 * jnp.eye(2)
        cross = alpha * covariances @ a.T  # Cov(x_t, y | k) [K, 2, 1]
        bottom = a @ covariances @ a.T + NOISE_STD**2  # [K, 1, 1]
        joint = GaussianMixture(MIXTURE.weights,
                                jnp.concatenate([alpha * MIXTURE.means, MIXTURE.means @ a.T], axis=1),
                                jnp.concatenate([jnp.concatenate([top, cross], 2),
                                                 jnp.concatenate([jnp.swapaxes(cross, 1, 2), bottom], 2)], 1))
        return joint.log_prob(jnp.concatenate([x, y[:1]])) - MIXTURE.perturbed(alpha, sigma).log_prob(x)

    return log_likelihood


def draw() -> np.ndarray:
    process = VPSDE()
    y = jnp.broadcast_to(jnp.array([Y, 0.0]), (NUM, 2))
    result = jax.jit(lambda key: sample_given_observation(
        process, perturbed_score_fn(MIXTURE, process), key, y, masked(jnp.array([1.0, 0.0]), NOISE_STD), (2,), 100,
        method="posterior", log_likelihood=exact_log_likelihood(process)))(jax.random.key(5))
    assert np.all(result.successful)
    return np.asarray(result.samples)


def posterior_figures(samples: np.ndarray) -> dict:
    """Share of the second mode (x_2 > 0) and the moments of both coordinates."""
    return {"share": np.mean(samples[:, 1] > 0), "mean": samples.mean(0), "std": samples.std(0)}


def test_exact_likelihood_term_draws_the_exact_mixture_posterior():
    weights, means, covariances = exact_posterior()
    mean = weights @ means
    second = np.einsum("k,kij->ij", weights, covariances + np.einsum("ki,kj->kij", means, means))
    std = np.sqrt(np.diag(second) - mean**2)
    share = sum(w * 0.5 * (1 + math.erf(m[1] / math.sqrt(2 * c[1, 1]))) for w, m, c in zip(weights, means, covariances))

    figures = posterior_figures(draw())
    assert abs(figures["share"] - share) < 4 * math.sqrt(share * (1 - share) / NUM), (figures["share"], share)
    np.testing.assert_array_less(np.abs(figures["mean"] - mean), 4 * std / math.sqrt(NUM))
    np.testing.assert_allclose(figures["std"], std, rtol=0.06)
