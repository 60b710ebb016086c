"""EDM preconditioning (Karras, Aittala, Aila, Laine 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models", Table 1 and appendix B.6).

A raw network F is wrapped into a denoiser of x_hat = x_0 + sigma n,

    D(x_hat; sigma) = c_skip(sigma) x_hat + c_out(sigma) F(c_in(sigma) x_hat, c_noise(sigma)),

    c_skip  = sigma_data^2 / (sigma^2 + sigma_data^2),
    c_out   = sigma sigma_data / sqrt(sigma^2 + sigma_data^2),
    c_in    = 1 / sqrt(sigma^2 + sigma_data^2),
    c_noise = ln(sigma) / 4,

chosen so that the network's input and its training target have unit variance when the data
has standard deviation sigma_data; EDM's loss weight is lambda(sigma) = 1 / c_out^2.

Composition with the views: `edm_denoiser` returns a per-example D(x, t) in data units,
which is the "denoised" output kind, so

    score_fn = score_fn_from_output(process, edm_denoiser(F, sigma_of_t, sigma_data), "denoised")

is the score grad_x log p_t(x) = (alpha D - x) / sigma^2 of any process whose noise level
is sigma_of_t = sigma / alpha (for EDMProcess: process.sigma) and, when alpha != 1, whose
scale is scale_of_t = alpha (for EDMProcess: process.scale).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def c_skip(sigma: jax.Array, sigma_data: float) -> jax.Array:
    return sigma_data**2 / (sigma**2 + sigma_data**2)


def c_out(sigma: jax.Array, sigma_data: float) -> jax.Array:
    return sigma * sigma_data / jnp.sqrt(sigma**2 + sigma_data**2)


def c_in(sigma: jax.Array, sigma_data: float) -> jax.Array:
    return 1.0 / jnp.sqrt(sigma**2 + sigma_data**2)


def c_noise(sigma: jax.Array) -> jax.Array:
    return 0.25 * jnp.log(sigma)


def edm_loss_weight(sigma: jax.Array, sigma_data: float) -> jax.Array:
    """lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 = 1 / c_out^2."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def edm_denoiser(
    raw_fn: Callable[[jax.Array, jax.Array], jax.Array],
    sigma_of_t: Callable[[jax.Array], jax.Array],
    sigma_data: float,
    scale_of_t: Callable[[jax.Array], jax.Array] | None = None,
) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """Per-example denoiser (x, t) -> D from a per-example network F(x_in, c_noise) -> output.

    D(x, t) = c_skip x_hat + c_out F(c_in x_hat, c_noise) with sigma = sigma_of_t(t) and
    x_hat = x / scale_of_t(t) (x_hat = x when scale_of_t is None, EDM's s(t) = 1).
    """

    def denoiser(x, t):
        sigma = sigma_of_t(t)
        x_hat = x if scale_of_t is None else x / scale_of_t(t)
        return c_skip(sigma, sigma_data) * x_hat + c_out(sigma, sigma_data) * raw_fn(
            c_in(sigma, sigma_data) * x_hat, c_noise(sigma)
        )

    return denoiser
