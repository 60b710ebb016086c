"""Continuous-time denoising score matching (Vincent 2011; Song et al. 2021, eq. 7).

    L(theta) = E_{t ~ U(t_min, T)} E_{x_0} E_{eps ~ N(0, I)}
                   [ lambda(t) || s_theta(x_t, t) - grad log p_{0t}(x_t | x_0) ||^2 ],
    x_t = alpha(t) x_0 + sigma(t) eps,    grad log p_{0t}(x_t | x_0) = -eps / sigma(t).

With the standard weighting lambda(t) = sigma(t)^2 the summand is || sigma s_theta + eps ||^2,
which for a noise-predicting network s_theta = -eps_theta / sigma is the DDPM loss
|| eps_theta - eps ||^2 (Ho et al. 2020). The minimiser over all functions is the score of
p_t, since DSM equals explicit score matching plus a constant.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from genjax.processes.views import PerExampleFn

WEIGHTINGS = ("sigma_squared",)
REDUCTIONS = ("mean", "sum")


def denoising_score_matching_loss(
    score_fn: PerExampleFn,
    process,
    x0: jax.Array,
    key: jax.Array,
    *,
    weighting: str = "sigma_squared",
    reduce: str = "mean",
) -> jax.Array:
    """Monte Carlo estimate of the DSM loss on a batch x0 [B, ...]; one t and one eps per example.

    Args:
      score_fn: per-example model (x, t) -> score.
      reduce: "mean" averages the squared error over data dimensions, "sum" adds it up
        (score_sde's reduce_mean=False); the batch is always averaged.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown DSM weighting {weighting!r}; choose one of {WEIGHTINGS}")
    if reduce not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduce!r}; choose one of {REDUCTIONS}")
    key_t, key_noise = jax.random.split(key)
    batch = x0.shape[0]
    t = jax.random.uniform(key_t, (batch,), minval=process.t_min_train, maxval=process.t_max)
    noise = jax.random.normal(key_noise, x0.shape, x0.dtype)
    x_t = jax.vmap(process.perturb)(x0, t, noise)
    score = jax.vmap(score_fn)(x_t, t)
    _, sigma = process.marginal_coefficients(t)
    sigma = sigma.reshape((batch,) + (1,) * (x0.ndim - 1))
    residual = sigma * score + noise  # sqrt(lambda) (s_theta - grad log p_0t) with lambda = sigma^2
    per_example = jnp.sum(residual**2, axis=tuple(range(1, x0.ndim)))
    if reduce == "mean":
        per_example = per_example / (x0.size // batch)
    return jnp.mean(per_example)
