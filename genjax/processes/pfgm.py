"""PFGM (Xu, Liu, Tegmark, Jaakkola 2022, "Poisson Flow Generative Models"): PFGM++ with D = 1
trained on the normalised Poisson field of a large batch.

Data y in R^N are charges on the z = 0 plane of R^(N+1). Their field at (x, z), z > 0, is

    E(x, z) = sum_k w_k (x - y_k, z) / (|x - y_k|^2 + z^2)^((N+1)/2),

and the field lines carry the data to the plane z = z_max along the ODE

    dx/dz = E_x / E_z = (x - E[y | x, z]) / z,                                      (eq. 6)

where E[y | x, z] is the posterior mean under the kernel p_z(x | y) proportional to
(|x - y|^2 + z^2)^(-(N+1)/2): PFGM++'s kernel for D = 1 with r = sigma = z (Xu et al. 2023,
section 3). So z is this process's time t = sigma of EDM with f = 0, g^2 = 2 z, and the
ODE is EDM's dx/dsigma = (x - D) / sigma; the samplers, the prior density (the kernel at
z_max, a multivariate Cauchy: the paper's hemisphere projected to the plane) and the
likelihood are PFGMPPProcess's with D = 1.

The prior's draws are the kernel's with their norm clipped to `upper_norm` (the paper's
sampler, `np.clip(norm, 1, upper_norm)`; the lower clip at 1 is not used): the network is
trained only where the perturbation reaches, radii up to about sqrt(N + 1) sigma (1 + tau)^M
(the paper's rule for upper_norm), and a prior draw beyond it meets a field the network never
saw. In low dimension the Cauchy tail is heavy (N = 2: P(|x| > R) = z_max / sqrt(R^2 +
z_max^2), 0.4 % beyond R = 1e4 at z_max = 40), so M must be large enough that the covered
radius leaves little mass to clip; `upper_norm` may not exceed the covered radius. The
likelihood's prior density stays the unclipped kernel's (the clip approximates the prior for
sampling; a clipped law has no density on its bounding sphere).

The paper integrates the same ODE in t' = log z, dx/dt' = z E_x / E_z, from log z_max to
log z_min (its "early stop" at z_min > 0). A change of the time variable does not change
the solution: `time_grid` is geometric in z (the paper's grid, uniform in log z) for the
fixed-step solvers, and the adaptive solver integrates in z with its own step control.

What differs from PFGM++ D = 1 is training (`training_perturbation` and the `poisson_field`
objective): a data point is pushed into the upper half-space by

    (x, z) = (y, 0) + (1 + tau)^m (eps_x, |eps_z|),  eps ~ N(0, sigma^2 I_(N+1)),  m ~ U[0, M],

(Algorithm 2: ||eps_x|| times a uniform direction is eps_x itself in law), and the network
regresses the normalised field of the batch's charges there (genjax/objectives/poisson_field.py).
The paper's restriction of m for very small |eps_z| (its appendix B.1.1) is not used.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from genjax.processes.base import require
from genjax.processes.pfgmpp import PFGMPPProcess


@dataclasses.dataclass(frozen=True)
class PFGMProcess(PFGMPPProcess):
    """Attributes:
      z_min, z_max: the sampling range of z (the paper: 1e-3 and 40; the prior lives at z_max).
      perturb_std: sigma of the training perturbation eps (the paper: 0.01).
      tau, max_exponent: the growth factor (1 + tau)^m, m ~ U[0, max_exponent] (the paper's
        tau = 0.03, M = 291: z of the training points spans about 1e-4 to 1e2).
      gamma: the normalisation constant of the field (`normalised_field`; the paper: 5).
      z_exp: only below this z may the velocity lean on the field's x components alone
        (`velocity_from_normalised_field`; the paper's z_exp: 5; 0 reads the ratio only).
      upper_norm: the prior draws' norm is clipped to this (the paper's sampler); None: the
        radius the training perturbation covers, sqrt(N + 1) perturb_std (1 + tau)^M (the
        paper's rule), which is also the largest value allowed.
      sigma_data: the data's standard deviation (scales the network's input, as EDM's c_in).
      rho: exponent of the EDM Heun sampler's grid (its `rho` option overrides it).
    """

    z_min: float = 1e-3
    z_max: float = 40.0
    perturb_std: float = 0.01
    tau: float = 0.03
    max_exponent: float = 291.0
    gamma: float = 5.0
    z_exp: float = 5.0
    upper_norm: float | None = None
    augment_dim: float = dataclasses.field(default=1.0, init=False)
    sigma_min: float = dataclasses.field(default=1e-3, init=False)
    sigma_max: float = dataclasses.field(default=40.0, init=False)
    p_mean: float = dataclasses.field(default=-1.2, init=False)
    p_std: float = dataclasses.field(default=1.2, init=False)

    def __post_init__(self):
        require(self.z_min > 0, f"z_min={self.z_min!r} must be > 0")
        require(self.z_min < self.z_max < math.inf, f"z_max={self.z_max!r} must be finite and > z_min={self.z_min!r}")
        require(self.perturb_std > 0, f"perturb_std={self.perturb_std!r} must be > 0")
        require(self.tau > 0, f"tau={self.tau!r} must be > 0")
        require(self.max_exponent >= 0, f"max_exponent={self.max_exponent!r} must be >= 0")
        require(self.gamma >= 0, f"gamma={self.gamma!r} must be >= 0")
        require(self.z_exp >= 0, f"z_exp={self.z_exp!r} must be >= 0")
        require(self.upper_norm is None or self.upper_norm > 0, f"upper_norm={self.upper_norm!r} must be > 0 or None")
        object.__setattr__(self, "sigma_min", self.z_min)
        object.__setattr__(self, "sigma_max", self.z_max)
        super().__post_init__()

    def time_grid(self, num_steps: int) -> jax.Array:
        """z_max = z_0 > ... > z_N = z_min, geometric (uniform in log z, the paper's grid)."""
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        grid = jnp.geomspace(self.z_max, self.z_min, num_steps + 1, dtype=jnp.float32)
        return grid.at[0].set(self.t_max).at[-1].set(self.t_min_sample)

    def covered_radius(self, dim: int) -> float:
        """sqrt(N + 1) perturb_std (1 + tau)^M: the typical radius |(x - y, z)| of the largest
        training perturbation of N-dimensional data (the paper's upper_norm)."""
        return math.sqrt(dim + 1) * self.perturb_std * math.exp(self.max_exponent * math.log1p(self.tau))

    def prior_norm_bound(self, dim: int) -> float:
        """The prior draws' largest norm: `upper_norm`, at most the covered radius (ValueError
        otherwise: the prior would reach where the network was never trained)."""
        covered = self.covered_radius(dim)
        if self.upper_norm is None:
            return covered
        require(self.upper_norm <= covered * (1 + 1e-6),
                f"upper_norm={self.upper_norm!r} exceeds the radius the training perturbation covers for "
                f"{dim}-dimensional data, sqrt(N + 1) perturb_std (1 + tau)^max_exponent = {covered:.4g}; lower "
                f"upper_norm or raise max_exponent")
        return self.upper_norm

    def prior_sample(self, key, shape):
        """One draw of the kernel at z_max (the D = 1 Student-t: the paper's hemisphere projected
        to the plane), its norm clipped to `prior_norm_bound` (module docstring)."""
        x = super().prior_sample(key, shape)
        bound = self.prior_norm_bound(math.prod(shape))
        norm = jnp.linalg.norm(x)
        return x * jnp.minimum(1.0, bound / jnp.maximum(norm, 1e-30)).astype(x.dtype)

    def training_perturbation(self, key: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One training point (x [*shape], z []) above the data point y (module docstring)."""
        key_m, key_eps = jax.random.split(key)
        m = jax.random.uniform(key_m, (), minval=0.0, maxval=self.max_exponent)
        eps = self.perturb_std * jax.random.normal(key_eps, (y.size + 1,))
        growth = jnp.exp(m * math.log1p(self.tau))
        x = y + (growth * eps[:-1]).reshape(y.shape).astype(y.dtype)
        z = jnp.maximum(growth * jnp.abs(eps[-1]), 1e-10)
        return x, z.astype(y.dtype)

    # --- the normalised field: one home for its formula, used by the objective and the views ---
    def normalised_field(self, field: jax.Array) -> jax.Array:
        """T = sqrt(N) G / (|G| + gamma) for fields G [..., N + 1] (eq. 8 with the paper's code's
        normalisation; G = (E[y | x, z] - x, -z) is the field with coefficients summing to 1)."""
        n = field.shape[-1] - 1
        return math.sqrt(n) * field / (jnp.linalg.norm(field, axis=-1, keepdims=True) + self.gamma)

    def velocity_from_normalised_field(self, field: jax.Array, z: jax.Array) -> jax.Array:
        """dx/dz = E_x / E_z [N] of a normalised field T [N + 1] at height z, read in two ways.

        The ratio T_x / T_z. Its relative error is a model's error over c = |T_z| / sqrt(N) =
        z / (|G| + gamma), small near the data at small z and in the far field near the plane
        (the paper, appendix B.2.3, replaces T_z below z_exp by its exact value). The inversion:
        G's z component is -z, so n = |T_x| / sqrt(N) = a / (sqrt(a^2 + z^2) + gamma), a = |G_x|,
        inverts exactly to

            a = n (gamma + sqrt(n^2 gamma^2 + (1 - n^2) z^2)) / (1 - n^2),

        G_x = a T_x / |T_x| and dx/dz = G_x / G_z = -G_x / z (the paper's code drops z under the
        root); its relative error is a model's error over about 1 - n^2, small where |G| is not
        >> gamma. The velocity is w inverted + (1 - w) ratio with w = (1 - n^2) / (1 - n^2 + c),
        each reading weighted by how well it is conditioned (n clipped below 1), and the ratio
        read as -T_x / |T_z| (the exact E_z is < 0): then (1 - w) ratio = -T_x / (sqrt(N) (1 - n^2
        + c)) is bounded and continuous where a model's T_z crosses 0, which T_x / T_z is not
        (a learned T_z of the wrong sign would reverse the flow). Exact for the exact field.
        z_exp >= 0 bounds where the inversion may serve: w = 0 for z > z_exp (0: ratio only)."""
        n = self._clipped_norm(field)
        conditioning = 1.0 - n**2
        weight = conditioning / (conditioning + jnp.abs(field[-1]) / math.sqrt(field.shape[-1] - 1))
        weight = jnp.where(z > self.z_exp, 0.0, weight)
        return weight * self.velocity_by_inversion(field, z) + (1.0 - weight) * self.velocity_by_ratio(field)

    def velocity_by_ratio(self, field: jax.Array) -> jax.Array:
        """T_x / T_z with T_z read as -|T_z| (see `velocity_from_normalised_field`)."""
        return -field[:-1] / jnp.abs(field[-1])

    def velocity_by_inversion(self, field: jax.Array, z: jax.Array) -> jax.Array:
        """-G_x / z with G_x recovered from T_x alone (see `velocity_from_normalised_field`)."""
        n = self._clipped_norm(field)
        a = n * (self.gamma + jnp.sqrt(n**2 * self.gamma**2 + (1.0 - n**2) * z**2)) / (1.0 - n**2)
        return -(a / jnp.maximum(jnp.linalg.norm(field[:-1]), 1e-30)) * field[:-1] / z

    def _clipped_norm(self, field: jax.Array) -> jax.Array:
        return jnp.minimum(jnp.linalg.norm(field[:-1]) / math.sqrt(field.shape[-1] - 1), 1.0 - 1e-3)
