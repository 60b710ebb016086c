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

Composition with the views: `edm_denoiser` returns a denoiser D(x, t, ...) in data units
(batched, as the network contract, or per example), which is the "denoised" output kind, so

    views.score_fn(process, views.Model(edm_denoiser(F, sigma_of_t, sigma_data), "denoised"))

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


def expand_to(a: jax.Array, x: jax.Array) -> jax.Array:
    """a [B] (or a scalar) with trailing unit axes, to broadcast against x [B, *shape]."""
    return jnp.reshape(a, jnp.shape(a) + (1,) * (x.ndim - jnp.ndim(a)))


def per_example_coefficient(fn: Callable[[jax.Array], jax.Array], t: jax.Array) -> jax.Array:
    """fn(t) for a scalar t, or fn mapped over a batch of times t [B] (fn is written per example)."""
    return jax.vmap(fn)(t) if jnp.ndim(t) else fn(t)


def edm_denoiser(
    raw_fn: Callable[..., jax.Array],
    sigma_of_t: Callable[[jax.Array], jax.Array],
    sigma_data: float,
    scale_of_t: Callable[[jax.Array], jax.Array] | None = None,
) -> Callable[..., jax.Array]:
    """Denoiser (x, t, *args, **kwargs) -> D from a network F(x_in, c_noise, *args, **kwargs).

    D(x, t) = c_skip x_hat + c_out F(c_in x_hat, c_noise) with sigma = sigma_of_t(t) and
    x_hat = x / scale_of_t(t) (x_hat = x when scale_of_t is None, EDM's s(t) = 1). Batched
    (x [B, *shape], t [B]; the extra arguments, e.g. the network contract's condition and
    dropout, are passed to F) or per example (x [*shape], t []).
    """

    def denoiser(x, t, *args, **kwargs):
        sigma = per_example_coefficient(sigma_of_t, t)
        x_hat = x if scale_of_t is None else x / expand_to(per_example_coefficient(scale_of_t, t), x)
        s = expand_to(sigma, x)
        return c_skip(s, sigma_data) * x_hat + c_out(s, sigma_data) * raw_fn(
            c_in(s, sigma_data) * x_hat, c_noise(sigma), *args, **kwargs
        )

    return denoiser
