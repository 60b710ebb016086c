"""EDM's Heun sampler (Karras, Aittala, Aila, Laine 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models", Algorithms 1 and 2), for any process.

Any process with kernel x_t = alpha(t) x_0 + sigma(t) eps is a scaled process of Karras et
al.'s Table 1 with s(t) = alpha(t) and noise level sigma_tilde(t) = sigma(t) / alpha(t)
(`views.sigma_tilde_from_coefficients`). In x_hat = x / s(t) its probability-flow ODE is
eq. 4 with s = 1, sigma(t) = t, written in the noise level itself:

    dx_hat / d sigma_tilde = (x_hat - D(x_hat; sigma_tilde)) / sigma_tilde,

with the denoiser D(x_hat; sigma_tilde) = denoised_from_score(x, score(x, t), alpha(t),
sigma(t)) at x = alpha(t) x_hat, t = sigma_tilde^{-1}(sigma_tilde) (`views`). The sampler
steps in sigma_tilde on the rho grid (eq. 5)

    sigma_i = (sigma_max^(1/rho) + i / (N - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,
    i = 0 .. N - 1,  sigma_N = 0,

with Heun's method (2nd order) except on the last step to sigma = 0, which is an Euler
step (it returns D(x_hat; sigma_{N-1})). Stochastic churn (Algorithm 2): before step i,
if S_tmin <= sigma_i <= S_tmax, the noise is raised to sigma_hat = (1 + gamma) sigma_i with
gamma = min(S_churn / N, sqrt(2) - 1) by adding sqrt(sigma_hat^2 - sigma_i^2) S_noise z,
and the step starts from sigma_hat. With S_churn = 0 the sampler is deterministic given
the prior draw. NFE per example = 2N - 1.

Times. The sampler needs t(sigma_tilde): if the process has `sigma_inverse` (as
`EDMProcess`, whose sigma(t) is the noise level of x / s(t), i.e. sigma_tilde), it is used;
otherwise sigma_tilde(t) = sigma(t) / alpha(t), assumed increasing in t, is inverted by
bisection (64 halvings of a bracket [0, t_hi], t_hi = t_max doubled until it brackets the
target; this converges to float32 resolution). The times depend on the grid only, so they
are computed once per call, not per example.

Start. Example i starts from the process's prior draw x_T (the same draw the other
samplers use for the same key), x_hat_0 = x_T / alpha(t_max), at sigma_tilde(t_max); this is
the default sigma_max. A different sigma_max rescales that draw to
x_hat_0 = (sigma_max / sigma_tilde(t_max)) x_T / alpha(t_max), i.e. treats it as
N(0, sigma_max^2 I) noise, as Karras et al.'s initialisation does (valid when sigma_max
dominates the data scale). sigma_min defaults to sigma_tilde(t_min_sample). The output is
x_hat at sigma = 0, i.e. data (t = 0, alpha = 1).

`successful` is False for an example whose output is not finite.

References:
  T. Karras, M. Aittala, T. Aila, S. Laine, "Elucidating the Design Space of
    Diffusion-Based Generative Models", NeurIPS 2022.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from genjax.processes.edm import rho_grid
from genjax.processes.views import denoised_from_score, sigma_tilde_from_coefficients
from genjax.samplers.capabilities import require_reverse_sde, score_view
from genjax.samplers.prior import example_keys, noise_key, sample_prior
from genjax.samplers.result import SampleResult


def sigma_tilde(process, t: jax.Array) -> jax.Array:
    """sigma(t) / alpha(t), the noise level of x / alpha(t)."""
    return sigma_tilde_from_coefficients(*process.marginal_coefficients(t))


def time_of_sigma_tilde(process, level: jax.Array, iterations: int = 64) -> jax.Array:
    """t with sigma_tilde(t) = level (elementwise): the process's `sigma_inverse` if it has
    one, else bisection on the increasing map t -> sigma(t) / alpha(t)."""
    level = jnp.asarray(level, jnp.float32)
    inverse = getattr(process, "sigma_inverse", None)
    if callable(inverse):
        return jnp.asarray(inverse(level), jnp.float32)

    def one(target):
        hi = jax.lax.fori_loop(
            0, 32, lambda _, h: jnp.where(sigma_tilde(process, h) < target, 2.0 * h, h), jnp.float32(process.t_max)
        )

        def halve(_, bracket):
            lo, hi = bracket
            mid = 0.5 * (lo + hi)
            below = sigma_tilde(process, mid) < target
            return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

        lo, hi = jax.lax.fori_loop(0, iterations, halve, (jnp.float32(0.0), hi))
        return 0.5 * (lo + hi)

    return jax.vmap(one)(level.ravel()).reshape(level.shape)


def sample_edm_heun(
    process,
    model,
    key: jax.Array,
    num_samples: int,
    shape: tuple[int, ...],
    num_steps: int = 18,
    rho: float = 7.0,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
    first_index: int | jax.Array = 0,
    condition: jax.Array | None = None,
) -> SampleResult:
    """Draw `num_samples` examples with EDM's Heun sampler (see the module docstring).

    Args:
      process: a `DiffusionProcess` (closed over; static under `jax.jit`).
      model: a `views.Model` with a score view (or a bare per-example score (x [*shape], t [])
        -> [*shape]).
      key: PRNG key of the whole (global) sample set.
      num_samples, shape: number of examples drawn here and per-example shape (static).
      num_steps: N, noise levels on the rho grid (N steps, the last to sigma = 0).
      rho: exponent of the grid (Karras et al.: 7).
      sigma_min, sigma_max: ends of the grid in sigma_tilde (defaults: sigma_tilde at
        t_min_sample and t_max).
      s_churn, s_tmin, s_tmax, s_noise: stochastic churn (Algorithm 2); s_churn = 0 is
        the deterministic Algorithm 1.
      first_index: global index of the first example drawn here (may be traced).
      condition: None or int32 [N] class labels of the samples (passed to the model).

    Returns:
      `SampleResult` (samples [N, *shape], nfe [N] = 2 num_steps - 1, successful [N]).
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if not rho > 0:
        raise ValueError(f"rho={rho!r} must be > 0")
    if sigma_min is not None and not sigma_min > 0:
        raise ValueError(f"sigma_min={sigma_min!r} must be > 0")
    if sigma_max is not None and not sigma_max > (0 if sigma_min is None else sigma_min):
        raise ValueError(f"sigma_max={sigma_max!r} must be > 0 and > sigma_min={sigma_min!r}")
    for name, value in (("s_churn", s_churn), ("s_noise", s_noise), ("s_tmin", s_tmin)):
        if not value >= 0:
            raise ValueError(f"{name}={value!r} must be >= 0")
    if not s_tmax >= s_tmin:
        raise ValueError(f"s_tmax={s_tmax!r} must be >= s_tmin={s_tmin!r}")
    if s_churn > 0:
        require_reverse_sde(process, "edm_heun with s_churn > 0")
    score_fn = score_view(process, model, "edm_heun")
    shape = tuple(shape)
    t_max = jnp.float32(process.t_max)
    level_at_t_max = sigma_tilde(process, t_max)
    s_min = sigma_tilde(process, jnp.float32(process.t_min_sample)) if sigma_min is None else sigma_min
    s_max = level_at_t_max if sigma_max is None else sigma_max
    levels = rho_grid(num_steps, s_min, s_max, rho)
    if sigma_max is None:
        levels = levels.at[0].set(level_at_t_max)  # start exactly where the prior draw is
    gamma = min(s_churn / num_steps, math.sqrt(2.0) - 1.0) if s_churn > 0 else 0.0
    churned = (levels >= s_tmin) & (levels <= s_tmax)
    levels_hat = jnp.where(churned, levels * (1.0 + gamma), levels)
    times_hat = time_of_sigma_tilde(process, levels_hat)
    next_levels = jnp.concatenate([levels[1:], jnp.zeros((1,), jnp.float32)])
    next_times = time_of_sigma_tilde(process, next_levels[:-1])
    alpha_T = process.marginal_coefficients(t_max)[0]
    start_scale = (s_max / level_at_t_max) / alpha_T

    def denoise(x_hat, t, condition):
        alpha, sigma = process.marginal_coefficients(t)
        x = alpha * x_hat
        return denoised_from_score(x, score_fn(x, t, condition), alpha, sigma)

    def churn(x_hat, k, level, level_hat, example_noise_key):
        if gamma == 0.0:
            return x_hat
        z = jax.random.normal(jax.random.fold_in(example_noise_key, k), x_hat.shape, x_hat.dtype)
        return x_hat + jnp.sqrt(jnp.maximum(level_hat**2 - level**2, 0.0)) * s_noise * z

    def run(x_T, example_noise_key, condition):
        def step(x_hat, inputs):
            k, level, level_hat, t_hat, level_next, t_next = inputs
            x_hat = churn(x_hat, k, level, level_hat, example_noise_key)
            d = (x_hat - denoise(x_hat, t_hat, condition)) / level_hat
            x_next = x_hat + (level_next - level_hat) * d
            d_next = (x_next - denoise(x_next, t_next, condition)) / level_next
            return x_hat + (level_next - level_hat) * 0.5 * (d + d_next), None

        last = num_steps - 1
        steps = (
            jnp.arange(last, dtype=jnp.uint32),
            levels[:last],
            levels_hat[:last],
            times_hat[:last],
            next_levels[:last],
            next_times,
        )
        x_hat, _ = jax.lax.scan(step, start_scale * x_T, steps)
        # Last step, to sigma = 0: Euler, d = (x_hat - D) / sigma_hat, x = x_hat - sigma_hat d = D.
        x_hat = churn(x_hat, jnp.uint32(last), levels[last], levels_hat[last], example_noise_key)
        x = denoise(x_hat, times_hat[last], condition)
        return x, jnp.all(jnp.isfinite(x))

    keys = example_keys(key, num_samples, first_index)
    x_T = sample_prior(process, keys, shape)
    samples, successful = jax.vmap(run)(x_T, jax.vmap(noise_key)(keys), condition)
    return SampleResult(
        samples=samples, nfe=jnp.full((num_samples,), 2 * num_steps - 1, jnp.int32), successful=successful
    )
