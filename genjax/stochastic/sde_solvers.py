"""Simulating SDEs with diffrax.

An Ito SDE with diagonal noise, dX = a(t, X) dt + b(t, X) dW (see `genjax.stochastic.models`),
becomes the diffrax terms  ODETerm(a) + ControlTerm(diag(b), W). Two kinds of Brownian path:

- `diffrax.VirtualBrownianTree`: one path that can be queried at any resolution, so the
  same path can be solved with several step sizes (needed for strong errors) and compared
  with an exact or a fine-step solution of the same path.
- `diffrax.UnsafeBrownianPath`: fresh increments per step, much faster for fixed-step
  sampling of many paths.

Stratonovich solvers (Heun, SPaRK, SRA1, ShARK, ...) converge to the Stratonovich solution.
For an Ito SDE they must be given the Stratonovich drift (Oksendal, sec. 3.3; Kloeden &
Platen, "Numerical Solution of SDEs", sec. 4.9): with diagonal noise,

    a_S(t, x) = a(t, x) - (1/2) b(t, x) db/dx(t, x)        (elementwise).

For additive noise (db/dx = 0) the two calculi agree.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import diffrax
import jax
import jax.numpy as jnp
import lineax
import numpy as np

VectorField = Callable[[jax.Array, jax.Array], jax.Array]  # (t, x) -> array shaped like x


@dataclasses.dataclass(frozen=True)
class SolverSpec:
    """A diffrax solver with the calculus it converges in and the space-time Levy area it needs."""

    make: Callable[[], diffrax.AbstractSolver]
    stratonovich: bool
    needs_levy_area: bool = False


SOLVERS: dict[str, SolverSpec] = {
    "euler_maruyama": SolverSpec(diffrax.Euler, stratonovich=False),
    "ito_milstein": SolverSpec(diffrax.ItoMilstein, stratonovich=False),
    "heun": SolverSpec(diffrax.Heun, stratonovich=True),
    "spark": SolverSpec(diffrax.SPaRK, stratonovich=True, needs_levy_area=True),
    "sra1": SolverSpec(diffrax.SRA1, stratonovich=True, needs_levy_area=True),
    "shark": SolverSpec(diffrax.ShARK, stratonovich=True, needs_levy_area=True),
}


def stratonovich_drift(drift: VectorField, diffusion: VectorField) -> VectorField:
    """Drift of the Stratonovich SDE with the same solution as the Ito SDE (a, b), diagonal noise:
    a_S = a - (1/2) b db/dx (Kloeden & Platen, sec. 4.9). db/dx is taken by forward-mode
    autodiff; for diagonal noise b_k depends on x_k only, so a JVP with ones gives it."""

    def drift_s(t, x):
        b, db_dx = jax.jvp(lambda z: diffusion(t, z), (x,), (jnp.ones_like(x),))
        return drift(t, x) - 0.5 * b * db_dx

    return drift_s


def sde_terms(drift: VectorField, diffusion: VectorField, brownian: diffrax.AbstractBrownianPath):
    """diffrax terms for dX = drift dt + diag(diffusion) dW."""
    return diffrax.MultiTerm(
        diffrax.ODETerm(lambda t, x, args: drift(t, x)),
        diffrax.ControlTerm(lambda t, x, args: lineax.DiagonalLinearOperator(diffusion(t, x)), brownian),
    )


def brownian_tree(key: jax.Array, shape: tuple[int, ...], t0: float, t1: float, tol: float, levy_area: bool = False):
    """A VirtualBrownianTree on [t0, t1] resolved to `tol` (use a power of two dividing t1 - t0 so
    that every grid point of a dyadic step size is resolved exactly)."""
    return diffrax.VirtualBrownianTree(
        t0, t1, tol=tol, shape=shape, key=key, levy_area=diffrax.SpaceTimeLevyArea if levy_area else diffrax.BrownianIncrement
    )


def solve_on_path(
    drift: VectorField,
    diffusion: VectorField,
    x0: jax.Array,
    brownian: diffrax.AbstractBrownianPath,
    t0: float,
    t1: float,
    num_steps: jax.Array,
    solver: str,
    max_steps: int = 4096,
) -> jax.Array:
    """X_{t1} from `num_steps` equal steps of `solver` (a key of SOLVERS) along a given Brownian path.

    The SDE is read as Ito; for a Stratonovich solver the drift is converted with
    `stratonovich_drift`, so every solver targets the same (Ito) solution. num_steps may be
    traced, so one compilation serves every step size.
    """
    spec = SOLVERS[solver]
    drift_used = stratonovich_drift(drift, diffusion) if spec.stratonovich else drift
    solution = diffrax.diffeqsolve(
        sde_terms(drift_used, diffusion, brownian),
        spec.make(),
        t0,
        t1,
        (t1 - t0) / num_steps,
        x0,
        saveat=diffrax.SaveAt(t1=True),
        stepsize_controller=diffrax.ConstantStepSize(),
        max_steps=max_steps,
        adjoint=diffrax.DirectAdjoint(),
    )
    return solution.ys[-1]


def step_grid(save_times, num_steps: int) -> np.ndarray:
    """About num_steps step times from save_times[0] to save_times[-1] that contain every save time:
    each interval between save times gets steps in proportion to its length (at least one), so
    saved states are solver states, never interpolations between steps."""
    save_times = np.asarray(save_times, dtype=np.float64)
    lengths = np.diff(save_times)
    per_interval = np.maximum(1, np.round(num_steps * lengths / (save_times[-1] - save_times[0]))).astype(int)
    pieces = [np.linspace(a, b, n + 1)[:-1] for a, b, n in zip(save_times[:-1], save_times[1:], per_interval)]
    return np.concatenate(pieces + [save_times[-1:]]).astype(np.float32)


def simulate_paths(
    key: jax.Array,
    drift: VectorField,
    diffusion: VectorField,
    x0: jax.Array,
    save_times,
    num_steps: int,
    solver: str = "euler_maruyama",
) -> jax.Array:
    """Independent solutions of dX = drift dt + diffusion dW started at each row of x0 [P, d],
    from t = save_times[0] to save_times[-1] in about `num_steps` steps on `step_grid`, one
    diffrax solve per path (vmapped) with fresh Brownian increments (`UnsafeBrownianPath`).
    save_times must be concrete (numpy, or a constant closed over by jit).
    Returns X at save_times, shape [P, len(save_times), d].
    """
    spec = SOLVERS[solver]
    drift_used = stratonovich_drift(drift, diffusion) if spec.stratonovich else drift
    steps = step_grid(save_times, num_steps)
    save_times = jnp.asarray(save_times, jnp.float32)

    def one_path(path_key, start):
        brownian = diffrax.UnsafeBrownianPath(
            shape=start.shape, key=path_key, levy_area=diffrax.SpaceTimeLevyArea if spec.needs_levy_area else diffrax.BrownianIncrement
        )
        return diffrax.diffeqsolve(
            sde_terms(drift_used, diffusion, brownian),
            spec.make(),
            float(steps[0]),
            float(steps[-1]),
            None,
            start,
            saveat=diffrax.SaveAt(ts=save_times),
            stepsize_controller=diffrax.StepTo(ts=jnp.asarray(steps)),
            max_steps=len(steps),
            adjoint=diffrax.DirectAdjoint(),
        ).ys

    return jax.vmap(one_path)(jax.random.split(key, x0.shape[0]), x0)
