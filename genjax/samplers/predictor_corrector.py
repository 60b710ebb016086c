"""Predictor-corrector samplers (Song et al. 2021, "Score-Based Generative Modeling through
Stochastic Differential Equations", section 4.2, Algorithms 2-5 and appendix G).

Written once for every process with a Gaussian kernel x_t = alpha(t) x_0 + sigma(t) eps.
The grid is the process's `time_grid`, T = t_0 > t_1 > ... > t_N = t_min_sample (uniform in
t; rho-spaced in sigma for EDM); step k goes from t = t_k to s = t_{k+1} with a predictor
(score at (x, t)), then runs `corrector_steps`
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

    eps = 2 a_s (snr ||z|| / ||g||)^2,     x <- x + eps g + sqrt(2 eps) z.

a_s is the "alpha_i" of the paper: 1 for VE and DDPM's alpha_i = 1 - beta_i for VP.
Generically a_s = (alpha(t) / alpha(s))^2 for the grid step t -> s just taken, the squared
kernel coefficient of that step: DDPM's 1 - beta_i for VP (and sub-VP, which shares its
alpha) and 1 for VE and EDM. Three rules for the norms (`step_size`):

  "snr": each example's own norms, Algorithms 4 and 5 as written (one example at a time).
      Sample i is a function of its own key only. Where the score is exactly zero the step
      is 0 (no information, and eps would be infinite).
  "snr_batch": the reference code's rule: ||z|| and ||g|| are averaged over the whole
      sample set (over the mesh's batch axes with `lax.pmean` when drawn under shard_map,
      `axis_name`), one step size per level for every example. The examples are coupled
      through that scalar: a sample set does not depend on how it is split over devices,
      but (weakly) on its size.
  "sigma": state independent, eps = 2 a_s (snr sigma(s))^2: the same rule with ||z|| / ||g||
      replaced by its value sigma(s) for data much narrower than the noise (the score of
      x_s given x_0 is -z / sigma(s)); eps ~ sigma^2 is also SMLD's annealed Langevin
      schedule (Song & Ermon 2019). Per-example, like "snr".

Why the per-example rule is biased in low dimension. A step size that depends on the
state, eps(x) ~ 1 / ||score(x)||^2, changes the law Langevin dynamics leaves invariant: the
continuous limit dx = eps(x) score dt + sqrt(2 eps(x)) dw has stationary density
p / eps(x), not p. For N(0, V I_D) that is p(x) ||x||^2, with per-coordinate variance
V (D + 2) / D: negligible for images (D in the thousands), but a 25 % inflation for D = 8,
and for D = 2 ||z||^2 / ||score||^2 is heavy tailed (occasional huge steps near a mode).
Averaged over a large batch the ratio of norms is a constant per level, and "snr_batch"
and "sigma" leave p_s invariant up to O(eps) (the tests recover a 2-D mixture with both).

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

import jax
import jax.numpy as jnp

from genjax.processes.views import denoised_from_score
from genjax.samplers.capabilities import require_reverse_sde, score_view
from genjax.samplers.prior import example_keys, noise_key, sample_prior
from genjax.samplers.result import SampleResult


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


STEP_SIZES = ("snr", "snr_batch", "sigma")


def langevin_step_sizes(
    z: jax.Array, score: jax.Array, snr, a, step_size: str, sigma=None, axis_name=None
) -> jax.Array:
    """Per-example Langevin step sizes eps [B] for a batch z, score [B, ...] (module
    docstring): "snr" 2 a (snr ||z_i|| / ||g_i||)^2; "snr_batch" the same with both norms
    averaged over the batch (and over `axis_name` if given); "sigma" 2 a (snr sigma)^2."""
    batch = z.shape[0]
    if step_size == "sigma":
        return jnp.full((batch,), 2.0 * a * (snr * sigma) ** 2, z.dtype)
    score_norm = jnp.sqrt(jnp.sum(score.reshape(batch, -1) ** 2, axis=1))
    noise_norm = jnp.sqrt(jnp.sum(z.reshape(batch, -1) ** 2, axis=1))
    if step_size == "snr_batch":
        score_norm, noise_norm = jnp.mean(score_norm), jnp.mean(noise_norm)
        if axis_name is not None:
            score_norm, noise_norm = jax.lax.pmean((score_norm, noise_norm), axis_name)
        score_norm = jnp.broadcast_to(score_norm, (batch,))
        noise_norm = jnp.broadcast_to(noise_norm, (batch,))
    safe = jnp.where(score_norm > 0, score_norm, 1.0)
    return jnp.where(score_norm > 0, 2.0 * a * (snr * noise_norm / safe) ** 2, 0.0)


def langevin_step(x: jax.Array, score: jax.Array, z: jax.Array, eps: jax.Array) -> jax.Array:
    """x + eps score + sqrt(2 eps) z for a batch, eps [B] per example."""
    eps = eps.reshape((-1,) + (1,) * (x.ndim - 1))
    return x + eps * score + jnp.sqrt(2.0 * eps) * z


def predictor_corrector_nfe(
    num_steps: int, predictor: str, corrector: str, corrector_steps: int, denoise_final: bool, t_min: float
) -> int:
    per_step = (predictor != "none") + (corrector_steps if corrector == "langevin" else 0)
    return num_steps * per_step + int(denoise_final and t_min > 0.0)


def sample_predictor_corrector(
    process,
    model,
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
    step_size: str = "snr_batch",
    axis_name=None,
    condition: jax.Array | None = None,
) -> SampleResult:
    """Draw `num_samples` examples with a predictor-corrector chain (see the module docstring).

    Args:
      process: a `DiffusionProcess` (closed over; static under `jax.jit`).
      model: a `views.Model` with a score view (or a bare per-example score (x [*shape], t [])
        -> [*shape]).
      key: PRNG key of the whole (global) sample set.
      num_samples, shape: number of examples drawn here and per-example shape (static).
      num_steps: N, steps of the process's `time_grid` from t_max to t_min_sample (static).
      predictor: one of `PREDICTORS`.
      corrector: "langevin" or "none".
      snr: the signal-to-noise ratio r of the Langevin step size (0.16 is Song et al.'s
        CIFAR-10 VE value).
      corrector_steps: M, Langevin steps after each predictor step.
      denoise_final: return Tweedie's x0_hat at t_min_sample instead of x_{t_min}.
      first_index: global index of the first example drawn here (may be traced).
      step_size: the Langevin step rule, one of `STEP_SIZES` (module docstring).
      axis_name: mesh axis name(s) the sample set is split over when called inside
        `shard_map`; "snr_batch" averages its norms over them. Ignored by the other rules.
      condition: None or int32 [N] class labels of the samples (passed to the model).

    Returns:
      `SampleResult` (samples [N, *shape], nfe [N], successful [N]).
    """
    require_reverse_sde(process, "predictor_corrector (every predictor and the Langevin corrector add noise)")
    score_fn = score_view(process, model, "predictor_corrector")
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
    if corrector == "langevin" and not 0 < snr < float("inf"):
        raise ValueError(f"snr={snr!r} must be > 0 and finite")
    t_max, t_min = float(process.t_max), float(process.t_min_sample)
    if not t_max > t_min >= 0.0:
        raise ValueError(f"need t_max > t_min_sample >= 0, got {t_max}, {t_min}")
    shape = tuple(shape)
    grid = process.time_grid(num_steps)
    num_corrections = corrector_steps if corrector == "langevin" else 0
    def batch_score(x, t):
        return jax.vmap(score_fn, in_axes=(0, None, 0))(x, t, condition)

    fold = jax.vmap(jax.random.fold_in, in_axes=(0, None))

    def normals(keys, x):
        return jax.vmap(lambda k: jax.random.normal(k, shape, x.dtype))(keys)

    def predict_one(x, score, z, t, s):
        if predictor == "euler_maruyama":
            h = t - s
            return x - process.reverse_drift(x, t, score) * h + process.diffusion(t) * jnp.sqrt(h) * z
        if predictor == "reverse_diffusion":
            ratio, sigma_ts = transition_coefficients(process, s, t)
            return (2.0 - ratio) * x + sigma_ts**2 * score + sigma_ts * z
        alpha_t, sigma_t = process.marginal_coefficients(t)
        mean, std = ancestral_posterior(process, x, denoised_from_score(x, score, alpha_t, sigma_t), t, s)
        return mean + std * z

    def predict(x, t, s, step_keys):
        if predictor == "none":
            return x
        z = normals(fold(step_keys, 0), x)
        return jax.vmap(predict_one, in_axes=(0, 0, 0, None, None))(x, batch_score(x, t), z, t, s)

    def correct(x, t, s, step_keys):
        if num_corrections == 0:
            return x
        alpha_t, _ = process.marginal_coefficients(t)
        alpha_s, sigma_s = process.marginal_coefficients(s)
        a = (alpha_t / alpha_s) ** 2

        def body(j, x):
            z = normals(fold(step_keys, (1 + j).astype(jnp.uint32)), x)
            score = batch_score(x, s)
            eps = langevin_step_sizes(z, score, snr, a, step_size, sigma_s, axis_name)
            return langevin_step(x, score, z, eps)

        return jax.lax.fori_loop(0, num_corrections, body, x)

    keys = example_keys(key, num_samples, first_index)
    x_T = sample_prior(process, keys, shape)
    noise_keys = jax.vmap(noise_key)(keys)

    def step(x, inputs):
        k, t, s = inputs
        step_keys = fold(noise_keys, k)
        x = predict(x, t, s, step_keys)
        return correct(x, t, s, step_keys), None

    steps = (jnp.arange(num_steps, dtype=jnp.uint32), grid[:-1], grid[1:])
    x, _ = jax.lax.scan(step, x_T, steps)
    if denoise_final and t_min > 0.0:
        alpha, sigma = process.marginal_coefficients(grid[-1])
        x = denoised_from_score(x, batch_score(x, grid[-1]), alpha, sigma)
    successful = jnp.all(jnp.isfinite(x.reshape(num_samples, -1)), axis=1)
    nfe = predictor_corrector_nfe(num_steps, predictor, corrector, corrector_steps, denoise_final, t_min)
    return SampleResult(samples=x, nfe=jnp.full((num_samples,), nfe, jnp.int32), successful=successful)
