"""Reversing a diffusion in time (Anderson 1982, "Reverse-time diffusion equation models").

If X solves the forward Ito SDE dX = f(X, t) dt + g(t) dW on [0, T] with marginal densities
p_t, then Y_s = X_{T-s} solves, in the forward-running time s = T - t,

    dY = [ -f(Y, T - s) + g(T - s)^2 grad_y log p_{T-s}(Y) ] ds + g(T - s) dB_s,

with B a Brownian motion (Anderson 1982; Song et al. 2021, "Score-Based Generative
Modeling through SDEs", eq. 6, written there in reversed time t). Started from Y_0 ~ p_T it
has Y_s ~ p_{T-s}, so Y_T ~ p_0. Dropping the score term leaves dY = -f ds + g dB, which
does not reverse anything: its law at s = T is not p_0.

The score grad log p_t is exact for a Gaussian-mixture start
(genjax.data.gaussian_mixture.perturbed_score_fn); otherwise `grid_score` takes it from a
Fokker-Planck solution on a grid.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from genjax.data.gaussian_mixture import GaussianMixture
from genjax.processes.views import ScoreFn
from genjax.stochastic.fokker_planck import Grid


def zero_score(x: jax.Array, t: jax.Array) -> jax.Array:
    """The score-free control: grad log p replaced by 0."""
    return jnp.zeros_like(x)


def reverse_time_sde(process, score: ScoreFn):
    """(drift, diffusion) in s = T - t of the reverse-time SDE above, in the (t, x) -> array
    convention of `sde_solvers`. `process` provides reverse_drift(x, t, score) = f - g^2 score,
    diffusion(t) and t_max (any genjax.processes.DiffusionProcess)."""
    t_max = process.t_max

    def drift(s, y):
        t = t_max - s
        return -process.reverse_drift(y, t, score(y, t))

    def diffusion(s, y):
        return process.diffusion(t_max - s) * jnp.ones_like(y)

    return drift, diffusion


def forward_sde(process):
    """(drift, diffusion) of the forward SDE dX = f(X, t) dt + g(t) dW in the sde_solvers convention."""
    return (lambda t, x: process.drift(x, t)), (lambda t, x: process.diffusion(t) * jnp.ones_like(x))


def grid_score(densities: jax.Array, times: jax.Array, grid: Grid, floor: float = 1e-30) -> ScoreFn:
    """grad log p(x, t) from 1-D grid densities [len(times), num_cells] (e.g. a Fokker-Planck
    solution): central differences of log max(p, floor) between cell centres, linearly
    interpolated in x and in t (constant beyond the grid's ends)."""
    log_p = jnp.log(jnp.maximum(densities, floor))
    score_cells = jnp.gradient(log_p, grid.spacing[0], axis=1)
    centers = grid.centers(0)

    def score(x, t):
        position = jnp.clip(jnp.searchsorted(times, t) - 1, 0, times.shape[0] - 2)
        weight = jnp.clip((t - times[position]) / (times[position + 1] - times[position]), 0.0, 1.0)
        at_time = (1.0 - weight) * score_cells[position] + weight * score_cells[position + 1]
        return jnp.interp(x, centers, at_time)

    return score


def gaussian_mixture_cdf(mixture: GaussianMixture, x: jax.Array) -> jax.Array:
    """CDF of a 1-D mixture, F(x) = sum_k w_k Phi((x - mu_k) / s_k), elementwise in x."""
    stds = jnp.sqrt(mixture.covariances[:, 0, 0])
    z = (x[..., None] - mixture.means[:, 0]) / stds
    return jnp.sum(mixture.weights * jax.scipy.stats.norm.cdf(z), axis=-1)
