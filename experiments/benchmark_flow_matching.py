"""Flow-matching train steps/s per coupling, beside torchcfm's, and the device couplings'
cost against the exact assignment:

    python -m experiments.benchmark_flow_matching [--steps=200] [--repeats=3] \\
        [--torch_python=/path/to/venv/bin/python]

Our side: the experiment of configs/flow_matching.py in torchcfm's 2-D tutorial setting
(batch 256, Adam 1e-3 without schedule, clipping or EMA; a 64-64-64 network: our
concatsquash MLP, a little more work than the tutorial's plain SELU MLP), its sharded jitted
train step timed on one global batch (experiments/benchmark_train_loop.timed_steps) for each
coupling: independent (I-CFM), sinkhorn_ot (near-exact OT-CFM, the default epsilon and
iterations), exact_ot (the auction) and schrodinger_bridge (sigma = 0.5). With
--torch_python, experiments/benchmark_torchcfm.py (torchcfm's I-CFM and exact OT-CFM, POT on
the host, one torch thread) runs in that interpreter inside the same alternation, so load
that comes and goes is shared; medians are printed with the ratios ours / torchcfm (I-CFM
against I-CFM, every OT coupling against torchcfm's OT-CFM).

Then the couplings alone on 2-D Gaussian minibatches of the batch size: ms per solve under
jit, and the transport cost of their pairs over the exact optimum (scipy's
linear_sum_assignment on the host, whose time is printed too).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import jax
import numpy as np
from absl import app, flags
from scipy.optimize import linear_sum_assignment

from configs import flow_matching
from experiments.benchmark_train_loop import timed_steps
from genjax.couplings import auction_assignment, sample_rows, sinkhorn_conditional_plan, squared_distances
from genjax.experiment import build_experiment
from genjax.processes.flow_matching import FlowMatchingPath

flags.DEFINE_integer("steps", 200, "Timed steps per measurement.")
flags.DEFINE_integer("repeats", 3, "Alternating repeats.")
flags.DEFINE_integer("batch_size", 256, "Global batch (and coupling size).")
flags.DEFINE_string("torch_python", "", "A Python with torch, torchcfm and POT: adds torchcfm's rates to the table.")
flags.DEFINE_list("couplings", "independent,sinkhorn_ot,exact_ot,schrodinger_bridge", "Our couplings to time.")
FLAGS = flags.FLAGS
OPTIONS = {"schrodinger_bridge": {"sigma": 0.5}}
TORCH_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "benchmark_torchcfm.py")


def tutorial_config(coupling: str):
    """configs/flow_matching.py in torchcfm's 2-D tutorial setting."""
    config = flow_matching.get_config()
    config.process.kwargs.coupling = coupling
    config.process.kwargs.update(OPTIONS.get(coupling, {}))
    config.model.name = "concatsquash"
    config.model.kwargs = {"hidden_dims": (64, 64, 64), "activation": "elu"}
    config.optimizer.learning_rate = 1e-3
    config.optimizer.decay = "constant"
    config.optimizer.warmup_steps = 0
    config.optimizer.grad_clip_norm = 0.0
    config.training.ema_decay = 0.0
    config.training.batch_size = FLAGS.batch_size
    return config


def step_rate(coupling: str) -> float:
    config = tutorial_config(coupling)
    experiment = build_experiment(config)
    batch = experiment.global_batch(experiment.train_stream(), 0)
    return timed_steps(experiment.jitted_train_step(), experiment.init_state(), batch, FLAGS.steps,
                       config.training.sync_every)


