"""Sampling given a linear observation y = A x_0 + sigma_y n: inpainting, imputation and
colourisation as one linear inverse problem.

An operator A (`LinearObservation`) is given by its action, its adjoint and its Gram constant:
A A^T = gram I on the range of A (a mask: gram = 1; channel averaging: gram = 1 / C), so its
pseudo-inverse is A^+ = A^T / gram. Instances: `masked(mask)` (inpainting; imputation of the
unobserved coordinates) and `channel_average(channels)` (colourisation: y is the grey image).

The sampler is Euler-Maruyama on the reverse SDE (as `reverse_sde`, in a `lax.scan`), with the
observation entering by one of two methods:

  "replacement" (Song et al. 2021, App. I): after every step from t to s, draw the observation
      forward-noised to s, y_s = alpha(s) y + sigma(s) A eps, and replace the observed part of
      x_s by it: x_s <- x_s + A^+ (y_s - A x_s). Approximate: y_s is drawn independently of the
      unobserved part, so the pair is not a draw of p_s(x | y) unless the observed and
      unobserved parts are independent (measured in tests/test_linear_observation.py).
  "posterior" (posterior-covariance guidance; Song et al. 2023, PiGDM; Chung et al. 2023, DPS):
      the score of p_t(x | y) is s(x, t) + grad_x log p_t(y | x) with
      p_t(y | x) ~ N(y; A D(x, t), A C_t A^T + sigma_y^2 I), D the denoiser (Tweedie) and C_t the
      posterior covariance Cov[x_0 | x_t], held fixed in the gradient:
          grad_x log p_t(y | x) = J^T A^T (A C_t A^T + sigma_y^2 I)^{-1} (y - A D),  J = dD/dx.
      covariance="tweedie": C_t = (sigma_t^2 / alpha_t) J (second-order Tweedie), the system
          solved by conjugate gradients on Jacobian-vector products. Exact for Gaussian data
          (there p(x_0 | x_t) is Gaussian with that covariance, independent of x), up to the
          SDE's discretisation and the CG tolerance.
      covariance="isotropic": PiGDM's C_t = r_t^2 I, r_t^2 = sigma_t^2 v / (alpha_t^2 v + sigma_t^2)
          for data of variance v per coordinate (`data_variance`): one vector-Jacobian product
          per step; exact only for isotropic Gaussian data.
      log_likelihood=(x, t, y) -> log p_t(y | x) given: its gradient replaces the Gaussian
          approximation. With the exact term (an oracle's, e.g. a Gaussian mixture's, or a
          noise-aware classifier's log p_t(c | x): classifier guidance) the conditional score
          is exact, and the sampler draws p(x_0 | y) up to its discretisation.

Both end with Tweedie's denoised mean at t_min (of the conditional score for "posterior"),
and "replacement" replaces the observed part by y there. NFE per example: num_steps + 1
score evaluations (the posterior method adds one vjp, and cg_iterations jvps for "tweedie").
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from genjax.processes import views
from genjax.samplers.prior import example_keys, noise_key, sample_prior
from genjax.samplers.result import SampleResult

METHODS = ("replacement", "posterior")
COVARIANCES = ("tweedie", "isotropic")


@dataclasses.dataclass(frozen=True)
class LinearObservation:
    """y = A x + sigma_y n for one example x [*shape].

    Attributes:
      forward: x -> A x.
      adjoint: y -> A^T y.
      gram: the constant c of A A^T = c I on the range of A (A^+ = A^T / c).
      noise_std: sigma_y, the observation noise's standard deviation (0: exact observation).
    """

    forward: Callable[[jax.Array], jax.Array]
    adjoint: Callable[[jax.Array], jax.Array]
    gram: float = 1.0
    noise_std: float = 0.0

    def pseudo_inverse(self, y: jax.Array) -> jax.Array:
        return self.adjoint(y) / self.gram

    def project(self, x: jax.Array, y: jax.Array) -> jax.Array:
        """The point of {x' : A x' = y} nearest x: x + A^+ (y - A x)."""
        return x + self.pseudo_inverse(y - self.forward(x))


def masked(mask: jax.Array, noise_std: float = 0.0) -> LinearObservation:
    """Inpainting / imputation: A = diag(mask), mask 1 where observed and 0 elsewhere (y is x
    with the unobserved entries zeroed)."""
    mask = jnp.asarray(mask, jnp.float32)
    return LinearObservation(lambda x: mask * x, lambda y: mask * y, 1.0, noise_std)


def channel_average(channels: int, noise_std: float = 0.0) -> LinearObservation:
    """Colourisation: A x = the mean of x's last axis (the grey image, [..., 1]); A A^T = I / C."""
    return LinearObservation(lambda x: jnp.mean(x, axis=-1, keepdims=True),
                             lambda y: jnp.broadcast_to(y / channels, y.shape[:-1] + (channels,)),
                             1.0 / channels, noise_std)


