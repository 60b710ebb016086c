"""Training logs: a console line, TensorBoard event files and a metrics JSONL.

Only process 0 writes; other processes get a logger that does nothing, so callers need no
`if jax.process_index() == 0` of their own. Files go through `genjax.workdir`, so a
gs:// workdir receives them like a local one: TensorBoard events are framed here (TFRecord
records of `Event` protos, as TensorBoard reads them) instead of by tensorboardX's writer,
which only knows local paths.
"""
from __future__ import annotations

import datetime
import socket
import struct
import time

import logging

from etils import epath

from genjax import workdir as workdir_lib

console = logging.getLogger("genjax")


def format_duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


class EventFile:
    """One TensorBoard event file `events.out.tfevents.<time>.<host>` in `directory`."""

    def __init__(self, directory: epath.Path):
        from tensorboardX.proto import event_pb2

        self._event_pb2 = event_pb2
        now = time.time()
        self._file = workdir_lib.AppendFile(directory / f"events.out.tfevents.{int(now)}.{socket.gethostname()}")
        self._write(event_pb2.Event(wall_time=now, file_version="brain.Event:2"))
        self._file.flush()

    def _write(self, event) -> None:
        from tensorboardX.record_writer import masked_crc32c

        data = event.SerializeToString()
        header = struct.pack("Q", len(data))
        self._file.write(header + struct.pack("I", masked_crc32c(header)) + data + struct.pack("I", masked_crc32c(data)))

    def add_scalars(self, step: int, scalars: dict[str, float]) -> None:
        from tensorboardX.summary import scalar

        now = time.time()
        for name, value in scalars.items():
            self._write(self._event_pb2.Event(wall_time=now, step=int(step), summary=scalar(name, float(value))))
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class MetricsLogger:
    """Writes scalars to `workdir/metrics.jsonl` (appended across resumes), TensorBoard
    events under `workdir/tensorboard`, and a console line per call to `log_progress`."""

    def __init__(self, workdir: str | epath.Path, *, enabled: bool = True):
        self.enabled = enabled
        self._tensorboard = None
        self._jsonl = None
        if enabled:
            workdir = workdir_lib.resolve(workdir)
            self._tensorboard = EventFile(workdir / "tensorboard")
            self._jsonl = workdir_lib.AppendFile(workdir / "metrics.jsonl")

    def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), "time": time.time(), **{k: float(v) for k, v in scalars.items()}}
        self._jsonl.write((workdir_lib.json_text(record) + "\n").encode("utf-8"))
        self._jsonl.flush()
        self._tensorboard.add_scalars(step, scalars)

    def log_progress(self, step: int, total: int, loss: float, steps_per_second: float,
                     extra: dict[str, float] | None = None) -> None:
        """One console line; `extra` (the objective's own metrics, e.g. NFE) follows the loss."""
        if not self.enabled:
            return
        eta = (total - step) / steps_per_second if steps_per_second > 0 else float("inf")
        extras = "".join(f" | {name} {value:.4g}" for name, value in sorted((extra or {}).items()))
        console.info(
            "step %d/%d | loss %.5f%s | %.1f steps/s | ETA %s",
            step, total, loss, extras, steps_per_second, format_duration(eta) if eta != float("inf") else "?",
        )

    def close(self) -> None:
        if self.enabled:
            self._tensorboard.close()
            self._jsonl.close()
