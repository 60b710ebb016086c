"""The U-Nets' conditioning vector from the noise level and an optional class label
(score_sde's NCSN++/DDPM++ mapping; EDM's SongUNet mapping with its label layer):

    e = features(c) + Dense(sqrt(N) onehot(y)),      emb = act(Dense(act(Dense(e)))),

c = noise_level_scale * noise_level (or its log), features = sinusoidal ('positional',
DDPM++) or Gaussian Fourier ('fourier', NCSN++). The label term is EDM's: a linear layer on
the scaled one-hot of N classes. A dropped or absent label is a zero one-hot, so its
embedding is the label layer's bias alone: that is the null label of classifier-free
guidance (Ho & Salimans 2022). Labels are dropped with probability `label_dropout` when
train is True, from the "dropout" rng.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from genjax.nets.embeddings import GaussianFourierEmbedding, fourier_features, sinusoidal_embedding
from genjax.nets.unet.layers import dense

EMBEDDINGS = ("positional", "fourier")
# EDM draws its Fourier frequencies once into a buffer; here they are a constant of this seed.
FOURIER_CONSTANT_SEED = 0


class NoiseLabelEmbedding(nn.Module):
    """(noise_level [B], label [B] int or None, train) -> emb [B, embedding_channels], activated.

    Attributes:
      noise_channels: width of the noise features (and of the label embedding).
      embedding_channels: width of the output.
      embedding: "positional" or "fourier".
      fourier_scale: standard deviation of the Fourier frequencies.
      fourier_as_params: keep the (never trained) Fourier frequencies as a stop-gradient
        parameter, as score_sde does; False derives them from a fixed seed, as EDM's buffer,
        so they are not counted among the parameters.
      noise_level_scale: the noise level is multiplied by this first (999 maps DDPM++'s
        t in [0, 1] to score_sde's continuous labels).
      log_noise_level: embed log(noise_level) (score_sde's NCSN++ embeds log sigma).
      num_classes: 0 for unconditional.
      label_dropout: probability of replacing a label by the null label when training.
    """

    noise_channels: int
    embedding_channels: int
    embedding: str = "positional"
    fourier_scale: float = 16.0
    fourier_as_params: bool = False
    noise_level_scale: float = 1.0
    log_noise_level: bool = False
    num_classes: int = 0
    label_dropout: float = 0.0

    @nn.compact
    def __call__(self, noise_level: jax.Array, label: jax.Array | None, train: bool) -> jax.Array:
        c = noise_level.astype(jnp.float32)
        c = jnp.log(c) if self.log_noise_level else c
        c = c * self.noise_level_scale
        if self.embedding == "positional":
            half = self.noise_channels // 2
            emb = sinusoidal_embedding(c, self.noise_channels, endpoint=True)
            emb = jnp.concatenate([emb[:, half:], emb[:, :half]], axis=-1)  # [sin, cos] as score_sde and EDM
        elif self.fourier_as_params:
            emb = GaussianFourierEmbedding(self.noise_channels, self.fourier_scale, name="fourier")(c)
        else:
            key = jax.random.key(FOURIER_CONSTANT_SEED)
            emb = fourier_features(c, self.fourier_scale * jax.random.normal(key, (self.noise_channels // 2,)))
        if self.num_classes:
            onehot = jnp.zeros((c.shape[0], self.num_classes), jnp.float32)
            if label is not None:
                onehot = jax.nn.one_hot(label, self.num_classes, dtype=jnp.float32)
                if train and self.label_dropout > 0:
                    keep = jax.random.uniform(self.make_rng("dropout"), (c.shape[0], 1)) >= self.label_dropout
                    onehot = onehot * keep
            emb = emb + dense(self.noise_channels, jnp.float32, name="label")(onehot * math.sqrt(self.num_classes))
        emb = nn.silu(dense(self.embedding_channels, jnp.float32)(emb))
        return nn.silu(dense(self.embedding_channels, jnp.float32)(emb))