def _check(method: str, covariance: str, num_steps: int, cg_iterations: int, data_variance: float) -> None:
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not known; choose one of {METHODS}")
    if covariance not in COVARIANCES:
        raise ValueError(f"covariance={covariance!r} is not known; choose one of {COVARIANCES}")
    if num_steps < 1:
        raise ValueError(f"num_steps={num_steps!r} must be >= 1")
    if cg_iterations < 1:
        raise ValueError(f"cg_iterations={cg_iterations!r} must be >= 1")
    if not data_variance > 0:
        raise ValueError(f"data_variance={data_variance!r} must be > 0")


def posterior_score(process, score_fn, observation: LinearObservation, covariance: str = "tweedie",
                    cg_iterations: int = 20, data_variance: float = 1.0, alpha_min: float = 0.0,
                    log_likelihood: Callable | None = None):
    """The per-example score of p_t(x | y), (x, t, y, condition) -> s(x, t) + grad_x log p_t(y | x)
    (module docstring, "posterior"); where alpha(t) < alpha_min, s(x, t) alone."""

    def score(x, t, y, condition):
        alpha, sigma = process.marginal_coefficients(t)
        guided_score = exact if log_likelihood is not None else guided
        return jax.lax.cond(alpha >= alpha_min, lambda: guided_score(x, t, y, condition, alpha, sigma),
                            lambda: score_fn(x, t, condition))

    def exact(x, t, y, condition, alpha, sigma):
        return score_fn(x, t, condition) + jax.grad(log_likelihood)(x, t, y)

    def guided(x, t, y, condition, alpha, sigma):

        def denoise(z):
            s = score_fn(z, t, condition)
            return views.denoised_from_score(z, s, alpha, sigma), s

        denoised, pullback, s = jax.vjp(denoise, x, has_aux=True)
        residual = y - observation.forward(denoised)
        noise_var = observation.noise_std**2
        if covariance == "isotropic":
            r2 = sigma**2 * data_variance / (alpha**2 * data_variance + sigma**2)
            u = residual / (r2 * observation.gram + noise_var)
        else:
            def system(v):  # (A C_t A^T + sigma_y^2) v, C_t = (sigma^2 / alpha) J
                jv = jax.jvp(lambda z: denoise(z)[0], (x,), (observation.adjoint(v),))[1]
                return sigma**2 / alpha * observation.forward(jv) + noise_var * v

            u, _ = jax.scipy.sparse.linalg.cg(system, residual, maxiter=cg_iterations)
        (guidance,) = pullback(observation.adjoint(u))
        return s + guidance

    return score


