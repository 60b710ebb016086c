"""Flow matching: one conditional probability path, its coupling and its smoothing as options.

Orientation: as every process here, data at t = 0 and the source (prior) at t = T = 1, so
the samplers, the likelihood and the time grid are shared with diffusion. (Lipman et al.
write data at t = 1; substitute t -> 1 - t.) A coupled pair (x_0 data, x_1 source
N(0, I)) and eps ~ N(0, I) give the conditional path and its velocity

    x_t = a(t) x_0 + b(t) x_1 + c(t) eps,        u_t = a'(t) x_0 + b'(t) x_1 + c'(t) eps,

with, by option:

  path="linear"   a = 1 - t, b = sigma_min + (1 - sigma_min) t: the conditional-OT path of
                  Lipman et al. 2023 (eq. 20, time flipped); sigma_min = 0 is rectified
                  flow (Liu et al. 2023) and the I-CFM path of Tong et al. 2024.
  path="vp"       a = cos(pi t / 2), b = sin(pi t / 2): the variance-preserving (cosine,
                  trigonometric) path (Albergo and Vanden-Eijnden 2023; torchcfm's VP-CFM).
  c(t)            sigma (constant; torchcfm's sigma), or sigma sqrt(t (1 - t)) for the
                  Schrodinger-bridge coupling (a Brownian bridge of diffusion sigma).
  coupling        "independent": x_1 drawn independently of x_0 (I-CFM).
                  "exact_ot": the minibatch's exact optimal assignment under squared
                  Euclidean cost (OT-CFM, Tong et al. 2024; Pooladian et al. 2023), by the
                  auction algorithm on the device (`genjax.couplings.assignment`);
                  certified within ot_tolerance of the optimum, but slow (hundreds of ms
                  per 256-point batch on a CPU).
                  "sinkhorn_ot": near-exact minibatch OT, fast: rows drawn from the
                  entropic plan at epsilon = ot_epsilon * mean cost, epsilon annealed
                  down from the mean cost over ot_epsilon_levels levels of
                  ot_iterations Sinkhorn iterations each (`sinkhorn_conditional_plan`;
                  one exponential pass per level); the cost of its
                  pairs over the exact assignment's is measured (README, test_couplings).
                  "schrodinger_bridge": rows drawn from the entropic plan with
                  epsilon = 2 sigma^2 (Sinkhorn; SB-CFM, Tong et al. 2024).
                  "given_pairs": x_1 comes with the batch (batch["source"]): reflow
                  (Liu et al. 2023) trains on (noise, sample) pairs drawn by a trained
                  flow's ODE (experiments/reflow.py).

A coupling sees the batch it is given: the global batch in the jitted train step (GSPMD
gathers the sharded rows), or each micro-batch under gradient accumulation.

Which views exist. With the independent coupling the path from the data is the affine
Gaussian kernel x_t = alpha x_0 + sigma z with alpha = a, sigma = sqrt(b^2 + c^2), so the
marginal velocity is the probability flow of the score of that kernel (drift
f = (alpha'/alpha) x, g^2 = 2 sigma^2 d/dt log(sigma / alpha)): the model has a score and
a denoised view, the Gaussian-mixture oracle applies exactly, and the reverse SDE exists
where alpha(T) > 0 (set t_max < 1; at T = 1, alpha = 0 and the drift is infinite). An OT or
SB coupling changes p_t itself (it is no longer the data blurred by a kernel), so such a
model has a velocity only: the ODE samplers and the likelihood apply, the others refuse it.
At T = 1 the marginal is exactly the prior N(0, (b(1)^2 + c(1)^2) I) for every coupling.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from genjax.couplings.assignment import auction_assignment, squared_distances
from genjax.couplings.sinkhorn import sample_plan_rows, sample_rows, sinkhorn_conditional_plan, sinkhorn_log_plan
from genjax.processes.base import DiffusionProcess, require, standard_normal_log_prob

PATHS = ("linear", "vp")
COUPLINGS = ("independent", "exact_ot", "sinkhorn_ot", "schrodinger_bridge", "given_pairs")


@dataclasses.dataclass(frozen=True)
class FlowMatchingPath(DiffusionProcess):
    """Attributes:
      path: "linear" or "vp" (module docstring).
      coupling: "independent", "exact_ot", "sinkhorn_ot", "schrodinger_bridge" or "given_pairs".
      sigma: the smoothing c(t) of the conditional path (>= 0; > 0 for the Schrodinger bridge).
      sigma_min: the linear path's source scale at the data end (Lipman et al.; in [0, 1)).
      ot_tolerance: relative optimality gap allowed to the exact assignment (auction).
      ot_epsilon, ot_epsilon_levels, ot_iterations: sinkhorn_ot's final epsilon (relative to
        the mean cost), its number of epsilon levels, and Sinkhorn iterations per level.
      sinkhorn_tolerance, sinkhorn_max_iterations: stopping rule of the entropic plan.
    """

    path: str = "linear"
    coupling: str = "independent"
    sigma: float = 0.0
    sigma_min: float = 0.0
    ot_tolerance: float = 1e-3
    ot_epsilon: float = 0.01
    ot_epsilon_levels: int = 5
    ot_iterations: int = 10
    sinkhorn_tolerance: float = 1e-3
    sinkhorn_max_iterations: int = 1000
    t_min_sample: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        require(self.path in PATHS, f"path={self.path!r} is not known; choose one of {PATHS}")
        require(self.coupling in COUPLINGS, f"coupling={self.coupling!r} is not known; choose one of {COUPLINGS}")
        require(0 <= self.sigma < math.inf, f"sigma={self.sigma!r} must be >= 0 and finite")
        require(self.coupling != "schrodinger_bridge" or self.sigma > 0,
                f"sigma={self.sigma!r} must be > 0 for the schrodinger_bridge coupling (its plan's epsilon is 2 sigma^2)")
        require(0 <= self.sigma_min < 1, f"sigma_min={self.sigma_min!r} must lie in [0, 1)")
        require(self.path == "linear" or self.sigma_min == 0,
                f"sigma_min={self.sigma_min!r} is for path='linear'; the vp path has none (set it to 0)")
        require(self.t_max <= 1.0, f"t_max={self.t_max!r} must be <= 1 (the path ends at the source at t = 1)")
        require(self.ot_tolerance > 0, f"ot_tolerance={self.ot_tolerance!r} must be > 0")
        require(self.ot_epsilon > 0, f"ot_epsilon={self.ot_epsilon!r} must be > 0 (it is relative to the mean cost)")
        require(isinstance(self.ot_epsilon_levels, int) and self.ot_epsilon_levels >= 1,
                f"ot_epsilon_levels={self.ot_epsilon_levels!r} must be an integer >= 1")
        require(isinstance(self.ot_iterations, int) and self.ot_iterations >= 1,
                f"ot_iterations={self.ot_iterations!r} must be an integer >= 1")
        require(self.sinkhorn_tolerance > 0, f"sinkhorn_tolerance={self.sinkhorn_tolerance!r} must be > 0")
        require(isinstance(self.sinkhorn_max_iterations, int) and self.sinkhorn_max_iterations >= 1,
                f"sinkhorn_max_iterations={self.sinkhorn_max_iterations!r} must be an integer >= 1")

    def describe(self) -> str:
        return f"flow_matching (path={self.path!r}, coupling={self.coupling!r})"

    # --- capabilities ------------------------------------------------------------------------
    @property
    def has_score(self) -> bool:
        """The velocity is the probability flow of a score only for the independent coupling."""
        return self.coupling == "independent"

    @property
    def has_reverse_sde(self) -> bool:
        return self.has_score and self.t_max < 1.0

    @property
    def reverse_sde_note(self) -> str:
        if not self.has_score:
            return f" (coupling={self.coupling!r} changes p_t, which then has no score)"
        return " at t_max = 1 (alpha(1) = 0 makes its drift infinite; set process.kwargs.t_max below 1)"

    # --- the conditional path ------------------------------------------------------------------
    def path_coefficients(self, t: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(a(t), b(t), c(t)) of x_t = a x_0 + b x_1 + c eps."""
        t = jnp.asarray(t)
        if self.path == "linear":
            a, b = 1.0 - t, self.sigma_min + (1.0 - self.sigma_min) * t
        else:
            a, b = jnp.cos(0.5 * jnp.pi * t), jnp.sin(0.5 * jnp.pi * t)
        if self.coupling == "schrodinger_bridge":
            c = self.sigma * jnp.sqrt(jnp.clip(t * (1.0 - t), 0.0))
        else:
            c = self.sigma * jnp.ones_like(t)
        return a, b, c

    def conditional_path(self, x0, x1, eps, t) -> tuple[jax.Array, jax.Array]:
        """(x_t, u_t) of one coupled pair (x0, x1) with smoothing noise eps at a scalar t."""
        t = jnp.asarray(t, jnp.result_type(float))
        (a, b, c), (da, db, dc) = jax.jvp(self.path_coefficients, (t,), (jnp.ones_like(t),))
        return a * x0 + b * x1 + c * eps, da * x0 + db * x1 + dc * eps

    def source_sample(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        """x_1 ~ N(0, I)."""
        return jax.random.normal(key, shape)

    @property
    def uses_given_pairs(self) -> bool:
        """True when x_1 comes with the batch (batch["source"]) instead of being drawn."""
        return self.coupling == "given_pairs"

    def couple(self, key: jax.Array, x0: jax.Array, x1: jax.Array) -> jax.Array:
        """The source draws x1 [B, ...] reordered (or resampled, for the bridge) so that
        (x0[i], result[i]) is a draw of the coupling (module docstring); given pairs are kept."""
        if self.coupling in ("independent", "given_pairs"):
            return x1
        cost = squared_distances(x0, x1)
        if self.coupling == "exact_ot":
            return x1[auction_assignment(cost, tolerance=self.ot_tolerance)]
        if self.coupling == "sinkhorn_ot":
            return x1[sample_rows(key, sinkhorn_conditional_plan(cost, self.ot_epsilon, self.ot_epsilon_levels, self.ot_iterations))]
        log_plan = sinkhorn_log_plan(cost, 2.0 * self.sigma**2, self.sinkhorn_tolerance, self.sinkhorn_max_iterations)
        return x1[sample_plan_rows(key, log_plan)]

    # --- the marginal kernel of the independent coupling, and its SDE -------------------------
    def marginal_coefficients(self, t):
        a, b, c = self.path_coefficients(t)
        if self.sigma == 0:
            return a, b  # sqrt(b^2) would have no derivative where b = 0
        return a, jnp.sqrt(b**2 + c**2)

    def drift(self, x, t):
        t = jnp.asarray(t, jnp.result_type(float))
        a, da = jax.jvp(lambda s: self.marginal_coefficients(s)[0], (t,), (jnp.ones_like(t),))
        return (da / a) * x

    def diffusion(self, t):
        """g = sqrt(2 sigma^2 d/dt log(sigma / alpha)), from the kernel (the independent coupling)."""
        t = jnp.asarray(t, jnp.result_type(float))
        log_ratio = lambda s: jnp.log(self.marginal_coefficients(s)[1]) - jnp.log(self.marginal_coefficients(s)[0])
        _, rate = jax.jvp(log_ratio, (t,), (jnp.ones_like(t),))
        return jnp.sqrt(2.0 * self.marginal_coefficients(t)[1] ** 2 * jnp.maximum(rate, 0.0))

    # --- the prior at T -----------------------------------------------------------------------
    def prior_std(self) -> jax.Array:
        return self.marginal_coefficients(jnp.float32(self.t_max))[1]

    def prior_sample(self, key, shape):
        return self.prior_std() * jax.random.normal(key, shape)

    def prior_log_prob(self, z):
        std = self.prior_std()
        return standard_normal_log_prob(z / std) - z.size * jnp.log(std)
