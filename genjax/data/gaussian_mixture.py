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

    def _whitened(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(L_k, L_k^{-1} (x - mu_k)) per component, Sigma_k = L_k L_k^T (one factorisation,
        shared by the density and the score)."""
        chol = jnp.linalg.cholesky(self.covariances)  # [K, D, D]
        solved = jax.scipy.linalg.solve_triangular(chol, (x - self.means)[..., None], lower=True)
        return chol, solved

    def _component_log_probs(self, chol: jax.Array, solved: jax.Array) -> jax.Array:
        log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
        log_normal = -0.5 * (jnp.sum(solved[..., 0] ** 2, -1) + log_det + self.dim * jnp.log(2.0 * jnp.pi))
        return jnp.log(self.weights) + log_normal

    def component_log_probs(self, x: jax.Array) -> jax.Array:
        """log w_k + log N(x; mu_k, Sigma_k) for one point x [D], shape [K]."""
        return self._component_log_probs(*self._whitened(x))

    def log_prob(self, x: jax.Array) -> jax.Array:
        """log p(x) for one point x [D] (vmap for batches)."""
        return jax.scipy.special.logsumexp(self.component_log_probs(x))

    def score(self, x: jax.Array) -> jax.Array:
        """grad_x log p(x) = sum_k r_k(x) Sigma_k^{-1} (mu_k - x), r_k the responsibilities;
        Sigma_k^{-1} (x - mu_k) = L_k^{-T} (L_k^{-1} (x - mu_k)) from the same Cholesky factor."""
        chol, solved = self._whitened(x)
        responsibilities = jax.nn.softmax(self._component_log_probs(chol, solved))
        precision_times_diff = jax.scipy.linalg.solve_triangular(chol, solved, lower=True, trans="T")[..., 0]
        return -jnp.sum(responsibilities[:, None] * precision_times_diff, axis=0)

    def posterior_means(self, x: jax.Array, alpha: jax.Array, sigma: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(E[x_0 | x_t = x], E[eps | x_t = x]) for x_t = alpha x_0 + sigma eps, x_0 from the
        mixture: per component, with C_k = alpha^2 Sigma_k + sigma^2 I,
        E[x_0 | x, k] = mu_k + alpha Sigma_k C_k^{-1} (x - alpha mu_k) and
        E[eps | x, k] = sigma C_k^{-1} (x - alpha mu_k), weighted by the responsibilities of
        the perturbed mixture. Finite at alpha = 0 (the prior end of a flow path) and, for
        positive-definite Sigma_k, at sigma = 0."""
        blurred = self.perturbed(alpha, sigma)
        chol, solved = blurred._whitened(x)
        responsibilities = jax.nn.softmax(blurred._component_log_probs(chol, solved))
        precision_times_diff = jax.scipy.linalg.solve_triangular(chol, solved, lower=True, trans="T")[..., 0]
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
        return mixture.perturbed(alpha, sigma).score(x)

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
        return mixture.perturbed(alpha, sigma).log_prob(x)

    return log_prob


def as_numpy(mixture: GaussianMixture) -> dict[str, np.ndarray]:
    return {k: np.asarray(getattr(mixture, k)) for k in ("weights", "means", "covariances")}