def sample_given_observation(process, model, key: jax.Array, y: jax.Array, observation: LinearObservation,
                             shape: tuple[int, ...], num_steps: int, method: str = "replacement",
                             covariance: str = "tweedie", cg_iterations: int = 20, data_variance: float = 1.0,
                             alpha_min: float = 0.0, first_index: int | jax.Array = 0,
                             condition: jax.Array | None = None,
                             log_likelihood: Callable | None = None) -> SampleResult:
    """Draw one sample of p(x_0 | A x_0 + sigma_y n = y[i]) per observation y [N, *obs_shape].

    Args:
      process: a diffusion process with a reverse SDE.
      model: a `views.Model` with a score view (or a per-example score (x, t) -> [*shape]).
      key: PRNG key of the set; example i uses fold_in(key, first_index + i).
      y: the observations, one per example, A x_0 (+ noise) in A's output shape.
      observation: the operator (`masked`, `channel_average`, or any `LinearObservation`).
      shape: per-example data shape.
      num_steps: Euler-Maruyama steps on the process's time grid.
      method: "replacement" or "posterior" (module docstring).
      covariance, cg_iterations, data_variance: the posterior method's options.
      alpha_min: the posterior term only where alpha(t) >= alpha_min. With a learned denoiser
        D = (x - sigma eps_hat) / alpha, its Jacobian carries the network's error times 1 / alpha,
        which near the prior end (VP: alpha(1) = 0.007) blows the guidance up; the exact
        score's Jacobian does not (0 keeps the exact method).
      condition: None or int32 [N] class labels passed to the model.
      log_likelihood: None, or (x, t, y) -> log p_t(y | x) for one example: the posterior
        method's likelihood term itself instead of its Gaussian approximation (module docstring).

    Returns:
      `SampleResult`: samples [N, *shape], nfe [N] (= num_steps + 1), successful [N].
    """
    _check(method, covariance, num_steps, cg_iterations, data_variance)
    if log_likelihood is not None and method != "posterior":
        raise ValueError(f"log_likelihood is the posterior method's likelihood term; method={method!r} does not use it")
    score_fn = views.score_fn(process, model)
    if method == "posterior":
        score_fn = posterior_score(process, score_fn, observation, covariance, cg_iterations, data_variance,
                                   alpha_min, log_likelihood)
    else:
        plain = score_fn
        score_fn = lambda x, t, y, condition: plain(x, t, condition)
    grid = process.time_grid(num_steps)
    shape = tuple(shape)
    keys = example_keys(key, y.shape[0], first_index)
    x_T = sample_prior(process, keys, shape)

    def solve(x, example_key, y, condition):
        step_key = noise_key(example_key)

        def step(x, k):
            t, s = grid[k], grid[k + 1]
            h = t - s
            z_key, eps_key = jax.random.split(jax.random.fold_in(step_key, k))
            drift = process.reverse_drift(x, t, score_fn(x, t, y, condition))
            x = x - drift * h + process.diffusion(t) * jnp.sqrt(h) * jax.random.normal(z_key, shape, x.dtype)
            if method == "replacement":
                alpha_s, sigma_s = process.marginal_coefficients(s)
                noisy_y = alpha_s * y + sigma_s * observation.forward(jax.random.normal(eps_key, shape, x.dtype))
                x = observation.project(x, noisy_y)
            return x, None

        x, _ = jax.lax.scan(step, x, jnp.arange(num_steps))
        t_min = grid[-1]
        x = views.denoised_from_score(x, score_fn(x, t_min, y, condition), *process.marginal_coefficients(t_min))
        if method == "replacement":
            x = observation.project(x, y)
        return x

    if condition is None:
        samples = jax.vmap(lambda x, k, y: solve(x, k, y, None))(x_T, keys, y)
    else:
        samples = jax.vmap(solve)(x_T, keys, y, condition)
    successful = jnp.all(jnp.isfinite(samples.reshape(samples.shape[0], -1)), axis=1)
    nfe = jnp.full((y.shape[0],), num_steps + 1, jnp.int32)
    return SampleResult(samples=samples, nfe=nfe, successful=successful)
