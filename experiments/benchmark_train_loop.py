"""Training-loop efficiency: steps/s of the full loop over steps/s of the bare jitted step,
and of the sharded code path over a plain `jax.jit` of the same step (run by
`python -m experiments.benchmark`).

The plain step is `jax.jit(train_step)` on one device with no mesh. The bare step runs the
experiment's sharded jitted train_step on one fixed global batch, blocking on the loss every
training.sync_every steps, as the loop does. The full loop is `train()` itself (data stream,
global-batch assembly, metric checks, console/JSONL/TensorBoard logging and asynchronous
checkpoints every training.checkpoint_every steps) on a fresh workdir; its rate is taken from
the logged intervals after the first (which holds the compilation).
"""
from __future__ import annotations

import functools
import json
import os
import tempfile
import time

import jax

from genjax.experiment import build_experiment
from genjax.train.loop import train
from genjax.train.step import train_step


def timed_steps(step_fn, state, batch, steps: int, sync_every: int) -> float:
    """Steps/s of `steps` calls after one compiling call, blocking every `sync_every` steps."""
    state, metrics = step_fn(state, batch)  # compile
    metrics["loss"].block_until_ready()
    start = time.perf_counter()
    for i in range(steps):
        state, metrics = step_fn(state, batch)
        if (i + 1) % sync_every == 0:
            metrics["loss"].block_until_ready()
    metrics["loss"].block_until_ready()
    return steps / (time.perf_counter() - start)


def bare_steps_per_second(config, steps: int) -> float:
    """The experiment's sharded step (explicit shardings on its mesh, donated state)."""
    experiment = build_experiment(config)
    batch = experiment.global_batch(experiment.train_stream(), 0)
    return timed_steps(experiment.jitted_train_step(), experiment.init_state(), batch, steps,
                       config.training.sync_every)


def plain_steps_per_second(config, steps: int) -> float:
    """The same train_step under a plain jax.jit: no mesh, no shardings, no donation."""
    experiment = build_experiment(config)
    step_fn = jax.jit(functools.partial(
        train_step, loss_fn=experiment.loss_fn, optimizer=experiment.optimizer,
        ema_decay=config.training.ema_decay, grad_accum_steps=config.training.grad_accum_steps))
    state = jax.device_put(jax.device_get(experiment.init_state()), jax.devices()[0])
    batch = jax.device_put(experiment.train_stream().local_batch(0), jax.devices()[0])
    return timed_steps(step_fn, state, batch, steps, config.training.sync_every)


def loop_steps_per_second(config) -> float:
    with tempfile.TemporaryDirectory() as workdir:
        train(build_experiment(config), workdir)
        records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    # Interval rates after the first (compilation); weight by interval length.
    steps = [b["step"] - a["step"] for a, b in zip(records, records[1:])]
    seconds = [n / r["steps_per_second"] for n, r in zip(steps, records[1:])]
    return sum(steps) / sum(seconds)


def loop_config(config, steps: int):
    """`config` trained for `steps` steps, logging 10 times and checkpointing 3 times."""
    config = config.copy_and_resolve_references()
    config.training.num_steps = steps
    config.training.log_every = max(steps // 10, 1)
    config.training.checkpoint_every = max(steps // 3, 1)
    return config


def measure_train_loop(config, steps: int, repeats: int) -> dict:
    """Plain step, sharded step and full loop, alternating `repeats` times: steps/s per run."""
    config = loop_config(config, steps)
    runs = {"plain": [], "sharded": [], "loop": []}
    for _ in range(repeats):
        runs["plain"].append(plain_steps_per_second(config, steps))
        runs["sharded"].append(bare_steps_per_second(config, steps))
        runs["loop"].append(loop_steps_per_second(config))
    return runs
