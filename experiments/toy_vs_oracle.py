"""Trained toy models beside the exact score: what the network leaves on the table.

    python -m experiments.toy_vs_oracle --workdir=DIR
        [--configs=configs/default.py,configs/vp_likelihood.py,configs/ve.py,configs/subvp.py,configs/edm.py]
        [--num_samples=10000] [--nll_num_points=2000]

For each config (the 2-D toy configs; their data set must have an exact oracle,
`genjax.factory.ORACLES`: the checkerboard, whose diffused density p_t is a sum of products
of normal interval masses, or the Gaussian mixture), this

  1. trains it in DIR/<config name> exactly as `experiments.main --mode=train` does
     (resuming, or doing nothing if the run is finished), and records the training time;
  2. runs every sampler of config.evaluate.samplers twice, with the same options, keys and
     prior draws: with the trained model (EMA weights) and with the exact score of the
     diffused data set. Both are scored against the same fresh data (sliced Wasserstein,
     unbiased MMD), beside the noise floor (mean and sd over 5 further fresh data sets);
  3. measures the NLL of the same held-out points three ways: the model through the
     probability-flow ODE (config.evaluate.likelihood, the process prior at T: the number
     `--mode=evaluate` reports); the exact score through the same ODE, solver and prior
     (what a perfect network would get under this protocol); and the analytic
     -log p_{t0}(x) at the ODE's start time t0 = t_min_sample, which the protocol
     approaches with the exact score and the exact p_T. The data set's true NLL at t = 0
     (log(32) / 2 for the checkerboard) is the last column.

The gap between the model's row and the oracle's row at the same NFE is the network's
(approximation and optimisation) error; the oracle's distance to the noise floor is the
sampler's (discretisation) error, tabulated against NFE for every sampler in
docs/diffusion_oracle. Writes DIR/toy_vs_oracle.md and DIR/toy_vs_oracle.json.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
import time

import jax
import numpy as np
from absl import app, flags

_DEFAULT_CONFIGS = ("configs/default.py", "configs/vp_likelihood.py", "configs/ve.py", "configs/subvp.py",
                    "configs/edm.py")

NUM_FLOOR_SETS = 5  # fresh data sets against the reference: the noise floor's mean and spread

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Root directory: one run directory per config, and the table.")
flags.DEFINE_list("configs", list(_DEFAULT_CONFIGS), "Config files (each defines get_config()).")
flags.DEFINE_integer("num_samples", None, "Samples per sampler (default: each config's evaluate.num_samples).")
flags.DEFINE_integer("nll_num_points", None, "Held-out points for the NLL (default: evaluate.nll_num_points).")


def load_config(path: str):
    """config = get_config() of the file at `path` (as --config=path would give)."""
    spec = importlib.util.spec_from_file_location(f"_toy_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def train_timed(experiment, workdir: str, previous: dict | None):
    """Train (or resume) the run: (final state, its wall time or the time recorded when it
    was trained by an earlier call)."""
    from genjax.train.loop import train

    start = time.perf_counter()
    state = train(experiment, workdir)
    seconds = time.perf_counter() - start
    already_done = previous is not None and previous.get("trained_steps") == experiment.config.training.num_steps
    if already_done and seconds < 0.1 * (previous.get("train_seconds") or 0.0):
        seconds = previous["train_seconds"]  # the run was finished before: keep its recorded time
    return state, seconds


def compare(config_path: str, root: str, previous: dict | None) -> dict:
    from genjax import factory
    from genjax.evaluate.likelihood import negative_log_likelihood
    from genjax.evaluate.sampling import draw
    from genjax.evaluate.two_sample import sample_quality
    from genjax.experiment import build_experiment, derive_key, evaluation_samplers

    config = load_config(config_path)
    name = os.path.splitext(os.path.basename(config_path))[0]
    experiment = build_experiment(config)
    exact_score, exact_log_prob = factory.build_oracle(config, experiment.process)
    workdir = os.path.join(root, name)
    os.makedirs(workdir, exist_ok=True)
    state, seconds = train_timed(experiment, workdir, previous)
    params = state.ema_params

    num = FLAGS.num_samples or config.evaluate.num_samples
    reference = experiment.reference_data((1 + NUM_FLOOR_SETS) * num)
    reference, fresh_sets = reference[:num], reference[num:].reshape(NUM_FLOOR_SETS, num, *reference.shape[1:])
    metrics_key = derive_key(config.seed, "metrics")
    floor = [sample_quality(metrics_key, fresh, reference) for fresh in fresh_sets]
    result = {"config": config_path, "process": config.process.name, "dataset": config.data.name,
              "objective": dict(config.objective.kwargs), "trained_steps": int(config.training.num_steps),
              "train_seconds": seconds, "num_samples": num,
              "floor": {**{k: float(np.mean([f[k] for f in floor])) for k in ("swd", "mmd")},
                        **{f"{k}_sd": float(np.std([f[k] for f in floor], ddof=1)) for k in ("swd", "mmd")}},
              "samplers": {}}
    for sampler in evaluation_samplers(config):
        row = {}
        for label, model in (("model", None), ("exact", lambda _: exact_score)):
            drawn = draw(experiment, params, sampler, num, model=model)
            row[label] = {**sample_quality(metrics_key, drawn["samples"], reference),
                          "nfe_mean": float(drawn["nfe"].mean())}
        result["samplers"][sampler] = row

    num_points = FLAGS.nll_num_points or config.evaluate.nll_num_points
    if num_points:
        held_out = experiment.reference_data(num_points)
        options = dict(config.evaluate.likelihood)
        model = negative_log_likelihood(experiment, params, held_out, options)
        exact = negative_log_likelihood(experiment, params, held_out, options, model=lambda _: exact_score)
        t0 = float(options.get("t0") or experiment.process.t_min_sample)
        log_p_t0 = np.asarray(jax.jit(jax.vmap(lambda x: exact_log_prob(x, t0)))(held_out), np.float64)
        num_dims = int(np.prod(held_out.shape[1:]))
        per_dim = -log_p_t0 / num_dims
        result["likelihood"] = {
            "num_points": num_points, "t0": t0,
            "model": model["nll_nats_per_dim"], "model_se": model["nll_standard_error"], "model_nfe": model["nfe_mean"],
            "exact_score": exact["nll_nats_per_dim"], "exact_score_se": exact["nll_standard_error"],
            "exact_score_nfe": exact["nfe_mean"],
            "analytic_t0": float(per_dim.mean()), "analytic_t0_se": float(per_dim.std(ddof=1) / np.sqrt(len(per_dim))),
        }
        if config.data.name == "checkerboard":
            from genjax.data.checkerboard_oracle import CHECKERBOARD_ENTROPY_NATS_PER_DIM

            result["likelihood"]["true_t0"] = CHECKERBOARD_ENTROPY_NATS_PER_DIM
    return result


def markdown(results: dict) -> str:
    lines = ["# Trained toy models beside the exact score", "",
             "Sample quality: distances to fresh data (SWD sliced Wasserstein, MMD unbiased squared MMD); the same "
             "sampler, options, keys and prior draws for the trained model and the exact score, so the two "
             "columns are a paired comparison; the floor is the mean +- sd over 5 fresh data sets.", "",
             "| config | process | train time (s) | sampler | NFE model / exact | SWD model | SWD exact | "
             "MMD model | MMD exact | floor SWD / MMD |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        floor = (f"{r['floor']['swd']:.4f} +- {r['floor']['swd_sd']:.4f} / "
                 f"{r['floor']['mmd']:.5f} +- {r['floor']['mmd_sd']:.5f}")
        for sampler, row in r["samplers"].items():
            m, e = row["model"], row["exact"]
            lines.append(f"| {name} | {r['process']} | {r['train_seconds']:.0f} | {sampler} | "
                         f"{m['nfe_mean']:.0f} / {e['nfe_mean']:.0f} | {m['swd']:.4f} | {e['swd']:.4f} | "
                         f"{m['mmd']:.5f} | {e['mmd']:.5f} | {floor} |")
    lines += ["", "NLL of held-out points in nats/dim (+- standard error over points): the model and the exact "
              "score through the same probability-flow ODE and prior, the analytic -log p_t0 at the ODE's start "
              "time t0, and the true value at t = 0.", "",
              "| config | process | model | exact score | analytic -log p_t0 | true (t = 0) | NFE model / exact |",
              "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        if "likelihood" not in r:
            continue
        nll = r["likelihood"]
        true = f"{nll['true_t0']:.4f}" if "true_t0" in nll else "-"
        lines.append(f"| {name} | {r['process']} | {nll['model']:.4f} +- {nll['model_se']:.4f} | "
                     f"{nll['exact_score']:.4f} +- {nll['exact_score_se']:.4f} | "
                     f"{nll['analytic_t0']:.4f} +- {nll['analytic_t0_se']:.4f} | {true} | "
                     f"{nll['model_nfe']:.0f} / {nll['exact_score_nfe']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv):
    if len(argv) > 1:
        sys.stderr.write(f"error: unexpected arguments {argv[1:]}; flags take the form --name=value\n")
        sys.exit(2)
    if not FLAGS.workdir:
        sys.stderr.write("error: --workdir is required (runs and the table are written there)\n")
        sys.exit(2)
    missing = [path for path in FLAGS.configs if not os.path.isfile(path)]
    if missing:
        sys.stderr.write(f"error: config file(s) not found: {missing}\n")
        sys.exit(2)
    logging.getLogger("genjax").setLevel(logging.INFO)
    os.makedirs(FLAGS.workdir, exist_ok=True)
    json_path = os.path.join(FLAGS.workdir, "toy_vs_oracle.json")
    previous = {}
    if os.path.exists(json_path):
        with open(json_path, encoding="utf-8") as f:
            previous = json.load(f)
    from genjax.factory import ConfigError

    results = {}
    for path in FLAGS.configs:
        name = os.path.splitext(os.path.basename(path))[0]
        try:
            results[name] = compare(path, FLAGS.workdir, previous.get(name))
        except ConfigError as error:
            sys.stderr.write(f"error: {path}: {error}\n")
            sys.exit(2)
        print(f"{name}: done", flush=True)
    table = markdown(results)
    with open(os.path.join(FLAGS.workdir, "toy_vs_oracle.md"), "w", encoding="utf-8") as f:
        f.write(table)
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    print(table)


if __name__ == "__main__":
    app.run(main)
