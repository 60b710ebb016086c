"""The EDM formulation (Karras, Aittala, Aila, Laine 2022, "Elucidating the Design Space
of Diffusion-Based Generative Models", Table 1 and appendix B.2) as a DiffusionProcess.

A noise schedule sigma(t) and a scale schedule s(t) define x = s(t) x_hat with
x_hat ~ p(x_hat; sigma(t)) = p_data * N(0, sigma(t)^2 I). The forward SDE with these
marginals is

    dx = (s'(t) / s(t)) x dt + s(t) sqrt(2 sigma'(t) sigma(t)) dw,

and its Gaussian kernel from x_0 (at t = 0, where sigma(0) = 0) is

    alpha(t) = s(t),    sigma_process(t) = s(t) sigma(t).

The probability-flow ODE f - g^2 score / 2 is then Karras et al.'s eq. 4. EDM's choice
(the default here) is sigma(t) = t, s(t) = 1, so f = 0, g(t) = sqrt(2 t) and time *is* the
noise level; sampling runs on t in [sigma_min, sigma_max] = [0.002, 80]. A subclass may
override `sigma`, `sigma_inverse` and `scale` (all elementwise, differentiable) for another
row of Table 1; drift and diffusion follow by automatic differentiation.

Training draws ln sigma ~ N(P_mean, P_std^2) (Table 1, "noise distribution"); sampling
uses the rho-spaced noise levels of eq. 5 (`sigma_steps`; `time_grid` hands them to every
fixed-step sampler). The prior is N(0, (s(T)
sigma_max)^2 I), which approximates p_T when sigma_max dominates the data scale.
The fields t_max, t_min_train and t_min_sample are derived from sigma_max and sigma_min.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from genjax.processes.base import DiffusionProcess, require, standard_normal_log_prob


def rho_grid(num_steps: int, sigma_min, sigma_max, rho: float) -> jax.Array:
    """Karras et al. eq. 5: sigma_i = (sigma_max^(1/rho) + i / (N - 1) (sigma_min^(1/rho) -
    sigma_max^(1/rho)))^rho, i = 0 .. N - 1, from sigma_0 = sigma_max down to sigma_{N-1} =
    sigma_min (float32; N = `num_steps`)."""
    i = jnp.arange(num_steps, dtype=jnp.float32)
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    return (hi + i / max(num_steps - 1, 1) * (lo - hi)) ** rho


@dataclasses.dataclass(frozen=True)
class EDMProcess(DiffusionProcess):
    """Attributes:
      sigma_min, sigma_max: the noise range of sampling (Table 1: 0.002, 80).
      sigma_data: data standard deviation used by preconditioning and the EDM weighting.
      p_mean, p_std: the log-normal training noise distribution (Table 1: -1.2, 1.2).
      rho: exponent of the sampling time discretisation (eq. 5; 7 by default).
    """

    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 0.5
    p_mean: float = -1.2
    p_std: float = 1.2
    rho: float = 7.0
    t_max: float = dataclasses.field(default=80.0, init=False)
    t_min_train: float = dataclasses.field(default=0.002, init=False)
    t_min_sample: float = dataclasses.field(default=0.002, init=False)

    def __post_init__(self):
        require(self.sigma_min > 0, f"sigma_min={self.sigma_min!r} must be > 0")
        require(self.sigma_min < self.sigma_max < math.inf,
                f"sigma_max={self.sigma_max!r} must be finite and > sigma_min={self.sigma_min!r}")
        require(self.sigma_data > 0, f"sigma_data={self.sigma_data!r} must be > 0")
        require(self.p_std > 0, f"p_std={self.p_std!r} must be > 0")
        require(abs(self.p_mean) < math.inf, f"p_mean={self.p_mean!r} must be finite")
        require(self.rho > 0, f"rho={self.rho!r} must be > 0")
        object.__setattr__(self, "t_max", float(self.sigma_inverse(jnp.float32(self.sigma_max))))
        t_min = float(self.sigma_inverse(jnp.float32(self.sigma_min)))
        object.__setattr__(self, "t_min_train", t_min)
        object.__setattr__(self, "t_min_sample", t_min)
        super().__post_init__()

    # --- schedules (override together for another formulation) -----------------------------
    def sigma(self, t: jax.Array) -> jax.Array:
        """Noise level sigma(t) of x_hat = x / s(t); EDM: sigma(t) = t."""
        return jnp.asarray(t)

    def sigma_inverse(self, sigma: jax.Array) -> jax.Array:
        """t such that sigma(t) = sigma."""
        return jnp.asarray(sigma)

    def scale(self, t: jax.Array) -> jax.Array:
        """Scale s(t); EDM: s(t) = 1."""
        return jnp.ones_like(jnp.asarray(t))

    def _with_derivative(self, fn, t):
        t = jnp.asarray(t, jnp.result_type(float))
        return jax.jvp(fn, (t,), (jnp.ones_like(t),))

    # --- the SDE ---------------------------------------------------------------------------
    def drift(self, x, t):
        s, s_dot = self._with_derivative(self.scale, t)
        return (s_dot / s) * x

    def diffusion(self, t):
        sigma, sigma_dot = self._with_derivative(self.sigma, t)
        return self.scale(t) * jnp.sqrt(2.0 * sigma_dot * sigma)

    def marginal_coefficients(self, t):
        s = self.scale(t)
        return s, s * self.sigma(t)

    # --- prior -----------------------------------------------------------------------------
    def prior_std(self) -> jax.Array:
        """s(T) sigma_max (an array: s may be traced inside jit)."""
        return self.scale(jnp.float32(self.t_max)) * self.sigma_max

    def prior_sample(self, key, shape):
        return self.prior_std() * jax.random.normal(key, shape)

    def prior_log_prob(self, z):
        std = self.prior_std()
        return standard_normal_log_prob(z / std) - z.size * jnp.log(std)

    # --- discretisation and training distribution ------------------------------------------
    def sigma_steps(self, num_steps: int, rho: float | None = None) -> jax.Array:
        """`rho_grid` from sigma_max to sigma_min (eq. 5; the final step to sigma = 0 is not
        included)."""
        return rho_grid(num_steps, self.sigma_min, self.sigma_max, self.rho if rho is None else rho)

    def time_steps(self, num_steps: int, rho: float | None = None) -> jax.Array:
        """The times t_i = sigma^{-1}(sigma_i) of `sigma_steps`."""
        return self.sigma_inverse(self.sigma_steps(num_steps, rho))

    def time_grid(self, num_steps: int) -> jax.Array:
        """The fixed-step samplers' grid: the N + 1 rho-spaced noise levels of eq. 5 from
        sigma_max to sigma_min, as times (Table 1, EDM "time steps"). A grid uniform in
        t = sigma would take steps of (sigma_max - sigma_min) / N in sigma, far coarser than
        the data scale where the data are resolved."""
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        grid = self.time_steps(num_steps + 1).astype(jnp.float32)
        # Pin the end points exactly (the power of rho rounds them in float32).
        return grid.at[0].set(self.t_max).at[-1].set(self.t_min_sample)

    def training_times(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        """t = sigma^{-1}(sigma) with ln sigma ~ N(p_mean, p_std^2) (Table 1)."""
        log_sigma = self.p_mean + self.p_std * jax.random.normal(key, shape)
        return self.sigma_inverse(jnp.exp(log_sigma))

    def sample_training_time(self, key):
        return self.training_times(key, ())
