"""Time-conditioned MLP for low-dimensional data (the 2-D toy sets).

The network maps (x [B, D], t [B], condition) to an output of x's shape (or [B, output_dim]:
PFGM's normalised field has D + 1 components), as the network contract says
(`genjax.nets.conditioning`). It knows nothing about the process: what the output means
(noise, score, velocity) is decided by the objective, and the time argument is whatever
scalar the process conditions on.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import flax.linen as nn

from genjax.nets.conditioning import check_condition, check_flat_inputs
from genjax.nets.embeddings import GaussianFourierEmbedding, sinusoidal_embedding

EMBEDDINGS = ("sinusoidal", "fourier")


class TimeConditionedMLP(nn.Module):
    """Residual MLP with the time features added in every block:

        e = Dense(act(Dense(emb(t)))) [+ Embed(label)],   h = Dense(x) + e,
        h <- h + Dense(Dropout(act(Dense(act(h)) + Dense(act(e)))))     (num_layers times),
        out = Dense(act(h)), zero-initialised so an untrained model outputs 0.

    The label embedding (a learned vector per class, added to the time features as in
    Dhariwal & Nichol 2021) exists only when num_classes > 0; dropout only when train.

    noise_level is [B], or [1]: one level shared by the whole batch (`SHARED_NOISE_LEVEL`),
    whose time branch (the embedding and its layers: 42 % of the FLOPs of configs/default.py's
    MLP, 3 blocks of width 128) is computed once and broadcast; the same numbers as [B]
    copies of it.

    Attributes:
      hidden_dim: width of every hidden layer.
      num_layers: number of residual blocks.
      embedding: "sinusoidal" or "fourier" features of the time.
      embedding_dim: width of the time features.
      time_scale: t is multiplied by this before the embedding (1000 maps t in [0, 1] onto
        the range the sinusoidal frequencies resolve, as DDPM's integer steps do).
      output_dim: width of the output; None (the default) gives x's width D.
      num_classes: 0 (unconditional) or the number of class labels it is conditioned on.
      dropout: dropout rate inside the residual blocks (train mode only).
    """

    hidden_dim: int = 256
    num_layers: int = 3
    embedding: str = "sinusoidal"
    embedding_dim: int = 64
    time_scale: float = 1000.0
    output_dim: int | None = None
    num_classes: int = 0
    dropout: float = 0.0

    SHARED_NOISE_LEVEL = True  # takes noise_level [1] for the whole batch (views.Model.shared_noise_level)

    def __post_init__(self):
        if not (isinstance(self.hidden_dim, int) and self.hidden_dim >= 1):
            raise ValueError(f"hidden_dim={self.hidden_dim!r} must be a positive integer")
        if not (isinstance(self.num_layers, int) and self.num_layers >= 0):
            raise ValueError(f"num_layers={self.num_layers!r} must be a non-negative integer")
        if self.embedding not in EMBEDDINGS:
            raise ValueError(f"embedding={self.embedding!r} is not known; choose one of {EMBEDDINGS}")
        if not (isinstance(self.embedding_dim, int) and self.embedding_dim >= 2 and self.embedding_dim % 2 == 0):
            raise ValueError(f"embedding_dim={self.embedding_dim!r} must be a positive even integer")
        if not (0.0 < self.time_scale < float("inf")):
            raise ValueError(f"time_scale={self.time_scale!r} must be positive and finite")
        if self.output_dim is not None and not (isinstance(self.output_dim, int) and self.output_dim >= 1):
            raise ValueError(f"output_dim={self.output_dim!r} must be a positive integer or None (the data's width)")
        if isinstance(self.num_classes, bool) or not (isinstance(self.num_classes, int) and self.num_classes >= 0):
            raise ValueError(f"num_classes={self.num_classes!r} must be a non-negative integer (0: unconditional)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout!r} must lie in [0, 1)")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, noise_level: jax.Array, condition: jax.Array | None = None,
                 train: bool = False) -> jax.Array:
        check_flat_inputs("TimeConditionedMLP", x, noise_level, shared=True)
        check_condition("TimeConditionedMLP", condition, self.num_classes, x.shape[0])
        t = noise_level * self.time_scale
        if self.embedding == "sinusoidal":
            emb = sinusoidal_embedding(t, self.embedding_dim)
        elif self.embedding == "fourier":
            emb = GaussianFourierEmbedding(self.embedding_dim)(t / self.time_scale)
        else:
            raise ValueError(f"unknown time embedding {self.embedding!r}; choose one of {EMBEDDINGS}")
        emb = nn.Dense(self.hidden_dim)(nn.silu(nn.Dense(self.hidden_dim)(emb)))
        if self.num_classes:
            emb = emb + nn.Embed(self.num_classes, self.hidden_dim, name="label_embedding")(condition)
        h = nn.Dense(self.hidden_dim)(x) + emb
        for _ in range(self.num_layers):
            residual = nn.Dense(self.hidden_dim)(nn.silu(h)) + nn.Dense(self.hidden_dim)(nn.silu(emb))
            residual = nn.Dropout(self.dropout, deterministic=not train)(nn.silu(residual))
            h = h + nn.Dense(self.hidden_dim)(residual)
        out_dim = x.shape[-1] if self.output_dim is None else self.output_dim
        return nn.Dense(out_dim, kernel_init=nn.initializers.zeros)(nn.silu(h))