def torchcfm_rates() -> dict:
    command = [FLAGS.torch_python, TORCH_SCRIPT, f"--steps={FLAGS.steps}", "--repeats=1", "--threads=1"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(f"error: {' '.join(command)} failed: {done.stderr.strip().splitlines()[-1:]}\n")
        sys.exit(2)
    return json.loads(done.stdout.strip().splitlines()[-1])


def coupling_figures(n: int, repeats: int = 5) -> dict:
    """ms per solve and the relative cost gap of each device coupling to the exact optimum."""
    process = FlowMatchingPath()
    solvers = {
        "exact_ot (auction)": lambda x, y, key: auction_assignment(squared_distances(x, y), process.ot_tolerance),
        f"sinkhorn_ot (eps {process.ot_epsilon:g}, {process.ot_epsilon_levels}x{process.ot_iterations} it)": lambda x, y, key: sample_rows(
            key, sinkhorn_conditional_plan(squared_distances(x, y), process.ot_epsilon, process.ot_epsilon_levels,
                                           process.ot_iterations)),
    }
    figures = {name: {"ms": [], "gap": []} for name in solvers}
    figures["scipy (host)"] = {"ms": [], "gap": []}
    for seed in range(repeats):
        kx, ky, key = jax.random.split(jax.random.key(seed), 3)
        x, y = jax.random.normal(kx, (n, 2)) + 2.0, jax.random.normal(ky, (n, 2))
        cost = np.asarray(squared_distances(x, y), np.float64)
        start = time.perf_counter()
        rows, cols = linear_sum_assignment(cost)
        figures["scipy (host)"]["ms"].append(1e3 * (time.perf_counter() - start))
        optimum = cost[rows, cols].sum()
        figures["scipy (host)"]["gap"].append(0.0)
        for name, solve in solvers.items():
            solve = jax.jit(solve)
            solve(x, y, key).block_until_ready()
            start = time.perf_counter()
            pairs = np.asarray(solve(x, y, key).block_until_ready())
            figures[name]["ms"].append(1e3 * (time.perf_counter() - start))
            figures[name]["gap"].append(cost[np.arange(n), pairs].sum() / optimum - 1.0)
    return figures


def main(argv):
    del argv
    unknown = [c for c in FLAGS.couplings if c not in ("independent", "exact_ot", "sinkhorn_ot", "schrodinger_bridge")]
    if unknown:
        sys.stderr.write(f"error: --couplings has unknown names {unknown}; choose from independent, exact_ot, "
                         "sinkhorn_ot, schrodinger_bridge\n")
        sys.exit(2)
    if FLAGS.torch_python and not os.access(FLAGS.torch_python, os.X_OK):
        sys.stderr.write(f"error: --torch_python={FLAGS.torch_python!r} is not an executable; give the python of a "
                         "virtualenv with torch, torchcfm and POT\n")
        sys.exit(2)
    rates = {name: [] for name in FLAGS.couplings}
    torch_rates = {"icfm": [], "otcfm": []}
    for _ in range(FLAGS.repeats):
        for name in FLAGS.couplings:
            rates[name].append(step_rate(name))
        if FLAGS.torch_python:
            result = torchcfm_rates()
            for name in torch_rates:
                torch_rates[name].append(result[name])
    medians = {name: statistics.median(values) for name, values in rates.items()}
    torch_medians = {name: statistics.median(v) for name, v in torch_rates.items() if v}
    print(f"{'coupling':22s} {'steps/s':>9s}  runs")
    for name, values in rates.items():
        reference = torch_medians.get("icfm" if name == "independent" else "otcfm")
        ratio = f"  {medians[name] / reference:.2f} x torchcfm {'I' if name == 'independent' else 'OT'}-CFM" if reference else ""
        print(f"{name:22s} {medians[name]:9.1f}  {', '.join(f'{v:.1f}' for v in values)}{ratio}")
    for name, values in torch_rates.items():
        if values:
            print(f"{'torchcfm ' + name:22s} {torch_medians[name]:9.1f}  {', '.join(f'{v:.1f}' for v in values)}")
    for name, values in coupling_figures(FLAGS.batch_size).items():
        print(f"coupling n={FLAGS.batch_size} {name:34s} {statistics.median(values['ms']):8.2f} ms/solve  cost gap "
              f"mean {np.mean(values['gap']):.2e} max {max(values['gap']):.2e}")


if __name__ == "__main__":
    app.run(main)
