"""Multi-process start-up: one code path for a laptop, a GPU cluster and a TPU pod.

`initialize` calls `jax.distributed.initialize` exactly once, before any JAX computation:
with an explicit coordinator address, process count and id (from flags, e.g. the local
multi-process launcher), or with none of them, in which case JAX detects the cluster from
its environment (Cloud TPU VMs, SLURM, Open MPI, Kubernetes). Without `enabled` and
without a coordinator the run is a single process and nothing is called.
"""
from __future__ import annotations

import jax


def initialize(enabled: bool, coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    explicit = (coordinator_address, num_processes, process_id)
    if any(value is not None for value in explicit) and not all(value is not None for value in explicit):
        raise ValueError(
            "--coordinator_address, --num_processes and --process_id go together: give all three, "
            "or none of them with --distributed to detect the cluster from the environment"
        )
    if coordinator_address is None and not enabled:
        return
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)
