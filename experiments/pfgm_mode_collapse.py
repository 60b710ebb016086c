"""Mode collapse of the unaugmented Poisson flow, and how augmentation avoids it
(Xu et al. 2022, section 3; Xu et al. 2023).

    python -m experiments.pfgm_mode_collapse --workdir=DIR [--num_samples=2000] [--num_charges=1024]

Data: a 2-D mixture of three isotropic Gaussians with weights 0.6 / 0.3 / 0.1.

* Naive flow: the charge density p(x) in its own N = 2 dimensions. Its Poisson field is
  E(x) = sum_k w_k (x - mu_k) / |x - mu_k|^2 (1 - exp(-|x - mu_k|^2 / (2 s_k^2))) (Gauss's
  law for each isotropic component, exact). Samples start uniform on a circle of radius R
  and follow -E backwards (dx/dtau = -(1 + |x|^2) E(x), the same field lines at a speed
  that keeps the solve short) until they stop moving. Field lines end where E = 0, so the
  samples land on the few zeros of the field, and a light mode next to a heavy one has no
  zero of its own: its mass is lost.
* PFGM (D = 1) and PFGM++ (D = 8, 128, 2048): the charges are `num_charges` draws from the
  mixture; the exact posterior mean of that point set drives the backward ODE from the
  prior at sigma_max = R (genjax.data.point_set_oracle; the probability-flow sampler).

Per method: the share of samples nearest each mode against the weights, the sliced
Wasserstein distance and MMD to fresh mixture draws (with the noise floor of two fresh sets
and the charges' own distance), and the NFE. Writes DIR/mode_collapse.{json,md} and the
figures DIR/mode_collapse_trajectories.png and DIR/mode_collapse_shares.png.
"""
from __future__ import annotations

import json
import os
import sys

import diffrax
import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from genjax.data import point_set_oracle as oracle  # noqa: E402
from genjax.data.gaussian_mixture import make_gaussian_mixture  # noqa: E402
from genjax.evaluate.two_sample import sample_quality  # noqa: E402
from genjax.processes import PFGMPPProcess  # noqa: E402
from genjax.samplers import sample_probability_flow  # noqa: E402

flags.DEFINE_string("workdir", None, "Where to write the table and figures.")
flags.DEFINE_integer("num_samples", 2000, "Samples per method (and per fresh data set).")
flags.DEFINE_integer("num_charges", 1024, "Draws from the mixture used as charges by the augmented flows.")
flags.DEFINE_float("radius", 40.0, "Radius of the starting circle (naive) and sigma_max (augmented).")
flags.DEFINE_integer("seed", 0, "Seed of every draw.")
FLAGS = flags.FLAGS

WEIGHTS = (0.6, 0.3, 0.1)
MEANS = ((-1.5, 0.0), (1.5, 0.0), (0.0, 2.0))
STD = 0.35
AUGMENTED_DIMS = (1.0, 8.0, 128.0, 2048.0)
NUM_DRAWN_TRAJECTORIES = 48
NAIVE_TIME = 30.0


def naive_field(x: jax.Array) -> jax.Array:
    """The 2-D Poisson field of the mixture's density (up to the constant 1 / (2 pi))."""
    return oracle.planar_mixture_field(x, WEIGHTS, MEANS, STD)


def naive_flow(x0: jax.Array, save_times: jax.Array):
    """Backward along the field from x0: states at save_times [T, 2] and the NFE."""

    def velocity(t, x, args):
        return -(1.0 + jnp.sum(x**2)) * naive_field(x)

    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(velocity), diffrax.Tsit5(), t0=save_times[0], t1=save_times[-1], dt0=1e-3, y0=x0,
        stepsize_controller=diffrax.PIDController(rtol=1e-5, atol=1e-5), saveat=diffrax.SaveAt(ts=save_times),
        max_steps=16_384, adjoint=diffrax.ForwardMode(),
    )
    return sol.ys, 6 * sol.stats["num_steps"] + 1


