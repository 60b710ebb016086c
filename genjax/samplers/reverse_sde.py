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
last Euler-Maruyama step instead of a noisy draw. Here the N noisy steps end at t_min and
the output is Tweedie's posterior mean there,

    x_out = D(x_N, t_min) = (x_N + sigma(t_min)^2 s(x_N, t_min)) / alpha(t_min)

(`views.denoised_from_score`, as the predictor-corrector, DDIM and EDM samplers end). An
Euler step of the reverse drift from t_min to 0 would add g(t_min)^2 t_min s instead of
sigma(t_min)^2 s; the two agree to first order only where g^2 t / sigma^2 -> 1 (VP, VE),
while for EDM (g^2 = 2t, sigma = t) and sub-VP the ratio is 2, and that step reflects the
residual noise about the posterior mean instead of removing it. The denoising evaluates
the score once more, at t_min. Without it the samples are draws from (an approximation
of) p_{t_min}.

NFE per example: exactly `num_steps`, plus 1 with `denoise_final` (and t_min_sample > 0);
it is read off diffrax's step counter, one drift evaluation per Euler step.
"""
from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp

from genjax.processes.views import denoised_from_score
from genjax.samplers.capabilities import require_reverse_sde, score_view
from genjax.samplers.prior import example_keys, noise_key, sample_prior
from genjax.samplers.result import SampleResult
from genjax.stochastic.sde_solvers import sde_terms
from genjax.stochastic.time_reversal import forward_sde


def sample_reverse_sde(
    process,
    model,
    key: jax.Array,
    num_samples: int,
    shape: tuple[int, ...],
    num_steps: int,
    denoise_final: bool = True,
    first_index: int | jax.Array = 0,
    condition: jax.Array | None = None,
) -> SampleResult:
    """Draw `num_samples` examples by Euler-Maruyama on the reverse-time SDE.

    Args:
      process: a `DiffusionProcess` (closed over; static under `jax.jit`).
      model: a `views.Model` with a score view (or a bare per-example score (x [*shape], t [])
        -> [*shape]).
      key: PRNG key of the whole (global) sample set.
      num_samples: N, number of examples drawn here (static).
      shape: per-example data shape, e.g. (2,) or (H, W, C) (static).
      num_steps: number of Euler-Maruyama steps from t_max to t_min_sample (static).
      denoise_final: return Tweedie's posterior mean D(x, t_min_sample) instead of x_{t_min}.
      first_index: global index of this call's first example (may be traced), so that a
        device or process can draw its slice of a global sample set.
      condition: None (unconditional) or int32 [N] class labels of the samples, passed to
        the model (eval mode).

    Returns:
      `SampleResult` with samples [N, *shape], nfe [N] (= num_steps (+1)) and successful [N].

    Jit with the static arguments closed over, e.g.
    `jax.jit(lambda key: sample_reverse_sde(process, model, key, n, shape, 1000))`.
    """
    require_reverse_sde(process, "euler_maruyama")
    score_fn = score_view(process, model, "euler_maruyama")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    shape = tuple(shape)
    solve = _reverse_sde_solver(process, score_fn, shape, num_steps, denoise_final)
    keys = example_keys(key, num_samples, first_index)
    x_T = sample_prior(process, keys, shape)
    samples, nfe, successful = jax.vmap(solve)(x_T, jax.vmap(noise_key)(keys), condition)
    return SampleResult(samples=samples, nfe=nfe, successful=successful)


def _reverse_sde_solver(process, score_fn, shape, num_steps: int, denoise_final: bool):
    """A per-example function (x_T, noise key, condition) -> (x_out, nfe, successful)."""
    t_max, t_min = float(process.t_max), float(process.t_min_sample)
    if not t_max > t_min >= 0.0:
        raise ValueError(f"need t_max > t_min_sample >= 0, got {t_max}, {t_min}")
    grid = process.time_grid(num_steps)

    _, diffusion = forward_sde(process)  # the reverse SDE has the forward g(t) I

    def solve(x_T, key, condition):
        def drift(t, x):
            return process.reverse_drift(x, t, score_fn(x, t, condition))

        brownian = diffrax.UnsafeBrownianPath(shape=jax.ShapeDtypeStruct(shape, x_T.dtype), key=key)
        terms = sde_terms(drift, diffusion, brownian)
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
            x = denoised_from_score(x, score_fn(x, grid[-1], condition), *process.marginal_coefficients(grid[-1]))
            nfe = nfe + 1
            successful = successful & jnp.all(jnp.isfinite(x))
        return x, jnp.asarray(nfe, jnp.int32), successful

    return solve
