"""Variance-preserving SDE (Song et al. 2021, "Score-Based Generative Modeling through
Stochastic Differential Equations", eq. 11 and appendix B): the continuous limit of DDPM.

    dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw,     beta(t) = beta_min + t (beta_max - beta_min),

with t in [0, 1]. Its transition kernel is N(alpha(t) x_0, sigma(t)^2 I) where

    log alpha(t) = -1/4 t^2 (beta_max - beta_min) - 1/2 t beta_min,
    sigma(t)^2   = 1 - alpha(t)^2,

and the prior is N(0, I). Defaults beta_min = 0.1, beta_max = 20 are the paper's.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from genjax.processes.base import DiffusionProcess, require, standard_normal_log_prob


@dataclasses.dataclass(frozen=True)
class VPSDE(DiffusionProcess):
    beta_min: float = 0.1
    beta_max: float = 20.0

    def __post_init__(self):
        """0 <= beta_min <= beta_max and beta_max > 0 (beta_min = beta_max: an OU process)."""
        super().__post_init__()
        require(self.beta_min >= 0, f"beta_min={self.beta_min!r} must be >= 0")
        require(0 < self.beta_max < math.inf and self.beta_max >= self.beta_min,
                f"beta_max={self.beta_max!r} must be > 0, finite and >= beta_min={self.beta_min!r}")

    def beta(self, t: jax.Array) -> jax.Array:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def log_alpha(self, t: jax.Array) -> jax.Array:
        """log alpha(t) = -(1/2) int_0^t beta(s) ds."""
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def drift(self, x, t):
        return -0.5 * self.beta(t) * x

    def diffusion(self, t):
        return jnp.sqrt(self.beta(t))

    def marginal_coefficients(self, t):
        log_alpha = self.log_alpha(t)
        alpha = jnp.exp(log_alpha)
        # sigma^2 = 1 - exp(2 log alpha), computed with expm1 for accuracy at small t.
        sigma = jnp.sqrt(-jnp.expm1(2.0 * log_alpha))
        return alpha, sigma

    def prior_sample(self, key, shape):
        return jax.random.normal(key, shape)

    def prior_log_prob(self, z):
        return standard_normal_log_prob(z)
