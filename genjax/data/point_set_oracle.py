"""A weighted point set {y_k, w_k}: the oracle whose perturbed density and posterior mean
are exact for every process, whatever its kernel law (Gaussian, PFGM++'s Student-t).

With the kernel x_t = alpha y + sigma n, n from the process's standardised law
(`perturbation_noise_log_prob`),

    p_t(x)        = sum_k w_k p_t(x | y_k),    p_t(x | y) = sigma^-N p_n((x - alpha y) / sigma),
    E[y | x_t=x]  = sum_k y_k w_k p_t(x | y_k) / p_t(x).

For PFGM++ this is the exact field: the ODE dx/dsigma = (x - E[y | x, sigma]) / sigma
transports p_t (Xu et al. 2023, eq. 6). Fed to the engine as a network with output
"denoised" (`score_fn`), it checks samplers, likelihood and objective against mathematics.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from genjax.processes.views import score_fn_from_output


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class WeightedPointSet:
    """Points [K, *shape] with weights [K] summing to 1."""

    points: jax.Array
    weights: jax.Array

    def component_log_probs(self, process, x: jax.Array, t: jax.Array) -> jax.Array:
        """log w_k + log p_t(x | y_k) for one x [*shape], shape [K]."""
        alpha, sigma = process.marginal_coefficients(t)
        kernel = jax.vmap(lambda y: process.perturbation_noise_log_prob((x - alpha * y) / sigma))(self.points)
        return jnp.log(self.weights) + kernel - x.size * jnp.log(sigma)

    def log_prob(self, process, x: jax.Array, t: jax.Array) -> jax.Array:
        """log p_t(x) for one x."""
        return jax.scipy.special.logsumexp(self.component_log_probs(process, x, t))

    def posterior(self, process, x: jax.Array, t: jax.Array) -> jax.Array:
        """P(y = y_k | x_t = x), shape [K]."""
        return jax.nn.softmax(self.component_log_probs(process, x, t))

    def denoised(self, process, x: jax.Array, t: jax.Array) -> jax.Array:
        """E[y | x_t = x] = sum_k P(y_k | x) y_k."""
        return jnp.tensordot(self.posterior(process, x, t), self.points, axes=1)

    def sample(self, key: jax.Array, num: int) -> jax.Array:
        """num draws of y, shape [num, *shape]."""
        return self.points[jax.random.choice(key, self.weights.shape[0], (num,), p=self.weights)]


def make_point_set(points, weights=None) -> WeightedPointSet:
    """Points [K, *shape] and weights [K] (normalised here; equal if None), float32."""
    points = jnp.asarray(points, jnp.float32)
    weights = jnp.ones(points.shape[0]) if weights is None else jnp.asarray(weights, jnp.float32)
    return WeightedPointSet(points, weights / jnp.sum(weights))


def denoiser_fn(point_set: WeightedPointSet, process) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The exact E[y | x_t] as a per-example function (x, t) -> [*shape]."""
    return lambda x, t: point_set.denoised(process, x, t)


def score_fn(point_set: WeightedPointSet, process) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The engine's score of the exact denoiser, read as a network with output "denoised"."""
    return score_fn_from_output(process, denoiser_fn(point_set, process), "denoised")


def log_prob_fn(point_set: WeightedPointSet, process) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The exact log p_t(x), per example (x, t) -> []."""
    return lambda x, t: point_set.log_prob(process, x, t)


def nearest_point_shares(point_set: WeightedPointSet, samples: jax.Array) -> jax.Array:
    """Fraction of samples [M, *shape] whose nearest point is y_k, shape [K]."""
    flat_points = point_set.points.reshape(point_set.points.shape[0], -1)
    flat = samples.reshape(samples.shape[0], -1)
    distances = jnp.sum((flat[:, None, :] - flat_points[None]) ** 2, axis=-1)
    nearest = jnp.argmin(distances, axis=1)
    return jnp.bincount(nearest, length=flat_points.shape[0]) / flat.shape[0]


def planar_mixture_field(x: jax.Array, weights, means, std: float) -> jax.Array:
    """The Poisson field in the plane (N = 2, no augmentation) of the density of an isotropic
    Gaussian mixture, up to the constant 1 / (2 pi): by Gauss's law each component k
    contributes w_k (x - mu_k) / |x - mu_k|^2 times the mass it holds within |x - mu_k|,
    1 - exp(-|x - mu_k|^2 / (2 std^2)). The field of PFGM's naive, unaugmented flow
    (Xu et al. 2022, section 3)."""
    diff = x[None, :] - jnp.asarray(means)
    squared = jnp.sum(diff**2, axis=1)
    enclosed = -jnp.expm1(-squared / (2 * std**2))
    return jnp.sum(jnp.asarray(weights)[:, None] * diff * (enclosed / jnp.maximum(squared, 1e-12))[:, None], axis=0)
