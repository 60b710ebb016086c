"""The pure train step: (state, batch) -> (state, metrics), and its variants.

Randomness: the step's key is fold_in(state.rng, state.step), and example i of the global
batch draws its noise from fold_in(step key, i). The step therefore needs no key argument,
a resumed run repeats a straight run exactly, and splitting the batch into micro-batches
(gradient accumulation) draws exactly the same noise for every example.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from genjax.samplers.prior import example_keys
from genjax.train.state import TrainState, ema_decay_at, ema_update

# loss_fn(params, batch, example_keys [B]) -> scalar mean over the batch, or (scalar, metrics)
# with metrics a dict of scalars (batch means, e.g. a CNF's NFE) logged beside the loss; a batch
# is the data stream's dict {"x": [B, *shape], "label": [B] if labelled}.
LossFn = Callable[[object, dict, jax.Array], "jax.Array | tuple[jax.Array, dict[str, jax.Array]]"]


def loss_and_metrics(output) -> tuple[jax.Array, dict[str, jax.Array]]:
    """A loss function's output as (loss, metrics): a bare scalar has no metrics."""
    if isinstance(output, tuple):
        loss, metrics = output
        return loss, dict(metrics)
    return output, {}


def batch_size(batch) -> int:
    """B, the leading axis of every array of the batch."""
    return jax.tree.leaves(batch)[0].shape[0]


def _loss_and_grads(loss_fn: LossFn, params, batch, keys, grad_accum_steps: int):
    """(Mean loss, its metrics) and the loss's gradient over the batch, in `grad_accum_steps`
    micro-batches; the metrics are averaged over micro-batches like the loss.

    Micro-batch a holds examples a, a + A, a + 2A, ... (A = grad_accum_steps), so every
    device's rows contribute equally to every micro-batch and no data moves between devices.
    Equal-size micro-batches make the average of their mean losses the full batch's mean.
    """
    value_and_grad = jax.value_and_grad(lambda *args: loss_and_metrics(loss_fn(*args)), has_aux=True)
    if grad_accum_steps == 1:
        return value_and_grad(params, batch, keys)
    size = batch_size(batch)

    def split(tree):
        return jax.tree.map(
            lambda x: jnp.swapaxes(x.reshape((size // grad_accum_steps, grad_accum_steps) + x.shape[1:]), 0, 1), tree)

    def accumulate(carry, micro):
        (loss, metrics), grads = value_and_grad(params, *micro)
        return jax.tree.map(jnp.add, carry, ((loss, metrics), grads)), None

    micro_shapes = jax.eval_shape(value_and_grad, params, *jax.tree.map(lambda x: x[0], (split(batch), split(keys))))
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), micro_shapes)
    total, _ = jax.lax.scan(accumulate, zeros, (split(batch), split(keys)))
    return jax.tree.map(lambda v: v / grad_accum_steps, total)


def train_step(
    state: TrainState,
    batch: dict,
    *,
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    ema_decay: float,
    grad_accum_steps: int = 1,
    ema_rampup_ratio: float = 0.0,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer update on the global batch, plus the EMA of the parameters (with EDM's
    half-life warm-up when ema_rampup_ratio > 0: `state.ema_decay_at`). Metrics: loss,
    grad_norm, nonfinite_inputs and the objective's own metrics, if it returns any."""
    step_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    keys = example_keys(step_key, batch_size(batch))
    (loss, objective_metrics), grads = _loss_and_grads(loss_fn, state.params, batch, keys, grad_accum_steps)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(
        step=state.step + 1,
        params=params,
        ema_params=ema_update(state.ema_params, params, ema_decay_at(state.step, ema_decay, ema_rampup_ratio)),
        opt_state=opt_state,
    )
    # Non-finite inputs are counted here and checked on the host with the loss (no extra sync).
    metrics = {**objective_metrics, "loss": loss, "grad_norm": optax.global_norm(grads),
               "nonfinite_inputs": jnp.sum(~jnp.isfinite(batch["x"])).astype(jnp.int32)}
    return new_state, metrics


def train_steps(state: TrainState, batches: dict, **step_options) -> tuple[TrainState, dict[str, jax.Array]]:
    """k consecutive train steps in one dispatch (`lax.scan` over batches, every array [k, B, ...]);
    metrics come back stacked [k]. Same result as k calls of `train_step`."""
    return jax.lax.scan(lambda s, b: train_step(s, b, **step_options), state, batches)
