"""EDM, PFGM (D = 1) and PFGM++ (several D) trained for the same wall time on the same data and
network, beside the exact score, and their robustness to fewer steps and to a perturbed network.

    python -m experiments.pfgm_trained --workdir=DIR [--seconds=30] [--dims=1,8,128,2048]

Data: the toy `gaussian_mixture` (density exact). Every model is configs/edm.py's MLP with
batch 512 (PFGM's has one more output, the field's z component) trained by the engine
(`genjax.train.loop.train`) for as many steps as it makes in `--seconds` (its step rate
is timed first on the jitted train step, in CPU seconds: on shared cores wall time depends on
the other jobs; the table gives both); EMA decay 0.99 (short runs). Each is then
sampled with EDM's Heun sampler (no churn) at several step counts, scored against fresh data
(SWD, MMD; "stray" = share of samples farther than 10 from the origin, the data lying within
about 5), its NLL taken through the probability-flow ODE, and sampled again with every
parameter tensor w perturbed to w + alpha std(w) eps, eps ~ N(0, I) (PFGM++'s robustness
claim: smaller D tolerates a perturbed network and larger steps better; Xu et al. 2023, sec. 6).
Reference rows: two fresh data sets (the noise floor), the exact score of the mixture through
the same EDM sampler, and the data's exact NLL. Writes DIR/pfgm_trained.md and .json.
"""
from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from absl import logging as absl_logging

from configs import edm as edm_config
from configs import pfgm as pfgm_config
from configs import pfgmpp as pfgmpp_config
from genjax import factory
from genjax.data import toy
from genjax.evaluate.likelihood import negative_log_likelihood
from genjax.evaluate.two_sample import sample_quality
from genjax.experiment import build_experiment, derive_key
from genjax.samplers import sample_edm_heun
from genjax.train.loop import train

flags.DEFINE_string("workdir", None, "Where to write pfgm_trained.md and pfgm_trained.json.")
flags.DEFINE_float("seconds", 30.0, "Training budget of each model, in CPU seconds of its train steps.")
flags.DEFINE_list("dims", ["1", "8", "128", "2048"], "PFGM++'s augmented dimensions D.")
flags.DEFINE_integer("num_samples", 1000, "Samples per setting (and fresh data points they are scored against).")
flags.DEFINE_integer("nll_points", 100, "Held-out points for the NLL (0 skips it).")
flags.DEFINE_list("heun_steps", ["4", "8", "16", "32"], "EDM Heun step counts (NFE = 2 N - 1); the last is the main one.")
flags.DEFINE_list("alphas", ["0.02", "0.05"], "Relative scales of the parameter noise.")
flags.DEFINE_integer("seed", 0, "Seed of every model's config.")
FLAGS = flags.FLAGS

STRAY_RADIUS = 10.0
LIKELIHOOD = {"divergence": "exact", "solver": "tsit5", "rtol": 1e-4, "atol": 1e-4, "max_steps": 4096}


def data_std() -> float:
    return float(np.std(np.asarray(toy.gaussian_mixture(jax.random.key(123), 100_000))))


def model_configs(dims: list[float]) -> dict:
    """name -> config, all on the gaussian_mixture with EDM's noise range scaled to its std."""
    std = data_std()
    edm_kwargs = {"sigma_data": std, "p_mean": -1.2 + math.log(std / 0.5)}
    configs = {"EDM": edm_config.get_config(), "PFGM (D=1)": pfgm_config.get_config()}
    configs["EDM"].process.kwargs.update(edm_kwargs)
    configs["PFGM (D=1)"].process.kwargs.sigma_data = std
    for d in dims:
        config = pfgmpp_config.get_config()
        config.process.kwargs.update(edm_kwargs)
        config.process.kwargs.augment_dim = d
        configs[f"PFGM++ D={d:g}"] = config
    for config in configs.values():
        config.data.name = "gaussian_mixture"
        config.seed = FLAGS.seed
        config.training.ema_decay = 0.99
        config.evaluate.nll_num_points = FLAGS.nll_points
        config.evaluate.likelihood = dict(LIKELIHOOD)
    return configs


