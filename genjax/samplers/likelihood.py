"""Log-likelihood of data through the probability-flow ODE (instantaneous change of variables).

The probability-flow ODE of a forward SDE (Song et al. 2021, eq. 13),

    dx/dt = v(x, t) = f(x, t) - 1/2 g(t)^2 s(x, t),        s(x, t) ~ grad_x log p_t(x),

is a continuous normalising flow: along a trajectory x(t) the density obeys the
instantaneous change of variables (Chen et al. 2018, theorem 1)

    d/dt log p_t(x(t)) = -div_x v(x(t), t).

Integrating the augmented ODE

    d/dt [x, delta] = [v(x, t), div_x v(x, t)],     x(t0) = x_data,  delta(t0) = 0,

forward from t0 to T gives x_T and delta_T = int_{t0}^T div v dt, and

    log p_{t0}(x_data) = log p_T(x_T) + delta_T                      (Song et al. 2021, appendix D.2)

with p_T replaced by the process prior (`process.prior_log_prob`). v is the model's velocity
view (`views.velocity_fn`): the probability flow of a score model, or a velocity model's
output as it is (flow matching, a CNF), so every model gets the same exact likelihood.

Divergence.
  "auto": "exact" up to `EXACT_MAX_DIMENSION` (8) dimensions per example, "hutchinson"
      above (the exact trace costs D derivative passes per field evaluation).
  "exact": the trace of the Jacobian dv/dx, built from D forward-mode products (one
      `jax.linearize` of v and the linear map applied to the D basis vectors, i.e. the
      same as `jax.jacfwd`). Cost and memory grow with D = prod(shape): low dimension only.
  "hutchinson": the Hutchinson (1990) / Skilling (1989) estimator used by FFJORD
      (Grathwohl et al. 2019): div v = E_eps[eps^T (dv/dx) eps] for any probe with
      E[eps eps^T] = I, here Gaussian N(0, I) or Rademacher (+-1 with equal probability;
      lower variance, since eps_i^2 = 1). (dv/dx) eps is one `jax.jvp`. The probe is
      drawn once per example per solve and held fixed through that solve, so the
      estimate of int div v dt is unbiased: the x-trajectory does not depend on eps
      (only the adaptive step sizes do, through the error control on delta, which is
      below the tolerances). `num_probes` = K independent solves per example, each with
      its own probe; `log_prob` is their mean and `standard_error` = (sample std over
      the K values, ddof = 1) / sqrt(K).

Step control and error norm: as in `genjax.samplers.probability_flow` ("per_example": one
solve per example (and probe) under `vmap`; "per_batch": one solve of the augmented state of
the whole batch, the batched network called once per stage, one step-size sequence, values
that depend on which points share the solve). The batched exact divergence takes the
diagonal of the batch's Jacobian blocks, which assumes the network treats examples
independently (true of every network here: no batch statistics in eval mode).

Which density is computed: t0 > 0. The ODE starts at t0 = `process.t_min_sample` (or the
`t0` argument), not at 0, because the score and the velocity blow up as sigma(t) -> 0.
What is computed is therefore log p_{t0}(x), the log-density of the *slightly diffused*
data x_{t0} = alpha(t0) x_0 + sigma(t0) eps, evaluated at the data point; for small t0 it
approaches log p_0(x) (for VPSDE at t0 = 1e-3, sigma(t0)^2 ~ 1e-4). The honest target for
a check is log p_{t0}: with the exact score of a Gaussian mixture,
`genjax.data.gaussian_mixture.perturbed_log_prob_fn(mixture, process)(x, t0)` is exactly
what the ODE computes, up to (i) solver error and (ii) the prior mismatch
log N(x_T; 0, I) - log p_T(x_T) (p_T is not exactly the prior; for VPSDE alpha(1) =
6.6e-3). The difference log p_{t0} - log p_0 is a separate, model-independent bias of
the evaluation protocol (Song et al. 2021 report likelihoods at t0 = 1e-5).

NFE. One evaluation of the augmented field costs one evaluation of the model plus the
derivative needed for the divergence: one jvp (Hutchinson) or D jvps (exact), each about
the cost of one more score evaluation. `nfe` counts evaluations of the augmented field,
which equal evaluations of the model (its forward pass), and is counted as in the
sampler: `evaluations_per_solve` (Tsit5/Dopri5 are FSAL: 6 * attempted steps + 1 per
solve). With K probes an example makes K solves and `nfe` is their sum (per_batch: the K
probes of every point are rows of the one batch solve, so `nfe` = K times its NFE). Under
`vmap` the batch runs in lock step until its slowest solve is done.

Failures and `throw`: as in `genjax.samplers.probability_flow` (never throws inside the
vmapped loop; `successful` per example; `throw=True` raises at run time via
`equinox.error_if`).

References:
  R. T. Q. Chen, Y. Rubanova, J. Bettencourt, D. Duvenaud, "Neural Ordinary Differential
    Equations", NeurIPS 2018.
  W. Grathwohl, R. T. Q. Chen, J. Bettencourt, I. Sutskever, D. Duvenaud, "FFJORD:
    Free-form Continuous Dynamics for Scalable Reversible Generative Models", ICLR 2019.
  Y. Song et al., "Score-Based Generative Modeling through Stochastic Differential
    Equations", ICLR 2021 (eq. 13 and appendix D.2).
  M. F. Hutchinson, "A stochastic estimator of the trace of the influence matrix for
    Laplacian smoothing splines", Comm. Statist. Simulation Comput. 19(2), 1990.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from genjax.processes import views
from genjax.samplers.prior import example_keys
from genjax.samplers.probability_flow import (
    check_solver_options,
    check_step_control,
    pid_controller,
    solve_batch,
)


ADAPTIVE_SOLVERS = ("tsit5", "dopri5")
DIVERGENCES = ("exact", "hutchinson")  # the estimators
DIVERGENCE_CHOICES = ("auto",) + DIVERGENCES  # what `log_likelihood` takes
# "auto" takes the exact divergence up to this many dimensions per example, Hutchinson above.
EXACT_MAX_DIMENSION = 8
PROBES = ("gaussian", "rademacher")
# Per-example key streams 0 and 1 are the prior draw and the Brownian noise (`prior.py`).
_PROBE_STREAM = 2


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LikelihoodResult:
    """Log-likelihoods from the probability-flow ODE, with their cost (a pytree).

    Attributes:
      log_prob: [N] log p_{t0}(x_i) in nats (mean over the probes for Hutchinson).
      nfe: [N] int32, evaluations of the augmented field (= of the model) spent on each
        example, summed over its probe solves.
      successful: [N] bool, False where any solve of the example failed.
      log_prob_per_probe: [N, K] the value of each probe's solve (K = 1 for "exact").
      standard_error: [N] standard error of `log_prob` over the probes: std(ddof=1) /
        sqrt(K); 0 for the exact divergence, NaN for Hutchinson with K = 1.
    """

    log_prob: jax.Array
    nfe: jax.Array
    successful: jax.Array
    log_prob_per_probe: jax.Array
    standard_error: jax.Array

    @property
    def mean_nfe(self) -> jax.Array:
        low = jnp.min(self.nfe)
        return low.astype(jnp.float32) + jnp.mean((self.nfe - low).astype(jnp.float32))

    @property
    def max_nfe(self) -> jax.Array:
        return jnp.max(self.nfe)


def resolve_divergence(divergence: str, shape: tuple[int, ...]) -> str:
    """"exact" or "hutchinson": `divergence` itself, or for "auto" exact up to
    EXACT_MAX_DIMENSION dimensions per example (shape) and Hutchinson above."""
    if divergence not in DIVERGENCE_CHOICES:
        raise ValueError(f"unknown divergence {divergence!r}; choose one of {DIVERGENCE_CHOICES}")
    if divergence != "auto":
        return divergence
    return "exact" if _size(shape) <= EXACT_MAX_DIMENSION else "hutchinson"


def _size(shape: tuple[int, ...]) -> int:
    size = 1
    for n in shape:
        size *= int(n)
    return size


def draw_probes(
    key: jax.Array,
    num_examples: int,
    num_probes: int,
    shape: tuple[int, ...],
    probe: str = "gaussian",
    first_index: int | jax.Array = 0,
    dtype=jnp.float32,
) -> jax.Array:
    """Hutchinson probes [N, K, *shape]: probe k of example i (global index
    first_index + i) is drawn from fold_in(fold_in(fold_in(key, first_index + i), 2), k),
    so it depends neither on the batch nor on K (the first K' < K probes are shared)."""
    if probe not in PROBES:
        raise ValueError(f"unknown probe {probe!r}; choose one of {PROBES}")
    draw = jax.random.normal if probe == "gaussian" else jax.random.rademacher

    def one(example_key):
        stream = jax.random.fold_in(example_key, _PROBE_STREAM)
        indices = jnp.arange(num_probes, dtype=jnp.uint32)
        keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(stream, indices)
        return jax.vmap(lambda k: draw(k, tuple(shape), dtype=dtype))(keys)

    return jax.vmap(one)(example_keys(key, num_examples, first_index))


def log_likelihood(
    process,
    model,
    x: jax.Array,
    key: jax.Array | None = None,
    *,
    divergence: str = "exact",
    probe: str = "gaussian",
    num_probes: int = 1,
    solver: str = "tsit5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 4096,
    step_control: str = "per_example",
    error_norm: str = "rms",
    t0: float | None = None,
    first_index: int | jax.Array = 0,
    throw: bool = True,
    terminal_log_prob: Callable[[jax.Array], jax.Array] | None = None,
    condition: jax.Array | None = None,
) -> LikelihoodResult:
    """log p_{t0}(x_i) for each example of x [N, *shape] through the probability-flow ODE.

    Args:
      process: a `DiffusionProcess` (closed over; static under `jax.jit`).
      model: a `views.Model` (or a bare per-example score (x [*shape], t []) -> [*shape]);
        only its velocity view is used.
      x: data points [N, *shape].
      key: PRNG key of the whole (global) data set; used for the Hutchinson probes only
        (may be None for the exact divergence).
      divergence: "exact" (Jacobian trace, low dimension), "hutchinson", or "auto" (exact
        up to EXACT_MAX_DIMENSION dimensions per example, Hutchinson above).
      probe: "gaussian" or "rademacher" (Hutchinson only).
      num_probes: K, independent probes (and solves) per example (Hutchinson only).
      solver: "tsit5" or "dopri5" (adaptive, with `diffrax.PIDController(rtol, atol)`
        on the augmented state; initial step (T - t0) / 100).
      max_steps: most attempted steps per solve.
      step_control: "per_example" or "per_batch" (module docstring).
      error_norm: "rms" or "max", the norm of the scaled error estimate.
      t0: start time of the ODE, 0 < t0 < t_max (0 only for a path that samples down to 0,
        such as flow matching or a CNF); default `process.t_min_sample`.
      first_index: global index of x[0] in the data set (may be traced): example i uses
        the probes of global index first_index + i.
      throw: raise at run time if any solve failed.
      terminal_log_prob: per-example log-density used at T in place of
        `process.prior_log_prob` (default). For oracle checks only, e.g. the exact
        log p_T of a Gaussian mixture, to separate solver error from prior mismatch.
      condition: None or int32 [N] class labels of the points (passed to the model, eval
        mode): log p(x_i | label_i).

    Returns:
      `LikelihoodResult` (log_prob [N], nfe [N], successful [N], log_prob_per_probe [N, K],
      standard_error [N]).
    """
    num_examples, shape = x.shape[0], tuple(x.shape[1:])
    explicit_divergence = divergence
    divergence = resolve_divergence(divergence, shape)
    if solver.lower() not in ADAPTIVE_SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {ADAPTIVE_SOLVERS}")
    if isinstance(num_probes, bool) or not isinstance(num_probes, int) or num_probes < 1:
        raise ValueError(f"num_probes={num_probes!r} must be an integer >= 1")
    exact = divergence == "exact"
    if exact and num_probes != 1:
        chosen = ""
        if explicit_divergence == "auto":
            chosen = f" (what auto takes at {_size(shape)} <= {EXACT_MAX_DIMENSION} dimensions)"
        raise ValueError(f"num_probes is for divergence='hutchinson'; the exact divergence{chosen} needs one solve")
    if not exact and key is None:
        raise ValueError("divergence='hutchinson' needs a key for its probes")
    if probe not in PROBES:
        raise ValueError(f"unknown probe {probe!r}; choose one of {PROBES}")
    check_solver_options(rtol, atol, max_steps)
    check_step_control(step_control, error_norm)
    t_max = float(process.t_max)
    t_start = float(process.t_min_sample if t0 is None else t0)
    if not (t_max > t_start > 0.0 or t_start == 0.0 == float(process.t_min_sample)):
        raise ValueError(f"t0={t0!r} must lie in (0, t_max={t_max!r}); 0 only for a path that samples down to 0")

    solve = _augmented_solver(process, model, solver.lower(), rtol, atol, max_steps, step_control, error_norm,
                              t_start, exact, terminal_log_prob)
    if exact:
        values, nfe, successful = solve(x, None, condition)
        per_probe = values[:, None]
        log_prob, standard_error = values, jnp.zeros_like(values)
    else:
        # The K probes of every point are rows of one batch of N * K solves (point-major).
        eps = draw_probes(key, num_examples, num_probes, shape, probe, first_index, x.dtype)
        rows = lambda a: None if a is None else jnp.repeat(a, num_probes, axis=0)
        values, nfe, successful = solve(rows(x), eps.reshape((-1,) + shape), rows(condition))
        per_probe = values.reshape(num_examples, num_probes)
        log_prob = jnp.mean(per_probe, axis=1)
        if num_probes > 1:
            standard_error = jnp.std(per_probe, axis=1, ddof=1) / jnp.sqrt(num_probes)
        else:
            standard_error = jnp.full_like(log_prob, jnp.nan)
        nfe = jnp.sum(nfe.reshape(num_examples, num_probes), axis=1, dtype=jnp.int32)
        successful = jnp.all(successful.reshape(num_examples, num_probes), axis=1)

    if throw:
        log_prob = eqx.error_if(
            log_prob,
            ~jnp.all(successful),
            f"probability-flow likelihood ({solver}), max_steps={max_steps}: the solve failed "
            "for at least one example (max_steps reached or the step size collapsed). Raise "
            "max_steps, loosen rtol/atol, or pass throw=False and inspect "
            "LikelihoodResult.successful.",
        )
    return LikelihoodResult(
        log_prob=log_prob,
        nfe=nfe,
        successful=successful,
        log_prob_per_probe=per_probe,
        standard_error=standard_error,
    )


def jacobian_columns(fn: Callable[[jax.Array], jax.Array], x: jax.Array, unroll: bool = False):
    """(fn(x), J [D, D]) with row j = (d fn / dx) e_j flattened, by D forward-mode products:
    `jax.linearize` and a vmap over the basis (one primal pass), or, with unroll, D separate
    jvps (whose reverse-mode derivative is about 3x faster on XLA:CPU for D <= 16: the CNF's
    training loss uses it, docs/cnf_toy/cnf_toy.md)."""
    size = x.size
    basis = jnp.eye(size, dtype=x.dtype).reshape((size,) + x.shape)
    if unroll:
        products = [jax.jvp(fn, (x,), (e,)) for e in basis]
        return products[0][0], jnp.stack([tangent.ravel() for _, tangent in products])
    value, jvp = jax.linearize(fn, x)
    return value, jax.vmap(jvp)(basis).reshape(size, size)


def divergence_exact(fn: Callable[[jax.Array], jax.Array], x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(fn(x), tr d fn / dx) with the trace from D forward-mode products (one primal pass)."""
    value, columns = jacobian_columns(fn, x)
    return value, jnp.trace(columns)


def hutchinson_terms(fn: Callable[[jax.Array], jax.Array], x: jax.Array, eps: jax.Array):
    """(fn(x), eps^T J eps, J eps) for J = d fn / dx, from one jvp."""
    value, tangent = jax.jvp(fn, (x,), (eps,))
    return value, jnp.vdot(eps, tangent), tangent


def divergence_hutchinson(
    fn: Callable[[jax.Array], jax.Array], x: jax.Array, eps: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """(fn(x), eps^T (d fn / dx) eps), an unbiased estimate of the divergence if
    E[eps eps^T] = I (one jvp)."""
    return hutchinson_terms(fn, x, eps)[:2]


def batched_divergence_exact(fn: Callable[[jax.Array], jax.Array], x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`divergence_exact` of each example of a batch x [N, *shape] through the batched fn
    (D batched forward-mode products: tangent e_j in every example at once). Returns
    (fn(x) [N, *shape], [N] traces); assumes example i of fn(x) depends on x_i only."""
    value, jvp = jax.linearize(fn, x)
    num, size = x.shape[0], x[0].size
    basis = jnp.eye(size, dtype=x.dtype).reshape((size, 1) + x.shape[1:])
    columns = jax.vmap(jvp)(jnp.broadcast_to(basis, (size,) + x.shape)).reshape(size, num, size)
    return value, jnp.einsum("jnj->n", columns)


def batched_divergence_hutchinson(
    fn: Callable[[jax.Array], jax.Array], x: jax.Array, eps: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """`divergence_hutchinson` of each example of a batch x [N, *shape] with its probe eps
    [N, *shape] (one batched jvp). Returns (fn(x), [N] estimates)."""
    value, tangent = jax.jvp(fn, (x,), (eps,))
    return value, jnp.sum((eps * tangent).reshape(x.shape[0], -1), axis=1)


def _augmented_solver(process, model, solver, rtol, atol, max_steps, step_control, error_norm, t_start, exact,
                      terminal_log_prob):
    """A batch function (x [N, *shape], eps [N, *shape] or None, condition) -> (log p_{t0}(x) [N],
    nfe [N], successful [N])."""
    t_max = float(process.t_max)
    controller = pid_controller(rtol, atol, error_norm)
    prior_log_prob = process.prior_log_prob if terminal_log_prob is None else terminal_log_prob
    velocity_fn = views.velocity_fn(process, model)
    batched_velocity_fn = views.batched_velocity_fn(process, model)

    def field(t, state, args):
        (y, _), (eps, condition) = state, args
        velocity = lambda z: velocity_fn(z, t, condition)
        return divergence_exact(velocity, y) if exact else divergence_hutchinson(velocity, y, eps)

    def batched_field(t, state, args):
        (y, _), (eps, condition) = state, args
        velocity = lambda z: batched_velocity_fn(z, jnp.full(z.shape[:1], t, z.dtype), condition)
        return batched_divergence_exact(velocity, y) if exact else batched_divergence_hutchinson(velocity, y, eps)

    def solve(x, eps, condition):
        y0 = (x, jnp.zeros(x.shape[:1], x.dtype))
        (x_T, delta), nfe, successful = solve_batch(
            field, batched_field, step_control, solver, jnp.float32(t_start), jnp.float32(t_max),
            (t_max - t_start) / 100.0, controller, max_steps, y0, (eps, condition))
        return jax.vmap(prior_log_prob)(x_T) + delta, nfe, successful

    return solve
