"""Training-loop efficiency: steps/s of the full loop over steps/s of the bare jitted step,
and the cost of the sharded code path against a plain `jax.jit` of the same step.

    python -m experiments.benchmark_train_loop --config=configs/default.py [--steps=3000] [--repeats=3]

The plain step is `jax.jit(train_step)` on one device with no mesh. The bare step runs the
experiment's sharded jitted train_step on one fixed global batch, blocking on the
loss every training.sync_every steps, as the loop does. The full loop is `train()` itself
(data stream, global-batch assembly, metric checks, console/JSONL/TensorBoard logging and
asynchronous checkpoints every training.checkpoint_every steps) on a fresh workdir; its rate
is taken from the logged intervals after the first (which holds the compilation). The two
alternate `repeats` times and the table shows medians, since a shared machine is noisy.
"""
from __future__ import annotations

import functools
import json
import os
import statistics
import tempfile
import time

import jax
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from genjax.experiment import build_experiment
from genjax.train.loop import train
from genjax.train.step import train_step

config_flags.DEFINE_config_file("config", "configs/default.py", "Experiment config.", lock_config=False)
flags.DEFINE_integer("steps", 3000, "Steps per measurement.")
flags.DEFINE_integer("repeats", 3, "Alternating measurements of each.")
FLAGS = flags.FLAGS


def _timed_steps(step_fn, state, batch, steps: int, sync_every: int) -> float:
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
    return _timed_steps(experiment.jitted_train_step(), experiment.init_state(), batch, steps,
                        config.training.sync_every)


def plain_steps_per_second(config, steps: int) -> float:
    """The same train_step under a plain jax.jit: no mesh, no shardings, no donation."""
    experiment = build_experiment(config)
    step_fn = jax.jit(functools.partial(
        train_step, loss_fn=experiment.loss_fn, optimizer=experiment.optimizer,
        ema_decay=config.training.ema_decay, grad_accum_steps=config.training.grad_accum_steps))
    state = jax.device_put(jax.device_get(experiment.init_state()), jax.devices()[0])
    batch = jax.device_put(experiment.train_stream().local_batch(0), jax.devices()[0])
    return _timed_steps(step_fn, state, batch, steps, config.training.sync_every)


def loop_steps_per_second(config) -> float:
    with tempfile.TemporaryDirectory() as workdir:
        train(build_experiment(config), workdir)
        records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    # Interval rates after the first (compilation); weight by interval length.
    steps = [b["step"] - a["step"] for a, b in zip(records, records[1:])]
    seconds = [n / r["steps_per_second"] for n, r in zip(steps, records[1:])]
    return sum(steps) / sum(seconds)


def main(argv):
    del argv
    absl_logging.set_verbosity(absl_logging.WARNING)  # as experiments.main runs it
    config = FLAGS.config
    config.training.num_steps = FLAGS.steps
    config.training.log_every = max(FLAGS.steps // 10, 1)
    config.training.checkpoint_every = max(FLAGS.steps // 3, 1)
    plain, bare, loop = [], [], []
    for _ in range(FLAGS.repeats):
        plain.append(plain_steps_per_second(config, FLAGS.steps))
        bare.append(bare_steps_per_second(config, FLAGS.steps))
        loop.append(loop_steps_per_second(config))
    plain_median, bare_median, loop_median = map(statistics.median, (plain, bare, loop))
    print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}; model {config.model.name} "
          f"{dict(config.model.kwargs)}; batch {config.training.batch_size}; {FLAGS.steps} steps x {FLAGS.repeats}")
    print("| measurement | steps/s (median) | all runs |")
    print("|---|---|---|")
    print(f"| plain jax.jit step (no mesh) | {plain_median:.1f} | {', '.join(f'{x:.1f}' for x in plain)} |")
    print(f"| sharded jitted step (mesh, explicit shardings) | {bare_median:.1f} | {', '.join(f'{x:.1f}' for x in bare)} |")
    print(f"| full loop (data, logging, async checkpoints) | {loop_median:.1f} | {', '.join(f'{x:.1f}' for x in loop)} |")
    sharded_ratios = [b / p for b, p in zip(bare, plain)]
    loop_ratios = [l / b for l, b in zip(loop, bare)]
    print(f"| sharded path overhead (sharded / plain) | {statistics.median(sharded_ratios):.3f} | "
          f"{', '.join(f'{x:.3f}' for x in sharded_ratios)} |")
    print(f"| loop efficiency (loop / sharded step) | {statistics.median(loop_ratios):.3f} | "
          f"{', '.join(f'{x:.3f}' for x in loop_ratios)} |")


if __name__ == "__main__":
    app.run(main)
