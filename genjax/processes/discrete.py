"""The discrete schedules of SMLD and DDPM as discretisations of the VE and VP SDEs
(Song et al. 2021, "Score-Based Generative Modeling through Stochastic Differential
Equations", section 3.4 and appendix B).

SMLD (Song & Ermon 2019) uses N geometric noise scales

    sigma_i = sigma_min (sigma_max / sigma_min)^((i - 1) / (N - 1)),    i = 1 .. N,

with the chain x_i = x_{i-1} + sqrt(sigma_i^2 - sigma_{i-1}^2) z (sigma_0 = 0), so that
x_i | x_0 ~ N(x_0, sigma_i^2 I). These are the VE noise levels sigma_ve(t_i) at the grid
times t_i = (i - 1) / (N - 1) T. The VE process here uses the exact kernel variance
sigma_ve(t)^2 - sigma_min^2 (see ve.py), so at the grid points

    sigma_i^2 - sigma_1^2 = VESDE.marginal_coefficients(t_i)[1]^2      (exactly, any N);

the two conventions differ by the constant sigma_min^2 in the variance.

DDPM (Ho et al. 2020) uses beta_i = beta_min / N + (i - 1) / (N - 1) (beta_max - beta_min) / N,
i = 1 .. N, and x_i = sqrt(1 - beta_i) x_{i-1} + sqrt(beta_i) z, so that

    x_i | x_0 ~ N(sqrt(abar_i) x_0, (1 - abar_i) I),   abar_i = prod_{j <= i} (1 - beta_j).

At t_i = i T / N this matches the VP kernel up to O(1/N): sum_j beta_j is a Riemann sum of
int_0^{t_i} beta with error at most (beta_max - beta_min) / (8 (N - 1)), and
sum_j log(1 - beta_j) + sum_j beta_j = O(beta_max^2 / N). For the paper's N = 1000,
beta in [0.1, 20], |sqrt(abar_i) - alpha(t_i)| and |sqrt(1 - abar_i) - sigma(t_i)| are both
below 2e-3 (checked in tests/test_processes.py, with the 1/N convergence).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def grid_times(process, num_steps: int, include_zero: bool = False) -> jax.Array:
    """The N times i T / N, i = 1 .. N (DDPM's grid), or i = 0 .. N with include_zero."""
    start = 0 if include_zero else 1
    return jnp.arange(start, num_steps + 1, dtype=jnp.float32) * (process.t_max / num_steps)


def smld_sigmas(process, num_scales: int) -> jax.Array:
    """SMLD's geometric sigma_1 < ... < sigma_N for a VESDE (sigma_min, sigma_max)."""
    i = jnp.arange(num_scales, dtype=jnp.float32)
    return process.sigma_min * (process.sigma_max / process.sigma_min) ** (i / (num_scales - 1))


def smld_marginal_coefficients(process, num_scales: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(t_i, alpha_i, sigma_i) of SMLD: grid times (i - 1) T / (N - 1), alpha_i = 1 and the
    SMLD kernel std sigma_i (so sigma_i^2 - sigma_1^2 is the VE kernel variance at t_i)."""
    sigmas = smld_sigmas(process, num_scales)
    times = jnp.linspace(0.0, process.t_max, num_scales)
    return times, jnp.ones_like(sigmas), sigmas


def ddpm_betas(process, num_steps: int) -> jax.Array:
    """DDPM's beta_1 .. beta_N = linspace(beta_min, beta_max, N) / N for a VPSDE."""
    return jnp.linspace(process.beta_min, process.beta_max, num_steps) / num_steps


def ddpm_marginal_coefficients(process, num_steps: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(t_i, sqrt(abar_i), sqrt(1 - abar_i)) at t_i = i T / N, i = 1 .. N."""
    log_abar = jnp.cumsum(jnp.log1p(-ddpm_betas(process, num_steps)))
    return grid_times(process, num_steps), jnp.exp(0.5 * log_abar), jnp.sqrt(-jnp.expm1(log_abar))
