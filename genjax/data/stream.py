"""A deterministic, resumable batch stream over an in-memory array.

Batch `step` of the stream is a pure function of (seed, step): epoch e = step // S with
S = N // B steps per epoch, shuffled by a permutation drawn from (seed, e), and the
global batch is rows [pos B, (pos + 1) B) of that permutation. So the position to resume
from is just the step, the global batch is the same whatever the number of processes,
and each process materialises only its own contiguous share of every batch.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class ArrayStream:
    data: np.ndarray
    global_batch_size: int
    seed: int
    process_index: int = 0
    process_count: int = 1

    def __post_init__(self):
        if self.global_batch_size % self.process_count:
            raise ValueError(
                f"global batch size {self.global_batch_size} does not divide over {self.process_count} processes"
            )
        if self.global_batch_size > len(self.data):
            raise ValueError(f"global batch size {self.global_batch_size} exceeds the {len(self.data)} examples")

    @property
    def steps_per_epoch(self) -> int:
        return len(self.data) // self.global_batch_size

    @property
    def local_batch_size(self) -> int:
        return self.global_batch_size // self.process_count

    @functools.lru_cache(maxsize=2)
    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.data))

    def global_indices(self, step: int) -> np.ndarray:
        epoch, position = divmod(int(step), self.steps_per_epoch)
        start = position * self.global_batch_size
        return self._permutation(epoch)[start : start + self.global_batch_size]

    def local_batch(self, step: int) -> np.ndarray:
        """This process's rows of global batch `step`."""
        indices = self.global_indices(step)
        start = self.process_index * self.local_batch_size
        return self.data[indices[start : start + self.local_batch_size]]

    def state(self, step: int) -> dict:
        """What a checkpoint records to continue the stream (and to check it is the same one)."""
        return {"next_step": int(step), "seed": self.seed, "num_examples": len(self.data),
                "global_batch_size": self.global_batch_size}
