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

Step control (`step_control`, adaptive solvers):
  "per_example" (the default): `jax.vmap` of a function that calls `diffeqsolve` on one
      example, so every example has its own step sizes, step count and NFE. Fewest NFE per
      example, no coupling between examples, and a sample depends only on its own prior
      draw: the sample set is the same whatever the chunking or the device count (bitwise in
      float64; in float32, rounding that differs with the batch shape can flip an accept/reject
      decision near the tolerance, so chunks agree to the tolerance, not bitwise). Under
      `vmap` the batch runs in lock step until its slowest example is done (finished
      examples are masked, but their field is still evaluated), so the evaluations spent
      on a batch are `max_nfe` per example, while `nfe` reports each example's own cost.
  "per_batch": ONE `diffeqsolve` on the whole [N, *shape] batch; the field calls the
      batched network once per stage at the stage's one time (`views.shared_time_velocity_fn`:
      a network that takes a shared noise level computes its time branch once) and one step-size
      controller sees the error norm over all examples (as torchdiffeq's odeint does on a
      batch). No lock-step masking waste and fully batched matmuls: the fastest wall time
      when the examples are alike. But the steps, and so every sample, depend on which
      examples share the solve: a sample set depends on the chunk size and, under
      `shard_map` (where each device's local batch is its own solve), on the device count.
      Deterministic for a fixed batch. `nfe` of every example is the batch's NFE.
  Fixed-step solvers take the same steps either way (per_batch only batches the calls).
Error norm (`error_norm`): the controller keeps norm(error / (atol + rtol |y|)) near 1 with
  "rms" (diffrax's default; the root mean square over the entries of an example, or of the
  whole batch for per_batch) or "max" (the largest entry). The max norm is never below the
  rms norm, so it takes at least as many steps; per_batch with "max" bounds every
  example's error, as per_example does, while per_batch "rms" can let one hard example
  exceed the tolerance (its error is averaged with the easy ones).

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

from typing import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import optimistix as optx

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
STEP_CONTROLS = ("per_example", "per_batch")
_ERROR_NORMS = {"rms": optx.rms_norm, "max": optx.max_norm}
ERROR_NORMS = tuple(_ERROR_NORMS)


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
    step_control: str = "per_example",
    error_norm: str = "rms",
) -> SampleResult:
    """Draw `num_samples` examples by solving the probability-flow ODE from prior draws.

    Args:
      process: a `DiffusionProcess` (closed over; static under `jax.jit`).
      model: a `views.Model` (or a bare per-example score (x [*shape], t []) -> [*shape]).
      key: PRNG key of the whole (global) sample set; only the prior stream is used.
      num_samples, shape: number of examples drawn here and per-example shape (static).
      solver: "tsit5" or "dopri5" (adaptive), "heun" or "euler" (fixed steps).
      rtol, atol: tolerances of the PID controller (adaptive solvers).
      max_steps: most attempted steps per solve (adaptive solvers).
      num_steps: number of steps (fixed-step solvers only).
      first_index: global index of the first example drawn here (may be traced).
      throw: raise at run time if any example's solve failed (see the module docstring).
      condition: None or int32 [N] class labels of the samples (passed to the model).
      step_control: "per_example" or "per_batch" (module docstring: when each wins).
      error_norm: "rms" or "max", the norm of the scaled error estimate.

    Returns:
      `SampleResult` with samples [N, *shape], nfe [N] and successful [N].
    """
    solve = _probability_flow_solver(process, model, solver, rtol, atol, max_steps, num_steps, step_control,
                                     error_norm)
    keys = example_keys(key, num_samples, first_index)
    x_T = sample_prior(process, keys, tuple(shape))
    return _checked(solve(x_T, condition), throw, f"probability-flow ODE ({solver}), max_steps={max_steps}")


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
    step_control: str = "per_example",
    error_norm: str = "rms",
) -> SampleResult:
    """Map given prior draws x_T [N, *shape] at t_max to samples at t_min_sample.

    The deterministic part of `sample_probability_flow` (same arguments).
    """
    solve = _probability_flow_solver(process, model, solver, rtol, atol, max_steps, num_steps, step_control,
                                     error_norm)
    return _checked(solve(x_T, condition), throw, f"probability-flow ODE ({solver}), max_steps={max_steps}")


