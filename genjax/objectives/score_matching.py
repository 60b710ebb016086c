"""Continuous-time denoising score matching (Vincent 2011; Song et al. 2021, eq. 7).

    L(theta) = E_{t ~ p(t)} E_{x_0} E_{eps ~ N(0, I)}
                   [ lambda(t) || s_theta(x_t, t) - grad log p_{0t}(x_t | x_0) ||^2 ],
    x_t = alpha(t) x_0 + sigma(t) eps,    grad log p_{0t}(x_t | x_0) = -eps / sigma(t).

DSM equals explicit score matching E[lambda || s_theta - grad log p_t ||^2] plus a constant
that does not depend on theta, so for every weighting its minimiser over all functions is
the score of p_t. Weightings (`weighting=`):

  "sigma_squared"  lambda(t) = sigma(t)^2, t ~ process.sample_training_time (uniform on
                   [t_min_train, T] unless the process says otherwise). The summand is
                   || sigma s_theta + eps ||^2, which for a noise-predicting network
                   s_theta = -eps_theta / sigma is the DDPM loss || eps_theta - eps ||^2
                   (Ho et al. 2020). The default.
  "likelihood"      the likelihood weighting lambda(t) = g(t)^2 (Song, Durkan, Murray, Ermon
                   2021, "Maximum Likelihood Training of Score-Based Diffusion Models",
                   Thm. 1: with t ~ U(t_min_train, T) the loss is, up to the factor
                   2 / (T - t_min_train) and a constant, the bound on -log p_theta).
                   With importance_sampling=True, t is drawn from the proposal
                   q(t) proportional to g(t)^2 / sigma(t)^2 on [t_min_train, T] and reweighted
                   by g(t)^2 / (q(t) (T - t_min_train)), so the expectation is unchanged and the
                   summand becomes Z / (T - t_min_train) || sigma s_theta + eps ||^2, Z the
                   normaliser of q (the variance reduction of that paper, section 5).
  "edm"            Karras et al. 2022's lambda(sigma~) = (sigma~^2 + sigma_data^2) /
                   (sigma~ sigma_data)^2 on the denoiser D (data units, views.py), with
                   sigma~ = sigma / alpha and t ~ process.sample_training_time (EDMProcess: the
                   log-normal sigma of Table 1). As D - x_0 = (sigma^2 / alpha)(s - grad log
                   p_0t), this is lambda(t) = lambda(sigma~) sigma^4 / alpha^2 on the score.

The proposal q of "likelihood" needs no per-process code: for any affine Gaussian kernel the
drift is (alpha'/alpha) x and g^2 = alpha^2 d(sigma~^2)/dt, so

    g(t)^2 / sigma(t)^2 = d/dt log sigma~(t)^2,        sigma~ = sigma / alpha,

and q has the CDF (l(t) - l(t_min)) / (l(T) - l(t_min)), l = log sigma~^2, inverted by
bisection in log t (sigma~ increases with t).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from genjax.nets.preconditioning import edm_loss_weight
from genjax.objectives.batch import batch_arrays, dropout_key
from genjax.processes import views

WEIGHTINGS = ("sigma_squared", "likelihood", "edm")
REDUCTIONS = ("mean", "sum")
_BISECTION_STEPS = 48


def log_sigma_tilde_squared(process, t: jax.Array) -> jax.Array:
    """l(t) = log(sigma(t)^2 / alpha(t)^2); dl/dt = g(t)^2 / sigma(t)^2."""
    alpha, sigma = process.marginal_coefficients(t)
    return 2.0 * (jnp.log(sigma) - jnp.log(alpha))


def likelihood_proposal_normaliser(process) -> jax.Array:
    """Z = int_{t_min_train}^T g^2 / sigma^2 dt = l(T) - l(t_min_train)."""
    return log_sigma_tilde_squared(process, jnp.float32(process.t_max)) - log_sigma_tilde_squared(
        process, jnp.float32(process.t_min_train)
    )


def sample_likelihood_proposal_time(process, key: jax.Array) -> jax.Array:
    """One t ~ q(t) proportional to g(t)^2 / sigma(t)^2 on [t_min_train, T], by inverse CDF."""
    if not process.t_min_train > 0:
        raise ValueError("importance sampling of t needs t_min_train > 0 (q has a log singularity at 0)")
    t_lo, t_hi = jnp.float32(process.t_min_train), jnp.float32(process.t_max)
    l_lo = log_sigma_tilde_squared(process, t_lo)
    level = l_lo + jax.random.uniform(key, ()) * (log_sigma_tilde_squared(process, t_hi) - l_lo)

    def step(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        below = log_sigma_tilde_squared(process, jnp.exp(mid)) < level
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

    lo, hi = jax.lax.fori_loop(0, _BISECTION_STEPS, step, (jnp.log(t_lo), jnp.log(t_hi)))
    return jnp.clip(jnp.exp(0.5 * (lo + hi)), t_lo, t_hi)


def time_and_relative_weight(process, key, weighting, importance_sampling=False, sigma_data=0.5):
    """(t, lambda(t) / sigma(t)^2): one training time and the loss weight on
    || sigma s + eps ||^2 (including the importance weight when importance_sampling)."""
    if weighting == "likelihood":
        if importance_sampling:
            t = sample_likelihood_proposal_time(process, key)
            return t, likelihood_proposal_normaliser(process) / (process.t_max - process.t_min_train)
        t = jax.random.uniform(key, (), minval=process.t_min_train, maxval=process.t_max)
        _, sigma = process.marginal_coefficients(t)
        return t, process.diffusion(t) ** 2 / sigma**2
    t = process.sample_training_time(key)
    if weighting == "sigma_squared":
        return t, jnp.ones(())
    alpha, sigma = process.marginal_coefficients(t)
    sigma_tilde = sigma / alpha
    return t, edm_loss_weight(sigma_tilde, sigma_data) * sigma_tilde**2


def denoising_score_matching_loss(
    model,
    process,
    batch,
    keys: jax.Array,
    *,
    weighting: str = "sigma_squared",
    reduce: str = "mean",
    importance_sampling: bool = False,
    sigma_data: float | None = None,
) -> jax.Array:
    """Monte Carlo estimate of the DSM loss on a batch {"x": x0 [B, ...], "label": [B]?}.

    Example i draws its time and noise from keys[i] alone, so the estimate for an example
    does not depend on which other examples share its batch (gradient accumulation and
    sharding leave it unchanged, for a network without dropout). The network is called once
    on the batch, with train=True, the labels as its condition and the dropout key of
    `objectives.batch`.

    Args:
      model: a `views.Model` with a score view (or a bare per-example score (x, t) -> s).
      batch: the batch dict (or a bare array x0).
      keys: [B] per-example keys.
      weighting: "sigma_squared" (default), "likelihood" (g^2) or "edm"; see above.
      reduce: "mean" averages the squared error over data dimensions, "sum" adds it up
        (score_sde's reduce_mean=False); the batch is always averaged.
      importance_sampling: only with "likelihood": draw t from q proportional to g^2/sigma^2.
      sigma_data: for "edm"; defaults to process.sigma_data if the process has one, else 0.5.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown DSM weighting {weighting!r}; choose one of {WEIGHTINGS}")
    if reduce not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduce!r}; choose one of {REDUCTIONS}")
    if importance_sampling and weighting != "likelihood":
        raise ValueError("importance_sampling applies to the 'likelihood' (g^2) weighting only")
    if sigma_data is not None and not sigma_data > 0:
        raise ValueError(f"sigma_data={sigma_data!r} must be > 0")
    if sigma_data is None:
        sigma_data = getattr(process, "sigma_data", 0.5)
    x0, labels = batch_arrays(batch)
    score_fn = views.batched_score_fn(process, model)

    def perturb(x, key):
        key_t, key_noise = jax.random.split(key)
        t, relative_weight = time_and_relative_weight(process, key_t, weighting, importance_sampling, sigma_data)
        # Drawn from the process's kernel law (Gaussian for diffusion, Student-t for PFGM++).
        noise = process.perturbation_noise(key_noise, x.shape).astype(x.dtype)
        return process.perturb(x, t, noise), t, noise, relative_weight

    x_t, t, noise, relative_weight = jax.vmap(perturb)(x0, keys)
    score = score_fn(x_t, t, labels, dropout_key=dropout_key(keys), train=True)

    def per_example(score, noise, t, relative_weight):
        _, sigma = process.marginal_coefficients(t)
        # sigma (s_theta - grad log p_0t), with grad log p_0t = -noise / sigma.
        squared = jnp.sum((sigma * score + noise) ** 2)
        if weighting != "sigma_squared":
            squared = relative_weight * squared
        return squared / noise.size if reduce == "mean" else squared

    return jnp.mean(jax.vmap(per_example)(score, noise, t, relative_weight))
