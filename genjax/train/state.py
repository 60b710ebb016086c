"""The training state: everything a step reads and writes, as one pytree."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct


@struct.dataclass
class TrainState:
    """step: number of optimizer updates applied; rng: the run's base key (per-step keys
    are fold_in(rng, step), so a resumed run draws exactly what a straight run would)."""

    step: jax.Array
    params: Any
    ema_params: Any
    opt_state: Any
    rng: jax.Array


def create_train_state(params, tx: optax.GradientTransformation, rng: jax.Array) -> TrainState:
    """Fresh state at step 0 with EMA initialised to the parameters. `rng` is a raw uint32
    key (jax.random.key_data) so it checkpoints as a plain array."""
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        ema_params=jax.tree.map(jnp.copy, params),
        opt_state=tx.init(params),
        rng=rng,
    )


def ema_update(ema_params, params, decay: float):
    """Exponential moving average: ema <- decay * ema + (1 - decay) * params."""
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema_params, params)


def ema_decay_at(step: jax.Array, decay: float, rampup_ratio: float = 0.0) -> jax.Array:
    """The EMA decay of the update that ends optimizer step `step` + 1.

    Without warm-up (rampup_ratio = 0) it is `decay`. With warm-up (EDM; Karras et al. 2022,
    training/training_loop.py) the half-life, H = ln(1/2) / ln(decay) steps, is capped at
    rampup_ratio times the number of steps taken, so early averages forget the initial weights:

        H_n = min(H, rampup_ratio n),   decay_n = (1/2)^(1 / H_n),   n = step + 1.

    EDM states it in images (half-life 500k images, ratio 0.05); in steps both sides are
    divided by the batch size, so the same ratio applies."""
    if not rampup_ratio or decay == 0.0:
        return jnp.float32(decay)
    half_life = jnp.float32(jnp.log(0.5) / jnp.log(jnp.float32(decay)))
    ramped = jnp.minimum(half_life, rampup_ratio * (jnp.asarray(step, jnp.float32) + 1.0))
    return jnp.float32(0.5) ** (1.0 / ramped)
