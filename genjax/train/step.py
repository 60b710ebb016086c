"""The pure train step: (state, batch) -> (state, metrics).

The step's randomness is fold_in(state.rng, state.step): it depends on nothing but the
state, so a resumed run repeats a straight run exactly and the step needs no key argument.
"""
from __future__ import annotations

from typing import Callable

import jax
import optax

from genjax.train.state import TrainState, ema_update

# loss_fn(params, batch, key) -> scalar
LossFn = Callable[[object, jax.Array, jax.Array], jax.Array]


def train_step(
    state: TrainState,
    batch: jax.Array,
    *,
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    ema_decay: float,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer update on the global batch, plus the EMA of the parameters."""
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    loss, grads = jax.value_and_grad(loss_fn)(state.params, batch, key)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(
        step=state.step + 1,
        params=params,
        ema_params=ema_update(state.ema_params, params, ema_decay),
        opt_state=opt_state,
    )
    metrics = {"loss": loss, "grad_norm": optax.global_norm(grads)}
    return new_state, metrics
