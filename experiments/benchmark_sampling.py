"""Sampling speed of the trained reference MLP (configs/default.py) against its FLOP limit and,
optionally, against PyTorch + torchdiffeq on the same weights, measured in one run:

    python -m experiments.benchmark_sampling --workdir=DIR [--torch_python=PYTHON] [--repeats=3]

DIR holds a trained run of --config (default configs/default.py); if it has no checkpoint,
the run is trained there first (`experiments.main`, about a minute on 2 CPU cores). On one
device, from the same --num_samples prior draws:

  * probability flow, --solver (dopri5) at rtol = atol = --tol, with step_control
    per_example and per_batch (rms error norm);
  * Euler-Maruyama with --em_steps steps (and Tweedie's denoising);
  * with --torch_python (a Python that has torch and torchdiffeq, NOT the project's
    environment), experiments/benchmark_torchdiffeq.py on the same weights and prior draws.

Each repeat runs every method once, in turn (alternating, so that load that comes and goes
on a shared machine falls on all of them); the table gives medians and the ratios are taken
per repeat. NFE: mean and max per example, and `spent`, the evaluations per example the
batch actually cost (per_example under vmap: the max, every example's field is evaluated
until the slowest is done; per_batch and torchdiffeq: the batch's). FLOP limit: spent NFE x
the FLOPs of one evaluation as it is compiled (XLA's cost analysis of the velocity on the
whole batch: with one time per example, or, for per_batch, at the one time the batch shares,
whose time branch runs once: `views.shared_time_velocity_fn`) over the measured f32 matmul
peak (experiments/benchmark_flops.py); the fraction is that time over the measured wall
time. The torch rows are counted with the per-example-time FLOPs (torchdiffeq's MLP embeds
every example's t). Writes DIR/benchmark_sampling.json.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

config_flags.DEFINE_config_file("config", "configs/default.py", "The trained run's config.", lock_config=False)
flags.DEFINE_string("workdir", None, "A trained run of --config (trained here if it has no checkpoint).")
flags.DEFINE_integer("num_samples", 10_000, "Samples per draw (one batch).")
flags.DEFINE_string("solver", "dopri5", "Adaptive solver of the probability-flow ODE.")
flags.DEFINE_float("tol", 1e-5, "rtol = atol of the probability-flow solve.")
flags.DEFINE_integer("em_steps", 1000, "Euler-Maruyama steps.")
flags.DEFINE_integer("repeats", 3, "Alternating repeats of every timed draw.")
flags.DEFINE_string("torch_python", "", "A Python with torch and torchdiffeq for the comparison ('' skips it).")
flags.DEFINE_integer("torch_threads", 0, "torch.set_num_threads for the torch side (0: torch's default).")
FLAGS = flags.FLAGS

CONTROLS = ("per_example", "per_batch")


def fail(message: str) -> None:
    sys.stderr.write(f"error: {message}\n")
    sys.exit(2)


def trained_params(config, workdir: str):
    """The EMA parameters of the newest checkpoint in workdir (trained there first if none)."""
    import jax
    from etils import epath

    from genjax import checkpoint
    from genjax.experiment import build_experiment

    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        config_file = config_flags.get_config_filename(FLAGS["config"])
        absl_logging.info("no checkpoint in %s: training %s there", workdir, config_file)
        command = [sys.executable, "-m", "experiments.main", f"--config={config_file}", f"--workdir={workdir}"]
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        if result.returncode != 0:
            fail(f"training in {workdir} failed (status {result.returncode}): {result.stderr.strip()[-300:]}")
    experiment = build_experiment(config, jax.devices()[:1])
    manager = checkpoint.open_manager(epath.Path(workdir), max_to_keep=config.training.keep_checkpoints,
                                      save_interval_steps=1, create=False)
    try:
        restored = checkpoint.restore_newest_intact(manager, experiment.abstract_state(), quarantine=False)
    finally:
        manager.close()
    return experiment, restored.state.ema_params, int(restored.state.step)


def flops_per_evaluation(experiment, params, x, shared_time: bool = False) -> float:
    """XLA's FLOPs of one batched velocity evaluation (the network on the whole batch), with
    one time per example or (shared_time) one time for the batch, as the per-batch solve calls it."""
    import jax
    import jax.numpy as jnp

    from genjax.processes import views

    if shared_time:
        def velocity(params, x, t):
            return views.shared_time_velocity_fn(experiment.process, experiment.model(params))(x, t)
        t = jnp.float32(0.5)
    else:
        def velocity(params, x, t):
            return views.batched_velocity_fn(experiment.process, experiment.model(params))(x, t)
        t = jnp.full(x.shape[:1], 0.5)

    compiled = jax.jit(velocity).lower(params, x, t).compile()
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return float(analysis["flops"])


def export_weights(path: str, experiment, params, x_T, config) -> None:
    """What benchmark_torchdiffeq.py needs: the MLP's weights, the VP SDE and the prior draws."""
    import numpy as np
    import jax

    process = experiment.process
    if config.model.name != "mlp" or config.model.kwargs.embedding != "sinusoidal" or config.process.name != "vp" \
            or config.model.output != "noise" or config.model.num_classes:
        fail("the torch comparison rebuilds an unconditional sinusoidal MLP predicting noise on a VP SDE; "
             "use configs/default.py or leave --torch_python empty")
    arrays = {f"{name}/{leaf}": np.asarray(value) for name, layer in params["params"].items()
              for leaf, value in layer.items()}
    np.savez(path, **arrays, x_T=np.asarray(jax.device_get(x_T)), beta_min=process.beta_min,
             beta_max=process.beta_max, t_max=process.t_max, t_min=process.t_min_sample,
             embedding_dim=config.model.kwargs.embedding_dim, time_scale=config.model.kwargs.time_scale,
             rtol=FLAGS.tol, atol=FLAGS.tol, solver=FLAGS.solver, em_steps=FLAGS.em_steps)


