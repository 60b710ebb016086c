"""PFGM++'s deterministic samplers fed the exact field of a weighted point set.

    python -m experiments.pfgm_oracle --workdir=DIR [--dims=1,8,128,2048] [--num_samples=4000]

For a point set {y_k, w_k} the posterior mean E[y | x, sigma] under PFGM++'s Student-t(D)
kernel is exact (genjax.data.point_set_oracle), so the ODE dx/dsigma = (x - E[y|x,sigma]) /
sigma sends the prior at sigma_max to the point set, up to the solver's error and the prior's
mismatch at sigma_max. Per D and sampler setting the table gives the NFE, the total variation
between the share of samples nearest each point and the weights (its binomial noise level is
about sqrt(K / (2 pi M)) for M samples, K points), the worst share error in binomial standard
errors, and the mean distance of a sample to its nearest point (how sharp the samples are).
Writes DIR/pfgm_oracle.md and DIR/pfgm_oracle.json.
"""
from __future__ import annotations

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from genjax.data import point_set_oracle as oracle
from genjax.processes import PFGMPPProcess
from genjax.samplers import sample_edm_heun, sample_probability_flow

flags.DEFINE_string("workdir", None, "Where to write pfgm_oracle.md and pfgm_oracle.json.")
flags.DEFINE_list("dims", ["1", "8", "128", "2048"], "Augmented dimensions D.")
flags.DEFINE_integer("num_samples", 4000, "Samples per sampler setting.")
flags.DEFINE_integer("seed", 0, "Seed of the prior draws.")
FLAGS = flags.FLAGS

# Three unequal charges a few units apart; sigma from 80 (prior) down to 0.002.
POINTS = oracle.make_point_set([[-1.0, -0.5], [1.0, -0.5], [0.0, 1.0]], [0.5, 0.3, 0.2])
PROCESS_SETTINGS = {"sigma_min": 0.002, "sigma_max": 80.0}

SWEEPS = [
    *[(f"edm_heun N={n}", sample_edm_heun, {"num_steps": n}) for n in (2, 4, 8, 16, 32)],
    *[(f"probability_flow heun N={n}", sample_probability_flow, {"solver": "heun", "num_steps": n})
      for n in (4, 16, 64)],
    *[(f"probability_flow tsit5 tol={tol:g}", sample_probability_flow, {"rtol": tol, "atol": tol})
      for tol in (1e-3, 1e-5)],
]


def share_metrics(samples: jax.Array, num: int) -> dict:
    shares = np.asarray(oracle.nearest_point_shares(POINTS, samples), np.float64)
    weights = np.asarray(POINTS.weights, np.float64)
    se = np.sqrt(weights * (1 - weights) / num)
    distances = jnp.min(jnp.linalg.norm(samples[:, None, :] - POINTS.points[None], axis=-1), axis=1)
    return {
        "shares": shares.round(4).tolist(),
        "total_variation": float(0.5 * np.abs(shares - weights).sum()),
        "worst_error_in_se": float(np.max(np.abs(shares - weights) / se)),
        "mean_distance_to_nearest_point": float(jnp.mean(distances)),
    }


def rows_for(d: float, key: jax.Array, num: int) -> list[dict]:
    process = PFGMPPProcess(augment_dim=d, **PROCESS_SETTINGS)
    score = oracle.score_fn(POINTS, process)
    rows = []
    for label, sampler, options in SWEEPS:
        result = sampler(process, score, key, num, (2,), **options)
        ok = np.asarray(result.successful)
        rows.append({"sampler": label, "nfe": float(result.mean_nfe), "failed": int((~ok).sum()),
                     **share_metrics(result.samples[ok], int(ok.sum()))})
        print(f"D={d:g} {label}: {rows[-1]}", flush=True)
    return rows


def markdown(results: dict, num: int) -> str:
    floor = np.sqrt(len(POINTS.weights) / (2 * np.pi * num))
    lines = [f"Weights {np.asarray(POINTS.weights).round(3).tolist()}, {num} samples per row; binomial "
             f"noise level of the total variation about {floor:.3f}.", "",
             "| D | sampler | NFE | TV(shares, weights) | worst share error (SE) | mean distance to nearest point |",
             "|---|---|---|---|---|---|"]
    for d, rows in results.items():
        for r in rows:
            lines.append(f"| {d} | {r['sampler']} | {r['nfe']:.1f} | {r['total_variation']:.4f} | "
                         f"{r['worst_error_in_se']:.1f} | {r['mean_distance_to_nearest_point']:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    try:
        dims = [float(d) for d in FLAGS.dims]
    except ValueError:
        dims = []
    if not FLAGS.workdir or not dims or min(dims) <= 0:
        sys.stderr.write("error: --workdir is required and --dims must be positive numbers, e.g. --dims=1,8,128\n")
        sys.exit(2)
    os.makedirs(FLAGS.workdir, exist_ok=True)
    key = jax.random.key(FLAGS.seed)
    results = {f"{d:g}": rows_for(d, key, FLAGS.num_samples) for d in dims}
    table = markdown(results, FLAGS.num_samples)
    with open(os.path.join(FLAGS.workdir, "pfgm_oracle.md"), "w") as f:
        f.write(table)
    with open(os.path.join(FLAGS.workdir, "pfgm_oracle.json"), "w") as f:
        json.dump({"weights": np.asarray(POINTS.weights).tolist(), "num_samples": FLAGS.num_samples,
                   "results": results}, f, indent=2)
    print(table)


if __name__ == "__main__":
    app.run(main)