def _checked(outputs, throw: bool, what: str) -> SampleResult:
    """The SampleResult of (samples, nfe, successful); optionally raise if any example failed."""
    samples, nfe, successful = outputs
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


def check_step_control(step_control, error_norm) -> None:
    """ValueError unless step_control is one of STEP_CONTROLS and error_norm one of ERROR_NORMS."""
    if step_control not in STEP_CONTROLS:
        raise ValueError(f"step_control={step_control!r} is not known; choose one of {', '.join(STEP_CONTROLS)}")
    if error_norm not in _ERROR_NORMS:
        raise ValueError(f"error_norm={error_norm!r} is not known; choose one of {', '.join(ERROR_NORMS)}")


def pid_controller(rtol, atol, error_norm: str = "rms") -> diffrax.PIDController:
    """diffrax's PID controller keeping error_norm(error / (atol + rtol |y|)) near 1."""
    return diffrax.PIDController(rtol=rtol, atol=atol, norm=_ERROR_NORMS[error_norm])


def solve_batch(
    per_example_field: Callable,
    batched_field: Callable,
    step_control: str,
    solver: str,
    t0,
    t1,
    dt0,
    controller,
    max_steps: int,
    y0,
    args,
):
    """Solve dy/dt = field(t, y, args) from t0 to t1 for a batch y0 (leaves [N, ...]).

    per_example: vmap of one `diffeqsolve` per example with per_example_field (leaves of
    one example); per_batch: one `diffeqsolve` of the whole batch with batched_field.
    Returns (y(t1) with leaves [N, ...], nfe [N] int32, successful [N] bool); per_batch
    repeats its one NFE and result over the batch. Never throws.
    """
    solver_cls = _lookup(solver)[0]

    def solve(field, y, a):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(field),
            solver_cls(),
            t0=t0,
            t1=t1,
            dt0=dt0,
            y0=y,
            args=a,
            stepsize_controller=controller,
            saveat=diffrax.SaveAt(t1=True),
            max_steps=max_steps,
            # Forward loop only: no reverse-mode gradients are needed to sample.
            adjoint=diffrax.ForwardMode(),
            throw=False,
        )
        nfe = jnp.asarray(evaluations_per_solve(solver, sol.stats["num_steps"]), jnp.int32)
        return jax.tree.map(lambda leaf: leaf[-1], sol.ys), nfe, sol.result == diffrax.RESULTS.successful

    if step_control == "per_example":
        return jax.vmap(lambda y, a: solve(per_example_field, y, a))(y0, args)
    y_final, nfe, successful = solve(batched_field, y0, args)
    size = jax.tree.leaves(y0)[0].shape[0]
    return y_final, jnp.full((size,), nfe), jnp.full((size,), successful)


def _lookup(solver: str):
    try:
        return _SOLVERS[solver.lower()]
    except KeyError:
        raise ValueError(f"unknown solver {solver!r}; choose one of {SOLVERS}") from None


def _probability_flow_solver(process, model, solver, rtol, atol, max_steps, num_steps, step_control, error_norm):
    """A batch function (x_T [N, *shape], condition) -> (x_{t_min} [N, *shape], nfe [N], successful [N])."""
    _, _, _, adaptive = _lookup(solver)
    check_solver_options(rtol, atol, max_steps)
    check_step_control(step_control, error_norm)
    t_max, t_min = float(process.t_max), float(process.t_min_sample)
    if not t_max > t_min >= 0.0:
        raise ValueError(f"need t_max > t_min_sample >= 0, got {t_max}, {t_min}")
    if adaptive:
        if num_steps is not None:
            raise ValueError(f"{solver!r} is adaptive; num_steps is only for 'euler'/'heun'")
        controller = pid_controller(rtol, atol, error_norm)
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
    shared_time_velocity_fn = views.shared_time_velocity_fn(process, model)

    def velocity(t, x, condition):
        return velocity_fn(x, t, condition)

    def batched_velocity(t, x, condition):  # one t for the whole batch
        return shared_time_velocity_fn(x, t, condition)

    def solve(x_T, condition):
        return solve_batch(velocity, batched_velocity, step_control, solver, t0, t1, dt0, controller, max_steps,
                           x_T, condition)

    return solve
