"""A deterministic, resumable batch stream over in-memory arrays.

The arrays are a dict with the same leading length N, {"x": [N, *shape]} plus "label": [N]
for labelled data (a bare array is {"x": array}); a batch is the same dict of rows, the
network/batch contract's batch.

Batch `step` of the stream is a pure function of (seed, step): epoch e = step // S with
S = N // B steps per epoch, shuffled by a permutation drawn from (seed, e), and the
global batch is rows [pos B, (pos + 1) B) of that permutation. So the position to resume
from is just the step, the global batch is the same whatever the number of processes,
and each process materialises only its own contiguous share of every batch.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Mapping

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class ArrayStream:
    data: Mapping[str, np.ndarray]
    global_batch_size: int
    seed: int
    process_index: int = 0
    process_count: int = 1

    def __post_init__(self):
        data = self.data if isinstance(self.data, Mapping) else {"x": self.data}
        if "x" not in data:
            raise ValueError(f"the stream's data is a dict with the examples under 'x'; got keys {sorted(data)}")
        lengths = {name: len(array) for name, array in data.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"the stream's arrays must have the same number of rows; got {lengths}")
        object.__setattr__(self, "data", dict(data))
        if self.global_batch_size % self.process_count:
            raise ValueError(
                f"global batch size {self.global_batch_size} does not divide over {self.process_count} processes"
            )
        if self.global_batch_size > self.num_examples:
            raise ValueError(f"global batch size {self.global_batch_size} exceeds the {self.num_examples} examples")

    @property
    def num_examples(self) -> int:
        return len(self.data["x"])

    @property
    def steps_per_epoch(self) -> int:
        return self.num_examples // self.global_batch_size

    @property
    def local_batch_size(self) -> int:
        return self.global_batch_size // self.process_count

    @functools.lru_cache(maxsize=2)
    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)

    def global_indices(self, step: int) -> np.ndarray:
        epoch, position = divmod(int(step), self.steps_per_epoch)
        start = position * self.global_batch_size
        return self._permutation(epoch)[start : start + self.global_batch_size]

    def local_batch(self, step: int) -> dict[str, np.ndarray]:
        """This process's rows of global batch `step`, a dict like the data."""
        indices = self.global_indices(step)
        start = self.process_index * self.local_batch_size
        rows = indices[start : start + self.local_batch_size]
        return {name: array[rows] for name, array in self.data.items()}

    def state(self, step: int) -> dict:
        """What a checkpoint records to continue the stream (and to check it is the same one)."""
        return {"next_step": int(step), "seed": self.seed, "num_examples": self.num_examples,
                "global_batch_size": self.global_batch_size}
