"""Conversions between the equivalent views of one diffusion model.

For a Gaussian kernel x_t = alpha(t) x_0 + sigma(t) eps, a model of p_t can be read as

    score        s(x, t)   = grad_x log p_t(x)
    noise        eps(x, t) = -sigma(t) s(x, t)                 (Ho et al. 2020; Song et al. 2021)
    denoised     D(x, t)   = (x + sigma(t)^2 s(x, t)) / alpha(t)  (Tweedie's formula; Karras et al. 2022)
    velocity     v(x, t)   = f(x, t) - g(t)^2 s(x, t) / 2      (probability flow; Song et al. 2021, eq. 13;
                                                            `process.probability_flow_drift`)

The denoised view is E[x_0 | x_t], in the units of the data. For a scaled process
(Karras et al. 2022, Table 1) with alpha(t) = s(t) and sigma(t) = s(t) sigma_tilde(t),
x_hat = x / s(t) is the data plus noise of level sigma_tilde, and EDM's denoiser
D(x_hat; sigma_tilde) is this same D: the formulas above hold unchanged with the process's
(alpha, sigma), and give grad_x log p_t(x) = (D - x_hat) / (s sigma_tilde^2)
(`sigma_tilde_from_coefficients` gives sigma_tilde = sigma / alpha).

Samplers and likelihood code ask for a score function and call these conversions; they
hold no per-process special cases. The network's raw output is turned into a score by
`score_fn_from_output`, according to what the network was trained to predict.
"""
from __future__ import annotations

from typing import Callable

import jax

PerExampleFn = Callable[[jax.Array, jax.Array], jax.Array]
# A per-example score model (x [*shape], t []) -> grad_x log p_t(x) [*shape]: what samplers,
# likelihoods and the stochastic-calculus studies take in place of a network.
ScoreFn = PerExampleFn

OUTPUT_KINDS = ("noise", "score", "denoised")


def score_from_noise(noise: jax.Array, sigma: jax.Array) -> jax.Array:
    return -noise / sigma


def noise_from_score(score: jax.Array, sigma: jax.Array) -> jax.Array:
    return -sigma * score


def denoised_from_score(x: jax.Array, score: jax.Array, alpha: jax.Array, sigma: jax.Array) -> jax.Array:
    return (x + sigma**2 * score) / alpha


def score_from_denoised(x: jax.Array, denoised: jax.Array, alpha: jax.Array, sigma: jax.Array) -> jax.Array:
    return (alpha * denoised - x) / sigma**2


def sigma_tilde_from_coefficients(alpha: jax.Array, sigma: jax.Array) -> jax.Array:
    """The EDM noise level sigma_tilde = sigma / alpha of x_hat = x / alpha (Karras et al. 2022)."""
    return sigma / alpha


def velocity_from_score(process, x: jax.Array, t: jax.Array, score: jax.Array) -> jax.Array:
    """Probability-flow velocity v = f(x, t) - g(t)^2 score / 2 (Song et al. 2021, eq. 13):
    the process's `probability_flow_drift`, which a path without an SDE can define directly."""
    return process.probability_flow_drift(x, t, score)


def score_from_velocity(process, x: jax.Array, t: jax.Array, velocity: jax.Array) -> jax.Array:
    """Inverse of `velocity_from_score`: score = 2 (f(x, t) - v) / g(t)^2 (needs g(t) > 0)."""
    return 2.0 * (process.drift(x, t) - velocity) / process.diffusion(t) ** 2


def velocity_fn_from_score_fn(process, score_fn: PerExampleFn) -> PerExampleFn:
    """The per-example probability-flow velocity (x, t) -> v of a per-example score."""

    def velocity_fn(x, t):
        return velocity_from_score(process, x, t, score_fn(x, t))

    return velocity_fn


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


# --- PFGM's normalised Poisson field (Xu et al. 2022) ---------------------------------------------
class PoissonFieldScore:
    """A per-example score (x, t) -> s read from a model of PFGM's normalised field
    (x, z) -> [N + 1] at z = t: the velocity dx/dz = E_x / E_z
    (`process.velocity_from_normalised_field`, genjax/processes/pfgm.py) turned into the score
    whose probability-flow velocity it is, s = 2 (f - v) / g^2 (`score_from_velocity`; for
    PFGM's f = 0, g^2 = 2 z: s = -(E_x / E_z) / z = (E[y | x, z] - x) / z^2, a pseudo-score as
    PFGM++'s). `field_fn` stays reachable for the objective that regresses the field itself
    (genjax/objectives/poisson_field.py)."""

    def __init__(self, process, field_fn: PerExampleFn):
        self.process = process
        self.field_fn = field_fn

    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        field = self.field_fn(x, t)
        if field.shape != (x.size + 1,):
            raise ValueError(
                f"a Poisson-field model must output x.size + 1 = {x.size + 1} numbers per example, got shape "
                f"{field.shape}; set the network's output_dim to {x.size + 1}"
            )
        velocity = self.process.velocity_from_normalised_field(field, t).reshape(x.shape)
        return score_from_velocity(self.process, x, t, velocity)