def augmented_trajectories(process, score, x_T: jax.Array, num_points: int = 40) -> jax.Array:
    """The probability-flow ODE from x_T [M, 2] saved on a grid of noise levels, [M, T, 2]."""
    levels = jnp.geomspace(process.t_max, process.t_min_sample, num_points)

    def velocity(t, x, args):
        return process.probability_flow_drift(x, t, score(x, t))

    def one(x):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(velocity), diffrax.Tsit5(), t0=levels[0], t1=levels[-1], dt0=-(levels[0] - levels[-1]) / 100,
            y0=x, stepsize_controller=diffrax.PIDController(rtol=1e-4, atol=1e-4),
            saveat=diffrax.SaveAt(ts=levels), max_steps=4096, adjoint=diffrax.ForwardMode(),
        )
        return sol.ys

    return jax.vmap(one)(x_T)


def mode_shares(samples: np.ndarray) -> np.ndarray:
    nearest = np.argmin(((samples[:, None, :] - np.asarray(MEANS)[None]) ** 2).sum(-1), axis=1)
    return np.bincount(nearest, minlength=len(WEIGHTS)) / len(samples)


def run(workdir: str, num: int, num_charges: int, radius: float, seed: int) -> dict:
    key = jax.random.key(seed)
    key_charges, key_ref, key_ref2, key_metrics, key_prior = jax.random.split(key, 5)
    mixture = make_gaussian_mixture(WEIGHTS, MEANS, STD)
    reference = np.asarray(mixture.sample(key_ref, num))
    charges = oracle.make_point_set(mixture.sample(key_charges, num_charges))
    rows = {"data vs data (noise floor)": {**sample_quality(key_metrics, np.asarray(mixture.sample(key_ref2, num)),
                                                            reference), "shares": mode_shares(reference), "nfe": 0.0},
            f"the {num_charges} charges": {**sample_quality(key_metrics, np.asarray(charges.points), reference),
                                           "shares": mode_shares(np.asarray(charges.points)), "nfe": 0.0}}
    trajectories = {}

    # Naive flow from a uniform circle of radius R.
    angles = 2 * np.pi * (np.arange(num) + 0.5) / num
    start = radius * jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=1).astype(jnp.float32)
    save_times = jnp.concatenate([jnp.zeros(1), jnp.geomspace(1e-3, NAIVE_TIME, 39)])
    paths, nfe = jax.jit(jax.vmap(lambda x: naive_flow(x, save_times)))(start)
    samples = np.asarray(paths[:, -1])
    rows["naive N-dim field (no augmentation)"] = {**sample_quality(key_metrics, samples, reference),
                                                  "shares": mode_shares(samples), "nfe": float(np.mean(nfe)),
                                                  "distinct_end_points": int(len(np.unique(samples.round(2), axis=0)))}
    trajectories["naive N-dim field (no augmentation)"] = (np.asarray(paths), samples)
    print(rows["naive N-dim field (no augmentation)"], flush=True)

    for d in AUGMENTED_DIMS:
        label = "PFGM (D = 1)" if d == 1 else f"PFGM++ D = {d:g}"
        process = PFGMPPProcess(augment_dim=d, sigma_min=0.002, sigma_max=radius)
        score = oracle.score_fn(charges, process)
        result = sample_probability_flow(process, score, key_prior, num, (2,), rtol=1e-4, atol=1e-4)
        samples = np.asarray(result.samples)
        rows[label] = {**sample_quality(key_metrics, samples, reference), "shares": mode_shares(samples),
                       "nfe": float(result.mean_nfe),
                       "distinct_end_points": int(len(np.unique(samples.round(2), axis=0)))}
        drawn = jnp.asarray(np.asarray(jax.vmap(lambda k: process.prior_sample(k, (2,)))(
            jax.random.split(jax.random.fold_in(key_prior, 1), NUM_DRAWN_TRAJECTORIES))))
        trajectories[label] = (np.asarray(augmented_trajectories(process, score, drawn)), samples)
        print(label, rows[label], flush=True)

    for row in rows.values():
        row["shares"] = [round(float(s), 4) for s in row["shares"]]
        row["max_share_error"] = float(np.max(np.abs(np.asarray(row["shares"]) - np.asarray(WEIGHTS))))
        row["swd"], row["mmd"] = float(row["swd"]), float(row["mmd"])
    write_figures(workdir, trajectories, reference)
    return rows


