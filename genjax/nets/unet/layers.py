"""The U-Nets' building layers with DDPM's initialisation (Ho et al. 2020; kept by score_sde
and EDM's SongUNet):

    W ~ U(-sqrt(3 v), sqrt(3 v)),  v = scale / fan_avg,   biases 0,

scale = 1 for ordinary layers, 1e-10 for the layers that close a residual branch and the
output layer ("init_scale = 0": score_sde's `default_init(0)`, EDM's init_weight = 1e-5
on the standard deviation), so an untrained block is the identity and an untrained network
outputs ~0. Parameters are float32; `dtype` is the compute dtype.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from genjax.nets.unet.conv_weight_grad import conv_general_dilated

# score_sde replaces a zero scale with this variance multiplier (a truly zero weight would
# also do, but then a residual branch's weight gradient starts at exactly 0 for two steps).
ZERO_INIT_VARIANCE = 1e-10


def variance_init(scale: float = 1.0):
    """DDPM's uniform fan-average initialiser; scale 0 means ZERO_INIT_VARIANCE."""
    return nn.initializers.variance_scaling(scale if scale else ZERO_INIT_VARIANCE, "fan_avg", "uniform")


def conv(features: int, kernel_size: int, dtype: Any, init_scale: float = 1.0, name: str | None = None,
         padding: Any = "SAME", tap_kernel_gradient: bool = False) -> nn.Conv:
    """A k x k convolution with bias (SAME-padded unless `padding` says otherwise).
    tap_kernel_gradient: compute the kernel gradient tap by tap on CPU (reverse mode only:
    `conv_weight_grad`); the parameters and the forward pass are the same either way."""
    return nn.Conv(features, (kernel_size, kernel_size), padding=padding, kernel_init=variance_init(init_scale),
                   bias_init=nn.initializers.zeros, dtype=dtype, param_dtype=jnp.float32, name=name,
                   conv_general_dilated=conv_general_dilated if tap_kernel_gradient else None)


def dense(features: int, dtype: Any, init_scale: float = 1.0, name: str | None = None) -> nn.Dense:
    return nn.Dense(features, kernel_init=variance_init(init_scale), bias_init=nn.initializers.zeros,
                    dtype=dtype, param_dtype=jnp.float32, name=name)


def group_norm(channels: int, dtype: Any, name: str | None = None) -> nn.GroupNorm:
    """GroupNorm with min(C / 4, 32) groups and eps 1e-6 (score_sde; EDM's SongUNet)."""
    return nn.GroupNorm(num_groups=max(1, min(channels // 4, 32)), epsilon=1e-6, dtype=dtype, param_dtype=jnp.float32,
                        name=name)
