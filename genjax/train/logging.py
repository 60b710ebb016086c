"""Training logs: a console line, TensorBoard event files and a metrics JSONL.

Only process 0 writes; other processes get a logger that does nothing, so callers need no
`if jax.process_index() == 0` of their own.
"""
from __future__ import annotations

import datetime
import json
import os
import time

import logging

console = logging.getLogger("genjax")


def format_duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


class MetricsLogger:
    """Writes scalars to `workdir/metrics.jsonl` (appended across resumes), TensorBoard
    events under `workdir/tensorboard`, and a console line per call to `log_progress`."""

    def __init__(self, workdir: str, *, enabled: bool = True):
        self.enabled = enabled
        self._tensorboard = None
        self._jsonl = None
        if enabled:
            from tensorboardX import SummaryWriter  # imported lazily: only process 0 writes

            self._tensorboard = SummaryWriter(logdir=os.path.join(workdir, "tensorboard"), flush_secs=30)
            self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")

    def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), "time": time.time(), **{k: float(v) for k, v in scalars.items()}}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        for name, value in scalars.items():
            self._tensorboard.add_scalar(name, float(value), int(step))

    def log_progress(self, step: int, total: int, loss: float, steps_per_second: float) -> None:
        if not self.enabled:
            return
        eta = (total - step) / steps_per_second if steps_per_second > 0 else float("inf")
        console.info(
            "step %d/%d | loss %.5f | %.1f steps/s | ETA %s",
            step, total, loss, steps_per_second, format_duration(eta) if eta != float("inf") else "?",
        )

    def close(self) -> None:
        if self.enabled:
            self._tensorboard.close()
            self._jsonl.close()
