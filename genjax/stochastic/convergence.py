"""Strong and weak convergence orders of SDE solvers, measured on one Brownian path per sample.

For a scheme with constant step h approximating X_T (Kloeden & Platen, "Numerical Solution
of SDEs", secs. 9.6-9.7):

    strong error  e_s(h) = E |X_T^h - X_T|        = O(h^gamma)   (pathwise, same W),
    weak error    e_w(h) = |E f(X_T^h) - E f(X_T)| = O(h^beta).

Expected orders: Euler-Maruyama gamma = 1/2, beta = 1 (gamma = 1 for additive noise);
Milstein gamma = 1 (Kloeden & Platen, secs. 10.2-10.3 and 14.1); stochastic Heun / SPaRK gamma = 1 for
Stratonovich SDEs with commutative (e.g. scalar) noise; SRA1 / ShARK gamma = 3/2 for additive
noise (Roessler 2010; Foster, dos Reis & Strange 2023). The order is the slope of log e
against log h, fitted by least squares, with a grouped jackknife standard error over paths.

The weak error is estimated with a paired difference: E[f(X_T^h) - f(X_T)] averaged over
the same paths, whose variance is that of the pathwise error, far below Var f(X_T).

A claimed order q is checked with a window, fitted order +- k SE (`order_window`, k = 4 by
default), not with a fixed slack: the claim passes when q lies in the window, and the window
only means something when its half-width k SE is below a quarter (`ORDER_SPACING` / 2), so
that it cannot hold both q and an order 1/2 away (Euler-Maruyama's 1/2 against Milstein's 1).
The step sizes must lie where the error is in its asymptotic regime, or the fit is biased.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from genjax.stochastic import sde_solvers
from genjax.stochastic.statistics import jackknife_standard_error, least_squares_slope


def pathwise_errors(
    keys: jax.Array,
    drift: sde_solvers.VectorField,
    diffusion: sde_solvers.VectorField,
    x0: jax.Array,
    t1: float,
    step_counts: tuple[int, ...],
    solver: str,
    reference: Callable,
    tree_tol: float,
) -> jax.Array:
    """Signed errors X_T^h - X_T^ref per path and step count, shape [num_keys, len(step_counts), *x0.shape].

    Each key draws one VirtualBrownianTree on [0, t1] (with its space-time Levy area, which
    the SRK solvers need); every step count and the reference use that same path. `reference(brownian)` returns the reference X_T, e.g. the exact
    solution from brownian.evaluate(0, t1), or a fine-step solve of the same path.
    """

    def errors_for_path(key):
        brownian = sde_solvers.brownian_tree(key, x0.shape, 0.0, t1, tree_tol, levy_area=True)
        exact = reference(brownian)

        def error_at(num_steps):
            return sde_solvers.solve_on_path(drift, diffusion, x0, brownian, 0.0, t1, num_steps, solver) - exact

        return jax.lax.map(error_at, jnp.asarray(step_counts))

    return jax.vmap(errors_for_path)(keys)


def _fitted_order(step_sizes, per_path, error_of_mean, num_groups):
    log_h = jnp.log(step_sizes)

    def slope(sample):
        return least_squares_slope(log_h, jnp.log(error_of_mean(sample)))[0]

    return jackknife_standard_error(slope, per_path, num_groups)


ORDER_SPACING = 0.5  # the orders in question differ by 1/2 (1/2, 1, 3/2)


def order_window(order: float, standard_error: float, num_standard_errors: float = 4.0) -> tuple[float, float]:
    """(order - k SE, order + k SE), the window a claimed order must fall in."""
    half_width = num_standard_errors * float(standard_error)
    return float(order) - half_width, float(order) + half_width


def window_tells_orders_apart(standard_error: float, num_standard_errors: float = 4.0) -> bool:
    """True when the window's half-width k SE is below ORDER_SPACING / 2, so that it cannot
    contain two orders 1/2 apart."""
    return num_standard_errors * float(standard_error) < ORDER_SPACING / 2


def strong_order(step_sizes: jax.Array, signed_errors: jax.Array, num_groups: int = 20) -> tuple[jax.Array, jax.Array]:
    """Fitted strong order: the least-squares slope of log E|X^h - X| against log h, and its
    grouped jackknife SE. signed_errors: per-path X^h - X, shape [num_paths, len(step_sizes)]."""
    return _fitted_order(step_sizes, signed_errors, lambda e: jnp.mean(jnp.abs(e), axis=0), num_groups)


def weak_order(step_sizes: jax.Array, signed_errors: jax.Array, num_groups: int = 20) -> tuple[jax.Array, jax.Array]:
    """Fitted weak order: the slope of log |E[f(X^h) - f(X)]| against log h, and its jackknife SE.
    signed_errors: paired per-path differences f(X^h) - f(X), shape [num_paths, len(step_sizes)]."""
    return _fitted_order(step_sizes, signed_errors, lambda e: jnp.abs(jnp.mean(e, axis=0)), num_groups)
