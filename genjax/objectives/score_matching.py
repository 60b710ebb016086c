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
    keys: jax.Array,
    *,
    weighting: str = "sigma_squared",
    reduce: str = "mean",
) -> jax.Array:
    """Monte Carlo estimate of the DSM loss on a batch x0 [B, ...].

    Example i draws its time and noise from keys[i] alone, so the estimate for an example
    does not depend on which other examples share its batch (gradient accumulation and
    sharding leave it unchanged).

    Args:
      score_fn: per-example model (x, t) -> score.
      keys: [B] per-example keys.
      reduce: "mean" averages the squared error over data dimensions, "sum" adds it up
        (score_sde's reduce_mean=False); the batch is always averaged.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown DSM weighting {weighting!r}; choose one of {WEIGHTINGS}")
    if reduce not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduce!r}; choose one of {REDUCTIONS}")

    def per_example(x, key):
        key_t, key_noise = jax.random.split(key)
        t = jax.random.uniform(key_t, (), minval=process.t_min_train, maxval=process.t_max)
        noise = jax.random.normal(key_noise, x.shape, x.dtype)
        _, sigma = process.marginal_coefficients(t)
        # sqrt(lambda) (s_theta - grad log p_0t) with lambda = sigma^2 and grad log p_0t = -noise / sigma.
        residual = sigma * score_fn(process.perturb(x, t, noise), t) + noise
        squared = jnp.sum(residual**2)
        return squared / x.size if reduce == "mean" else squared

    return jnp.mean(jax.vmap(per_example)(x0, keys))
