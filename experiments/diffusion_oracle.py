"""Every sampler and the likelihood, fed the exact score of a Gaussian mixture.

    python -m experiments.diffusion_oracle --workdir=DIR [--processes=vp,ve,subvp,edm]
                                          [--num_samples=4000] [--num_points=500]

For a Gaussian mixture the diffused density p_t and its score are known in closed form for
every process (genjax.data.gaussian_mixture), so whatever error remains is the sampler's or
the solver's, not a network's. For each process and sampler setting the table gives the
mean NFE and the distance of the samples to fresh data (sliced Wasserstein, unbiased MMD),
beside the noise floor of two fresh data sets of the same size (mean and standard deviation
over 8 fresh sets): a sampler has converged when its numbers lie within the floor's spread.
Read single rows with that spread in mind: SWD's sampling spread is large (its sd is about a
third of its mean here), and the rows of one process share their prior draws, so the
deterministic samplers at convergence all produce nearly the same sample set and the same
number (which can sit below the floor's mean by chance, as it does for VP). The likelihood table gives the probability-flow log-density
error against the analytic log p_t0 per dimension: with the process prior at T (the protocol
a trained model is evaluated with) and with the exact p_T (the solver's error alone), and
Hutchinson's estimate in units of its own standard error.
Writes DIR/oracle.md and DIR/oracle.json.
"""
from __future__ import annotations

import json
import os
import sys
import time

import jax
import numpy as np
from absl import app, flags

from genjax import factory
from genjax.data.gaussian_mixture import perturbed_log_prob_fn, perturbed_score_fn
from genjax.data.toy import gaussian_mixture_oracle
from genjax.evaluate.two_sample import sample_quality
from genjax.samplers import (
    log_likelihood,
    sample_ddim,
    sample_edm_heun,
    sample_predictor_corrector,
    sample_probability_flow,
    sample_reverse_sde,
)

# The processes, scaled to the mixture (its points lie within about 6 of each other).
PROCESS_SETTINGS = {
    "vp": {},
    "ve": {"sigma_min": 0.01, "sigma_max": 12.0},
    "subvp": {},
    "edm": {"sigma_min": 0.002, "sigma_max": 20.0, "sigma_data": 2.0},
}

# (label, sampler, options): the sweeps of error against NFE.
SWEEPS = [
    *[(f"euler_maruyama N={n}", sample_reverse_sde, {"num_steps": n}) for n in (25, 100, 400)],
    *[(f"probability_flow tsit5 tol={tol:g}", sample_probability_flow, {"rtol": tol, "atol": tol})
      for tol in (1e-2, 1e-3, 1e-5)],
    *[(f"probability_flow heun N={n}", sample_probability_flow, {"solver": "heun", "num_steps": n})
      for n in (10, 40)],
    *[(f"reverse diffusion + langevin N={n}", sample_predictor_corrector,
       {"num_steps": n, "predictor": "reverse_diffusion", "corrector": "langevin"})
      for n in (50, 200)],
    ("reverse diffusion + langevin (sigma rule) N=200", sample_predictor_corrector,
     {"num_steps": 200, "predictor": "reverse_diffusion", "corrector": "langevin", "step_size": "sigma"}),
    ("langevin only, 5 per level, snr=0.2 N=200", sample_predictor_corrector,
     {"num_steps": 200, "predictor": "none", "corrector": "langevin", "corrector_steps": 5, "snr": 0.2}),
    *[(f"ancestral N={n}", sample_predictor_corrector, {"num_steps": n, "predictor": "ancestral", "corrector": "none"})
      for n in (50, 200)],
    *[(f"ddim eta={eta:g} N={n}", sample_ddim, {"num_steps": n, "eta": eta}) for eta in (0.0, 1.0) for n in (25, 100)],
    *[(f"edm_heun N={n}", sample_edm_heun, {"num_steps": n}) for n in (18, 64)],
    ("edm_heun N=64 churn=30", sample_edm_heun, {"num_steps": 64, "s_churn": 30.0}),
]

flags.DEFINE_string("workdir", None, "Where to write oracle.md and oracle.json.")
flags.DEFINE_list("processes", list(PROCESS_SETTINGS), f"Subset of {list(PROCESS_SETTINGS)}.")
flags.DEFINE_integer("num_samples", 4000, "Samples per sampler setting (and per fresh data set).")
flags.DEFINE_integer("num_points", 500, "Data points for the likelihood checks.")
flags.DEFINE_integer("num_probes", 8, "Hutchinson probes per point.")
flags.DEFINE_integer("seed", 0, "Seed of every draw.")
FLAGS = flags.FLAGS


NUM_FLOOR_SETS = 8


def noise_floor(mixture, key, reference, num):
    """Both distances between the reference and NUM_FLOOR_SETS fresh data sets: mean and sd.
    A sampler whose numbers lie within this spread is indistinguishable from the data."""
    values = [sample_quality(jax.random.fold_in(key, 3), np.asarray(mixture.sample(jax.random.fold_in(key, 100 + i), num)),
                             reference) for i in range(NUM_FLOOR_SETS)]
    return {name: float(np.mean([v[name] for v in values])) for name in ("swd", "mmd")} | {
        f"{name}_sd": float(np.std([v[name] for v in values], ddof=1)) for name in ("swd", "mmd")}


