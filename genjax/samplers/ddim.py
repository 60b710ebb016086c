"""DDIM sampling (Song, Meng, Ermon 2021, "Denoising Diffusion Implicit Models", eq. 12),
written for any process with a Gaussian kernel x_t = alpha(t) x_0 + sigma(t) eps.

From x_t to x_s (s < t), with the score s_t = score(x_t, t):

    eps_hat = -sigma_t s_t                                   (`views.noise_from_score`)
    x0_hat  = (x_t + sigma_t^2 s_t) / alpha_t                (Tweedie; `views.denoised_from_score`)
    x_s     = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c z,     z ~ N(0, I),
    c       = eta sqrt(sigma_{t|s}^2 sigma_s^2 / sigma_t^2),

where sigma_{t|s}^2 sigma_s^2 / sigma_t^2 is the variance of the forward posterior
q(x_s | x_t, x_0) (`predictor_corrector.ancestral_posterior`; in DDPM notation
c^2 = eta^2 (1 - abar_s) / (1 - abar_t) (1 - abar_t / abar_s), DDIM eq. 16).
eta = 0 is deterministic (DDIM proper: an exponential-integrator-like first-order step of
the probability-flow ODE in the variables x / alpha and sigma / alpha); eta = 1 is exactly
the ancestral step q(x_s | x_t, x0_hat) (DDPM with the posterior variance).

Grid: the process's `time_grid`, T = t_0 > ... > t_N = t_min_sample (N = `num_steps`; uniform
in t, rho-spaced in sigma for EDM); then a final
step to x0_hat = D(x_N, t_min) (the DDIM step to s = 0, where alpha = 1 and sigma = 0).
NFE per example = num_steps + 1. A fixed chain, so `lax.scan`, not an integrator.
`successful` is False for an example whose output is not finite.

References:
  J. Song, C. Meng, S. Ermon, "Denoising Diffusion Implicit Models", ICLR 2021.
  J. Ho, A. Jain, P. Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from genjax.processes.views import denoised_from_score, noise_from_score
from genjax.samplers.predictor_corrector import transition_coefficients
from genjax.samplers.capabilities import require_reverse_sde, score_view
from genjax.samplers.prior import example_keys, noise_key, sample_prior
from genjax.samplers.result import SampleResult


def ddim_step(process, x_t, score, t, s, eta, z):
    """One DDIM step from x_t at t to time s < t (eq. 12); z ~ N(0, I) (unused if eta = 0)."""
    alpha_t, sigma_t = process.marginal_coefficients(t)
    alpha_s, sigma_s = process.marginal_coefficients(s)
    _, sigma_ts = transition_coefficients(process, s, t)
    x0_hat = denoised_from_score(x_t, score, alpha_t, sigma_t)
    eps_hat = noise_from_score(score, sigma_t)
    c = eta * sigma_ts * sigma_s / sigma_t
    return alpha_s * x0_hat + jnp.sqrt(jnp.maximum(sigma_s**2 - c**2, 0.0)) * eps_hat + c * z


def sample_ddim(
    process,
    model,
    key: jax.Array,
    num_samples: int,
    shape: tuple[int, ...],
    num_steps: int,
    eta: float = 0.0,
    first_index: int | jax.Array = 0,
    condition: jax.Array | None = None,
) -> SampleResult:
    """Draw `num_samples` examples with DDIM (see the module docstring).

    Args:
      process: a `DiffusionProcess` (closed over; static under `jax.jit`).
      model: a `views.Model` with a score view (or a bare per-example score (x [*shape], t [])
        -> [*shape]).
      key: PRNG key of the whole (global) sample set.
      num_samples, shape: number of examples drawn here and per-example shape (static).
      num_steps: N, DDIM steps from t_max to t_min_sample (then one step to x0_hat).
      eta: 0 (deterministic DDIM) to 1 (ancestral); static.
      first_index: global index of the first example drawn here (may be traced).
      condition: None or int32 [N] class labels of the samples (passed to the model).

    Returns:
      `SampleResult` (samples [N, *shape], nfe [N] = num_steps + 1, successful [N]).
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if eta < 0.0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    if not eta <= 1.0:
        raise ValueError(f"eta={eta!r} must lie in [0, 1] (0: deterministic DDIM, 1: ancestral)")
    if eta > 0.0:
        require_reverse_sde(process, "ddim with eta > 0")
    t_max, t_min = float(process.t_max), float(process.t_min_sample)
    if not t_max > t_min > 0.0:
        raise ValueError(f"need t_max > t_min_sample > 0, got {t_max}, {t_min}")
    score_fn = score_view(process, model, "ddim")
    shape = tuple(shape)
    grid = process.time_grid(num_steps)

    def run(x_T, example_noise_key, condition):
        def step(x, inputs):
            k, t, s = inputs
            if eta == 0.0:
                z = jnp.zeros_like(x)
            else:
                z = jax.random.normal(jax.random.fold_in(example_noise_key, k), x.shape, x.dtype)
            return ddim_step(process, x, score_fn(x, t, condition), t, s, eta, z), None

        steps = (jnp.arange(num_steps, dtype=jnp.uint32), grid[:-1], grid[1:])
        x, _ = jax.lax.scan(step, x_T, steps)
        alpha, sigma = process.marginal_coefficients(grid[-1])
        x = denoised_from_score(x, score_fn(x, grid[-1], condition), alpha, sigma)
        return x, jnp.all(jnp.isfinite(x))

    keys = example_keys(key, num_samples, first_index)
    x_T = sample_prior(process, keys, shape)
    samples, successful = jax.vmap(run)(x_T, jax.vmap(noise_key)(keys), condition)
    return SampleResult(
        samples=samples, nfe=jnp.full((num_samples,), num_steps + 1, jnp.int32), successful=successful
    )
