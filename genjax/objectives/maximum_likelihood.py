"""Maximum likelihood for continuous normalising flows (FFJORD), with RNODE regularisation.

Orientation (the engine's): data at t = 0, prior at t = T. A flow dx/dt = v(x, t) carries
a data point x(0) = x to z = x(T), and by the instantaneous change of variables (Chen et
al. 2018, theorem 1)

    log p_0(x) = log p_T(z) + int_0^T div_x v(x(t), t) dt.

One solve of the augmented ODE, from [x, 0, 0, 0] at t = 0 to T,

    d/dt [x, delta, E, F] = [v, div v, |v|^2, |dv/dx|_F^2],

gives the log-likelihood (delta_T is the integral of the divergence) and the two RNODE
integrals of Finlay et al. 2020 ("How to train your neural ODE"): the kinetic energy
E = int |v|^2 dt and the Jacobian Frobenius norm F = int |dv/dx|_F^2 dt (their
definitions, sums over dimensions; their code's weights are per dimension and halve E:
lambda_ours = lambda_theirs / (2 D) for E and lambda_theirs / D for F). The loss is

    mean_i [ -log p(x_i) + kinetic_weight E_i + jacobian_weight F_i ]      (nats per example).

Divergence (`divergence`): "exact" builds the Jacobian from D forward-mode products, so
div v = tr J and |J|_F^2 are exact (small D only). "hutchinson" (FFJORD) uses one probe
eps with E[eps eps^T] = I, Gaussian or Rademacher (`probe`), drawn from the example's key
and held fixed through the solve: with u = J eps (one jvp), eps^T u estimates tr J and
|u|^2 estimates |J|_F^2 (RNODE's estimator), both unbiased.

Solvers: fixed steps "euler", "heun", "rk4" on `num_steps` uniform steps, or adaptive
"tsit5", "dopri5" with a PID controller (rtol, atol); the error control looks at x and
delta only, the regularisation integrals are outputs (as in FFJORD/RNODE, which give them
infinite tolerance). One solve per example (vmap), so example i's loss depends on x_i and
its key only, as for every objective of the engine.

Gradients (`adjoint`): "recursive_checkpoint" (the default) differentiates the solver's
own arithmetic (discretise-then-optimise, diffrax's RecursiveCheckpointAdjoint): the
gradient is exact for the loss that was computed. "backsolve" is the continuous adjoint
of Chen et al. 2018 (BacksolveAdjoint): it solves the adjoint ODE backwards from z,
re-integrating x(t) backwards; memory does not grow with the number of steps, but the
gradient is only as accurate as the backward solve. The default is the exact gradient,
and on the toy problems it is also the faster (docs/cnf_toy/cnf_toy.md). The velocity
function may close over the parameters: the augmented field is closure-converted
(`equinox.filter_closure_convert`), so the parameters are leaves of the ODE term and
both adjoints differentiate them.

NFE (`CNFTerms.nfe`): evaluations of the augmented field, each one forward pass of v plus
its Jacobian products (D jvps for "exact", 1 for "hutchinson"), counted from diffrax's
step statistics as in the samplers (FSAL: 6 * steps + 1 for tsit5/dopri5; rk4: 4 * steps).
Backward (diffrax reports no count; measured with a counting callback in
docs/cnf_toy/cnf_toy.md): "recursive_checkpoint" with a checkpoint per step
(`checkpoints=None`) evaluates the field twice more per forward evaluation (recomputation
from the checkpoint, then its linearisation) plus one transpose; "backsolve" evaluates it,
with its vjp, once per stage of its own backward solve.

Failures: a solve that does not finish (adaptive, max_steps) makes the loss NaN, which
the training loop reports as a non-finite loss at that step; `failed_solves` counts them.

References:
  R. T. Q. Chen, Y. Rubanova, J. Bettencourt, D. Duvenaud, "Neural Ordinary Differential
    Equations", NeurIPS 2018.
  W. Grathwohl, R. T. Q. Chen, J. Bettencourt, I. Sutskever, D. Duvenaud, "FFJORD",
    ICLR 2019.
  C. Finlay, J.-H. Jacobsen, L. Nurbekyan, A. Oberman, "How to train your neural ODE: the
    world of Jacobian and kinetic regularization", ICML 2020.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

from genjax.objectives.batch import DROPOUT_STREAM, batch_arrays
from genjax.processes import views
from genjax.samplers.likelihood import DIVERGENCES, PROBES, hutchinson_terms, jacobian_columns
from genjax.samplers.probability_flow import check_solver_options, evaluations_per_solve

VelocityFn = Callable[[jax.Array, jax.Array], jax.Array]  # per example: (x [*shape], t []) -> [*shape]


class ClassicRK4(diffrax.AbstractERK):
    """The classical 4th-order Runge-Kutta method (4 stages, no FSAL), for fixed steps."""

    tableau: ClassVar[diffrax.ButcherTableau] = diffrax.ButcherTableau(
        a_lower=(np.array([0.5]), np.array([0.0, 0.5]), np.array([0.0, 0.0, 1.0])),
        b_sol=np.array([1 / 6, 1 / 3, 1 / 3, 1 / 6]),
        b_error=np.zeros(4),
        c=np.array([0.5, 0.5, 1.0]),
    )
    interpolation_cls: ClassVar[Callable] = diffrax.ThirdOrderHermitePolynomialInterpolation.from_k

    def order(self, terms):
        return 4


FIXED_SOLVERS = {"euler": diffrax.Euler, "heun": diffrax.Heun, "rk4": ClassicRK4}
ADAPTIVE_SOLVERS = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5}
SOLVERS = tuple(FIXED_SOLVERS) + tuple(ADAPTIVE_SOLVERS)
ADJOINTS = ("recursive_checkpoint", "backsolve")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class CNFTerms:
    """Per-example results of the augmented solve (a pytree; every field [B]).

    log_prob: log p_0(x_i) = log p_T(z_i) + delta_i (with Hutchinson: one probe's estimate).
    kinetic_energy: int_0^T |v|^2 dt.   jacobian_frobenius: int_0^T |dv/dx|_F^2 dt.
    nfe: int32 evaluations of the augmented field (forward).   successful: bool.
    nfe_backward: int32 vector-Jacobian products of the augmented field in the backward pass
      (one per forward evaluation with "recursive_checkpoint", each after recomputing that
      evaluation; one per stage of the adjoint solve with "backsolve"); None where diffrax
      does not report it (backsolve with an adaptive solver).
    """

    log_prob: jax.Array
    kinetic_energy: jax.Array
    jacobian_frobenius: jax.Array
    nfe: jax.Array
    successful: jax.Array
    nfe_backward: jax.Array | None = None


_UNROLLED_JACOBIAN_MAX_SIZE = 16


def jacobian_terms(fn: Callable[[jax.Array], jax.Array], x: jax.Array, eps: jax.Array | None):
    """(fn(x), div, frob): div = tr J and frob = |J|_F^2 of J = d fn / dx at x, exactly
    (eps None: the Jacobian's columns, `likelihood.jacobian_columns`, unrolled for D <= 16
    where that differentiates faster) or by Hutchinson with the probe eps (u = J eps:
    eps^T u and |u|^2, `likelihood.hutchinson_terms`). The likelihood's trace formulas,
    plus the Frobenius norm RNODE needs."""
    if eps is None:
        value, columns = jacobian_columns(fn, x, unroll=x.size <= _UNROLLED_JACOBIAN_MAX_SIZE)
        return value, jnp.trace(columns), jnp.sum(columns**2)
    value, estimate, tangent = hutchinson_terms(fn, x, eps)
    return value, estimate, jnp.sum(tangent**2)


def check_cnf_options(divergence, probe, solver, num_steps, rtol, atol, max_steps, adjoint, checkpoints) -> None:
    """ValueError, one line, for the first option out of range."""
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence={divergence!r} is not known; choose one of {DIVERGENCES}")
    if probe not in PROBES:
        raise ValueError(f"probe={probe!r} is not known; choose one of {PROBES}")
    if solver not in SOLVERS:
        raise ValueError(f"solver={solver!r} is not known; choose one of {SOLVERS}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps={num_steps!r} must be an integer >= 1 (steps of a fixed-step solver)")
    check_solver_options(rtol, atol, max_steps)
    if adjoint not in ADJOINTS:
        raise ValueError(f"adjoint={adjoint!r} is not known; choose one of {ADJOINTS}")
    if checkpoints is not None and (isinstance(checkpoints, bool) or not isinstance(checkpoints, int)
                                    or checkpoints < 1):
        raise ValueError(f"checkpoints={checkpoints!r} must be None (one per step) or an integer >= 1")


def _forward_nfe(solver: str, num_steps: jax.Array) -> jax.Array:
    if solver == "rk4":  # 4 stages, no FSAL (the other solvers are in the samplers' table)
        return 4 * num_steps
    return evaluations_per_solve(solver, num_steps)


def cnf_terms(
    velocity_fn: VelocityFn,
    prior_log_prob: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    example_keys: jax.Array,
    *,
    t_max: float = 1.0,
    divergence: str = "exact",
    probe: str = "rademacher",
    solver: str = "dopri5",
    num_steps: int = 16,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 1000,
    adjoint: str = "recursive_checkpoint",
    checkpoints: int | None = None,
    example_args=None,
) -> CNFTerms:
    """Solve the augmented ODE of every example of x [B, *shape] from t = 0 to t_max.

    Args:
      velocity_fn: per-example field (x [*shape], t []) -> v [*shape]; may close over
        traced parameters (both adjoints differentiate them).
      prior_log_prob: per-example log p_T(z) of the prior at t_max.
      example_keys: [B] keys; example i draws its Hutchinson probe from keys[i].
      t_max: end time T (a Python float; a trained T belongs in the field, see
        `genjax.nets.concatsquash`).
      divergence, probe, solver, adjoint: see the module docstring.
      num_steps: steps of a fixed-step solver (ignored by adaptive ones).
      rtol, atol, max_steps: adaptive solvers only.
      checkpoints: "recursive_checkpoint" only: checkpoints of the backward pass; None
        stores every step (num_steps or max_steps), so nothing is recomputed.
      example_args: None, or a pytree of [B] arrays (non-float, e.g. labels and dropout key
        data): example i's field is then velocity_fn(x, t, example_args[i]), held fixed
        through its solve.
    """
    check_cnf_options(divergence, probe, solver, num_steps, rtol, atol, max_steps, adjoint, checkpoints)
    t_max = float(t_max)
    if not t_max > 0.0:
        raise ValueError(f"t_max={t_max!r} must be > 0")
    exact = divergence == "exact"
    fixed = solver in FIXED_SOLVERS
    steps = num_steps if fixed else max_steps

    if fixed:
        controller = diffrax.StepTo(ts=jnp.linspace(0.0, t_max, num_steps + 1, dtype=jnp.float32))
        dt0 = None
        backward = dict(stepsize_controller=diffrax.ConstantStepSize(), dt0=-t_max / num_steps,
                        max_steps=num_steps + 1)
    else:
        # Error control on (x, delta) only: the regularisation integrals are outputs.
        controller = diffrax.PIDController(rtol=rtol, atol=atol, norm=lambda err: optx.rms_norm(err[:2]))
        dt0 = t_max / 100.0
        backward = dict(stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol))
    if adjoint == "backsolve":
        adjoint_method = diffrax.BacksolveAdjoint(**backward)
    else:
        adjoint_method = diffrax.RecursiveCheckpointAdjoint(checkpoints=checkpoints or steps)
    draw = jax.random.normal if probe == "gaussian" else jax.random.rademacher

    def field(t, state, args):
        eps, example_arg = args
        x = state[0]
        fn = (lambda y: velocity_fn(y, t)) if example_arg is None else (lambda y: velocity_fn(y, t, example_arg))
        v, div, frob = jacobian_terms(fn, x, None if exact else eps)
        # Tie every output to the state: under vmap with fixed steps, diffrax 0.7.2's
        # reverse pass mixes the cotangents of the examples for an output that does not
        # depend on the state (e.g. the divergence of an affine field); see the tests.
        tie = jax.lax.stop_gradient(jnp.zeros((), x.dtype) * x.ravel()[0])
        return v + tie, div + tie, jnp.sum(v**2) + tie, frob + tie

    def solve(xi, key, example_arg):
        eps = jnp.zeros_like(xi) if exact else draw(key, xi.shape, dtype=xi.dtype)
        zero = jnp.zeros((), xi.dtype)
        state0 = (xi, zero, zero, zero)
        args = (eps, example_arg)
        term = diffrax.ODETerm(eqx.filter_closure_convert(field, zero, state0, args))
        sol = diffrax.diffeqsolve(
            term, (FIXED_SOLVERS | ADAPTIVE_SOLVERS)[solver](), t0=0.0, t1=t_max, dt0=dt0, y0=state0, args=args,
            stepsize_controller=controller, saveat=diffrax.SaveAt(t1=True), max_steps=steps,
            adjoint=adjoint_method, throw=False,
        )
        z, delta, kinetic, frob = (leaf[-1] for leaf in sol.ys)
        nfe = jnp.asarray(_forward_nfe(solver, sol.stats["num_steps"]), jnp.int32)
        if adjoint != "backsolve":
            nfe_backward = nfe
        elif fixed:  # the adjoint solve takes the forward's num_steps constant steps
            nfe_backward = jnp.asarray(_forward_nfe(solver, num_steps), jnp.int32)
        else:
            nfe_backward = None
        return CNFTerms(prior_log_prob(z) + delta, kinetic, frob, nfe, sol.result == diffrax.RESULTS.successful,
                        nfe_backward)

    return jax.vmap(solve)(x, example_keys, example_args)


def cnf_loss_and_metrics(
    velocity_fn: VelocityFn,
    process,
    batch: jax.Array,
    example_keys: jax.Array,
    *,
    kinetic_weight: float = 0.0,
    jacobian_weight: float = 0.0,
    **solve_options,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(loss, metrics) of the CNF objective on a batch; the prior and T come from `process`
    (`process.prior_log_prob`, `process.t_max`). Metrics: nll (mean -log p, nats per
    example), kinetic_energy, jacobian_frobenius (batch means), nfe_forward (mean over the
    batch), nfe_forward_max (the batch's lock-step cost), nfe_backward (batch mean, where
    known: `CNFTerms.nfe_backward`) and failed_solves."""
    for name, weight in (("kinetic_weight", kinetic_weight), ("jacobian_weight", jacobian_weight)):
        if not 0.0 <= weight < float("inf"):
            raise ValueError(f"{name}={weight!r} must be >= 0 and finite")
    terms = cnf_terms(velocity_fn, process.prior_log_prob, batch, example_keys, t_max=float(process.t_max),
                      **solve_options)
    per_example = -terms.log_prob
    if kinetic_weight:
        per_example = per_example + kinetic_weight * terms.kinetic_energy
    if jacobian_weight:
        per_example = per_example + jacobian_weight * terms.jacobian_frobenius
    failed = jnp.sum(~terms.successful).astype(jnp.int32)
    loss = jnp.where(failed == 0, jnp.mean(per_example), jnp.nan)
    metrics = {
        "nll": -jnp.mean(terms.log_prob),
        "kinetic_energy": jnp.mean(terms.kinetic_energy),
        "jacobian_frobenius": jnp.mean(terms.jacobian_frobenius),
        "nfe_forward": jnp.mean(terms.nfe.astype(jnp.float32)),
        "nfe_forward_max": jnp.max(terms.nfe),
        "failed_solves": failed,
    }
    if terms.nfe_backward is not None:
        metrics["nfe_backward"] = jnp.mean(terms.nfe_backward.astype(jnp.float32))
    return loss, metrics


def cnf_nll_loss(velocity_fn: VelocityFn, process, batch: jax.Array, example_keys: jax.Array, **options) -> jax.Array:
    """The CNF loss alone (the engine's objective contract: (model fn, process, batch,
    example_keys, **kwargs) -> scalar); options as `cnf_loss_and_metrics`."""
    return cnf_loss_and_metrics(velocity_fn, process, batch, example_keys, **options)[0]


def cnf_maximum_likelihood_loss(
    model,
    process,
    batch,
    example_keys: jax.Array,
    *,
    kinetic_weight: float = 0.0,
    jacobian_weight: float = 0.0,
    divergence: str = "exact",
    probe: str = "rademacher",
    solver: str = "dopri5",
    num_steps: int = 16,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 1000,
    adjoint: str = "recursive_checkpoint",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The engine's objective `"cnf_mle"` (factory.OBJECTIVES): (loss, metrics) of the CNF, as
    `cnf_loss_and_metrics` (the train step logs the metrics, NFE included, beside the loss), of a trained
    model's velocity view (views.Model with output "velocity") on a batch {"x": [B, ...],
    "label": [B]?}; the options, named as config fields, are those of `cnf_loss_and_metrics`
    and `cnf_terms`. The field is the per-example view in train mode: example i's label is
    its condition and its dropout key is fold_in(example_keys[i], DROPOUT_STREAM), one mask
    held through its solve (a fixed field, as the Hutchinson probe)."""
    x, labels = batch_arrays(batch)
    view = views.velocity_fn(process, model)
    dropout_keys = jax.vmap(lambda key: jax.random.key_data(jax.random.fold_in(key, DROPOUT_STREAM)))(example_keys)

    def velocity(y, t, example_arg):
        label, key_data = example_arg
        return view(y, t, label, dropout_key=jax.random.wrap_key_data(key_data), train=True)

    return cnf_loss_and_metrics(velocity, process, x, example_keys, kinetic_weight=kinetic_weight,
                        jacobian_weight=jacobian_weight, divergence=divergence, probe=probe, solver=solver,
                        num_steps=num_steps, rtol=rtol, atol=atol, max_steps=max_steps, adjoint=adjoint,
                        example_args=(labels, dropout_keys))
