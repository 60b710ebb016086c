"""Flow-matching train steps/s per coupling, and the device assignment against scipy's:

    python -m experiments.benchmark_flow_matching [--steps=100] [--repeats=3] [--batch_size=256]

For each coupling (independent = I-CFM, exact_ot = OT-CFM, schrodinger_bridge = SB-CFM with
sigma = 0.5) the experiment of configs/flow_matching.py is built and its sharded jitted train
step timed on one global batch (experiments/benchmark_train_loop.timed_steps), the couplings
alternating `repeats` times so load that comes and goes is shared; medians are printed with
the ratio to I-CFM. Then the auction assignment (ms per solve under jit, and its cost over
the exact optimum) beside scipy.optimize.linear_sum_assignment on the host, on 2-D Gaussian
minibatches of the same size. Comparing with torchcfm: on the same machine, run its 2-D
tutorial (MLP 3 x 64 SELU, batch 256, Adam 1e-3) with ConditionalFlowMatcher and
ExactOptimalTransportConditionalFlowMatcher, timing 1000 steps of each, in a virtualenv of
its own (torch and POT are not dependencies of this project).
"""
from __future__ import annotations

import statistics
import time

import jax
import numpy as np
from absl import app, flags
from scipy.optimize import linear_sum_assignment

from configs import flow_matching
from experiments.benchmark_train_loop import timed_steps
from genjax.couplings import auction_assignment, squared_distances
from genjax.experiment import build_experiment

flags.DEFINE_integer("steps", 100, "Timed steps per measurement.")
flags.DEFINE_integer("repeats", 3, "Alternating repeats.")
flags.DEFINE_integer("batch_size", 256, "Global batch (and assignment size).")
FLAGS = flags.FLAGS
COUPLINGS = {"independent": {}, "exact_ot": {}, "schrodinger_bridge": {"sigma": 0.5}}


def step_rate(coupling: str, options: dict) -> float:
    config = flow_matching.get_config()
    config.process.kwargs.coupling = coupling
    config.process.kwargs.update(options)
    config.training.batch_size = FLAGS.batch_size
    experiment = build_experiment(config)
    batch = experiment.global_batch(experiment.train_stream(), 0)
    return timed_steps(experiment.jitted_train_step(), experiment.init_state(), batch, FLAGS.steps,
                       config.training.sync_every)


def assignment_figures(n: int, repeats: int = 5) -> dict:
    solve = jax.jit(lambda x, y: auction_assignment(squared_distances(x, y)))
    ours, theirs, gaps = [], [], []
    for seed in range(repeats):
        kx, ky = jax.random.split(jax.random.key(seed))
        x, y = jax.random.normal(kx, (n, 2)) + 2.0, jax.random.normal(ky, (n, 2))
        solve(x, y).block_until_ready()
        start = time.perf_counter()
        perm = np.asarray(solve(x, y).block_until_ready())
        ours.append(time.perf_counter() - start)
        cost = np.asarray(squared_distances(x, y), np.float64)
        start = time.perf_counter()
        rows, cols = linear_sum_assignment(cost)
        theirs.append(time.perf_counter() - start)
        gaps.append(cost[np.arange(n), perm].sum() / cost[rows, cols].sum() - 1.0)
    return {"auction_ms": 1e3 * statistics.median(ours), "scipy_ms": 1e3 * statistics.median(theirs),
            "max_relative_gap": max(gaps)}


def main(argv):
    del argv
    rates = {name: [] for name in COUPLINGS}
    for _ in range(FLAGS.repeats):
        for name, options in COUPLINGS.items():
            rates[name].append(step_rate(name, options))
    base = statistics.median(rates["independent"])
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"{name:20s} {median:8.1f} steps/s  ({median / base:.3f} x I-CFM; runs {', '.join(f'{v:.1f}' for v in values)})")
    figures = assignment_figures(FLAGS.batch_size)
    print(f"assignment n={FLAGS.batch_size}: auction {figures['auction_ms']:.1f} ms/solve (jit), "
          f"scipy {figures['scipy_ms']:.2f} ms (host), largest cost gap {figures['max_relative_gap']:.2e}")


if __name__ == "__main__":
    app.run(main)
