"""FLOP/s of a train step over the f32 matmul peak of the same device, measured in one run
(by `python -m experiments.benchmark`).

The peak is the best of a few timed `jnp.dot`s of square f32 matrices (2 n^3 FLOPs each); a
step's FLOPs are XLA's cost analysis of the compiled step (genjax.train.compile_report), and
its rate is the bare sharded step's (benchmark_train_loop.timed_steps).
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from experiments.benchmark_train_loop import timed_steps
from genjax.experiment import build_experiment
from genjax.train.compile_report import compile_report, compile_step


def matmul_flops_per_second(size: int = 2048, calls: int = 5) -> float:
    """Best of `calls` timed f32 [size, size] @ [size, size] products on the default device."""
    a, b = (jax.random.normal(k, (size, size), jnp.float32) for k in jax.random.split(jax.random.key(0)))
    dot = jax.jit(jnp.dot)
    dot(a, b).block_until_ready()
    best = float("inf")
    for _ in range(calls):
        start = time.perf_counter()
        dot(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def step_timer(config):
    """(XLA's FLOPs of one train step of `config` on one device, steps -> FLOP/s of that step).
    The step compiles once; each measurement starts from a fresh state."""
    experiment = build_experiment(config, jax.devices()[:1])
    step = compile_step(experiment)
    flops = compile_report(experiment, step)["flops_per_step"]
    batch = experiment.global_batch(experiment.train_stream(), 0)

    def flops_per_second(steps: int) -> float:
        return flops * timed_steps(step, experiment.init_state(), batch, steps, config.training.sync_every)

    return flops, flops_per_second
