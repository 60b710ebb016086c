"""Sampling with the probability-flow ODE (any model's velocity), solved per example in diffrax.

Every forward SDE dx = f dt + g dw has a deterministic ODE with the same marginals p_t
(Song et al. 2021, "Score-Based Generative Modeling through SDEs", eq. 13):

    dx/dt = v(x, t) = f(x, t) - 1/2 g(t)^2 grad_x log p_t(x).

The sampler asks the model for its velocity view (`views.velocity_fn`): the probability flow
of a score model, or the output of a velocity model (flow matching, a CNF) as it is.
Integrating v from x_T ~ p_T at t = T down to t_min_sample maps prior draws to samples; the
map is deterministic, so a sample is a function of its prior draw only.

Solvers (all from diffrax, Kidger 2021):
  "tsit5", "dopri5": adaptive explicit Runge-Kutta (5th order, 4th-order embedded error
      estimate) with `diffrax.PIDController(rtol, atol)`; the initial step is
      (T - t_min_sample) / 100 and the controller adapts from there.
  "heun", "euler": fixed steps on the process's `time_grid` T = t_0 > ... > t_N = t_min_sample
      (`diffrax.StepTo`), N = `num_steps`.
Time runs backwards (t1 < t0), which diffrax supports by integrating in tau = -t.

One example per solve: `jax.vmap` is applied to a function that calls `diffeqsolve` on a
single example, so every example has its own step-size control, step count and NFE (a
batched state would share one step size chosen by the worst example). Under `vmap` the
batch runs in lock step until its slowest example is done (finished examples are masked),
so the wall time of a batch follows `max_nfe`, while `nfe` reports each example's own cost.

NFE. diffrax's `stats["num_steps"]` counts attempted steps (accepted + rejected). For an
s-stage explicit RK method without FSAL (Heun: s = 2; Euler: s = 1) each step evaluates
the vector field s times, so NFE = s * num_steps. Tsit5 and Dopri5 have s = 7 and are
FSAL ("first same as last"): the last stage of a step is f(t_{n+1}, y_{n+1}), reused as the
first stage of the next step; a rejected step keeps the previous (still valid) first
stage. Only the first step evaluates all 7 stages, so NFE = 6 * num_steps + 1, not
7 * num_steps. The initial step is passed explicitly, so no evaluations are spent on
choosing it. (With dt0=None, diffrax 0.7.2 would not spend any either: its initial-step
heuristic is skipped for the direction-wrapped terms and 0.01 is used; passing dt0 keeps
the count right should that change.) The tests confirm these counts with a counter in
the score function, on solves that include rejected steps.

Failures. The solve never throws inside the vmapped loop (`throw=False`);
`SampleResult.successful` says per example whether diffrax returned `successful`. With
`throw=True` (the default) a failure of any example raises a clear runtime error through
`equinox.error_if`, which works inside `jax.jit`. Inside `shard_map` or other places where
a runtime error is unwelcome, pass `throw=False` and check `result.successful`.
"""
from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp

from genjax.processes import views
from genjax.samplers.prior import example_keys, sample_prior
from genjax.samplers.result import SampleResult


# name -> (solver class, number of stages, FSAL, adaptive)
_SOLVERS = {
    "tsit5": (diffrax.Tsit5, 7, True, True),
    "dopri5": (diffrax.Dopri5, 7, True, True),
    "heun": (diffrax.Heun, 2, False, False),
    "euler": (diffrax.Euler, 1, False, False),
}
SOLVERS = tuple(_SOLVERS)


def evaluations_per_solve(solver: str, num_steps: jax.Array) -> jax.Array:
    """Vector-field (score) evaluations of one solve that made `num_steps` attempted steps."""
    _, stages, fsal, _ = _lookup(solver)
    if fsal:
        return (stages - 1) * num_steps + 1
    return stages * num_steps


def sample_probability_flow(
    process,
    model,
    key: jax.Array,
    num_samples: int,
    shape: tuple[int, ...],
    solver: str = "tsit5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 4096,
    num_steps: int | None = None,
    first_index: int | jax.Array = 0,
    throw: bool = True,
    condition: jax.Array | None = None,
) -> SampleResult:
    """Draw `num_samples` examples by solving the probability-flow ODE from prior draws.

    Args:
      process: a `DiffusionProcess` (closed over; static under `jax.jit`).
      model: a `views.Model` (or a bare per-example score (x [*shape], t []) -> [*shape]).
      key: PRNG key of the whole (global) sample set; only the prior stream is used.
      num_samples, shape: number of examples drawn here and per-example shape (static).
      solver: "tsit5" or "dopri5" (adaptive), "heun" or "euler" (fixed steps).
      rtol, atol: tolerances of the PID controller (adaptive solvers).
      max_steps: most attempted steps per example (adaptive solvers).
      num_steps: number of steps (fixed-step solvers only).
      first_index: global index of the first example drawn here (may be traced).
      throw: raise at run time if any example's solve failed (see the module docstring).
      condition: None or int32 [N] class labels of the samples (passed to the model).

    Returns:
      `SampleResult` with samples [N, *shape], nfe [N] and successful [N].
    """
    solve = _probability_flow_solver(process, model, solver, rtol, atol, max_steps, num_steps)
    keys = example_keys(key, num_samples, first_index)
    x_T = sample_prior(process, keys, tuple(shape))
    return _solve_all(solve, x_T, condition, throw, f"probability-flow ODE ({solver}), max_steps={max_steps}")


