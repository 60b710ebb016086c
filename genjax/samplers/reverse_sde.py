"""Sampling with the reverse-time SDE, by Euler-Maruyama in diffrax.

The forward SDE dx = f(x, t) dt + g(t) dw has the time reversal (Anderson 1982;
Song et al. 2021, "Score-Based Generative Modeling through SDEs", eq. 6)

    dx = [f(x, t) - g(t)^2 grad_x log p_t(x)] dt + g(t) dw_bar,

run from t = T down to 0, where w_bar is a Brownian motion in reversed time. With a score
model s(x, t) ~ grad_x log p_t(x) in place of the true score, Euler-Maruyama on the process's
`time_grid` t_0 = T > t_1 > ... > t_N = t_min_sample (uniform in t, h_k = t_k - t_{k+1}) is

    x_{k+1} = x_k - [f(x_k, t_k) - g(t_k)^2 s(x_k, t_k)] h_k + g(t_k) sqrt(h_k) z_k,   z_k ~ N(0, I),

the predictor of Song et al.'s reference implementation.

Time reversal in diffrax. Integration is done by `diffrax.diffeqsolve` (Kidger 2021,
"On Neural Differential Equations", and the diffrax library) with t0 = T > t1 = t_min, which
diffrax supports for SDEs: it integrates in tau = -t and wraps every term so that the drift
control becomes dt = t_{k+1} - t_k < 0, and the Brownian control becomes
W(t_{k+1}) - W(t_k), a N(0, |t_{k+1} - t_k| I) increment -- which is exactly dw_bar over the
step (the sign of a Brownian increment does not change its law). `diffrax.Euler` on
`MultiTerm(ODETerm(drift), ControlTerm(diffusion, brownian))` then performs the update above
verbatim; the isotropic diffusion g(t) I is a `lineax.DiagonalLinearOperator`, so the noise
costs an elementwise product. The tests check this against the closed-form target.

The Brownian motion is `diffrax.UnsafeBrownianPath`: one fresh normal per step, keyed by the
example's noise key and the bit pattern of the step's end times. That is correct (and
fastest) for a fixed grid, which `diffrax.StepTo` gives with exactly reproducible times, so
the noise is a deterministic function of (key, grid); it must not be used with adaptive
steps (diffrax refuses).

Final denoising (`denoise_final=True`). Score-SDE's `noise_removal` returns the mean of the
last Euler-Maruyama step instead of a noisy draw. Here the N noisy steps end at t_min; one
extra noise-free Euler step of the same reverse drift then goes from t_min to 0,

    x_out = x_N + [ -f(x_N, t_min) + g(t_min)^2 s(x_N, t_min) ] t_min,

to first order in t_min the Tweedie posterior mean (x + sigma(t_min)^2 s) / alpha(t_min).
It evaluates the score once more, at t_min. With the reference code's defaults (N = 1000
steps of size 1/N from T = 1 on a grid ending at eps = 1e-3, the last step going from eps
to 0 and returning its mean) this is the same chain as num_steps = 999 here plus the
denoising step. Without it the samples are draws from (an approximation of) p_{t_min}.

NFE per example: exactly `num_steps`, plus 1 with `denoise_final` (and t_min_sample > 0);
it is read off diffrax's step counter, one drift evaluation per Euler step.
"""
from __future__ import annotations

from typing import Callable

import diffrax
import jax
import jax.numpy as jnp
import lineax

from genjax.samplers.capabilities import require_reverse_sde
from genjax.samplers.prior import example_keys, noise_key, sample_prior
from genjax.samplers.result import SampleResult

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