def steps_for(config, seconds: float) -> tuple[int, float]:
    """(steps that fit in `seconds`, steps per second) from 50 timed steps of the jitted train
    step, timed in CPU seconds of this process (on shared cores its wall time depends on the
    other jobs; its CPU time much less)."""
    config.training.num_steps = 1000
    experiment = build_experiment(config)
    step, state = experiment.jitted_train_step(), experiment.init_state()
    stream = experiment.train_stream()
    state, metrics = step(state, experiment.global_batch(stream, 0))
    jax.block_until_ready(metrics)
    start = time.process_time()
    for i in range(1, 51):
        state, metrics = step(state, experiment.global_batch(stream, i))
        if i % 10 == 0:
            jax.block_until_ready(metrics)
    rate = 50 / (time.process_time() - start)
    return max(10, int(rate * seconds) // 10 * 10), rate


def perturbed(params, alpha: float, key):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    noisy = [w + alpha * jnp.std(w) * jax.random.normal(k, w.shape, w.dtype) for w, k in zip(leaves, keys)]
    return jax.tree.unflatten(tree, noisy)


def quality(samples, reference, key) -> dict:
    samples = np.asarray(samples)
    stray = float(np.mean(np.linalg.norm(samples, axis=1) > STRAY_RADIUS))
    return {**sample_quality(key, samples, reference), "stray": stray}


def heun_sets(process, score_model, params, steps: list[int], num: int) -> dict:
    """EDM Heun samples per step count for a score model (params -> score fn)."""
    key = jax.random.key(FLAGS.seed + 1)
    out = {}
    for n in steps:
        run = jax.jit(lambda p, k, n=n: sample_edm_heun(process, score_model(p), k, num, (2,), num_steps=n).samples)
        out[n] = run(params, key)
    return out


def evaluate_model(name, config, reference, metrics_key, steps, alphas) -> dict:
    num_steps, rate = steps_for(config, FLAGS.seconds)
    config.training.num_steps = num_steps
    config.training.log_every = config.training.checkpoint_every = num_steps
    experiment = build_experiment(config)
    with tempfile.TemporaryDirectory() as workdir:
        start, cpu_start = time.perf_counter(), time.process_time()
        state = train(experiment, workdir)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            loss = [json.loads(line) for line in f if '"loss"' in line][-1]["loss"]
    params = state.ema_params
    row = {"train_seconds": seconds, "train_cpu_seconds": cpu_seconds, "steps": num_steps,
           "timed_steps_per_cpu_second": rate, "final_loss": loss}
    sets = heun_sets(experiment.process, experiment.score_fn, params, steps, FLAGS.num_samples)
    row["heun"] = {str(n): {"nfe": 2 * n - 1, **quality(s, reference, metrics_key)} for n, s in sets.items()}
    row["parameter_noise"] = {}
    for alpha in alphas:
        noisy = perturbed(params, alpha, jax.random.key(FLAGS.seed + 2))
        s = heun_sets(experiment.process, experiment.score_fn, noisy, steps[-1:], FLAGS.num_samples)[steps[-1]]
        row["parameter_noise"][f"{alpha:g}"] = quality(s, reference, metrics_key)
    if FLAGS.nll_points:
        held_out = experiment.reference_data(FLAGS.nll_points)
        row["nll"] = negative_log_likelihood(experiment, params, held_out, dict(LIKELIHOOD))
    print(f"{name}: {json.dumps(row)}", flush=True)
    return row


def oracle_rows(config, reference, metrics_key, steps) -> dict:
    """The exact EDM score of the mixture through the same sampler, and the data's exact NLL."""
    experiment = build_experiment(config)
    score = factory.build_oracle(config, experiment.process)[0]
    sets = heun_sets(experiment.process, lambda _: score, None, steps, FLAGS.num_samples)
    row = {"heun": {str(n): {"nfe": 2 * n - 1, **quality(s, reference, metrics_key)} for n, s in sets.items()}}
    if FLAGS.nll_points:
        held_out = jnp.asarray(experiment.reference_data(FLAGS.nll_points))
        log_p = jax.vmap(toy.gaussian_mixture_oracle().log_prob)(held_out)
        row["nll"] = {"nll_nats_per_dim": float(-jnp.mean(log_p) / 2),
                      "nll_standard_error": float(jnp.std(log_p) / 2 / math.sqrt(len(log_p))), "nfe_mean": 0.0,
                      "failed_points": 0}
    return row


def fmt_nll(row) -> str:
    if "nll" not in row:
        return "-"
    nll = row["nll"]
    if nll["failed_points"]:
        return f"n/a ({nll['failed_points']} failed)"
    return f"{nll['nll_nats_per_dim']:.3f} +- {nll['nll_standard_error']:.3f} ({nll['nfe_mean']:.0f} NFE)"


def markdown(results: dict, steps: list[int], alphas: list[float]) -> str:
    main = str(steps[-1])
    floor = results["noise_floor"]
    lines = [f"gaussian_mixture, {FLAGS.num_samples} samples per setting, {FLAGS.seconds:g} s of training per model, "
             f"NLL of {FLAGS.nll_points} held-out points. Noise floor (two fresh data sets): SWD {floor['swd']:.4f}, "
             f"MMD {floor['mmd']:.5f}.", "",
             f"| model | train s (CPU s) | steps | final loss | EDM Heun NFE | SWD | MMD | stray | NLL (nats/dim) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, row in results["models"].items():
        h = row["heun"][main]
        train_cells = (f"{row['train_seconds']:.0f} ({row['train_cpu_seconds']:.0f}) | {row['steps']} | "
                       f"{row['final_loss']:.4g}" if "steps" in row
                       else "- | - | -")
        lines.append(f"| {name} | {train_cells} | {h['nfe']} | {h['swd']:.4f} | {h['mmd']:.5f} | "
                     f"{h['stray']:.3f} | {fmt_nll(row)} |")
    lines += ["", "MMD (and stray share) against the number of EDM Heun steps N (NFE = 2 N - 1):", "",
              "| model | " + " | ".join(f"N={n}" for n in steps) + " |", "|---|" + "---|" * len(steps)]
    for name, row in results["models"].items():
        cells = [f"{row['heun'][str(n)]['mmd']:.5f} ({row['heun'][str(n)]['stray']:.3f})" for n in steps]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"MMD (and stray share) with every parameter tensor w -> w + alpha std(w) eps, EDM Heun N={main}:",
              "", "| model | alpha=0 | " + " | ".join(f"alpha={a:g}" for a in alphas) + " |",
              "|---|---|" + "---|" * len(alphas)]
    for name, row in results["models"].items():
        if "parameter_noise" not in row:
            continue
        cells = [f"{row['heun'][main]['mmd']:.5f} ({row['heun'][main]['stray']:.3f})"]
        cells += [f"{row['parameter_noise'][f'{a:g}']['mmd']:.5f} ({row['parameter_noise'][f'{a:g}']['stray']:.3f})"
                  for a in alphas]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse_flags():
    try:
        dims = [float(d) for d in FLAGS.dims]
        steps = [int(n) for n in FLAGS.heun_steps]
        alphas = [float(a) for a in FLAGS.alphas]
    except ValueError:
        dims = steps = alphas = None
    ok = (FLAGS.workdir and dims and min(dims) > 0 and steps and min(steps) >= 1 and alphas is not None
          and min(alphas, default=0) >= 0 and FLAGS.seconds > 0 and FLAGS.num_samples >= 2 and FLAGS.nll_points >= 0)
    if not ok:
        sys.stderr.write("error: --workdir is required; --dims and --alphas take non-negative numbers (dims > 0), "
                         "--heun_steps positive integers, --seconds > 0, --num_samples >= 2, --nll_points >= 0\n")
        sys.exit(2)
    return dims, steps, alphas


def main(argv):
    del argv
    absl_logging.set_verbosity(absl_logging.WARNING)
    dims, steps, alphas = parse_flags()
    os.makedirs(FLAGS.workdir, exist_ok=True)
    configs = model_configs(dims)
    probe = build_experiment(configs["EDM"])
    reference_all = probe.reference_data(2 * FLAGS.num_samples)
    reference, second = reference_all[:FLAGS.num_samples], reference_all[FLAGS.num_samples:]
    metrics_key = derive_key(FLAGS.seed, "metrics")
    results = {"noise_floor": sample_quality(metrics_key, second, reference), "models": {}}
    results["models"]["exact score (EDM sampler)"] = oracle_rows(configs["EDM"], reference, metrics_key, steps)
    write(results, steps, alphas, dims)
    for name, config in configs.items():
        results["models"][name] = evaluate_model(name, config, reference, metrics_key, steps, alphas)
        write(results, steps, alphas, dims)  # a long run interrupted keeps the models it finished
    print(markdown(results, steps, alphas))


def write(results: dict, steps, alphas, dims) -> None:
    with open(os.path.join(FLAGS.workdir, "pfgm_trained.md"), "w") as f:
        f.write(markdown(results, steps, alphas))
    with open(os.path.join(FLAGS.workdir, "pfgm_trained.json"), "w") as f:
        json.dump({"flags": {"seconds": FLAGS.seconds, "dims": dims, "num_samples": FLAGS.num_samples,
                             "nll_points": FLAGS.nll_points, "heun_steps": steps, "alphas": alphas, "seed": FLAGS.seed},
                   **results}, f, indent=2)


if __name__ == "__main__":
    app.run(main)
