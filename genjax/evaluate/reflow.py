"""Reflow's pieces (Liu et al. 2023, "Flow straight and fast"): a trained flow's ODE pairs
(source draw x_1, sample x_0), Euler trajectories, and the straightness of a velocity field.
Library code, free of command-line flags, so tests and experiments share it."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def draw_pairs(process, model, x1: jax.Array, tolerance: float = 1e-5, chunk: int = 4096):
    """(x0, x1, nfe): x0 [N, ...] the ODE's samples from the source draws x1 (tsit5, rtol = atol
    = tolerance), and the mean NFE."""
    from genjax.samplers.probability_flow import solve_probability_flow

    solve = jax.jit(lambda x: solve_probability_flow(process, model, x, "tsit5", tolerance, tolerance))
    samples, nfe = [], []
    for start in range(0, len(x1), chunk):
        result = solve(x1[start:start + chunk])
        samples.append(np.asarray(result.samples))
        nfe.append(np.asarray(result.nfe))
    return np.concatenate(samples), np.asarray(x1), float(np.concatenate(nfe).mean())


def euler_trajectory(velocity, x1: jax.Array, steps: int):
    """(x0, velocities [steps, ...]) of `steps` Euler steps of dx/dt = v from t = 1 to t = 0."""
    grid = jnp.linspace(1.0, 0.0, steps + 1)

    def step(x, times):
        t, s = times
        v = velocity(x, t)
        return x + (s - t) * v, v

    return jax.lax.scan(step, x1, (grid[:-1], grid[1:]))


def straightness(velocity, x1: jax.Array, steps: int = 64) -> float:
    """S = E mean_k |v(x_{t_k}, t_k) - (x_1 - x_0)|^2 along Euler trajectories from the source
    draws x1 [N, ...] (Liu et al. 2023, eq. 4 with x_1 - x_0 the end-to-end displacement per
    unit time): zero for straight paths travelled at constant speed."""

    def one(x):
        x0, vs = euler_trajectory(velocity, x, steps)
        return jnp.mean(jnp.sum((vs - (x - x0)).reshape(steps, -1) ** 2, -1))

    return float(jnp.mean(jax.vmap(one)(x1)))
