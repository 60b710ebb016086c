"""The process of a continuous normalising flow (Chen et al. 2018; FFJORD, Grathwohl et al.
2019): a time range and a standard normal prior at T, nothing else.

The network is the velocity v(x, t) of dx/dt = v, which carries data at t = 0 to the prior at
t = T, so that

    log p_0(x) = log N(z(T); 0, I) + int_0^T div v(z(t), t) dt,      z(0) = x,

is exact (the instantaneous change of variables). There is no perturbation kernel, no score
and no reverse-time SDE: training maximises that likelihood (objectives/maximum_likelihood.py),
sampling runs the ODE from the prior (the probability-flow sampler on the velocity view) and
the evaluation's NLL is the same integral. A trained end time (FFJORD) lives in the network
(nets/concatsquash.py), so T here stays 1.
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax

from genjax.processes.base import require, standard_normal_log_prob, uniform_time_grid


@dataclasses.dataclass(frozen=True)
class ContinuousNormalizingFlow:
    """Attributes:
      t_max: T, where the prior N(0, I) lives.
      t_min_sample: where sampling stops and the likelihood starts (0: the data).
    """

    t_max: float = 1.0
    t_min_sample: float = 0.0
    has_score: ClassVar[bool] = False
    has_reverse_sde: ClassVar[bool] = False
    reverse_sde_note: ClassVar[str] = " (a CNF's velocity is not the probability flow of a score)"

    def __post_init__(self):
        require(0 < self.t_max < math.inf, f"t_max={self.t_max!r} must be > 0 and finite")
        require(0 <= self.t_min_sample < self.t_max,
                f"t_min_sample={self.t_min_sample!r} must lie in [0, t_max={self.t_max!r})")

    def prior_sample(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        return jax.random.normal(key, shape)

    def prior_log_prob(self, z: jax.Array) -> jax.Array:
        return standard_normal_log_prob(z)

    def time_grid(self, num_steps: int) -> jax.Array:
        """T = t_0 > ... > t_N = t_min_sample, uniform (for fixed-step ODE solvers)."""
        return uniform_time_grid(self.t_max, self.t_min_sample, num_steps)
