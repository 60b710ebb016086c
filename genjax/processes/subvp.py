"""Sub-variance-preserving SDE (Song et al. 2021, "Score-Based Generative Modeling through
Stochastic Differential Equations", eq. 11 and appendix B):

    dx = -1/2 beta(t) x dt + sqrt(beta(t) (1 - exp(-2 int_0^t beta(s) ds))) dw,
    beta(t) = beta_min + t (beta_max - beta_min),   t in [0, 1].

It shares the VP drift, hence alpha(t) = exp(-1/2 int_0^t beta) with

    log alpha(t) = -1/4 t^2 (beta_max - beta_min) - 1/2 t beta_min,

but its kernel variance is bounded by the VP one (hence "sub"):

    sigma(t)^2 = (1 - alpha(t)^2)^2,     g(t)^2 = beta(t) (1 - alpha(t)^4).

The prior is N(0, I). Defaults beta_min = 0.1, beta_max = 20 are the paper's.
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from genjax.processes.vp import VPSDE


@dataclasses.dataclass(frozen=True)
class SubVPSDE(VPSDE):
    """The VP SDE's drift, beta schedule and N(0, I) prior, with the smaller diffusion."""

    def diffusion(self, t):
        # 1 - exp(-2 int beta) = 1 - alpha^4, with expm1 for accuracy at small t.
        return jnp.sqrt(self.beta(t) * -jnp.expm1(4.0 * self.log_alpha(t)))

    def marginal_coefficients(self, t):
        log_alpha = self.log_alpha(t)
        return jnp.exp(log_alpha), -jnp.expm1(2.0 * log_alpha)
