"""PFGM++ (Xu, Liu, Tian, Tong, Tegmark, Jaakkola 2023, "PFGM++: Unlocking the Potential of
Physics-Inspired Generative Models") as EDM with a heavy-tailed kernel and prior.

Data x in R^N are charges in R^(N+D); with r = sigma sqrt(D) the perturbation kernel is

    p_r(x | y) proportional to (|x - y|^2 + r^2)^(-(N+D)/2)                        (eq. 4)

which is a multivariate Student-t with nu = D degrees of freedom and scale sigma:

    log p_sigma(x | y) = lgamma((D+N)/2) - lgamma(D/2) - N/2 log(D pi) - N log sigma
                         - (D+N)/2 log(1 + |x - y|^2 / (D sigma^2)).

So x = y + sigma n with n = z / sqrt(chi2_D / D), z ~ N(0, I_N): |n|^2 / N ~ F(N, D),
equivalently |x - y| = r sqrt(B / (1 - B)), B ~ Beta(N/2, D/2) (the paper's sampler).
D -> infinity gives n ~ N(0, I) and recovers EDM.

The backward ODE dx/dr = (x - E[y | x, r]) / r (Theorem 4.1 with the posterior mean) is
EDM's ODE dx/dsigma = (x - D(x, sigma)) / sigma with the denoiser D = E[y | x, sigma]; it
transports p_r exactly. The engine reads a network's "denoised" output through the views
(s = (D - x) / sigma^2, a pseudo-score: not grad log p_r for finite D), so the
probability-flow samplers, EDM Heun (no churn), DDIM (eta = 0) and the likelihood work
unchanged. There is no reverse-time SDE (`has_reverse_sde` is False): stochastic samplers
refuse this process. The DSM objective with `perturbation_noise` is PFGM++'s denoiser
objective: sigma s + n = (D - x_0) / sigma for any kernel law.

The prior is the kernel centred at 0 at sigma_max (the paper's prior at r_max).
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp

from genjax.processes.edm import EDMProcess


@dataclasses.dataclass(frozen=True)
class PFGMPPProcess(EDMProcess):
    """Attributes (besides EDM's):
      augment_dim: D > 0, the number of augmented dimensions (a float; D -> inf is EDM).
    """

    augment_dim: float = 128.0
    has_reverse_sde: ClassVar[bool] = False

    def __post_init__(self):
        if not (isinstance(self.augment_dim, (int, float)) and self.augment_dim > 0 and math.isfinite(self.augment_dim)):
            raise ValueError(f"augment_dim={self.augment_dim!r} must be a finite number > 0 (PFGM++'s D)")
        super().__post_init__()

    def radius(self, sigma: jax.Array) -> jax.Array:
        """r = sigma sqrt(D), the augmented-space radius of noise level sigma."""
        return sigma * math.sqrt(self.augment_dim)

    def perturbation_noise(self, key, shape):
        """n = z / sqrt(chi2_D / D): the standardised Student-t(D) kernel, drawn exactly."""
        key_normal, key_chi2 = jax.random.split(key)
        z = jax.random.normal(key_normal, shape)
        chi2 = 2.0 * jax.random.gamma(key_chi2, 0.5 * self.augment_dim, ())
        return z * jnp.sqrt(self.augment_dim / chi2)

    def perturbation_noise_log_prob(self, n):
        """log t_D(n) for one example n in R^N (N = n.size), the constant in float64 on the host
        (lgamma of a huge D loses every digit in float32)."""
        dim, d = n.size, float(self.augment_dim)
        const = math.lgamma(0.5 * (d + dim)) - math.lgamma(0.5 * d) - 0.5 * dim * math.log(d * math.pi)
        return const - 0.5 * (d + dim) * jnp.log1p(jnp.sum(n**2) / d)

    def prior_sample(self, key, shape):
        """One example from the kernel centred at 0 with scale s(T) sigma_max."""
        return self.prior_std() * self.perturbation_noise(key, shape)

    def prior_log_prob(self, z):
        std = self.prior_std()
        return self.perturbation_noise_log_prob(z / std) - z.size * jnp.log(std)
