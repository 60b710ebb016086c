"""Sliced score matching (Song, Garg, Shi, Ermon 2019, "Sliced Score Matching: A Scalable
Approach to Density and Score Estimation", eqs. 7-8 and the variance-reduced SSM-VR).

Hyvarinen's explicit score matching, 1/2 E_p || s(x) - grad log p(x) ||^2, equals (by parts)

    J(s) = E_p [ tr(grad_x s(x)) + 1/2 || s(x) ||^2 ] + 1/2 E_p || grad log p ||^2,

which needs no access to grad log p. Sliced SM replaces the trace by random projections
v with E[v v^T] = I:

    SSM     L(s) = E_p E_v [ v^T grad_x (v^T s(x)) + 1/2 (v^T s(x))^2 ],          (eq. 8)
    SSM-VR  L(s) = E_p E_v [ v^T grad_x (v^T s(x)) + 1/2 || s(x) ||^2 ],

(SSM-VR integrates the second term out in closed form for Gaussian v). Both have
expectation J(s) - 1/2 E_p || grad log p ||^2 = 1/2 E_p || s - grad log p ||^2 - 1/2 E_p
|| grad log p ||^2, so they are minimised by the exact score, need no Gaussian perturbation
of the data and no noise-conditional model. v^T grad_x (v^T s) = v^T J_s v is one
forward-mode Jacobian-vector product per projection.

The model here is a per-example function x -> s(x) with no time argument: to train a
time-conditioned network at one fixed time, pass `lambda x: model(x, t)`.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

PROJECTIONS = ("gaussian", "rademacher")


def sliced_score_matching_loss(
    score_fn: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    keys: jax.Array,
    *,
    num_projections: int = 1,
    variance_reduction: bool = True,
    projection: str = "gaussian",
) -> jax.Array:
    """Monte Carlo SSM (or SSM-VR) loss on a batch x [B, ...] with per-example keys [B].

    Each example draws its num_projections directions v from its own key. The per-example
    value sums over the data dimensions (it estimates tr J + |s|^2 / 2); the batch is
    averaged. projection: "gaussian" v ~ N(0, I) or "rademacher" v uniform on {-1, 1}^D;
    SSM-VR's closed form of E_v (v^T s)^2 = |s|^2 holds for both (E v v^T = I).
    """
    if projection not in PROJECTIONS:
        raise ValueError(f"unknown projection {projection!r}; choose one of {PROJECTIONS}")
    if num_projections < 1:
        raise ValueError(f"num_projections={num_projections!r} must be >= 1")

    def per_example(xi, key):
        shape = (num_projections,) + xi.shape
        if projection == "gaussian":
            vs = jax.random.normal(key, shape, xi.dtype)
        else:
            vs = jax.random.rademacher(key, shape, xi.dtype)

        def one_projection(v):
            s, jv = jax.jvp(score_fn, (xi,), (v,))
            second = jnp.sum(s**2) if variance_reduction else jnp.sum(v * s) ** 2
            return jnp.sum(v * jv) + 0.5 * second

        return jnp.mean(jax.vmap(one_projection)(vs))

    return jnp.mean(jax.vmap(per_example)(x, keys))
