"""Predictor-corrector samplers (Song et al. 2021, "Score-Based Generative Modeling through
Stochastic Differential Equations", section 4.2, Algorithms 2-5 and appendix G).

Written once for every process with a Gaussian kernel x_t = alpha(t) x_0 + sigma(t) eps.
The grid is uniform in time, T = t_0 > t_1 > ... > t_N = t_min_sample; step k goes from
t = t_k to s = t_{k+1} with a predictor (score at (x, t)), then runs `corrector_steps`
Langevin corrections at the new time s (Algorithms 2 and 3: predict, then correct).

The kernel between grid times. For s < t the forward kernel from x_s to x_t is Gaussian,

    x_t = alpha_{t|s} x_s + sigma_{t|s} z,
    alpha_{t|s} = alpha_t / alpha_s,    sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2

(`transition_coefficients`); it is the exact discretisation of the forward SDE over [s, t].

Predictors (one score evaluation each):
  "euler_maruyama": x_s = x_t - [f(x_t, t) - g(t)^2 score] h + g(t) sqrt(h) z, h = t - s
      (Euler-Maruyama on the reverse SDE, eq. 6).
  "reverse_diffusion": x_s = x_t - [f_d - G_d^2 score] + G_d z with the forward step
      discretised *exactly* by its kernel, f_d = (alpha_{t|s} - 1) x_t, G_d = sigma_{t|s}:
          x_s = (2 - alpha_{t|s}) x_t + sigma_{t|s}^2 score + sigma_{t|s} z.
      For VP, 1 - alpha_{t|s}^2 = beta_i is DDPM's beta of the step and this is Algorithm 3
      verbatim; for VE (alpha = 1) it is Algorithm 2's x + (sigma_t^2 - sigma_s^2) score
      + sqrt(sigma_t^2 - sigma_s^2) z.
  "ancestral": a draw from the posterior q(x_s | x_t, x_0 = x0_hat) of the forward kernel,
      x0_hat = (x_t + sigma_t^2 score) / alpha_t (Tweedie's formula, `views`):
          mean = alpha_{t|s} sigma_s^2 / sigma_t^2 x_t + alpha_s sigma_{t|s}^2 / sigma_t^2 x0_hat,
          var  = sigma_{t|s}^2 sigma_s^2 / sigma_t^2                 (`ancestral_posterior`).
      For VP on a DDPM grid this is Ho et al. (2020)'s ancestral step, eq. 11, with the
      posterior variance beta_tilde_i = (1 - abar_{i-1}) / (1 - abar_i) beta_i (Ho's
      sigma_t^2 = beta_tilde choice; Song et al.'s AncestralSamplingPredictor uses beta_i);
      for VE it is the ancestral step Song et al. (appendix F) derive for SMLD,
      mean = x + (sigma_t^2 - sigma_s^2) score, var = sigma_s^2 (sigma_t^2 - sigma_s^2) / sigma_t^2.
  "none": no predictor (corrector only, i.e. annealed Langevin dynamics, Song & Ermon 2019).

Corrector "langevin" (Algorithms 4 and 5): at time s, with z ~ N(0, I) and score g,

    eps = 2 a_s (snr ||z|| / ||g||)^2,     x <- x + eps g + sqrt(2 eps) z,

norms over each example's own axes (`step_size="snr"`, the default; the reference code
averages the norms over the batch, per-example norms keep sample i a function of its own
key). a_s is the "alpha_i" of the paper: 1 for VE and DDPM's alpha_i = 1 - beta_i for VP.
Generically a_s = (alpha(s) / alpha(s - h))^2 with h the grid spacing, the squared kernel
coefficient of one grid step ending at s: DDPM's 1 - beta_i for VP (and sub-VP, which
shares its alpha) and 1 for VE and EDM. Where the score is exactly zero the step is 0 (no
information, and eps would be infinite).

Caveat of the per-example rule in low dimension. A step size that depends on the state,
eps(x) ~ 1 / ||score(x)||^2, changes the law Langevin dynamics leaves invariant: the
continuous limit dx = eps(x) score dt + sqrt(2 eps(x)) dw has stationary density
p / eps(x), not p. For N(0, V I_D) that is p(x) ||x||^2, with per-coordinate variance
V (D + 2) / D: negligible for images (D in the thousands), but a 25 % inflation for D = 8
(about 50 % was observed at snr = 0.05 over 300 steps; and, since ||z||^2 / ||score||^2 is heavy tailed for D = 2, occasional huge steps).
`step_size="sigma"` is a state-independent alternative: eps = 2 a_s (snr sigma(s))^2, the
same rule with ||z|| / ||score|| replaced by its value sigma(s) for data much narrower than
the noise (the score of x_s given x_0 is -z / sigma(s)); eps ~ sigma^2 is also SMLD's
annealed Langevin schedule (Song & Ermon 2019). It leaves p_s invariant up to O(eps).

Why `lax.scan` and not diffrax: these are fixed Markov chains on a fixed grid, whose steps
(the exact kernel, the posterior draw, the Langevin step) are not the steps of an SDE
solver; diffrax is used where an integrator is (`reverse_sde`, `probability_flow`).

Final denoising (`denoise_final=True`): the output is Tweedie's x0_hat = D(x_N, t_min), the
posterior mean of x_0 (the score_sde code returns the noise-free mean of its last step for
the same purpose). One more score evaluation.

NFE per example, counted statically (the chain is fixed):
    num_steps * ([predictor != "none"] + corrector_steps [corrector == "langevin"])
    + [denoise_final and t_min_sample > 0].

`successful` is False for an example whose output is not finite.

References:
  Y. Song, J. Sohl-Dickstein, D. P. Kingma, A. Kumar, S. Ermon, B. Poole, "Score-Based
    Generative Modeling through Stochastic Differential Equations", ICLR 2021.
  J. Ho, A. Jain, P. Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020.
  Y. Song, S. Ermon, "Generative Modeling by Estimating Gradients of the Data
    Distribution", NeurIPS 2019.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from genjax.processes.views import denoised_from_score
from genjax.samplers.prior import example_keys, noise_key, sample_prior
from genjax.samplers.result import SampleResult

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]

PREDICTORS = ("reverse_diffusion", "euler_maruyama", "ancestral", "none")
CORRECTORS = ("langevin", "none")


def transition_coefficients(process, s: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(alpha_{t|s}, sigma_{t|s}) of the forward kernel x_t | x_s for s < t:
    alpha_t / alpha_s and sqrt(sigma_t^2 - alpha_{t|s}^2 sigma_s^2)."""
    alpha_s, sigma_s = process.marginal_coefficients(s)
    alpha_t, sigma_t = process.marginal_coefficients(t)
    ratio = alpha_t / alpha_s
    variance = jnp.maximum(sigma_t**2 - ratio**2 * sigma_s**2, 0.0)
    return ratio, jnp.sqrt(variance)


