"""Gaussian mixtures: the oracle whose density and score are known in closed form.

    p(x) = sum_k w_k N(x; mu_k, Sigma_k).

Pushed through any affine Gaussian kernel x_t = alpha x_0 + sigma eps (every diffusion
process here), the mixture stays a mixture:

    p_t(x) = sum_k w_k N(x; alpha mu_k, alpha^2 Sigma_k + sigma^2 I),

so log p_t and its score grad_x log p_t are exact at every t. Tests and oracle studies use
this to check samplers, likelihoods and objectives against mathematics rather than a fit.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class GaussianMixture:
    """Mixture with weights [K], means [K, D] and full covariances [K, D, D]."""

    weights: jax.Array
    means: jax.Array
    covariances: jax.Array

    @property
    def dim(self) -> int:
        return self.means.shape[-1]

    def sample(self, key: jax.Array, num: int) -> jax.Array:
        """num i.i.d. draws, shape [num, D]."""
        key_component, key_noise = jax.random.split(key)
        components = jax.random.choice(key_component, self.weights.shape[0], (num,), p=self.weights)
        chol = jnp.linalg.cholesky(self.covariances)  # [K, D, D]
        noise = jax.random.normal(key_noise, (num, self.dim), dtype=self.means.dtype)
        return self.means[components] + jnp.einsum("nij,nj->ni", chol[components], noise)

    def _component_terms(self, x: jax.Array, alpha=1.0, sigma=0.0) -> tuple[jax.Array, jax.Array]:
        """(log w_k + log N(x; alpha mu_k, C_k), C_k^{-1} (x - alpha mu_k)) per component, shape [K] and
        [K, D], for C_k = alpha^2 Sigma_k + sigma^2 I (alpha = 1, sigma = 0: the mixture itself).
        With Sigma_k = U_k diag(lambda_k) U_k^T (one eigendecomposition of the data covariances,
        independent of x and t), C_k = U_k diag(alpha^2 lambda_k + sigma^2) U_k^T: no
        factorisation per point or per time, which keeps the oracle cheap inside samplers."""
        eigenvalues, eigenvectors = jnp.linalg.eigh(self.covariances)  # [K, D], [K, D, D]
        variances = alpha**2 * eigenvalues + sigma**2
        rotated = jnp.sum(eigenvectors * (x - alpha * self.means)[..., :, None], axis=-2)  # U_k^T (x - alpha mu_k)
        log_det = jnp.sum(jnp.log(variances), axis=-1)
        log_normal = -0.5 * (jnp.sum(rotated**2 / variances, -1) + log_det + self.dim * jnp.log(2.0 * jnp.pi))
        precision_times_diff = jnp.sum(eigenvectors * (rotated / variances)[..., None, :], axis=-1)  # U_k diag(1/v_k) U_k^T (x - alpha mu_k)
        return jnp.log(self.weights) + log_normal, precision_times_diff

    def component_log_probs(self, x: jax.Array) -> jax.Array:
        """log w_k + log N(x; mu_k, Sigma_k) for one point x [D], shape [K]."""
        return self._component_terms(x)[0]

    def log_prob(self, x: jax.Array) -> jax.Array:
        """log p(x) for one point x [D] (vmap for batches)."""
        return self.perturbed_log_prob(x, 1.0, 0.0)

    def score(self, x: jax.Array) -> jax.Array:
        """grad_x log p(x) = sum_k r_k(x) Sigma_k^{-1} (mu_k - x), r_k the responsibilities."""
        return self.perturbed_score(x, 1.0, 0.0)

    def perturbed_log_prob(self, x: jax.Array, alpha: jax.Array, sigma: jax.Array) -> jax.Array:
        """log p_t(x) of the law of alpha x_0 + sigma eps (`perturbed`), for one point x [D]."""
        return jax.scipy.special.logsumexp(self._component_terms(x, alpha, sigma)[0])

    def perturbed_score(self, x: jax.Array, alpha: jax.Array, sigma: jax.Array) -> jax.Array:
        """grad_x log p_t(x) = -sum_k r_k(x) C_k^{-1} (x - alpha mu_k), r_k the responsibilities
        under p_t (`perturbed`), for one point x [D]."""
        log_probs, precision_times_diff = self._component_terms(x, alpha, sigma)
        return -jnp.sum(jax.nn.softmax(log_probs)[:, None] * precision_times_diff, axis=0)

    def posterior_means(self, x: jax.Array, alpha: jax.Array, sigma: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(E[x_0 | x_t = x], E[eps | x_t = x]) for x_t = alpha x_0 + sigma eps, x_0 from the
        mixture: per component, with C_k = alpha^2 Sigma_k + sigma^2 I,
        E[x_0 | x, k] = mu_k + alpha Sigma_k C_k^{-1} (x - alpha mu_k) and
        E[eps | x, k] = sigma C_k^{-1} (x - alpha mu_k), weighted by the responsibilities of
        the perturbed mixture. Finite at alpha = 0 (the prior end of a flow path) and, for
        positive-definite Sigma_k, at sigma = 0."""
        log_probs, precision_times_diff = self._component_terms(x, alpha, sigma)
        responsibilities = jax.nn.softmax(log_probs)
        data = self.means + alpha * jnp.einsum("kij,kj->ki", self.covariances, precision_times_diff)
        weighted = lambda values: jnp.sum(responsibilities[:, None] * values, axis=0)
        return weighted(data), sigma * weighted(precision_times_diff)

    def perturbed(self, alpha: jax.Array, sigma: jax.Array) -> "GaussianMixture":
        """The law of alpha x + sigma eps, eps ~ N(0, I): means alpha mu_k, covariances
        alpha^2 Sigma_k + sigma^2 I."""
        eye = jnp.eye(self.dim, dtype=self.means.dtype)
        return GaussianMixture(
            weights=self.weights,
            means=alpha * self.means,
            covariances=alpha**2 * self.covariances + sigma**2 * eye,
        )

    def mean(self) -> jax.Array:
        return jnp.sum(self.weights[:, None] * self.means, axis=0)

    def covariance(self) -> jax.Array:
        """Total covariance sum_k w_k (Sigma_k + mu_k mu_k^T) - m m^T."""
        m = self.mean()
        second = jnp.sum(
            self.weights[:, None, None] * (self.covariances + jnp.einsum("ki,kj->kij", self.means, self.means)),
            axis=0,
        )
        return second - jnp.outer(m, m)


