"""A Gaussian mixture observed through a linear map: the exact laws of inverse problems.

For x_0 ~ sum_k w_k N(mu_k, Sigma_k) and y = A x_0 + sigma_y n (A [m, D], n ~ N(0, I_m)):

  the posterior p(x_0 | y) is again a mixture, each component updated by its Kalman gain
  G_k = Sigma_k A^T S_k^{-1}, S_k = A Sigma_k A^T + sigma_y^2 I, and reweighted:
      w_k' ~ w_k N(y; A mu_k, S_k),  mu_k' = mu_k + G_k (y - A mu_k),  Sigma_k' = Sigma_k - G_k A Sigma_k;

  the likelihood of a diffused state x_t = alpha x_0 + sigma eps is closed-form too, since
  (x_t, y) is jointly a mixture with blocks alpha^2 Sigma_k + sigma^2 I, alpha Sigma_k A^T and S_k:
      log p_t(y | x) = log p(x_t = x, y) - log p_t(x).

Fed with the exact score, its gradient makes a conditional sampler exact
(genjax/samplers/linear_observation.py, method "posterior" with `log_likelihood`).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from genjax.data.gaussian_mixture import GaussianMixture


def observed_posterior(mixture: GaussianMixture, matrix: jax.Array, y: jax.Array, noise_std: float) -> GaussianMixture:
    """p(x_0 | A x_0 + noise_std n = y) for y [m] (module docstring)."""
    matrix = jnp.asarray(matrix, mixture.means.dtype)
    predictive = matrix @ mixture.covariances @ matrix.T + noise_std**2 * jnp.eye(matrix.shape[0])  # S_k [K, m, m]
    gains = mixture.covariances @ matrix.T @ jnp.linalg.inv(predictive)  # G_k [K, D, m]
    residuals = y - mixture.means @ matrix.T  # [K, m]
    log_weights = jnp.log(mixture.weights) + jax.vmap(
        lambda r, s: jax.scipy.stats.multivariate_normal.logpdf(r, jnp.zeros_like(r), s))(residuals, predictive)
    return GaussianMixture(jax.nn.softmax(log_weights), mixture.means + jnp.einsum("kdm,km->kd", gains, residuals),
                           mixture.covariances - gains @ matrix @ mixture.covariances)


def observation_log_likelihood_fn(mixture: GaussianMixture, process, matrix: jax.Array,
                                  noise_std: float) -> Callable[[jax.Array, jax.Array, jax.Array], jax.Array]:
    """(x [D], t [], y [m]) -> log p_t(y | x_t = x) under the process's kernel (module docstring)."""
    matrix = jnp.asarray(matrix, mixture.means.dtype)
    m = matrix.shape[0]

    def log_likelihood(x, t, y):
        alpha, sigma = process.marginal_coefficients(t)
        top = alpha**2 * mixture.covariances + sigma**2 * jnp.eye(mixture.dim)
        cross = alpha * mixture.covariances @ matrix.T  # Cov(x_t, y | k) [K, D, m]
        bottom = matrix @ mixture.covariances @ matrix.T + noise_std**2 * jnp.eye(m)  # S_k [K, m, m]
        joint = GaussianMixture(mixture.weights,
                                jnp.concatenate([alpha * mixture.means, mixture.means @ matrix.T], axis=1),
                                jnp.concatenate([jnp.concatenate([top, cross], 2),
                                                 jnp.concatenate([jnp.swapaxes(cross, 1, 2), bottom], 2)], 1))
        return joint.log_prob(jnp.concatenate([x, y])) - mixture.perturbed(alpha, sigma).log_prob(x)

    return log_likelihood
