"""Simulating a forward process: Euler-Maruyama on dx = f(x, t) dt + g(t) dw with diffrax.

Used to check a process's closed-form marginals (the law of the simulated x_t must match
N(alpha(t) x_0, sigma(t)^2 I) up to the scheme's O(dt) bias) and to look at the forward
noising of data.
"""
from __future__ import annotations

import diffrax
import jax
import numpy as np

from genjax.stochastic.sde_solvers import sde_terms
from genjax.stochastic.time_reversal import forward_sde


def simulate_forward(process, x0: jax.Array, key: jax.Array, grid: jax.Array, save_indices: tuple[int, ...]):
    """Euler-Maruyama from x0 (any shape; a batch is one joint solve with independent noise
    per element) on the fixed time grid, returning the states at grid[save_indices]
    stacked on a new leading axis. Jit with `process` and `save_indices` static."""
    brownian = diffrax.UnsafeBrownianPath(shape=jax.ShapeDtypeStruct(x0.shape, x0.dtype), key=key)
    solution = diffrax.diffeqsolve(
        sde_terms(*forward_sde(process), brownian),
        diffrax.Euler(),
        t0=grid[0],
        t1=grid[-1],
        dt0=None,
        y0=x0,
        stepsize_controller=diffrax.StepTo(grid),
        saveat=diffrax.SaveAt(ts=grid[np.array(save_indices)]),
        max_steps=grid.shape[0] - 1,
        adjoint=diffrax.ForwardMode(),  # UnsafeBrownianPath allows no reverse-mode adjoint
    )
    return solution.ys
