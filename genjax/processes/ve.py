"""Variance-exploding SDE (Song et al. 2021, "Score-Based Generative Modeling through
Stochastic Differential Equations", eq. 9 and appendix C): the continuous limit of SMLD.

    dx = sqrt(d[sigma_ve(t)^2] / dt) dw,    sigma_ve(t) = sigma_min (sigma_max / sigma_min)^t,

with t in [0, 1], so f = 0 and g(t) = sigma_ve(t) sqrt(2 log(sigma_max / sigma_min)).

Marginal variance (exact, not the paper's approximation). The SDE started at x_0 at t = 0
has the transition kernel N(x_0, (sigma_ve(t)^2 - sigma_ve(0)^2) I): the variance is the
integral of g^2 from 0 to t. score_sde (and SMLD) approximate it by sigma_ve(t)^2, which
differs by the constant sigma_min^2. Here `marginal_coefficients` returns the exact pair

    alpha(t) = 1,    sigma(t) = sqrt(sigma_ve(t)^2 - sigma_min^2)
                              = sigma_min sqrt(expm1(2 t log(sigma_max / sigma_min))),

which is 0 at t = 0, so the drift, diffusion and kernel are mutually consistent (the
likelihood and the probability-flow ODE use the same process). `noise_level(t)` gives
sigma_ve(t) itself for code that wants the SMLD convention.

The prior is N(0, sigma(T)^2 I) with the exact sigma(T) = sqrt(sigma_max^2 - sigma_min^2);
it approximates p_T = p_data * N(0, sigma(T)^2 I) when sigma_max dominates the data scale.
Defaults sigma_min = 0.01, sigma_max = 50 are score_sde's.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from genjax.processes.base import DiffusionProcess, require, standard_normal_log_prob


@dataclasses.dataclass(frozen=True)
class VESDE(DiffusionProcess):
    sigma_min: float = 0.01
    sigma_max: float = 50.0

    def __post_init__(self):
        """0 < sigma_min < sigma_max."""
        super().__post_init__()
        require(self.sigma_min > 0, f"sigma_min={self.sigma_min!r} must be > 0")
        require(self.sigma_min < self.sigma_max < math.inf,
                f"sigma_max={self.sigma_max!r} must be finite and > sigma_min={self.sigma_min!r}")

    @property
    def log_ratio(self) -> float:
        """log(sigma_max / sigma_min)."""
        return math.log(self.sigma_max / self.sigma_min)

    def noise_level(self, t: jax.Array) -> jax.Array:
        """sigma_ve(t) = sigma_min (sigma_max / sigma_min)^t (the SMLD noise scale)."""
        return self.sigma_min * jnp.exp(t * self.log_ratio)

    def drift(self, x, t):
        return jnp.zeros_like(x)

    def diffusion(self, t):
        return self.noise_level(t) * math.sqrt(2.0 * self.log_ratio)

    def marginal_coefficients(self, t):
        t = jnp.asarray(t)
        # sigma^2 = sigma_ve(t)^2 - sigma_min^2 = sigma_min^2 expm1(2 t log r), exact at small t.
        sigma = self.sigma_min * jnp.sqrt(jnp.expm1(2.0 * t * self.log_ratio))
        return jnp.ones_like(sigma), sigma

    def prior_std(self) -> float:
        """sigma(T), the exact marginal std at T (= sqrt(sigma_max^2 - sigma_min^2) for T = 1)."""
        return self.sigma_min * math.sqrt(math.expm1(2.0 * self.t_max * self.log_ratio))

    def prior_sample(self, key, shape):
        return self.prior_std() * jax.random.normal(key, shape)

    def prior_log_prob(self, z):
        std = self.prior_std()
        return standard_normal_log_prob(z / std) - z.size * math.log(std)
