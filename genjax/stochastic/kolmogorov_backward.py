"""The backward Kolmogorov equation and its Feynman-Kac Monte Carlo counterpart.

For dX = a(X) dt + sigma dW and a payoff f, u(x, t) = E[f(X_T) | X_t = x] solves, backward
in time (Oksendal, thm. 8.1.1 (Kolmogorov's backward equation); Feynman-Kac, thm. 8.2.1),

    du/dt + a(x) du/dx + (sigma^2 / 2) d^2u/dx^2 = 0,     u(x, T) = f(x).

The generator L = a d/dx + D d^2/dx^2 is the adjoint of the Fokker-Planck operator, so the
solver here is the exact discrete transpose of `fokker_planck.fokker_planck_rhs` (obtained
with jax.linear_transpose): constants are preserved (L 1 = 0, zero-flux boundaries become
reflecting ones), the discrete maximum principle holds under the same step limit, and the
duality sum_i u_i(t) p_i(t) |cell| = E f(X_T) holds exactly between the two discrete solutions.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from genjax.stochastic import fokker_planck
from genjax.stochastic.fokker_planck import Grid
from genjax.stochastic.statistics import mean_and_standard_error


def backward_generator(drift, diffusion_coefficients, grid: Grid):
    """The discrete generator u -> L u: the transpose of the Scharfetter-Gummel Fokker-Planck
    operator on `grid`, and the forward-Euler step limit it shares with it."""
    coefficients = fokker_planck.scharfetter_gummel_coefficients(drift, diffusion_coefficients, grid)
    forward = lambda p: fokker_planck.fokker_planck_rhs(p, coefficients, grid)
    transpose = jax.linear_transpose(forward, jnp.zeros(grid.num_cells))
    return (lambda u: transpose(u)[0]), fokker_planck.max_stable_time_step(coefficients, grid)


def solve_backward_kolmogorov(
    terminal_values: jax.Array, drift, diffusion_coefficients, grid: Grid, times_to_maturity: jax.Array
) -> jax.Array:
    """u(x, T - tau) for each tau in times_to_maturity (increasing, starting at 0), given u(x, T) =
    terminal_values on the cell centres. Solves du/dtau = L u; returns [len(taus), *num_cells]."""
    generator, dt_max = backward_generator(drift, diffusion_coefficients, grid)
    return fokker_planck.evolve_linear(generator, terminal_values, times_to_maturity, dt_max)


def feynman_kac_estimate(terminal_states: jax.Array, payoff) -> tuple[jax.Array, jax.Array]:
    """Monte Carlo estimate of E[f(X_T) | X_t = x] from simulated X_T [num_paths, ...] started at x:
    the sample mean of f(X_T) and its standard error."""
    return mean_and_standard_error(payoff(terminal_states))