def write_figures(workdir: str, trajectories: dict, reference: np.ndarray) -> None:
    fig, axes = plt.subplots(1, len(trajectories), figsize=(4 * len(trajectories), 4.2))
    for ax, (label, (paths, samples)) in zip(axes, trajectories.items()):
        ax.scatter(reference[:, 0], reference[:, 1], s=2, c="0.75", label="data")
        step = max(1, len(paths) // NUM_DRAWN_TRAJECTORIES)
        for path in paths[::step][:NUM_DRAWN_TRAJECTORIES]:
            ax.plot(path[:, 0], path[:, 1], lw=0.6, alpha=0.6)
        ax.scatter(samples[:, 0], samples[:, 1], s=3, c="C3", label="samples")
        ax.set_xlim(-4, 4)
        ax.set_ylim(-3, 4)
        ax.set_aspect("equal")
        ax.set_title(label, fontsize=9)
    axes[0].legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, "mode_collapse_trajectories.png"), dpi=110)
    plt.close(fig)


def write_share_figure(workdir: str, rows: dict) -> None:
    methods = [m for m in rows if not m.startswith(("data vs", "the "))]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / (len(methods) + 1)
    x = np.arange(len(WEIGHTS))
    ax.bar(x, WEIGHTS, width, label="true weights", color="k")
    for i, m in enumerate(methods):
        ax.bar(x + (i + 1) * width, rows[m]["shares"], width, label=m)
    ax.set_xticks(x + 0.4 - width / 2, [f"mode {k + 1}" for k in range(len(WEIGHTS))])
    ax.set_ylabel("share of samples")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, "mode_collapse_shares.png"), dpi=110)
    plt.close(fig)


def markdown(rows: dict, num: int) -> str:
    lines = [f"Mixture weights {list(WEIGHTS)}, means {list(MEANS)}, std {STD}; {num} samples per method.", "",
             "| method | shares of modes 1/2/3 | max share error | SWD | MMD | NFE | distinct end points |",
             "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        shares = " / ".join(f"{s:.3f}" for s in r["shares"])
        lines.append(f"| {name} | {shares} | {r['max_share_error']:.3f} | {r['swd']:.4f} | {r['mmd']:.5f} | "
                     f"{r['nfe']:.0f} | {r.get('distinct_end_points', '')} |")
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    if not FLAGS.workdir or FLAGS.num_samples < 1 or FLAGS.num_charges < 1 or FLAGS.radius <= 0:
        sys.stderr.write("error: --workdir is required; --num_samples, --num_charges and --radius must be positive\n")
        sys.exit(2)
    os.makedirs(FLAGS.workdir, exist_ok=True)
    rows = run(FLAGS.workdir, FLAGS.num_samples, FLAGS.num_charges, FLAGS.radius, FLAGS.seed)
    write_share_figure(FLAGS.workdir, rows)
    table = markdown(rows, FLAGS.num_samples)
    with open(os.path.join(FLAGS.workdir, "mode_collapse.md"), "w") as f:
        f.write(table)
    with open(os.path.join(FLAGS.workdir, "mode_collapse.json"), "w") as f:
        json.dump({"weights": list(WEIGHTS), "means": [list(m) for m in MEANS], "std": STD,
                   "num_samples": FLAGS.num_samples, "methods": rows}, f, indent=2)
    print(table)


if __name__ == "__main__":
    app.run(main)
