"""Per-device memory of the train step under data parallelism, FSDP and tensor parallelism
(run by `python -m experiments.benchmark`, which gives this part simulated CPU devices).

Compiles (never runs) the train step on meshes of 1 to 8 devices and reads, per device, the
shard-shape estimate of the state (parameters + EMA + Adam moments) beside XLA's own argument,
output, aliased and temporary bytes of the compiled executable and its peak estimate. One
real step's peak as the device reports it is added where the backend keeps statistics (not
XLA:CPU).
"""
from __future__ import annotations

import jax

from genjax.experiment import build_experiment
from genjax.train.compile_report import compile_report, measured_step_memory

# (layout name, sharding.params, mesh axes for n devices); tensor parallelism from 4 devices on.
LAYOUTS = (
    ("data parallel", "replicated", lambda n: dict(data=n, fsdp=1, tensor=1)),
    ("FSDP", "fsdp", lambda n: dict(data=1, fsdp=n, tensor=1)),
    ("FSDP x tensor 2", "fsdp_tensor", lambda n: dict(data=1, fsdp=n // 2, tensor=2) if n >= 4 else None),
)


def memory_rows(config, device_counts, run_step: bool = True) -> list[dict]:
    """One compile report per layout and device count (each with the layout and mesh)."""
    config = config.copy_and_resolve_references()
    config.training.batch_size = max(device_counts) * (config.training.batch_size // max(device_counts))
    rows = []
    for layout, rule, mesh_of in LAYOUTS:
        for n in device_counts:
            mesh = mesh_of(n)
            if mesh is None:
                continue
            config.sharding.params = rule
            for axis, size in mesh.items():
                config.mesh[axis] = size
            experiment = build_experiment(config, jax.devices()[:n])
            report = compile_report(experiment)
            report["measured_peak_bytes"] = measured_step_memory(experiment) if run_step else None
            rows.append(dict(layout=layout, rule=rule, global_batch=config.training.batch_size, **report))
    return rows
