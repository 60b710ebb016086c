"""The interface every diffusion process (a forward SDE with Gaussian marginals) implements.

A forward Ito SDE on [0, T],

    dx = f(x, t) dt + g(t) dw,                                              (Song et al. 2021, eq. 5)

whose transition kernel from data is Gaussian, p_{0t}(x_t | x_0) = N(alpha(t) x_0, sigma(t)^2 I).
Its time reversal (Anderson 1982) is

    dx = [f(x, t) - g(t)^2 grad_x log p_t(x)] dt + g(t) dw_bar,             (eq. 6)

and the deterministic probability-flow ODE with the same marginals is

    dx/dt = f(x, t) - 1/2 g(t)^2 grad_x log p_t(x).                         (eq. 13)

A process knows nothing about networks; samplers and objectives combine the two.
All methods act on a single example or a batch alike (t broadcasts against x by the
caller); they are pure and safe to close over inside `jax.jit`.
"""
from __future__ import annotations

import abc
import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class DiffusionProcess(abc.ABC):
    """Forward SDE with an affine Gaussian transition kernel from the data.

    Attributes:
      t_max: terminal time T (the prior lives at T).
      t_min_train: smallest t drawn during training (avoids the sigma -> 0 singularity).
      t_min_sample: time at which sampling stops (integration runs from T down to it).
    """

    t_max: float = 1.0
    t_min_train: float = 1e-5
    t_min_sample: float = 1e-3
    # False for a path with no reverse-time SDE (PFGM++): stochastic samplers refuse it.
    has_reverse_sde: ClassVar[bool] = True

    def __post_init__(self):
        """Checks the time range: 0 < t_min_train < t_max and 0 <= t_min_sample < t_max
        (t_min_train > 0 keeps sigma(t) > 0 in the training loss)."""
        require(0 < self.t_max < math.inf, f"t_max={self.t_max!r} must be > 0 and finite")
        require(0 < self.t_min_train < self.t_max,
                f"t_min_train={self.t_min_train!r} must lie in (0, t_max={self.t_max!r})")
        require(0 <= self.t_min_sample < self.t_max,
                f"t_min_sample={self.t_min_sample!r} must lie in [0, t_max={self.t_max!r})")

    # --- the SDE -------------------------------------------------------------------------
    @abc.abstractmethod
    def drift(self, x: jax.Array, t: jax.Array) -> jax.Array:
        """f(x, t) for a scalar t (a single example or a batch sharing t)."""

    @abc.abstractmethod
    def diffusion(self, t: jax.Array) -> jax.Array:
        """g(t), a scalar per time (the noise is isotropic)."""

    # --- the Gaussian transition kernel p_{0t}(x_t | x_0) = N(alpha x_0, sigma^2 I) ---------
    @abc.abstractmethod
    def marginal_coefficients(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(alpha(t), sigma(t)) of the transition kernel from data at time 0."""

    def marginal_mean_std(self, x0: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Mean alpha(t) x_0 and standard deviation sigma(t) of x_t given x_0 (scalar t)."""
        alpha, sigma = self.marginal_coefficients(t)
        return alpha * x0, sigma

    def perturb(self, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
        """x_t = alpha(t) x_0 + sigma(t) noise, with noise drawn by `perturbation_noise` (N(0, I) for a
        Gaussian kernel); t is a scalar."""
        alpha, sigma = self.marginal_coefficients(t)
        return alpha * x0 + sigma * noise

    def perturbation_noise(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        """One example's n in x_t = alpha x_0 + sigma n, drawn from the kernel's standardised
        law: N(0, I) here; a heavy-tailed kernel (PFGM++) overrides this and the next method."""
        return jax.random.normal(key, shape)

    def perturbation_noise_log_prob(self, n: jax.Array) -> jax.Array:
        """log-density of the standardised law at one example's n (sums over n's axes)."""
        return standard_normal_log_prob(n)

    # --- the prior at t = T -----------------------------------------------------------------
    @abc.abstractmethod
    def prior_sample(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        """Draw from p_T (shape includes any batch axes)."""

    @abc.abstractmethod
    def prior_log_prob(self, z: jax.Array) -> jax.Array:
        """log p_T(z) for a single example z (sums over all of z's axes)."""

    # --- the sampling grid ---------------------------------------------------------------------
    def time_grid(self, num_steps: int) -> jax.Array:
        """The N + 1 times T = t_0 > t_1 > ... > t_N = t_min_sample (float32) on which the
        fixed-step samplers step, N = `num_steps`. Default: uniform in t, the grid of
        Song et al. (2021) for VP and sub-VP, which for VE (sigma geometric in t) is the
        geometric noise grid of SMLD (Karras et al. 2022, Table 1, "time steps" rows).
        A formulation with a better grid overrides this (EDM: rho-spaced sigma)."""
        return uniform_time_grid(self.t_max, self.t_min_sample, num_steps)

    # --- training-time distribution ---------------------------------------------------------
    def sample_training_time(self, key: jax.Array) -> jax.Array:
        """One scalar training time t. Default: t ~ U(t_min_train, t_max); a process with a
        preferred noise-level distribution (EDM's log-normal sigma) overrides this."""
        return jax.random.uniform(key, (), minval=self.t_min_train, maxval=self.t_max)

    # --- the reverse-time dynamics, given a score --------------------------------------------
    def reverse_drift(self, x: jax.Array, t: jax.Array, score: jax.Array) -> jax.Array:
        """Drift of the reverse-time SDE, f - g^2 score (Anderson 1982; Song et al. eq. 6)."""
        return self.drift(x, t) - self.diffusion(t) ** 2 * score

    def probability_flow_drift(self, x: jax.Array, t: jax.Array, score: jax.Array) -> jax.Array:
        """Velocity of the probability-flow ODE, f - g^2 score / 2 (Song et al. eq. 13)."""
        return self.drift(x, t) - 0.5 * self.diffusion(t) ** 2 * score


def uniform_time_grid(t_max: float, t_min: float, num_steps: int) -> jax.Array:
    """The N + 1 times t_max = t_0 > ... > t_N = t_min, uniform (float32), N = num_steps >= 1."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    return jnp.linspace(t_max, t_min, num_steps + 1, dtype=jnp.float32)


def require(condition, message: str) -> None:
    """ValueError(message) unless `condition` holds. A NaN parameter fails every check
    written as `value > bound`. A traced condition (parameters under a jax transform)
    is not checked."""
    if isinstance(condition, jax.core.Tracer):
        return
    if not condition:
        raise ValueError(message)


def standard_normal_log_prob(z: jax.Array) -> jax.Array:
    """log N(z; 0, I) summed over every axis of z."""
    return -0.5 * jnp.sum(z**2) - 0.5 * z.size * jnp.log(2.0 * jnp.pi)
