"""Checkpoints through orbax-checkpoint's CheckpointManager.

A checkpoint holds two items: `state` (the TrainState: step, parameters, EMA parameters,
optimizer state, base RNG key) and `meta` (JSON: the data stream's position and identity,
the learning-rate schedule). Saves are asynchronous; the manager keeps the last
`max_to_keep`. Restoring goes into an abstract tree whose leaves carry the *current* mesh's
shardings, so a checkpoint written on one device layout restores on another. orbax writes
each step to a temporary directory and renames it when complete, so an interrupted save
never leaves a checkpoint that looks whole; old steps beyond `max_to_keep` are renamed into
`checkpoints/deleting/` before they are removed, so an interrupted deletion doesn't either.

A finished checkpoint can still be damaged afterwards (a truncated or lost file).
`restore_newest_intact` then falls back to the newest step that restores; when asked to
(training, which holds the workdir lock) it moves the damaged steps into
`workdir/quarantine/` so a later save of the same step number does not collide with them.
Nothing is ever deleted. If no step restores, the config (not the files) is the likely
culprit, and nothing is moved.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import sys
import tempfile
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

CHECKPOINT_SUBDIR = "checkpoints"
QUARANTINE_SUBDIR = "quarantine"
DELETING_SUBDIR = "deleting"  # under checkpoints/: old steps are renamed here, then removed


class CheckpointError(RuntimeError):
    """A checkpoint is missing or cannot be read; the message says what to do."""


def open_manager(workdir: epath.Path, *, max_to_keep: int, save_interval_steps: int,
                 create: bool) -> ocp.CheckpointManager:
    """The manager of `workdir/checkpoints` (a local path or a URL, passed to orbax as is)."""
    directory = epath.Path(workdir) / CHECKPOINT_SUBDIR
    if not create and not directory.is_dir():
        raise CheckpointError(f"no checkpoints in {str(workdir)!r} (expected {directory}); train first with --mode=train")
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        save_interval_steps=save_interval_steps,
        create=create,
        enable_async_checkpointing=True,
        todelete_subdir=DELETING_SUBDIR,
    )
    manager = ocp.CheckpointManager(directory, options=options, item_names=("state", "meta"))
    if create:
        purge_deleted(manager)
    return manager


def purge_deleted(manager: ocp.CheckpointManager) -> None:
    """Remove the old steps the manager renamed into `checkpoints/deleting/`. Renaming first
    makes a deletion atomic: a kill -9 during it never leaves a half-deleted step directory
    that lists as a checkpoint and does not restore. (gs:// paths are deleted in place.)"""
    trash = epath.Path(manager.directory) / DELETING_SUBDIR
    if jax.process_index() != 0 or not trash.is_dir():
        return
    for entry in trash.iterdir():
        entry.rmtree()


def save(manager: ocp.CheckpointManager, step: int, state: Any, meta: dict, *, force: bool = False) -> bool:
    """Start an asynchronous save of (state, meta) at `step`; True if one was started.
    Steps the previous saves retired (see `purge_deleted`) are removed first."""
    purge_deleted(manager)
    return manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
        force=force,
    )


def abstract_like(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs of `tree` (concrete or abstract) carrying the given shardings."""
    return jax.tree.map(lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s), tree, shardings)


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    first = text.splitlines()[0].split(" See full TensorStore details")[0] if text else ""
    return f"{type(error).__name__}: {first[:200]}".strip()


def _restore_step(manager: ocp.CheckpointManager, abstract_state: Any, step: int) -> tuple[Any, dict]:
    restored = manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()),
    )
    return restored["state"], dict(restored["meta"])


def _all_processes_agree(ok: bool) -> bool:
    """True only if `ok` holds on every process (a damaged shard may fail on one host only)."""
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils

    return bool(np.min(multihost_utils.process_allgather(np.int32(ok))))


def restore(manager: ocp.CheckpointManager, abstract_state: Any, step: int | None = None) -> tuple[Any, dict, int]:
    """Restore (state, meta, step) of `step` (default: the latest) into `abstract_state`."""
    if step is None:
        step = manager.latest_step()
    if step is None:
        raise CheckpointError(f"no checkpoint found in {manager.directory}; train first with --mode=train")
    try:
        state, meta = _restore_step(manager, abstract_state, step)
    except Exception as error:  # orbax raises many types for unreadable or mismatched files
        raise CheckpointError(
            f"checkpoint {step} in {manager.directory} could not be restored ({_first_line(error)}); "
            f"if the model config changed, use the config the run was trained with"
        ) from None
    return state, meta, step


@dataclasses.dataclass(frozen=True)
class Restored:
    """What `restore_newest_intact` found: the state, its meta and step, and the newer
    steps that were damaged (with the reason, and where they were moved if they were)."""

    state: Any
    meta: dict
    step: int
    damaged: tuple[tuple[int, str], ...] = ()
    moved_to: tuple[str, ...] = ()

    def report(self) -> str | None:
        """One line about the damaged steps, or None if the newest step restored."""
        if not self.damaged:
            return None
        what = "; ".join(f"checkpoint {step} is damaged ({reason})" for step, reason in self.damaged)
        where = f"moved to {', '.join(self.moved_to)} (nothing deleted)" if self.moved_to else "left in place"
        return f"{what}; {where}; using checkpoint {self.step} instead"


def _quarantine(manager: ocp.CheckpointManager, step: int) -> str:
    """Move step's directory to <workdir>/quarantine/checkpoint_<step>_<UTC time>; returns where."""
    source = epath.Path(manager.directory) / str(step)
    target = epath.Path(manager.directory).parent / QUARANTINE_SUBDIR / f"checkpoint_{step}_{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    if jax.process_index() == 0:
        target.parent.mkdir(parents=True, exist_ok=True)
        source.rename(target)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"quarantine checkpoint {step}")
    return str(target)


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 while damaged steps are probed: a failed tensorstore read
    prints tracebacks from its own threads (callbacks into a closed asyncio loop) that are
    noise once the failure has been caught and reported in one line."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            gc.collect()
            time.sleep(0.2)  # late callbacks of the failed reads land here, not on the console
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def restore_newest_intact(manager: ocp.CheckpointManager, abstract_state: Any, *, quarantine: bool) -> Restored:
    """Restore the newest step that reads back; newer damaged steps are reported (and moved to
    the quarantine if `quarantine`). CheckpointError if none restores (nothing is moved)."""
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
        raise CheckpointError(f"no checkpoint found in {manager.directory}; train first with --mode=train")
    damaged: list[tuple[int, str]] = []
    for step in steps:
        try:
            with _quiet_stderr():
                state, meta = _restore_step(manager, abstract_state, step)
            ok = True
        except Exception as error:  # orbax raises many types for unreadable or mismatched files
            damaged.append((step, _first_line(error)))
            ok = False
        if _all_processes_agree(ok):
            break
        if ok:
            damaged.append((step, "unreadable on another process"))
    else:
        reasons = "; ".join(f"checkpoint {s}: {r}" for s, r in damaged)
        raise CheckpointError(
            f"no checkpoint in {manager.directory} could be restored ({reasons}); if the model config changed, "
            f"use the config the run was trained with, else move the damaged step directories away"
        )
    moved = tuple(_quarantine(manager, s) for s, _ in damaged) if quarantine and damaged else ()
    if moved:
        manager.reload()
    return Restored(state, meta, step, tuple(damaged), moved)
