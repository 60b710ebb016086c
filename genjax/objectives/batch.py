"""What an objective reads from its batch, and the key of the network's dropout.

A batch is the data stream's dict {"x": float [B, *shape], "label": int32 [B]} ("label" for
labelled data only); a bare array x is read as {"x": x}. The network is called once on the
batch with train=True, condition = the labels, and the dropout key fold_in(example_keys[0],
DROPOUT_STREAM): explicit and deterministic in the step's keys (under gradient accumulation
each micro-batch has its own keys[0], so its own dropout key).
"""
from __future__ import annotations

from typing import Mapping

import jax

DROPOUT_STREAM = 11  # fold_in index of the dropout key; flow matching's coupling uses 7


def batch_arrays(batch) -> tuple[jax.Array, jax.Array | None]:
    """(x [B, *shape], labels [B] or None) of a batch dict (or of a bare array x)."""
    if isinstance(batch, Mapping):
        if "x" not in batch:
            raise ValueError(f"a batch is a dict with the data under 'x' (and 'label' if labelled); got keys "
                             f"{sorted(batch)}")
        return batch["x"], batch.get("label")
    return batch, None


def dropout_key(example_keys: jax.Array) -> jax.Array:
    """The key of the network's dropout on the batch whose example keys are `example_keys` [B]."""
    return jax.random.fold_in(example_keys[0], DROPOUT_STREAM)
