"""Training-loop efficiency: steps/s of the full loop over steps/s of the bare jitted step.

    python -m experiments.benchmark_train_loop --config=configs/default.py [--steps=3000] [--repeats=3]

The bare step runs the same jitted train_step on one fixed global batch, blocking on the
loss every training.sync_every steps, as the loop does. The full loop is `train()` itself
(data stream, global-batch assembly, metric checks, console/JSONL/TensorBoard logging and
asynchronous checkpoints every training.checkpoint_every steps) on a fresh workdir; its rate
is taken from the logged intervals after the first (which holds the compilation). The two
alternate `repeats` times and the table shows medians, since a shared machine is noisy.
"""
from __future__ import annotations

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

config_flags.DEFINE_config_file("config", "configs/default.py", "Experiment config.", lock_config=False)
flags.DEFINE_integer("steps", 3000, "Steps per measurement.")
flags.DEFINE_integer("repeats", 3, "Alternating measurements of each.")
FLAGS = flags.FLAGS


def bare_steps_per_second(config, steps: int) -> float:
    experiment = build_experiment(config)
    step_fn = experiment.jitted_train_step()
    state = experiment.init_state()
    batch = experiment.global_batch(experiment.train_stream(), 0)
    state, metrics = step_fn(state, batch)  # compile
    metrics["loss"].block_until_ready()
    start = time.perf_counter()
    for i in range(steps):
        state, metrics = step_fn(state, batch)
        if (i + 1) % config.training.sync_every == 0:
            metrics["loss"].block_until_ready()
    metrics["loss"].block_until_ready()
    return steps / (time.perf_counter() - start)


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
    bare, loop = [], []
    for _ in range(FLAGS.repeats):
        bare.append(bare_steps_per_second(config, FLAGS.steps))
        loop.append(loop_steps_per_second(config))
    bare_median, loop_median = statistics.median(bare), statistics.median(loop)
    print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}; model {config.model.name} "
          f"{dict(config.model.kwargs)}; batch {config.training.batch_size}; {FLAGS.steps} steps x {FLAGS.repeats}")
    print("| measurement | steps/s (median) | all runs |")
    print("|---|---|---|")
    print(f"| bare jitted step | {bare_median:.1f} | {', '.join(f'{x:.1f}' for x in bare)} |")
    print(f"| full loop (data, logging, async checkpoints) | {loop_median:.1f} | {', '.join(f'{x:.1f}' for x in loop)} |")
    ratios = [l / b for l, b in zip(loop, bare)]
    print(f"| efficiency (loop / bare) | {loop_median / bare_median:.3f} | {', '.join(f'{x:.3f}' for x in ratios)} |")


if __name__ == "__main__":
    app.run(main)
