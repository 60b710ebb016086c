"""DDPM++ and NCSN++ (Song et al. 2021, "Score-Based Generative Modeling through SDEs",
appendix H; score_sde's models/ncsnpp.py) and EDM's SongUNet (Karras et al. 2022, which
re-implements the same architecture), as one network with three sets of defaults.

    emb = NoiseLabelEmbedding(noise_level, condition)
    encoder: conv3x3, then per level l = 0..L-1 (resolution R / 2^l, width C m_l):
             num_blocks x [ResidualBlock (+ Attention where the resolution is in
             attn_resolutions)], then (l < L-1) a down-sampling ResidualBlock, combined with
             the input pyramid ('input_skip': h + conv1x1(down(aux)); 'residual':
             h = aux = s (h + conv3x3_down(aux)));  every output is kept as a skip.
    middle:  ResidualBlock, Attention, ResidualBlock.
    decoder: per level from L-1 down to 0: (num_blocks + 1) x ResidualBlock on [h, skip]
             (+ Attention after the last where the resolution is in attn_resolutions);
             'output_skip' adds conv3x3_0(act(GN(h))) to the up-sampled output pyramid;
             then (l > 0) an up-sampling ResidualBlock.
    output:  conv3x3_0(act(GN(h))) (or the output pyramid), divided by the noise level
             when scale_output_by_noise_level (score_sde's scale_by_sigma).

Names: score_sde's progressive_input 'none' / 'input_skip' / 'residual' is EDM's
encoder_type 'standard' / 'skip' / 'residual'; progressive 'none' / 'output_skip' is EDM's
decoder_type 'standard' / 'skip'. Blocks are BigGAN-style (score_sde's resblock_type='biggan'
is the only block of EDM and of both CIFAR-10 configs).

The network is F(x, noise_level, condition): x [B, H, W, C] NHWC, noise_level [B],
condition None or int labels [B]; it returns float32 [B, H, W, out_channels or C].
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from genjax.nets.unet import resampling
from genjax.nets.unet.blocks import AttentionBlock, ConvDownsample, ResidualBlock
from genjax.nets.unet.conditioning import EMBEDDINGS, NoiseLabelEmbedding
from genjax.nets.unet.layers import conv, group_norm

PROGRESSIVE_INPUTS = ("none", "input_skip", "residual")
PROGRESSIVE_OUTPUTS = ("none", "output_skip")
DTYPES = ("float32", "bfloat16", "float16")


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


class SongUNet(nn.Module):
    """The U-Net of DDPM++ / NCSN++ / EDM's SongUNet; defaults are EDM's SongUNet class defaults.

    Attributes:
      out_channels: output channels; None gives the input's.
      model_channels: base width (score_sde's nf).
      channel_mult: width multiplier per resolution level; L = len(channel_mult) levels.
      num_blocks: residual blocks per level in the encoder (the decoder has one more).
      attn_resolutions: resolutions (image height at the level) with self-attention.
      dropout: dropout probability in the residual blocks (train only).
      embedding: "positional" (DDPM++) or "fourier" (NCSN++) noise features.
      noise_channels_mult: noise-feature width = model_channels * this (1 DDPM++, 2 NCSN++).
      embedding_mult: conditioning width = model_channels * this.
      fourier_scale, fourier_as_params, noise_level_scale, log_noise_level: see
        `conditioning.NoiseLabelEmbedding`.
      scale_output_by_noise_level: divide the output by the noise level (score_sde's
        scale_by_sigma, for a VE score network fed sigma).
      resample_filter: FIR filter of all up/down-sampling: (1, 1) or (1, 3, 3, 1).
      progressive_input: "none", "input_skip" or "residual" input pyramid.
      progressive: "none" or "output_skip" output pyramid.
      skip_rescale: residual sums are multiplied by 1/sqrt(2).
      init_scale: initial variance scale of the layers closing each residual branch and of
        the output layer (0: ~0; score_sde's init_scale, EDM's init_zero).
      num_classes: 0 (unconditional) or the number of class labels.
      label_dropout: probability of the null label when training (classifier-free guidance).
      dtype: compute dtype "float32", "bfloat16" or "float16"; parameters stay float32,
        the noise/label embedding and attention softmax run in float32, the output is float32.
      remat: rematerialise each residual block in the backward pass (less memory, more compute).
      tap_kernel_gradient: in train mode, compute the convolutions' kernel gradients tap by tap
        on CPU, 3-6x faster there than XLA's backward-filter convolution (`conv_weight_grad`;
        same parameters, same forward pass, native on GPU/TPU). It is reverse-mode only: set it
        False to differentiate the network in forward mode in train mode (e.g. a CNF's
        maximum-likelihood loss); eval mode always uses the plain convolution.
    """

    out_channels: int | None = None
    model_channels: int = 128
    channel_mult: Sequence[int] = (1, 2, 2, 2)
    num_blocks: int = 4
    attn_resolutions: Sequence[int] = (16,)
    dropout: float = 0.1
    embedding: str = "positional"
    noise_channels_mult: int = 1
    embedding_mult: int = 4
    fourier_scale: float = 16.0
    fourier_as_params: bool = False
    noise_level_scale: float = 1.0
    log_noise_level: bool = False
    scale_output_by_noise_level: bool = False
    resample_filter: Sequence[int] = (1, 1)
    progressive_input: str = "none"
    progressive: str = "none"
    skip_rescale: bool = True
    init_scale: float = 0.0
    num_classes: int = 0
    label_dropout: float = 0.0
    dtype: Any = "float32"
    remat: bool = False
    tap_kernel_gradient: bool = True

    def __post_init__(self):
        for name in ("channel_mult", "attn_resolutions", "resample_filter"):  # config lists -> hashable tuples
            object.__setattr__(self, name, tuple(getattr(self, name)))
        self._check_attributes()
        super().__post_init__()

    def _check_attributes(self):
        if self.out_channels is not None and not _positive_int(self.out_channels):
            raise ValueError(f"out_channels={self.out_channels!r} must be a positive integer or None (the input's)")
        for name in ("model_channels", "num_blocks", "noise_channels_mult", "embedding_mult"):
            if not _positive_int(getattr(self, name)):
                raise ValueError(f"{name}={getattr(self, name)!r} must be a positive integer")
        if not (len(self.channel_mult) >= 1 and all(_positive_int(m) for m in self.channel_mult)):
            raise ValueError(f"channel_mult={tuple(self.channel_mult)!r} must be a non-empty sequence of positive integers")
        if not all(_positive_int(r) for r in self.attn_resolutions):
            raise ValueError(f"attn_resolutions={tuple(self.attn_resolutions)!r} must be positive integers")
        if self.embedding not in EMBEDDINGS:
            raise ValueError(f"embedding={self.embedding!r} is not known; choose one of {EMBEDDINGS}")
        noise_channels = self.model_channels * self.noise_channels_mult
        if noise_channels % 2 or noise_channels < 4:
            raise ValueError(f"model_channels * noise_channels_mult = {noise_channels} must be even and at least 4")
        if self.progressive_input not in PROGRESSIVE_INPUTS:
            raise ValueError(f"progressive_input={self.progressive_input!r} is not known; choose one of {PROGRESSIVE_INPUTS}")
        if self.progressive not in PROGRESSIVE_OUTPUTS:
            raise ValueError(f"progressive={self.progressive!r} is not known; choose one of {PROGRESSIVE_OUTPUTS}")
        for name in ("dropout", "label_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be a probability in [0, 1]")
        if not (isinstance(self.num_classes, int) and self.num_classes >= 0):
            raise ValueError(f"num_classes={self.num_classes!r} must be a non-negative integer (0: unconditional)")
        if self.label_dropout and not self.num_classes:
            raise ValueError(f"label_dropout={self.label_dropout!r} needs num_classes > 0 (a class-conditional network)")
        if str(jnp.dtype(self.dtype)) not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r} is not supported; choose one of {DTYPES}")
        resampling.filter_2d(self.resample_filter)

    def _check_inputs(self, x, noise_level, condition):
        name = type(self).__name__
        if x.ndim != 4:
            raise ValueError(f"{name} takes images x of shape [B, H, W, C] (NHWC); got shape {tuple(x.shape)}")
        factor = 2 ** (len(self.channel_mult) - 1)
        if x.shape[1] % factor or x.shape[2] % factor:
            raise ValueError(f"{name} with {len(self.channel_mult)} resolution levels needs H and W divisible by "
                             f"{factor}; got {x.shape[1]}x{x.shape[2]} (change channel_mult or the image size)")
        if noise_level.shape != x.shape[:1]:
            raise ValueError(f"{name} takes noise_level of shape [B] = {tuple(x.shape[:1])}; got {tuple(noise_level.shape)}")
        if condition is not None and not self.num_classes:
            raise ValueError(f"{name} is unconditional (num_classes=0) but was given class labels; "
                             f"set num_classes or pass condition=None")
        if condition is not None and condition.shape != x.shape[:1]:
            raise ValueError(f"{name} takes condition of shape [B] = {tuple(x.shape[:1])}; got {tuple(condition.shape)}")

    @nn.compact
    def __call__(self, x: jax.Array, noise_level: jax.Array, condition: jax.Array | None = None, *,
                 train: bool = False) -> jax.Array:
        noise_level = jnp.asarray(noise_level)
        self._check_inputs(x, noise_level, condition)
        dtype = jnp.dtype(self.dtype)
        out_channels = self.out_channels or x.shape[-1]
        taps = bool(train and self.tap_kernel_gradient)
        emb = NoiseLabelEmbedding(
            noise_channels=self.model_channels * self.noise_channels_mult,
            embedding_channels=self.model_channels * self.embedding_mult, embedding=self.embedding,
            fourier_scale=self.fourier_scale, fourier_as_params=self.fourier_as_params,
            noise_level_scale=self.noise_level_scale, log_noise_level=self.log_noise_level,
            num_classes=self.num_classes, label_dropout=self.label_dropout, name="embedding",
        )(noise_level, condition, train)
        emb = emb.astype(dtype)

        # Explicit names: the parameter tree (and a checkpoint) is the same with and without remat.
        block_cls = nn.remat(ResidualBlock, static_argnums=(3,)) if self.remat else ResidualBlock
        block_names = []

        def block(h, channels, resample=None):
            name = f"ResidualBlock_{len(block_names)}"
            block_names.append(name)
            return block_cls(channels, resample=resample, resample_filter=self.resample_filter, dropout=self.dropout,
                             skip_rescale=self.skip_rescale, init_scale=self.init_scale, dtype=dtype,
                             tap_kernel_gradient=self.tap_kernel_gradient, name=name)(h, emb, train)

        def attention(h):
            return AttentionBlock(skip_rescale=self.skip_rescale, init_scale=self.init_scale, dtype=dtype)(h)

        def rescale(h):
            return h / math.sqrt(2.0) if self.skip_rescale else h

        num_levels = len(self.channel_mult)
        x = x.astype(dtype)
        aux = x
        h = conv(self.model_channels, 3, dtype, tap_kernel_gradient=taps)(x)
        skips = [h]
        for level, mult in enumerate(self.channel_mult):
            for _ in range(self.num_blocks):
                h = block(h, self.model_channels * mult)
                if h.shape[1] in self.attn_resolutions:
                    h = attention(h)
                skips.append(h)
            if level < num_levels - 1:
                h = block(h, h.shape[-1], resample="down")
                if self.progressive_input == "input_skip":
                    aux = resampling.downsample(aux, self.resample_filter)
                    h = h + conv(h.shape[-1], 1, dtype, tap_kernel_gradient=taps)(aux)
                elif self.progressive_input == "residual":
                    aux = h = rescale(h + ConvDownsample(h.shape[-1], self.resample_filter, dtype)(aux, taps))
                skips.append(h)

        h = attention(block(h, h.shape[-1]))
        h = block(h, h.shape[-1])

        pyramid = None
        for level in reversed(range(num_levels)):
            for _ in range(self.num_blocks + 1):
                h = block(jnp.concatenate([h, skips.pop()], axis=-1), self.model_channels * self.channel_mult[level])
            if h.shape[1] in self.attn_resolutions:
                h = attention(h)
            if self.progressive == "output_skip":
                out = self._output_layer(h, out_channels, dtype, taps)
                pyramid = out if pyramid is None else resampling.upsample(pyramid, self.resample_filter) + out
            if level > 0:
                h = block(h, h.shape[-1], resample="up")

        out = pyramid if self.progressive == "output_skip" else self._output_layer(h, out_channels, dtype, taps)
        out = out.astype(jnp.float32)
        if self.scale_output_by_noise_level:
            out = out / noise_level.astype(jnp.float32)[:, None, None, None]
        return out

    def _output_layer(self, h, out_channels, dtype, taps):
        return conv(out_channels, 3, dtype, init_scale=self.init_scale, tap_kernel_gradient=taps)(
            nn.silu(group_norm(h.shape[-1], dtype)(h)))



class DDPMpp(SongUNet):
    """DDPM++ cont. (VP) as score_sde's configs/vp/cifar10_ddpmpp_continuous.py: positional
    embedding of 999 t (t in [0, 1]), no FIR, no pyramids, 4 blocks, channel_mult (1, 2, 2, 2)."""

    noise_level_scale: float = 999.0


class NCSNpp(SongUNet):
    """NCSN++ cont. (VE) as score_sde's configs/ve/cifar10_ncsnpp_continuous.py: Fourier
    embedding (scale 16, frequencies kept as a parameter) of log sigma, FIR (1, 3, 3, 1),
    residual input pyramid, output divided by sigma (the network is fed sigma)."""

    embedding: str = "fourier"
    noise_channels_mult: int = 2
    fourier_as_params: bool = True
    log_noise_level: bool = True
    scale_output_by_noise_level: bool = True
    resample_filter: Sequence[int] = (1, 3, 3, 1)
    progressive_input: str = "residual"
