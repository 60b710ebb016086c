"""Stopping cleanly when the scheduler preempts the job.

Multi-process runs use JAX's preemption sync point: when any process receives SIGTERM
(JAX installs the handler in `jax.distributed.initialize`; on Cloud TPU the maintenance
notice arrives the same way), every process sees `True` at the same step, so all of them
write the same checkpoint. A single process installs its own SIGTERM handler that sets a
flag. Either way the loop saves the current step and raises `Preempted`; the next start
resumes from that checkpoint.
"""
from __future__ import annotations

import signal

import jax
from jax.experimental import multihost_utils


class Preempted(Exception):
    """Training stopped on a preemption signal after saving a checkpoint at `step`."""

    def __init__(self, step: int):
        super().__init__(f"preempted: checkpoint saved at step {step}; rerun the same command to resume")
        self.step = step


class PreemptionWatcher:
    """Context manager; `requested(step)` is True on every process once a stop is asked for."""

    def __init__(self):
        self._distributed = jax.process_count() > 1
        self._signalled = False
        self._previous_handler = None

    def __enter__(self) -> "PreemptionWatcher":
        if not self._distributed:
            self._previous_handler = signal.signal(signal.SIGTERM, self._on_signal)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)

    def _on_signal(self, signum, frame) -> None:
        del signum, frame
        self._signalled = True

    def requested(self, step: int) -> bool:
        if self._distributed:
            return multihost_utils.reached_preemption_sync_point(step)
        return self._signalled
