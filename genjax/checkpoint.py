"""Checkpoints through orbax-checkpoint's CheckpointManager.

A checkpoint holds two items: `state` (the TrainState: step, parameters, EMA parameters,
optimizer state, base RNG key) and `meta` (JSON: the data stream's position and identity).
Saves are asynchronous; the manager keeps the last `max_to_keep`. Restoring goes into an
abstract tree whose leaves carry the *current* mesh's shardings, so a checkpoint written on
one device layout restores on another. orbax writes each step to a temporary directory and
renames it when complete, so an interrupted save never leaves a checkpoint that looks whole.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

CHECKPOINT_SUBDIR = "checkpoints"


class CheckpointError(RuntimeError):
    """A checkpoint is missing or cannot be read; the message says what to do."""


def open_manager(workdir: str, *, max_to_keep: int, save_interval_steps: int, create: bool) -> ocp.CheckpointManager:
    directory = os.path.join(os.path.abspath(workdir), CHECKPOINT_SUBDIR)
    if not create and not os.path.isdir(directory):
        raise CheckpointError(f"no checkpoints in {workdir!r} (expected {directory}); train first with --mode=train")
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        save_interval_steps=save_interval_steps,
        create=create,
        enable_async_checkpointing=True,
    )
    return ocp.CheckpointManager(directory, options=options, item_names=("state", "meta"))


def save(manager: ocp.CheckpointManager, step: int, state: Any, meta: dict, *, force: bool = False) -> bool:
    """Start an asynchronous save of (state, meta) at `step`; True if one was started."""
    return manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
        force=force,
    )


def abstract_like(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs of `tree` (concrete or abstract) carrying the given shardings."""
    return jax.tree.map(lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s), tree, shardings)


def restore(manager: ocp.CheckpointManager, abstract_state: Any, step: int | None = None) -> tuple[Any, dict, int]:
    """Restore (state, meta, step) of `step` (default: the latest) into `abstract_state`."""
    if step is None:
        step = manager.latest_step()
    if step is None:
        raise CheckpointError(f"no checkpoint found in {manager.directory}; train first with --mode=train")
    try:
        restored = manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()),
        )
    except Exception as error:  # orbax raises many types for unreadable or mismatched files
        raise CheckpointError(
            f"checkpoint {step} in {manager.directory} could not be restored "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). "
            f"If it is corrupted, move that step's directory away to resume from the previous one; "
            f"if the model config changed, use the config the run was trained with."
        ) from error
    return restored["state"], dict(restored["meta"]), step
