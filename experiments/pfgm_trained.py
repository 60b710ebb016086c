"""EDM, PFGM (D = 1) and PFGM++ (several D) trained for the same wall time on the same data and
network, beside the exact score, and their robustness to fewer steps and to perturbed sampling.

    python -m experiments.pfgm_trained --workdir=DIR [--seconds=30] [--dims=1,8,128,2048]

Data: the toy `gaussian_mixture` (density exact). Every model is configs/edm.py's MLP with
batch 512 (PFGM's has one more output, the field's z component) trained by the engine
(`genjax.train.loop.train`) for as many steps as it makes in `--seconds` (its step rate
is timed first on the jitted train step, in CPU seconds: on shared cores wall time depends on
the other jobs; the table gives both); EMA decay 0.99 (short runs). Each is then
sampled with EDM's Heun sampler (no churn) at several step counts, scored against fresh data
(SWD, MMD; "stray" = share of samples farther than 10 from the origin, the data lying within
about 5), sampled with Euler's method on the same grid, its NLL taken through the
probability-flow ODE, and sampled again under PFGM++'s two perturbations (Xu et al. 2023,
sec. 5.2: smaller D is more robust; the recipes of the paper's generate_alpha.py and
generate_quant.py): Gaussian noise alpha t eps added to the state before each Heun step
(t = sigma, or z for PFGM: the noise level), and every weight matrix quantized to b bits
(per-tensor min-max, the paper's zero point). All the fixed-step samplers here start from
the process's prior and step on its `time_grid`, the last step Euler's (NFE 2 N - 1 for Heun).
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
from genjax.processes import views
from genjax.train.loop import train

flags.DEFINE_string("workdir", None, "Where to write pfgm_trained.md and pfgm_trained.json.")
flags.DEFINE_float("seconds", 30.0, "Training budget of each model, in CPU seconds of its train steps.")
flags.DEFINE_list("dims", ["1", "8", "128", "2048"], "PFGM++'s augmented dimensions D.")
flags.DEFINE_integer("num_samples", 1000, "Samples per setting (and fresh data points they are scored against).")
flags.DEFINE_integer("nll_points", 100, "Held-out points for the NLL (0 skips it).")
flags.DEFINE_list("heun_steps", ["4", "8", "16", "32"], "EDM Heun step counts (NFE = 2 N - 1); the last is the main one.")
flags.DEFINE_list("alphas", ["0.05", "0.1", "0.2"], "Scales of the state noise alpha t eps added per Heun step.")
flags.DEFINE_list("quant_bits", ["6", "5"], "Bits of the weight quantization.")
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


def quantized(params, bits: int):
    """Every weight matrix (a leaf of rank >= 2) quantized to `bits` bits and back: scale =
    (max - min) / (2^b - 1), zero point int(clip(-min / scale, 0, 2^b - 1)), q = round(clip(zp +
    w / scale, 0, 2^b - 1)), w -> scale (q - zp) (PFGM++'s generate_quant.py); biases are kept."""
    top = 2.0**bits - 1.0

    def quantize(w):
        if w.ndim < 2:
            return w
        scale = (jnp.max(w) - jnp.min(w)) / top
        zero = jnp.floor(jnp.clip(-jnp.min(w) / scale, 0.0, top))
        return scale * (jnp.round(jnp.clip(zero + w / scale, 0.0, top)) - zero)

    return jax.tree.map(quantize, params)


def fixed_step_samples(process, model, key, num: int, num_steps: int, solver: str = "heun", alpha: float = 0.0):
    """`num` samples by Euler or Heun steps on `process.time_grid(num_steps)` from the prior, the
    last step Euler's (EDM's sampler without churn when alpha = 0), with alpha t_i eps_i added to
    the state before step i (PFGM++'s generate_alpha.py). Returns [num, 2]."""
    velocity = views.batched_velocity_fn(process, model)
    grid = process.time_grid(num_steps)
    key_prior, key_noise = jax.random.split(key)
    x = jax.vmap(lambda k: process.prior_sample(k, (2,)))(jax.random.split(key_prior, num))

    def step(x, i):
        t, t_next = grid[i], grid[i + 1]
        x = x + alpha * t * jax.random.normal(jax.random.fold_in(key_noise, i), x.shape)
        d = velocity(x, jnp.full((num,), t))
        x_euler = x + (t_next - t) * d
        if solver == "euler":
            return x_euler, None
        d_next = velocity(x_euler, jnp.full((num,), t_next))
        x_heun = x + (t_next - t) * 0.5 * (d + d_next)
        return jnp.where(i < num_steps - 1, x_heun, x_euler), None

    return jax.lax.scan(step, x, jnp.arange(num_steps))[0]


def quality(samples, reference, key) -> dict:
    samples = np.asarray(samples)
    stray = float(np.mean(~np.isfinite(samples).all(axis=1) | (np.linalg.norm(samples, axis=1) > STRAY_RADIUS)))
    return {**sample_quality(key, np.nan_to_num(samples, nan=1e6, posinf=1e6, neginf=-1e6), reference),
            "stray": stray}


def sample_sets(process, model_of, params, settings: list[tuple], num: int) -> list:
    """Samples for each (num_steps, solver, alpha) setting of a model (params -> views.Model)."""
    key = jax.random.key(FLAGS.seed + 1)
    run = jax.jit(lambda p, n, solver, alpha: fixed_step_samples(process, model_of(p), key, num, n, solver, alpha),
                  static_argnums=(1, 2, 3))
    return [run(params, *setting) for setting in settings]


def sweep(process, model_of, params, steps, alphas, bits, reference, metrics_key) -> dict:
    """The Heun and Euler step sweeps, the state-noise and the quantization rows of one model."""
    main = steps[-1]
    settings = [(n, "heun", 0.0) for n in steps] + [(n, "euler", 0.0) for n in steps] + \
        [(main, "heun", a) for a in alphas]
    sets = sample_sets(process, model_of, params, settings, FLAGS.num_samples)
    scored = [quality(s, reference, metrics_key) for s in sets]
    k = len(steps)
    row = {"heun": {str(n): {"nfe": 2 * n - 1, **q} for n, q in zip(steps, scored[:k])},
           "euler": {str(n): {"nfe": n, **q} for n, q in zip(steps, scored[k:2 * k])},
           "state_noise": {f"{a:g}": q for a, q in zip(alphas, scored[2 * k:])}}
    if params is not None:
        row["quantized"] = {}
        for b in bits:
            s = sample_sets(process, model_of, quantized(params, b), [(main, "heun", 0.0)], FLAGS.num_samples)[0]
            row["quantized"][str(b)] = quality(s, reference, metrics_key)
    return row


def evaluate_model(name, config, reference, metrics_key, steps, alphas, bits) -> dict:
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
    row.update(sweep(experiment.process, experiment.model, params, steps, alphas, bits, reference, metrics_key))
    if FLAGS.nll_points:
        held_out = experiment.reference_data(FLAGS.nll_points)
        row["nll"] = negative_log_likelihood(experiment, params, held_out, dict(LIKELIHOOD))
    print(f"{name}: {json.dumps(row)}", flush=True)
    return row


def oracle_rows(config, reference, metrics_key, steps, alphas) -> dict:
    """The exact EDM score of the mixture through the same sampler, and the data's exact NLL."""
    experiment = build_experiment(config)
    score = factory.build_oracle(config, experiment.process)[0]
    row = sweep(experiment.process, lambda _: score, None, steps, alphas, [], reference, metrics_key)
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


def cell(entry) -> str:
    return f"{entry['mmd']:.5f} ({entry['stray']:.3f})"


def markdown(results: dict, steps: list[int], alphas: list[float], bits: list[int]) -> str:
    main = str(steps[-1])
    floor = results["noise_floor"]
    lines = [f"gaussian_mixture, {FLAGS.num_samples} samples per setting, {FLAGS.seconds:g} s of training per model, "
             f"NLL of {FLAGS.nll_points} held-out points. Noise floor (two fresh data sets): SWD {floor['swd']:.4f}, "
             f"MMD {floor['mmd']:.5f}.", "",
             f"| model | train s (CPU s) | steps | final loss | Heun NFE | SWD | MMD | stray | NLL (nats/dim) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, row in results["models"].items():
        h = row["heun"][main]
        train_cells = (f"{row['train_seconds']:.0f} ({row['train_cpu_seconds']:.0f}) | {row['steps']} | "
                       f"{row['final_loss']:.4g}" if "steps" in row
                       else "- | - | -")
        lines.append(f"| {name} | {train_cells} | {h['nfe']} | {h['swd']:.4f} | {h['mmd']:.5f} | "
                     f"{h['stray']:.3f} | {fmt_nll(row)} |")
    for solver, nfe in (("heun", "2 N - 1"), ("euler", "N")):
        lines += ["", f"MMD (and stray share) against the number of {solver.capitalize()} steps N (NFE = {nfe}):", "",
                  "| model | " + " | ".join(f"N={n}" for n in steps) + " |", "|---|" + "---|" * len(steps)]
        for name, row in results["models"].items():
            lines.append(f"| {name} | " + " | ".join(cell(row[solver][str(n)]) for n in steps) + " |")
    lines += ["", f"MMD (and stray share) with noise alpha t eps added to the state before each Heun step, N={main}:",
              "", "| model | alpha=0 | " + " | ".join(f"alpha={a:g}" for a in alphas) + " |",
              "|---|---|" + "---|" * len(alphas)]
    for name, row in results["models"].items():
        cells = [cell(row["heun"][main])] + [cell(row["state_noise"][f"{a:g}"]) for a in alphas]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"MMD (and stray share) with every weight matrix quantized to b bits, Heun N={main}:",
              "", "| model | float32 | " + " | ".join(f"{b} bits" for b in bits) + " |",
              "|---|---|" + "---|" * len(bits)]
    for name, row in results["models"].items():
        if "quantized" in row:
            cells = [cell(row["heun"][main])] + [cell(row["quantized"][str(b)]) for b in bits]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse_flags():
    try:
        dims = [float(d) for d in FLAGS.dims]
        steps = [int(n) for n in FLAGS.heun_steps]
        alphas = [float(a) for a in FLAGS.alphas]
        bits = [int(b) for b in FLAGS.quant_bits]
    except ValueError:
        dims = steps = alphas = bits = None
    ok = (FLAGS.workdir and dims and min(dims) > 0 and steps and min(steps) >= 1 and alphas is not None
          and min(alphas, default=0) >= 0 and bits is not None and min(bits, default=2) >= 2 and FLAGS.seconds > 0
          and FLAGS.num_samples >= 2 and FLAGS.nll_points >= 0)
    if not ok:
        sys.stderr.write("error: --workdir is required; --dims and --alphas take non-negative numbers (dims > 0), "
                         "--heun_steps positive integers, --quant_bits integers >= 2, --seconds > 0, "
                         "--num_samples >= 2, --nll_points >= 0\n")
        sys.exit(2)
    return dims, steps, alphas, bits


def main(argv):
    del argv
    absl_logging.set_verbosity(absl_logging.WARNING)
    dims, steps, alphas, bits = parse_flags()
    os.makedirs(FLAGS.workdir, exist_ok=True)
    configs = model_configs(dims)
    probe = build_experiment(configs["EDM"])
    reference_all = probe.reference_data(2 * FLAGS.num_samples)
    reference, second = reference_all[:FLAGS.num_samples], reference_all[FLAGS.num_samples:]
    metrics_key = derive_key(FLAGS.seed, "metrics")
    results = {"noise_floor": sample_quality(metrics_key, second, reference), "models": {}}
    results["models"]["exact score (EDM sampler)"] = oracle_rows(configs["EDM"], reference, metrics_key, steps, alphas)
    flags_used = {"seconds": FLAGS.seconds, "dims": dims, "num_samples": FLAGS.num_samples,
                  "nll_points": FLAGS.nll_points, "heun_steps": steps, "alphas": alphas, "quant_bits": bits,
                  "seed": FLAGS.seed}
    write(results, flags_used, markdown(results, steps, alphas, bits))
    for name, config in configs.items():
        results["models"][name] = evaluate_model(name, config, reference, metrics_key, steps, alphas, bits)
        write(results, flags_used, markdown(results, steps, alphas, bits))  # an interrupted run keeps what it finished
    print(markdown(results, steps, alphas, bits))


def write(results: dict, flags_used: dict, table: str) -> None:
    with open(os.path.join(FLAGS.workdir, "pfgm_trained.md"), "w") as f:
        f.write(table)
    with open(os.path.join(FLAGS.workdir, "pfgm_trained.json"), "w") as f:
        json.dump({"flags": flags_used, **results}, f, indent=2)


if __name__ == "__main__":
    app.run(main)
