"""Ahead-of-time compilation of the train step, and what it costs per device.

`compile_report` lowers and compiles the jitted step for the experiment's mesh from abstract
inputs (no parameters are materialised) and reads XLA's own accounting from the executable:
argument, output, aliased (donated) and temporary bytes per device, XLA's peak estimate from
its buffer assignment, and FLOPs per step. Beside them it gives the shard-shape estimate of
the state (the bytes of one shard of every parameter, EMA and optimizer leaf), so the two can
be compared. `measured_step_memory` runs one real step and reads the device's own peak, where
the backend reports one (GPU, TPU); XLA:CPU reports none.
"""
from __future__ import annotations

import math

import jax

from genjax.experiment import Experiment


def _bytes_per_device(abstract_tree, shardings) -> int:
    return sum(
        math.prod(s.shard_shape(leaf.shape)) * leaf.dtype.itemsize
        for leaf, s in zip(jax.tree.leaves(abstract_tree), jax.tree.leaves(shardings))
    )


def compile_step(experiment: Experiment):
    """The train step compiled ahead of time for the experiment's mesh (callable on a state
    with its shardings and a global batch)."""
    return experiment.jitted_train_step().lower(experiment.abstract_state(), experiment.abstract_batch()).compile()


def compile_report(experiment: Experiment, compiled=None) -> dict:
    """Per-device bytes (None where XLA does not say) and FLOPs of one compiled train step
    (`compiled`, or compiled here)."""
    state = experiment.abstract_state()
    compiled = compile_step(experiment) if compiled is None else compiled
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    shardings = experiment.state_shardings
    report = {
        "mesh": dict(experiment.mesh.shape),
        "devices": experiment.mesh.size,
        "parameters": sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(state.params)),
        "param_bytes_per_device": _bytes_per_device(state.params, shardings.params),
        "ema_bytes_per_device": _bytes_per_device(state.ema_params, shardings.ema_params),
        "optimizer_bytes_per_device": _bytes_per_device(state.opt_state, shardings.opt_state),
        "argument_bytes": getattr(memory, "argument_size_in_bytes", None),
        "output_bytes": getattr(memory, "output_size_in_bytes", None),
        "alias_bytes": getattr(memory, "alias_size_in_bytes", None),
        "temp_bytes": getattr(memory, "temp_size_in_bytes", None),
        "xla_peak_bytes": getattr(memory, "peak_memory_in_bytes", None),
        "flops_per_step": (cost or {}).get("flops"),
    }
    report["state_bytes_per_device"] = (report["param_bytes_per_device"] + report["ema_bytes_per_device"]
                                        + report["optimizer_bytes_per_device"])
    return report


def measured_step_memory(experiment: Experiment) -> int | None:
    """Peak bytes in use on the busiest local device after creating the state and running one
    train step, as the device reports it (`memory_stats()['peak_bytes_in_use']`); None where the
    backend keeps no statistics (XLA:CPU)."""
    devices = experiment.mesh.local_devices
    if any(d.memory_stats() is None for d in devices):
        return None
    state = experiment.init_state()
    state, metrics = experiment.jitted_train_step()(state, experiment.global_batch(experiment.train_stream(), 0))
    metrics["loss"].block_until_ready()
    return max(d.memory_stats().get("peak_bytes_in_use", 0) for d in devices)


def format_compile_report(report: dict) -> str:
    def mib(value):
        return "n/a" if value is None else f"{value / 2**20:,.1f} MiB"

    flops = report["flops_per_step"]
    rows = [
        ("mesh", f"{report['mesh']} ({report['devices']} devices)"),
        ("parameters", f"{report['parameters']:,}"),
        ("parameters per device", mib(report["param_bytes_per_device"])),
        ("EMA parameters per device", mib(report["ema_bytes_per_device"])),
        ("optimizer state per device", mib(report["optimizer_bytes_per_device"])),
        ("step arguments per device", mib(report["argument_bytes"])),
        ("step outputs per device", mib(report["output_bytes"])),
        ("  of which donated (aliased)", mib(report["alias_bytes"])),
        ("step temporaries per device", mib(report["temp_bytes"])),
        ("XLA peak estimate per device", mib(report["xla_peak_bytes"])),
        ("FLOPs per step per device", "n/a" if flops is None else f"{flops:.3e}"),
    ]
    return "\n".join(f"{name:30s} {value}" for name, value in rows)
