"""Conversions between the equivalent views of one diffusion model.

For a Gaussian kernel x_t = alpha(t) x_0 + sigma(t) eps, a model of p_t can be read as

    score        s(x, t)   = grad_x log p_t(x)
    noise        eps(x, t) = -sigma(t) s(x, t)                 (Ho et al. 2020; Song et al. 2021)
    denoised     D(x, t)   = (x + sigma(t)^2 s(x, t)) / alpha(t)  (Tweedie's formula; Karras et al. 2022)

Samplers and likelihood code ask for a score function and call these conversions; they
hold no per-process special cases. The network's raw output is turned into a score by
`score_fn_from_output`, according to what the network was trained to predict.
"""
from __future__ import annotations

from typing import Callable

import jax

PerExampleFn = Callable[[jax.Array, jax.Array], jax.Array]

OUTPUT_KINDS = ("noise", "score", "denoised")


def score_from_noise(noise: jax.Array, sigma: jax.Array) -> jax.Array:
    return -noise / sigma


def noise_from_score(score: jax.Array, sigma: jax.Array) -> jax.Array:
    return -sigma * score


def denoised_from_score(x: jax.Array, score: jax.Array, alpha: jax.Array, sigma: jax.Array) -> jax.Array:
    return (x + sigma**2 * score) / alpha


def score_from_denoised(x: jax.Array, denoised: jax.Array, alpha: jax.Array, sigma: jax.Array) -> jax.Array:
    return (alpha * denoised - x) / sigma**2


def score_fn_from_output(process, output_fn: PerExampleFn, output_kind: str) -> PerExampleFn:
    """Wrap a per-example network output (x, t) -> y into the score (x, t) -> s."""
    if output_kind == "score":
        return output_fn

    def score_fn(x, t):
        alpha, sigma = process.marginal_coefficients(t)
        y = output_fn(x, t)
        if output_kind == "noise":
            return score_from_noise(y, sigma)
        if output_kind == "denoised":
            return score_from_denoised(x, y, alpha, sigma)
        raise ValueError(f"unknown model output {output_kind!r}; choose one of {OUTPUT_KINDS}")

    return score_fn