def sample_reverse_sde(
    process,
    score_fn: ScoreFn,
    key: jax.Array,
    num_samples: int,
    shape: tuple[int, ...],
    num_steps: int,
    denoise_final: bool = True,
    first_index: int | jax.Array = 0,
) -> SampleResult:
    """Draw `num_samples` examples by Euler-Maruyama on the reverse-time SDE.

    Args:
      process: a `DiffusionProcess` (closed over; static under `jax.jit`).
      score_fn: per-example score model (x [*shape], t []) -> [*shape].
      key: PRNG key of the whole (global) sample set.
      num_samples: N, number of examples drawn here (static).
      shape: per-example data shape, e.g. (2,) or (H, W, C) (static).
      num_steps: number of Euler-Maruyama steps from t_max to t_min_sample (static).
      denoise_final: finish with a noise-free Euler step from t_min_sample to 0.
      first_index: global index of this call's first example (may be traced), so that a
        device or process can draw its slice of a global sample set.

    Returns:
      `SampleResult` with samples [N, *shape], nfe [N] (= num_steps (+1)) and successful [N].

    Jit with the static arguments closed over, e.g.
    `jax.jit(lambda key: sample_reverse_sde(process, score_fn, key, n, shape, 1000))`.
    """
    require_reverse_sde(process, "euler_maruyama")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    shape = tuple(shape)
    solve = _reverse_sde_solver(process, score_fn, shape, num_steps, denoise_final)
    keys = example_keys(key, num_samples, first_index)
    x_T = sample_prior(process, keys, shape)
    samples, nfe, successful = jax.vmap(solve)(x_T, jax.vmap(noise_key)(keys))
    return SampleResult(samples=samples, nfe=nfe, successful=successful)


def _reverse_sde_solver(process, score_fn: ScoreFn, shape, num_steps: int, denoise_final: bool):
    """A per-example function (x_T, noise key) -> (x_out, nfe, successful)."""
    t_max, t_min = float(process.t_max), float(process.t_min_sample)
    if not t_max > t_min >= 0.0:
        raise ValueError(f"need t_max > t_min_sample >= 0, got {t_max}, {t_min}")
    grid = process.time_grid(num_steps)

    def drift(t, x, args):
        return process.reverse_drift(x, t, score_fn(x, t))

    def diffusion(t, x, args):
        # g(t) I as a diagonal operator: the noise enters elementwise, for any example shape.
        diagonal = jnp.broadcast_to(process.diffusion(t), x.shape).astype(x.dtype)
        return lineax.DiagonalLinearOperator(diagonal)

    def solve(x_T, key):
        brownian = diffrax.UnsafeBrownianPath(shape=jax.ShapeDtypeStruct(shape, x_T.dtype), key=key)
        terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion, brownian))
        sol = diffrax.diffeqsolve(
            terms,
            diffrax.Euler(),
            t0=grid[0],
            t1=grid[-1],
            dt0=None,
            y0=x_T,
            stepsize_controller=diffrax.StepTo(grid),
            saveat=diffrax.SaveAt(t1=True),
            max_steps=num_steps,
            # A plain forward loop: sampling needs no reverse-mode gradients, and
            # UnsafeBrownianPath is incompatible with the checkpointed default.
            adjoint=diffrax.ForwardMode(),
            throw=False,
        )
        x = sol.ys[-1]
        nfe = sol.stats["num_steps"]
        successful = sol.result == diffrax.RESULTS.successful
        if denoise_final and t_min > 0.0:
            last = jnp.array([t_min, 0.0], jnp.float32)
            sol = diffrax.diffeqsolve(
                diffrax.ODETerm(drift),
                diffrax.Euler(),
                t0=last[0],
                t1=last[1],
                dt0=None,
                y0=x,
                stepsize_controller=diffrax.StepTo(last),
                saveat=diffrax.SaveAt(t1=True),
                max_steps=1,
                adjoint=diffrax.ForwardMode(),
                throw=False,
            )
            x = sol.ys[-1]
            nfe = nfe + sol.stats["num_steps"]
            successful = successful & (sol.result == diffrax.RESULTS.successful)
        return x, jnp.asarray(nfe, jnp.int32), successful

    return solve
