"""Ahead-of-time compilation of the train step, and what it will cost per device.

Lowers and compiles the jitted step for the experiment's mesh from abstract inputs (no
parameters are materialised), then reads XLA's own accounting from the executable:
argument, output and temporary bytes per device, and FLOPs per step. Parameter and
optimizer-state bytes per device come from the state's shardings (the bytes of one shard
of every leaf), so data-parallel and FSDP layouts can be compared before renting hardware.
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


def compile_report(experiment: Experiment) -> dict:
    state = experiment.abstract_state()
    compiled = experiment.jitted_train_step().lower(state, experiment.abstract_batch()).compile()
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    shardings = experiment.state_shardings
    return {
        "mesh": dict(experiment.mesh.shape),
        "devices": experiment.mesh.size,
        "parameters": sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(state.params)),
        "param_bytes_per_device": _bytes_per_device(state.params, shardings.params),
        "ema_bytes_per_device": _bytes_per_device(state.ema_params, shardings.ema_params),
        "optimizer_bytes_per_device": _bytes_per_device(state.opt_state, shardings.opt_state),
        "argument_bytes": getattr(memory, "argument_size_in_bytes", None),
        "output_bytes": getattr(memory, "output_size_in_bytes", None),
        "temp_bytes": getattr(memory, "temp_size_in_bytes", None),
        "flops_per_step": (cost or {}).get("flops"),
    }


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
        ("step temporaries per device", mib(report["temp_bytes"])),
        ("FLOPs per step per device", "n/a" if flops is None else f"{flops:.3e}"),
    ]
    return "\n".join(f"{name:30s} {value}" for name, value in rows)
