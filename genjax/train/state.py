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