def ancestral_posterior(
    process, x_t: jax.Array, x0_hat: jax.Array, t: jax.Array, s: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Mean and std of q(x_s | x_t, x_0 = x0_hat) for s < t (the Gaussian posterior of the
    forward kernel; Ho et al. 2020 eqs. 6-7 for any alpha, sigma)."""
    alpha_s, sigma_s = process.marginal_coefficients(s)
    _, sigma_t = process.marginal_coefficients(t)
    ratio, sigma_ts = transition_coefficients(process, s, t)
    mean = (ratio * sigma_s**2 / sigma_t**2) * x_t + (alpha_s * sigma_ts**2 / sigma_t**2) * x0_hat
    std = sigma_ts * sigma_s / sigma_t
    return mean, std


STEP_SIZES = ("snr", "sigma")


def langevin_step(x: jax.Array, score: jax.Array, z: jax.Array, snr, a, sigma=None) -> jax.Array:
    """x + eps score + sqrt(2 eps) z with eps = 2 a (snr ||z|| / ||score||)^2 (per example),
    or eps = 2 a (snr sigma)^2 if sigma is given (`step_size="sigma"`)."""
    if sigma is not None:
        eps = 2.0 * a * (snr * sigma) ** 2
    else:
        score_sq = jnp.sum(score**2)
        eps = 2.0 * a * snr**2 * jnp.sum(z**2) / jnp.where(score_sq > 0, score_sq, 1.0)
        eps = jnp.where(score_sq > 0, eps, 0.0)
    return x + eps * score + jnp.sqrt(2.0 * eps) * z


def predictor_corrector_nfe(
    num_steps: int, predictor: str, corrector: str, corrector_steps: int, denoise_final: bool, t_min: float
) -> int:
    per_step = (predictor != "none") + (corrector_steps if corrector == "langevin" else 0)
    return num_steps * per_step + int(denoise_final and t_min > 0.0)


def sample_predictor_corrector(
    process,
    score_fn: ScoreFn,
    key: jax.Array,
    num_samples: int,
    shape: tuple[int, ...],
    num_steps: int,
    predictor: str = "reverse_diffusion",
    corrector: str = "langevin",
    snr: float = 0.16,
    corrector_steps: int = 1,
    denoise_final: bool = True,
    first_index: int | jax.Array = 0,
    step_size: str = "snr",
) -> SampleResult:
    """Draw `num_samples` examples with a predictor-corrector chain (see the module docstring).

    Args:
      process: a `DiffusionProcess` (closed over; static under `jax.jit`).
      score_fn: per-example score model (x [*shape], t []) -> [*shape].
      key: PRNG key of the whole (global) sample set.
      num_samples, shape: number of examples drawn here and per-example shape (static).
      num_steps: N, grid steps from t_max to t_min_sample (static).
      predictor: one of `PREDICTORS`.
      corrector: "langevin" or "none".
      snr: the signal-to-noise ratio r of the Langevin step size (0.16 is Song et al.'s
        CIFAR-10 VE value).
      corrector_steps: M, Langevin steps after each predictor step.
      denoise_final: return Tweedie's x0_hat at t_min_sample instead of x_{t_min}.
      first_index: global index of the first example drawn here (may be traced).
      step_size: the Langevin step rule, "snr" (Song et al., per-example norms) or
        "sigma" (state independent); see the module docstring.

    Returns:
      `SampleResult` (samples [N, *shape], nfe [N], successful [N]).
    """
    if step_size not in STEP_SIZES:
        raise ValueError(f"unknown step_size {step_size!r}; choose one of {STEP_SIZES}")
    if predictor not in PREDICTORS:
        raise ValueError(f"unknown predictor {predictor!r}; choose one of {PREDICTORS}")
    if corrector not in CORRECTORS:
        raise ValueError(f"unknown corrector {corrector!r}; choose one of {CORRECTORS}")
    if predictor == "none" and corrector == "none":
        raise ValueError("predictor and corrector cannot both be 'none'")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if corrector == "langevin" and corrector_steps < 1:
        raise ValueError(f"corrector_steps must be >= 1, got {corrector_steps}")
    t_max, t_min = float(process.t_max), float(process.t_min_sample)
    if not t_max > t_min >= 0.0:
        raise ValueError(f"need t_max > t_min_sample >= 0, got {t_max}, {t_min}")
    shape = tuple(shape)
    grid = jnp.linspace(t_max, t_min, num_steps + 1, dtype=jnp.float32)
    spacing = (t_max - t_min) / num_steps
    num_corrections = corrector_steps if corrector == "langevin" else 0

    def predict(x, t, s, step_key):
        if predictor == "none":
            return x
        score = score_fn(x, t)
        z = jax.random.normal(jax.random.fold_in(step_key, 0), x.shape, x.dtype)
        if predictor == "euler_maruyama":
            h = t - s
            return x - process.reverse_drift(x, t, score) * h + process.diffusion(t) * jnp.sqrt(h) * z
        if predictor == "reverse_diffusion":
            ratio, sigma_ts = transition_coefficients(process, s, t)
            return (2.0 - ratio) * x + sigma_ts**2 * score + sigma_ts * z
        alpha_t, sigma_t = process.marginal_coefficients(t)
        mean, std = ancestral_posterior(process, x, denoised_from_score(x, score, alpha_t, sigma_t), t, s)
        return mean + std * z

    def correct(x, s, step_key):
        if num_corrections == 0:
            return x
        a = (process.marginal_coefficients(s)[0] / process.marginal_coefficients(jnp.maximum(s - spacing, 0.0))[0]) ** 2

        sigma = process.marginal_coefficients(s)[1] if step_size == "sigma" else None

        def body(j, x):
            z = jax.random.normal(jax.random.fold_in(step_key, 1 + j), x.shape, x.dtype)
            return langevin_step(x, score_fn(x, s), z, snr, a, sigma)

        return jax.lax.fori_loop(0, num_corrections, body, x)

    def run(x_T, example_noise_key):
        def step(x, inputs):
            k, t, s = inputs
            step_key = jax.random.fold_in(example_noise_key, k)
            x = predict(x, t, s, step_key)
            return correct(x, s, step_key), None

        steps = (jnp.arange(num_steps, dtype=jnp.uint32), grid[:-1], grid[1:])
        x, _ = jax.lax.scan(step, x_T, steps)
        if denoise_final and t_min > 0.0:
            alpha, sigma = process.marginal_coefficients(grid[-1])
            x = denoised_from_score(x, score_fn(x, grid[-1]), alpha, sigma)
        return x, jnp.all(jnp.isfinite(x))

    keys = example_keys(key, num_samples, first_index)
    x_T = sample_prior(process, keys, shape)
    samples, successful = jax.vmap(run)(x_T, jax.vmap(noise_key)(keys))
    nfe = predictor_corrector_nfe(num_steps, predictor, corrector, corrector_steps, denoise_final, t_min)
    return SampleResult(samples=samples, nfe=jnp.full((num_samples,), nfe, jnp.int32), successful=successful)
