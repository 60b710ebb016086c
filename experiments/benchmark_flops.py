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


def synthetic_batch(experiment, seed: int = 0) -> dict:
    """A global batch of the experiment's shapes and shardings without its data: x ~ N(0, I)
    (clipped to the data range [-1, 1] of images), labels 0 (no dataset needs to be present)."""
    batch = {}
    for name, abstract in experiment.abstract_batch().items():
        if name == "x":
            value = jnp.clip(jax.random.normal(jax.random.key(seed), abstract.shape, abstract.dtype), -1.0, 1.0)
        else:
            value = jnp.zeros(abstract.shape, abstract.dtype)
        batch[name] = jax.device_put(value, abstract.sharding)
    return batch


def step_timer(config, synthetic: bool = False):
    """(XLA's FLOPs of one train step of `config` on one device, steps -> FLOP/s of that step).
    The step compiles once; each measurement starts from a fresh state. `synthetic`: a batch of
    the right shapes instead of the config's data (for image configs whose data is absent)."""
    experiment = build_experiment(config, jax.devices()[:1])
    step = compile_step(experiment)
    flops = compile_report(experiment, step)["flops_per_step"]
    batch = synthetic_batch(experiment) if synthetic else experiment.global_batch(experiment.train_stream(), 0)

    def flops_per_second(steps: int) -> float:
        return flops * timed_steps(step, experiment.init_state(), batch, steps, config.training.sync_every)

    return flops, flops_per_second


def unet_configs(batch_sizes=(128, 16)) -> dict:
    """The DDPM++ CIFAR-10 network and train step (configs/cifar10_ddpmpp.py) on one device, on
    digits-sized inputs (8x8x1) and CIFAR-sized inputs (32x32x3), at the given batch sizes."""
    from configs import cifar10_ddpmpp

    configs = {}
    for (name, resolution, channels), batch in zip((("digits-sized 8x8x1", 8, 1), ("CIFAR-sized 32x32x3", 32, 3)),
                                                   batch_sizes):
        config = cifar10_ddpmpp.get_config()
        config.data.resolution, config.data.channels = resolution, channels
        config.training.batch_size = batch
        config.training.sync_every = 1
        config.mesh.data = 1
        configs[f"{name}, batch {batch}"] = config
    return configs