def make_gaussian_mixture(weights, means, stds) -> GaussianMixture:
    """Mixture with isotropic components: stds [K] (or a scalar) gives Sigma_k = std_k^2 I."""
    weights = jnp.asarray(weights, jnp.float32)
    weights = weights / jnp.sum(weights)
    means = jnp.asarray(means, jnp.float32)
    stds = jnp.broadcast_to(jnp.asarray(stds, jnp.float32), weights.shape)
    eye = jnp.eye(means.shape[-1], dtype=jnp.float32)
    return GaussianMixture(weights, means, stds[:, None, None] ** 2 * eye)


def perturbed_score_fn(mixture: GaussianMixture, process) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The exact score grad_x log p_t(x) of the mixture diffused by `process`, as a plain
    per-example function (x [D], t []) -> [D] that samplers accept in place of a network."""

    def score(x, t):
        alpha, sigma = process.marginal_coefficients(t)
        return mixture.perturbed_score(x, alpha, sigma)

    return score


def perturbed_velocity_fn(mixture: GaussianMixture, process) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The exact marginal velocity v = alpha' E[x_0 | x] + sigma' E[eps | x] of the mixture
    under the process's kernel (its probability-flow velocity; for a flow-matching path with
    the independent coupling, the field flow matching learns), per example (x [D], t []) ->
    [D]. Read it with `views.Model.from_per_example(fn, "velocity")`; unlike the score's probability flow it
    is finite where alpha = 0."""
    from genjax.processes import views

    def velocity(x, t):
        alpha, sigma, alpha_rate, sigma_rate = views.coefficient_rates(process, t)
        denoised, noise = mixture.posterior_means(x, alpha, sigma)
        return views.velocity_from_denoised_and_noise(denoised, noise, alpha_rate, sigma_rate)

    return velocity


def perturbed_log_prob_fn(mixture: GaussianMixture, process) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The exact log p_t(x) of the diffused mixture, per example (x [D], t []) -> []."""

    def log_prob(x, t):
        alpha, sigma = process.marginal_coefficients(t)
        return mixture.perturbed_log_prob(x, alpha, sigma)

    return log_prob


def as_numpy(mixture: GaussianMixture) -> dict[str, np.ndarray]:
    return {k: np.asarray(getattr(mixture, k)) for k in ("weights", "means", "covariances")}
