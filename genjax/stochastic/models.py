"""SDEs with known answers, used to check simulators and PDE solvers against mathematics.

Every model is an Ito SDE with diagonal noise, dX = a(t, X) dt + b(t, X) dW, written as two
functions `drift(t, x)` and `diffusion(t, x)` returning arrays shaped like x (the noise
acts elementwise). Models are frozen dataclasses: hashable, safe to close over under jit.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class GeometricBrownianMotion:
    """dX = mu X dt + sigma X dW. By Ito's lemma applied to log X (Oksendal, example 5.1.1),

        X_t = X_0 exp((mu - sigma^2 / 2) t + sigma W_t),

    a function of W_t alone, so strong errors need only the path's endpoint. Moments:
    E[X_t^p] = X_0^p exp((p mu + p (p - 1) sigma^2 / 2) t).
    """

    mu: float = 1.0
    sigma: float = 0.8

    def drift(self, t, x):
        return self.mu * x

    def diffusion(self, t, x):
        return self.sigma * x

    def exact_solution(self, x0, t, w_t):
        """X_t given the Brownian value W_t (same shape as x0)."""
        return x0 * jnp.exp((self.mu - 0.5 * self.sigma**2) * t + self.sigma * w_t)

    def moment(self, x0, t, power):
        """E[X_t^p] = X_0^p exp((p mu + p (p - 1) sigma^2 / 2) t)."""
        return x0**power * jnp.exp((power * self.mu + 0.5 * power * (power - 1.0) * self.sigma**2) * t)


@dataclasses.dataclass(frozen=True)
class OrnsteinUhlenbeck:
    """dX = -theta (X - mean) dt + sigma dW (additive noise). The transition law is Gaussian
    (Oksendal, exercise 5.5; Risken, "The Fokker-Planck Equation", ch. 5):

        X_t | X_0 = x  ~  N(mean + (x - mean) e^{-theta t},  sigma^2 (1 - e^{-2 theta t}) / (2 theta)),

    and the stationary law is N(mean, sigma^2 / (2 theta)). Parameters may be arrays (one
    value per coordinate) for a product of independent 1-D processes.
    """

    theta: float = 1.0
    sigma: float = 1.0
    mean: float = 0.0

    def drift(self, t, x):
        return -self.theta * (x - self.mean)

    def diffusion(self, t, x):
        return self.sigma * jnp.ones_like(x)

    def transition_mean_variance(self, x0, t):
        """Mean and variance of X_t given X_0 = x0."""
        decay = jnp.exp(-self.theta * t)
        variance = self.sigma**2 * (-jnp.expm1(-2.0 * self.theta * t)) / (2.0 * self.theta)
        return self.mean + (x0 - self.mean) * decay, variance

    def marginal_mean_variance(self, mean0, variance0, t):
        """Mean and variance of X_t when X_0 ~ N(mean0, variance0) (the law stays Gaussian)."""
        mean, variance = self.transition_mean_variance(mean0, t)
        return mean, variance + variance0 * jnp.exp(-2.0 * self.theta * t)

    def transition_density(self, y, x0, t):
        """p_t(y | x0), the Gaussian density above, elementwise."""
        mean, variance = self.transition_mean_variance(x0, t)
        return jnp.exp(-0.5 * (y - mean) ** 2 / variance) / jnp.sqrt(2.0 * jnp.pi * variance)


@dataclasses.dataclass(frozen=True)
class DoubleWell:
    """Overdamped Langevin dynamics in the double-well potential U(x) = depth (x^2 - 1)^2,

        dX = -U'(X) dt + sigma dW,     U'(x) = 4 depth x (x^2 - 1),

    a nonlinear drift with no closed-form transition density but with the stationary
    (Gibbs) density p_inf(x) = exp(-2 U(x) / sigma^2) / Z, which solves the stationary
    Fokker-Planck equation 0 = d/dx [U'(x) p + (sigma^2 / 2) dp/dx] (Risken, ch. 5).
    On R^d, U acts on the first coordinate and adds confinement (1/2) x_k^2 on the others.
    """

    depth: float = 0.25
    sigma: float = 0.8

    def potential(self, x):
        """U(x) summed over the last axis."""
        first = self.depth * (x[..., 0] ** 2 - 1.0) ** 2
        return first + 0.5 * jnp.sum(x[..., 1:] ** 2, axis=-1)

    def drift(self, t, x):
        return -jax.grad(lambda z: jnp.sum(self.potential(z)))(x)

    def diffusion(self, t, x):
        return self.sigma * jnp.ones_like(x)

    def unnormalised_stationary_density(self, x):
        """exp(-2 U(x) / sigma^2)."""
        return jnp.exp(-2.0 * self.potential(x) / self.sigma**2)
