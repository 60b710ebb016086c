"""Checks of the network contract's inputs for networks on flat vectors, and the class-label
check every conditional network shares.

The contract (every network): module.apply(variables, x [B, *data_shape], noise_level [B],
condition (None or int32 [B] labels in [0, num_classes)), train=bool, rngs={"dropout": key}).
"""
from __future__ import annotations

import jax


def check_flat_inputs(network: str, x: jax.Array, noise_level: jax.Array, shared: bool = False) -> None:
    """ValueError, one line, unless x is [B, D] and noise_level is [B] (or, for a network that
    takes one noise level shared by the whole batch (`shared`), [1])."""
    if x.ndim != 2:
        raise ValueError(f"{network} takes a batch of vectors x [B, D], got shape {tuple(x.shape)}; for images "
                         "[B, H, W, C] use a U-Net (model.name)")
    if noise_level.shape != x.shape[:1] and not (shared and noise_level.shape == (1,)):
        raise ValueError(f"{network} takes one noise level per example, shape {tuple(x.shape[:1])}, got shape "
                         f"{tuple(noise_level.shape)}")


def check_condition(network: str, condition, num_classes: int, batch: int) -> None:
    """ValueError, one line, for a condition the network was not built for: a label given to an
    unconditional network (num_classes = 0), none given to a conditional one, or labels not [B]
    integers."""
    if condition is None:
        if num_classes:
            raise ValueError(f"{network} is class-conditional (num_classes={num_classes}) and needs condition, "
                             "int32 labels [B]")
        return
    if not num_classes:
        raise ValueError(f"{network} is unconditional (num_classes=0) and got a condition; pass condition=None "
                         "or build it with num_classes > 0 (model.num_classes)")
    if condition.shape != (batch,) or not jax.numpy.issubdtype(condition.dtype, jax.numpy.integer):
        raise ValueError(f"{network} takes condition as integer labels of shape ({batch},), got "
                         f"{condition.dtype}{list(condition.shape)}")
