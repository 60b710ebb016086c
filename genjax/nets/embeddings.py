"""Embeddings of the scalar time / noise level that condition the networks."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import flax.linen as nn


def sinusoidal_embedding(t: jax.Array, dim: int, max_period: float = 10_000.0, endpoint: bool = False) -> jax.Array:
    """Transformer-style sinusoidal features of a scalar per example (Vaswani et al. 2017;
    used for diffusion time by Ho et al. 2020):

        emb(t) = [cos(t w_0), ..., cos(t w_{h-1}), sin(t w_0), ..., sin(t w_{h-1})],
        w_i = max_period^(-i / h),  h = dim / 2,

    or w_i = max_period^(-i / (h - 1)) with `endpoint` (the lowest frequency is exactly
    1 / max_period: DDPM's and score_sde's `get_timestep_embedding`, EDM's endpoint=True).

    Args:
      t: [B] times (already scaled by the caller, e.g. 1000 t for t in [0, 1]).
      dim: even embedding width (at least 4 with `endpoint`).
    """
    if dim % 2 or (endpoint and dim < 4):
        raise ValueError(f"sinusoidal embedding width must be even (and >= 4 with endpoint), got {dim}")
    half = dim // 2
    denominator = half - 1 if endpoint else half
    frequencies = jnp.exp(-jnp.log(max_period) * jnp.arange(half, dtype=jnp.float32) / denominator)
    angles = t.astype(jnp.float32)[:, None] * frequencies[None, :]
    return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)


class GaussianFourierEmbedding(nn.Module):
    """Random Fourier features with a fixed (non-trained) Gaussian frequency matrix
    (Tancik et al. 2020; used for noise levels by Song et al. 2021):

        emb(t) = [sin(2 pi t W), cos(2 pi t W)],  W ~ N(0, scale^2), not trained.
    """

    dim: int
    scale: float = 16.0

    @nn.compact
    def __call__(self, t: jax.Array) -> jax.Array:
        w = self.param("frequencies", nn.initializers.normal(stddev=self.scale), (self.dim // 2,))
        return fourier_features(t, jax.lax.stop_gradient(w))


def fourier_features(t: jax.Array, frequencies: jax.Array) -> jax.Array:
    """[sin(2 pi t W), cos(2 pi t W)] for t [B] and frequencies W [dim / 2] -> [B, dim]."""
    angles = 2.0 * jnp.pi * t.astype(jnp.float32)[:, None] * frequencies.astype(jnp.float32)[None, :]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
