"""FFJORD's concatsquash MLP, the vector field of the 2-D continuous normalising flows.

Grathwohl et al. 2019 (FFJORD), code `lib/layers/diffeq_layers/basic.py`: every layer
conditions on the time by a gate and a bias that are linear in t,

    ConcatSquashDense(h, t) = (W h + c) * sigmoid(g t + d) + e t,

and the network is a stack of them with the nonlinearity between layers (none after the
last): hidden widths 64-64-64 and tanh in FFJORD's `train_toy.py` defaults (softplus in
its first release).

Trained end time. FFJORD integrates dx/dt = f(x, t) on [0, T] and, with `train_T`, learns
T, stored as a parameter sqrt_end_time with T = sqrt_end_time^2 (so T stays positive).
With t = T s the same flow is dx/ds = T f(x, T s) on s in [0, 1]: that is what this module
returns when `end_time` is set, so the flow runs on the engine's fixed interval [0, 1],
the trained T is an ordinary parameter ("sqrt_end_time", a scalar in the parameter tree)
and gradients reach it through any adjoint (diffrax's backsolve adjoint cannot
differentiate a solve's end time t1, but it can differentiate the field).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn

from genjax.nets.conditioning import check_condition, check_flat_inputs

ACTIVATIONS = {"tanh": nn.tanh, "softplus": nn.softplus, "relu": nn.relu, "elu": nn.elu, "swish": nn.swish}


class ConcatSquashDense(nn.Module):
    """(W h + c) * sigmoid(g t + d [+ E label]) + e t for h [B, F_in], t [B] -> [B, features];
    the label term (a learned gate offset per class) only when num_classes > 0."""

    features: int
    num_classes: int = 0

    @nn.compact
    def __call__(self, h: jax.Array, t: jax.Array, condition: jax.Array | None = None) -> jax.Array:
        t = t[:, None].astype(h.dtype)
        gate = nn.Dense(self.features, name="gate")(t)
        if self.num_classes:
            gate = gate + nn.Embed(self.num_classes, self.features, name="label_gate")(condition).astype(h.dtype)
        gate = nn.sigmoid(gate)
        time_bias = nn.Dense(self.features, use_bias=False, name="time_bias")(t)
        return nn.Dense(self.features, name="linear")(h) * gate + time_bias


class ConcatSquashMLP(nn.Module):
    """(x [B, D], t [B], condition) -> [B, D]: concatsquash layers of widths `hidden_dims`,
    then D (the network contract, `genjax.nets.conditioning`; no dropout).

    Attributes:
      hidden_dims: widths of the hidden layers (FFJORD's toy default 64-64-64).
      activation: nonlinearity between layers, one of ACTIVATIONS.
      end_time: None for the plain field f(x, t); a float T for T f(x, T t), FFJORD's flow
        on [0, T] carried to [0, 1] (module docstring).
      train_end_time: learn T (initialised at `end_time`) as sqrt_end_time^2.
      num_classes: 0 (unconditional) or the number of class labels; each layer's time gate
        then gets a learned offset per class.
    """

    hidden_dims: Sequence[int] = (64, 64, 64)
    activation: str = "tanh"
    end_time: float | None = None
    train_end_time: bool = False
    num_classes: int = 0

    def __post_init__(self):
        dims = self.hidden_dims
        if not (isinstance(dims, (tuple, list)) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 1
                                                        for d in dims)):
            raise ValueError(f"hidden_dims={dims!r} must be a sequence of positive integers, e.g. (64, 64, 64)")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation={self.activation!r} is not known; choose one of {tuple(ACTIVATIONS)}")
        if self.end_time is not None and (isinstance(self.end_time, bool) or not isinstance(self.end_time, (int, float))
                                          or not 0.0 < self.end_time < float("inf")):
            raise ValueError(f"end_time={self.end_time!r} must be None or positive and finite, e.g. 0.5 (FFJORD)")
        if not isinstance(self.train_end_time, bool):
            raise ValueError(f"train_end_time={self.train_end_time!r} must be True or False")
        if self.train_end_time and self.end_time is None:
            raise ValueError("train_end_time=True needs an initial end_time, e.g. end_time=0.5 (FFJORD)")
        if isinstance(self.num_classes, bool) or not (isinstance(self.num_classes, int) and self.num_classes >= 0):
            raise ValueError(f"num_classes={self.num_classes!r} must be a non-negative integer (0: unconditional)")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, noise_level: jax.Array, condition: jax.Array | None = None,
                 train: bool = False) -> jax.Array:
        del train  # no dropout
        check_flat_inputs("ConcatSquashMLP", x, noise_level)
        check_condition("ConcatSquashMLP", condition, self.num_classes, x.shape[0])
        data_dim = x.shape[-1]
        h = x
        t = noise_level.astype(h.dtype)
        scale = None
        if self.end_time is not None:
            if self.train_end_time:
                sqrt_end_time = self.param("sqrt_end_time", lambda _: jnp.sqrt(jnp.asarray(self.end_time, jnp.float32)))
                scale = (sqrt_end_time**2).astype(h.dtype)
            else:
                scale = jnp.asarray(self.end_time, h.dtype)
            t = scale * t
        activation = ACTIVATIONS[self.activation]
        for width in self.hidden_dims:
            h = activation(ConcatSquashDense(width, self.num_classes)(h, t, condition))
        out = ConcatSquashDense(data_dim, self.num_classes)(h, t, condition)
        if scale is not None:
            out = scale * out
        return out


def end_time(params) -> jax.Array | None:
    """The trained end time T = sqrt_end_time^2 in a ConcatSquashMLP's variables (None if
    the network has no trained T)."""
    inner = params.get("params", params)
    if "sqrt_end_time" not in inner:
        return None
    return inner["sqrt_end_time"] ** 2