def sampler_rows(process, mixture, key, num):
    score_fn = perturbed_score_fn(mixture, process)
    reference = np.asarray(mixture.sample(jax.random.fold_in(key, 1), num))
    metrics_key = jax.random.fold_in(key, 3)
    rows = [{"sampler": f"fresh data (noise floor, mean of {NUM_FLOOR_SETS})", "nfe": 0.0,
             **noise_floor(mixture, key, reference, num)}]
    for label, sampler, options in SWEEPS:
        run = jax.jit(lambda k, sampler=sampler, options=options: sampler(process, score_fn, k, num, (2,), **options))
        start = time.perf_counter()
        result = jax.block_until_ready(run(jax.random.fold_in(key, 4)))
        rows.append({"sampler": label, "nfe": float(result.nfe.mean()), "seconds": time.perf_counter() - start,
                     **sample_quality(metrics_key, np.asarray(result.samples), reference)})
    return rows


def likelihood_rows(process, mixture, key, num_points, num_probes):
    score_fn = perturbed_score_fn(mixture, process)
    x = mixture.sample(jax.random.fold_in(key, 5), num_points)
    t0 = process.t_min_sample
    exact = jax.vmap(lambda p: perturbed_log_prob_fn(mixture, process)(p, t0))(x)
    exact_terminal = lambda z: perturbed_log_prob_fn(mixture, process)(z, process.t_max)  # noqa: E731
    rows = []
    for label, options in [
        ("exact divergence, process prior", {}),
        ("exact divergence, exact p_T", {"terminal_log_prob": exact_terminal}),
        (f"hutchinson rademacher x{num_probes}, exact p_T",
         {"divergence": "hutchinson", "probe": "rademacher", "num_probes": num_probes,
          "terminal_log_prob": exact_terminal}),
    ]:
        run = jax.jit(lambda k, options=options: log_likelihood(process, score_fn, x, k, **options))
        result = jax.block_until_ready(run(jax.random.fold_in(key, 6)))
        error = np.asarray(result.log_prob - exact) / x.shape[-1]
        row = {"method": label, "nfe": float(result.nfe.mean()), "mean_abs_error_per_dim": float(np.abs(error).mean()),
               "max_abs_error_per_dim": float(np.abs(error).max())}
        if options.get("divergence") == "hutchinson":
            # The mean error over points, in units of its standard error sqrt(sum se_i^2) / N.
            total_se = np.sqrt(np.sum(np.asarray(result.standard_error, np.float64) ** 2))
            row["mean_error_in_standard_errors"] = float(np.sum(np.asarray(result.log_prob - exact)) / total_se)
        rows.append(row)
    return rows


def markdown(results) -> str:
    lines = ["# Samplers and likelihood with the exact score of a Gaussian mixture", "",
             "| process | sampler | mean NFE | SWD | MMD |", "|---|---|---|---|---|"]
    for name, result in results.items():
        for row in result["samplers"]:
            spread = {k: f" +- {row[k + '_sd']:.{d}f}" if k + "_sd" in row else "" for k, d in (("swd", 4), ("mmd", 5))}
            lines.append(f"| {name} | {row['sampler']} | {row['nfe']:.1f} | {row['swd']:.4f}{spread['swd']} | "
                         f"{row['mmd']:.5f}{spread['mmd']} |")
    lines += ["", "| process | likelihood | mean NFE | mean abs error (nats/dim) | max abs error (nats/dim) |",
              "|---|---|---|---|---|"]
    for name, result in results.items():
        for row in result["likelihood"]:
            extra = (f" (mean error {row['mean_error_in_standard_errors']:+.2f} SE)"
                     if "mean_error_in_standard_errors" in row else "")
            lines.append(f"| {name} | {row['method']}{extra} | {row['nfe']:.1f} | {row['mean_abs_error_per_dim']:.5f} | "
                         f"{row['max_abs_error_per_dim']:.5f} |")
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    unknown = sorted(set(FLAGS.processes) - set(PROCESS_SETTINGS))
    if unknown or not FLAGS.workdir:
        sys.stderr.write(f"error: --workdir is required and --processes must come from {list(PROCESS_SETTINGS)}\n")
        sys.exit(2)
    os.makedirs(FLAGS.workdir, exist_ok=True)
    mixture = gaussian_mixture_oracle()
    key = jax.random.key(FLAGS.seed)
    results = {}
    for name in FLAGS.processes:
        process = factory.PROCESSES[name](**PROCESS_SETTINGS[name])
        results[name] = {"samplers": sampler_rows(process, mixture, key, FLAGS.num_samples),
                         "likelihood": likelihood_rows(process, mixture, key, FLAGS.num_points, FLAGS.num_probes)}
    table = markdown(results)
    with open(os.path.join(FLAGS.workdir, "oracle.md"), "w") as f:
        f.write(table)
    with open(os.path.join(FLAGS.workdir, "oracle.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(table)


if __name__ == "__main__":
    app.run(main)