def solve_probability_flow(
    process,
    model,
    x_T: jax.Array,
    solver: str = "tsit5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 4096,
    num_steps: int | None = None,
    throw: bool = True,
    condition: jax.Array | None = None,
) -> SampleResult:
    """Map given prior draws x_T [N, *shape] at t_max to samples at t_min_sample.

    The deterministic part of `sample_probability_flow` (same arguments).
    """
    solve = _probability_flow_solver(process, model, solver, rtol, atol, max_steps, num_steps)
    return _solve_all(solve, x_T, condition, throw, f"probability-flow ODE ({solver}), max_steps={max_steps}")


def _solve_all(solve, x_T, condition, throw: bool, what: str) -> SampleResult:
    """vmap the per-example solve over the batch; optionally raise if any example failed."""
    samples, nfe, successful = jax.vmap(solve)(x_T, condition)
    if throw:
        samples = eqx.error_if(
            samples,
            ~jnp.all(successful),
            f"{what}: the solve failed for at least one example (max_steps reached or the "
            "step size collapsed). Raise max_steps, loosen rtol/atol, or pass throw=False "
            "and inspect SampleResult.successful.",
        )
    return SampleResult(samples=samples, nfe=nfe, successful=successful)


def check_solver_options(rtol, atol, max_steps) -> None:
    """ValueError unless rtol >= 0, atol >= 0 (not both 0) and max_steps is an integer >= 1."""
    if not rtol >= 0:
        raise ValueError(f"rtol={rtol!r} must be >= 0")
    if not atol >= 0:
        raise ValueError(f"atol={atol!r} must be >= 0")
    if not rtol + atol > 0:
        raise ValueError("rtol and atol cannot both be 0 (the error tolerance would be 0)")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps={max_steps!r} must be an integer >= 1")


def _lookup(solver: str):
    try:
        return _SOLVERS[solver.lower()]
    except KeyError:
        raise ValueError(f"unknown solver {solver!r}; choose one of {SOLVERS}") from None


def _probability_flow_solver(process, model, solver, rtol, atol, max_steps, num_steps):
    """A per-example function (x_T, condition) -> (x_{t_min}, nfe, successful)."""
    solver_cls, _, _, adaptive = _lookup(solver)
    check_solver_options(rtol, atol, max_steps)
    t_max, t_min = float(process.t_max), float(process.t_min_sample)
    if not t_max > t_min >= 0.0:
        raise ValueError(f"need t_max > t_min_sample >= 0, got {t_max}, {t_min}")
    if adaptive:
        if num_steps is not None:
            raise ValueError(f"{solver!r} is adaptive; num_steps is only for 'euler'/'heun'")
        controller = diffrax.PIDController(rtol=rtol, atol=atol)
        dt0 = -(t_max - t_min) / 100.0
        t0, t1 = jnp.float32(t_max), jnp.float32(t_min)
    else:
        if num_steps is None or num_steps < 1:
            raise ValueError(f"{solver!r} takes fixed steps; pass num_steps >= 1")
        grid = process.time_grid(num_steps)
        controller = diffrax.StepTo(grid)
        dt0, t0, t1 = None, grid[0], grid[-1]
        max_steps = num_steps

    velocity_fn = views.velocity_fn(process, model)

    def velocity(t, x, condition):
        return velocity_fn(x, t, condition)

    def solve(x_T, condition):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(velocity),
            solver_cls(),
            t0=t0,
            t1=t1,
            dt0=dt0,
            y0=x_T,
            args=condition,
            stepsize_controller=controller,
            saveat=diffrax.SaveAt(t1=True),
            max_steps=max_steps,
            # Forward loop only: no reverse-mode gradients are needed to sample.
            adjoint=diffrax.ForwardMode(),
            throw=False,
        )
        nfe = evaluations_per_solve(solver, sol.stats["num_steps"])
        return sol.ys[-1], jnp.asarray(nfe, jnp.int32), sol.result == diffrax.RESULTS.successful

    return solve
