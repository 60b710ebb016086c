"""The two blocks of DDPM++ / NCSN++ (Song et al. 2021, appendix H; score_sde's
`ResnetBlockBigGANpp` and `AttnBlockpp`, EDM's `UNetBlock` with adaptive_scale=False).

Residual block (BigGAN-style, Brock et al. 2019), with s = 1/sqrt(2) if skip_rescale else 1:

    h = conv3x3(resample(act(GN(x)))) + Dense(emb),
    h = conv3x3_0(dropout(act(GN(h)))),
    out = s (skip(resample(x)) + h),   skip = conv1x1 when the width or the resolution changes,

where conv3x3_0 starts at ~0 (so the block starts as s x), act = SiLU and resample is the
FIR up/down-sampling of `resampling`. `emb` is the (already activated) noise/label embedding.

Self-attention (one head over the H W positions, softmax in float32):

    q, k, v = Dense(GN(x)),  out = s (x + Dense_0(softmax(q k^T / sqrt(C)) v)).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from genjax.nets.unet import resampling
from genjax.nets.unet.layers import conv, dense, group_norm, variance_init

RESAMPLES = (None, "up", "down")


class ResidualBlock(nn.Module):
    """x [B, H, W, C_in], emb [B, E] -> [B, H', W', out_channels] (H' = 2H, H/2 or H by `resample`).

    Attributes:
      out_channels: output width.
      resample: None, "up" or "down".
      resample_filter: the 1-D FIR filter of the resampling ((1, 1) or (1, 3, 3, 1)).
      dropout: dropout probability before the last convolution (when train is True).
      skip_rescale: multiply the sum by 1/sqrt(2).
      init_scale: initial variance scale of the last convolution (0: ~0, an identity block).
      dtype: compute dtype.
      tap_kernel_gradient: in train mode, the convolutions' kernel gradients tap by tap on CPU
        (`conv_weight_grad`; reverse mode only).
    """

    out_channels: int
    resample: str | None = None
    resample_filter: Sequence[int] = (1, 1)
    dropout: float = 0.1
    skip_rescale: bool = True
    init_scale: float = 0.0
    dtype: Any = jnp.float32
    tap_kernel_gradient: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, emb: jax.Array, train: bool) -> jax.Array:
        taps = bool(train and self.tap_kernel_gradient)
        if self.resample not in RESAMPLES:
            raise ValueError(f"resample={self.resample!r} is not one of {RESAMPLES}")
        h = nn.silu(group_norm(x.shape[-1], self.dtype)(x))
        if self.resample == "up":
            h, x = resampling.upsample(h, self.resample_filter), resampling.upsample(x, self.resample_filter)
        elif self.resample == "down":
            h, x = resampling.downsample(h, self.resample_filter), resampling.downsample(x, self.resample_filter)
        h = conv(self.out_channels, 3, self.dtype, tap_kernel_gradient=taps)(h)
        h = h + dense(self.out_channels, self.dtype)(emb)[:, None, None, :]
        h = nn.silu(group_norm(self.out_channels, self.dtype)(h))
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        h = conv(self.out_channels, 3, self.dtype, init_scale=self.init_scale, tap_kernel_gradient=taps)(h)
        if x.shape[-1] != self.out_channels or self.resample is not None:
            x = conv(self.out_channels, 1, self.dtype, name="skip", tap_kernel_gradient=taps)(x)
        out = x + h
        return out / math.sqrt(2.0) if self.skip_rescale else out


class AttentionBlock(nn.Module):
    """Single-head self-attention over positions, x [B, H, W, C] -> [B, H, W, C]."""

    skip_rescale: bool = True
    init_scale: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        batch, height, width, channels = x.shape
        h = group_norm(channels, self.dtype)(x)
        # One 3C projection = score_sde's three NINs (variance 0.1 / C each) = EDM's qkv conv.
        qkv = nn.Dense(3 * channels, kernel_init=variance_init(0.2), bias_init=nn.initializers.zeros,
                       dtype=self.dtype, param_dtype=jnp.float32, name="qkv")(h)
        q, k, v = jnp.split(qkv.reshape(batch, height * width, 3 * channels), 3, axis=-1)
        logits = jnp.einsum("bqc,bkc->bqk", q.astype(jnp.float32), k.astype(jnp.float32)) / math.sqrt(channels)
        weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        attended = jnp.einsum("bqk,bkc->bqc", weights, v).reshape(batch, height, width, channels)
        out = x + dense(channels, self.dtype, init_scale=self.init_scale, name="proj")(attended)
        return out / math.sqrt(2.0) if self.skip_rescale else out


class ConvDownsample(nn.Module):
    """StyleGAN2's fused 3x3 convolution + FIR down-sampling (score_sde's conv_downsample_2d,
    EDM's fused_resample), x [B, H, W, C] -> [B, H / 2, W / 2, features]: the convolution,
    zero-padded by 1 + (K - 1) // 2, is evaluated at full resolution and the filter then
    strides over it unpadded, so border pixels see the fused op's zero padding (a SAME conv
    followed by a padded `resampling.downsample` would not)."""

    features: int
    resample_filter: Sequence[int] = (1, 3, 3, 1)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, tap_kernel_gradient: bool = False) -> jax.Array:
        p = 1 + (len(self.resample_filter) - 1) // 2
        h = conv(self.features, 3, self.dtype, padding=((p, p), (p, p)), tap_kernel_gradient=tap_kernel_gradient)(x)
        return resampling.downsample(h, self.resample_filter, pad=False)
