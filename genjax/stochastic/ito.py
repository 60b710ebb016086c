"""Ito's lemma and Ito versus Stratonovich integrals.

Ito's lemma (Oksendal, thm. 4.1.2): for dX = a dt + b dW and a C^2 function f,

    df(X_t) = [ a f'(X_t) + (1/2) b^2 f''(X_t) ] dt + b f'(X_t) dW_t,

where the second-order term survives because (dW)^2 = dt. Taking expectations,
d/dt E f(X_t) = E[(L f)(X_t)] with the generator L f = a f' + (1/2) b^2 f''.

The Ito integral is the limit of left-point sums, the Stratonovich integral of midpoint sums
(Oksendal, sec. 3.3). For int_0^T W dW, path by path:

    Ito:           sum_i W_{t_i} (W_{t_{i+1}} - W_{t_i})            -> (W_T^2 - T) / 2,
    Stratonovich:  sum_i W_{(t_i + t_{i+1})/2} (W_{t_{i+1}} - W_{t_i}) -> W_T^2 / 2.

With N equal steps the Ito sum equals (W_T^2 - [W]_T)/2 exactly, so its mean-square distance
to (W_T^2 - T)/2 is Var([W]_T)/4 = T^2 / (2N); the midpoint sum's mean-square distance to
W_T^2 / 2 is T^2 / (4N).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def ito_sum(integrand: jax.Array, integrator: jax.Array) -> jax.Array:
    """Left-point sum  sum_i H_{t_i} (X_{t_{i+1}} - X_{t_i})  along the last axis (both [..., N + 1])."""
    return jnp.sum(integrand[..., :-1] * jnp.diff(integrator, axis=-1), axis=-1)


def stratonovich_midpoint_sum(integrand_fine: jax.Array, integrator_fine: jax.Array) -> jax.Array:
    """Midpoint sum  sum_i H_{(t_i + t_{i+1})/2} (X_{t_{i+1}} - X_{t_i})  on the coarse grid t_i = t'_{2i},
    given both processes on a grid t' twice as fine ([..., 2N + 1])."""
    coarse_increments = jnp.diff(integrator_fine[..., ::2], axis=-1)
    return jnp.sum(integrand_fine[..., 1::2] * coarse_increments, axis=-1)


def ito_integral_w_dw(w_t: jax.Array, t: jax.Array) -> jax.Array:
    """Closed form int_0^t W dW (Ito) = (W_t^2 - t) / 2."""
    return 0.5 * (w_t**2 - t)


def stratonovich_integral_w_dw(w_t: jax.Array) -> jax.Array:
    """Closed form int_0^t W o dW (Stratonovich) = W_t^2 / 2."""
    return 0.5 * w_t**2


def ito_generator(
    f: Callable[[jax.Array], jax.Array],
    drift: Callable[[jax.Array, jax.Array], jax.Array],
    diffusion: Callable[[jax.Array, jax.Array], jax.Array],
    second_order: bool = True,
) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """(t, x) -> (L f)(x) = a(t, x) f'(x) + (1/2) b(t, x)^2 f''(x) for scalar x, by autodiff: the dt
    coefficient of df(X) in Ito's lemma. second_order=False drops the (1/2) b^2 f'' term, giving
    the ordinary chain rule, which is what Ito's lemma corrects."""
    df = jax.grad(f)
    d2f = jax.grad(df)

    def generator(t, x):
        first = drift(t, x) * df(x)
        if not second_order:
            return first
        return first + 0.5 * diffusion(t, x) ** 2 * d2f(x)

    return generator