def main(argv):
    del argv
    absl_logging.set_verbosity(absl_logging.INFO)
    if not FLAGS.workdir:
        fail("--workdir is required: a trained run of --config (trained there if it has no checkpoint)")
    if FLAGS.torch_python and not os.access(FLAGS.torch_python, os.X_OK):
        fail(f"--torch_python={FLAGS.torch_python!r} is not an executable; give a Python that has torch and "
             "torchdiffeq, or leave it empty")
    import jax
    import numpy as np

    from experiments.benchmark_flops import matmul_flops_per_second
    from genjax.experiment import derive_key
    from genjax.samplers import example_keys, sample_prior, sample_reverse_sde, solve_probability_flow

    config = FLAGS.config
    os.makedirs(FLAGS.workdir, exist_ok=True)
    experiment, params, step = trained_params(config, FLAGS.workdir)
    process, shape, num = experiment.process, experiment.data_shape, FLAGS.num_samples
    key = derive_key(config.seed, "sample")
    x_T = sample_prior(process, example_keys(key, num), shape)
    num_params = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))

    def probability_flow(control):
        return jax.jit(lambda params, x_T: solve_probability_flow(
            process, experiment.model(params), x_T, solver=FLAGS.solver, rtol=FLAGS.tol, atol=FLAGS.tol,
            step_control=control, throw=False))

    draws = {control: probability_flow(control) for control in CONTROLS}
    em = jax.jit(lambda params, key: sample_reverse_sde(process, experiment.model(params), key, num, shape,
                                                         FLAGS.em_steps))
    calls = {**{control: (lambda f=draws[control]: f(params, x_T)) for control in CONTROLS},
             "euler_maruyama": lambda: em(params, key)}
    results = {name: jax.block_until_ready(call()) for name, call in calls.items()}  # compile and check
    for name, result in results.items():
        if not bool(result.all_successful):
            fail(f"{name}: {int((~result.successful).sum())} of {num} solves failed; raise max_steps or loosen --tol")
    flops = flops_per_evaluation(experiment, params, x_T)
    shared_flops = flops_per_evaluation(experiment, params, x_T, shared_time=True)

    torch_side = None
    scratch = tempfile.mkdtemp(prefix="benchmark_sampling_")
    if FLAGS.torch_python:
        weights = os.path.join(scratch, "weights.npz")
        export_weights(weights, experiment, params, x_T, config)
        torch_side = [os.path.join(ROOT, "experiments", "benchmark_torchdiffeq.py"), f"--weights={weights}",
                      f"--samples_out={os.path.join(scratch, 'torch_samples.npz')}", f"--threads={FLAGS.torch_threads}"]

    seconds = {name: [] for name in [*calls, *(["torch_dopri5", "torch_euler_maruyama"] if torch_side else [])]}
    peak = []
    for repeat in range(FLAGS.repeats):
        peak.append(matmul_flops_per_second())
        for name, call in calls.items():
            start = time.perf_counter()
            jax.block_until_ready(call())
            seconds[name].append(time.perf_counter() - start)
        if torch_side:
            out = subprocess.run([FLAGS.torch_python, *torch_side], cwd=ROOT, capture_output=True, text=True)
            if out.returncode != 0:
                fail(f"the torch side failed (status {out.returncode}): {out.stderr.strip()[-300:]}")
            measured = json.loads(out.stdout.strip().splitlines()[-1])
            seconds["torch_dopri5"].append(measured["dopri5"]["seconds"])
            seconds["torch_euler_maruyama"].append(measured["euler_maruyama"]["seconds"])
        absl_logging.info("repeat %d: %s", repeat, {k: round(v[-1], 3) for k, v in seconds.items()})

    peak_median = statistics.median(peak)
    rows = {}
    for name, result in results.items():
        nfe = np.asarray(result.nfe)
        rows[name] = {"mean_nfe": float(nfe.mean()), "max_nfe": int(nfe.max()), "spent_nfe": int(result.spent_nfe)}
    if torch_side:
        rows["torch_dopri5"] = {"mean_nfe": measured["dopri5"]["nfe"], "max_nfe": measured["dopri5"]["nfe"],
                                "spent_nfe": measured["dopri5"]["nfe"]}
        rows["torch_euler_maruyama"] = {k: measured["euler_maruyama"]["nfe"] for k in ("mean_nfe", "max_nfe",
                                                                                       "spent_nfe")}
        torch_samples = np.load(os.path.join(scratch, "torch_samples.npz"))["samples"]
        gap = np.abs(torch_samples - np.asarray(results["per_batch"].samples)).max(axis=1)
    for name, row in rows.items():
        row["seconds"] = {"median": statistics.median(seconds[name]), "runs": seconds[name]}
        row["samples_per_second"] = num / row["seconds"]["median"]
        row["flops_per_evaluation"] = shared_flops if name == "per_batch" else flops
        limit = row["spent_nfe"] * row["flops_per_evaluation"] / peak_median
        row["flop_limit_seconds"] = limit
        row["fraction_of_flop_limit"] = limit / row["seconds"]["median"]

    ratios = {}
    if torch_side:
        for ours, theirs in (("per_example", "torch_dopri5"), ("per_batch", "torch_dopri5"),
                             ("euler_maruyama", "torch_euler_maruyama")):
            ratios[f"{ours}_over_{theirs}"] = statistics.median(
                [t / o for o, t in zip(seconds[ours], seconds[theirs])])
    report = {
        "command": " ".join(["python -m experiments.benchmark_sampling", *sys.argv[1:]]),
        "config": config_flags.get_config_filename(FLAGS["config"]), "checkpoint_step": step,
        "parameters": num_params,
        "num_samples": num, "solver": FLAGS.solver, "tol": FLAGS.tol, "em_steps": FLAGS.em_steps,
        "repeats": FLAGS.repeats, "device": str(jax.devices()[0]),
        "matmul_peak_flops_per_second": {"median": peak_median, "runs": peak},
        "flops_per_batched_evaluation": flops, "flops_per_shared_time_evaluation": shared_flops, "rows": rows, "samples_per_second_ratios": ratios,
        **({"torch": {"version": measured["torch"], "threads": measured["threads"],
                      "dopri5_vs_per_batch_max_abs_gap": {"median": float(np.median(gap)),
                                                          "max": float(gap.max())}}} if torch_side else {}),
    }
    with open(os.path.join(FLAGS.workdir, "benchmark_sampling.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(table(report))


def table(report: dict) -> str:
    lines = [f"{report['num_samples']} samples, {report['parameters']} parameters, {report['solver']} rtol=atol="
             f"{report['tol']:g}; matmul peak {report['matmul_peak_flops_per_second']['median'] / 1e9:.0f} GFLOP/s; "
             f"{report['flops_per_batched_evaluation'] / 1e9:.2f} GFLOP per batched evaluation "
             f"({report['flops_per_shared_time_evaluation'] / 1e9:.2f} at one shared time, per_batch); "
             f"medians of {report['repeats']} alternating repeats",
             f"{'method':24s} {'seconds':>8s} {'samples/s':>10s} {'mean NFE':>9s} {'max NFE':>8s} {'spent NFE':>10s} "
             f"{'FLOP limit s':>12s} {'of limit':>9s}"]
    for name, row in report["rows"].items():
        lines.append(f"{name:24s} {row['seconds']['median']:8.2f} {row['samples_per_second']:10.0f} "
                     f"{row['mean_nfe']:9.1f} {row['max_nfe']:8d} {row['spent_nfe']:10d} "
                     f"{row['flop_limit_seconds']:12.2f} {row['fraction_of_flop_limit']:9.2f}")
    for name, ratio in report["samples_per_second_ratios"].items():
        lines.append(f"samples/s ratio {name}: {ratio:.2f}")
    if "torch" in report:
        gap = report["torch"]["dopri5_vs_per_batch_max_abs_gap"]
        lines.append(f"torch {report['torch']['version']} ({report['torch']['threads']} threads); its dopri5 samples vs "
                     f"per_batch: median gap {gap['median']:.1e}, max {gap['max']:.1e}")
    return "\n".join(lines)


if __name__ == "__main__":
    app.run(main)
