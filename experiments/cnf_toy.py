"""FFJORD on the 2-D eight Gaussians: maximum likelihood in a fixed wall-clock budget.

    python -m experiments.cnf_toy --workdir=DIR [--budget_s=300] [--variants=plain,rnode]
        [--solver=dopri5 --rtol=1e-5 --atol=1e-5 | --solver=rk4 --num_steps=8]
    python -m experiments.cnf_toy --workdir=DIR --mode=adjoints     # backprop vs backsolve
    python -m experiments.cnf_toy --workdir=DIR --mode=entropy      # the data's entropy only

Trains FFJORD's toy model (a concatsquash MLP 64-64-64 with tanh and a trained end time
T, initially 0.5, exact trace; Adam 1e-3 with weight decay 1e-5 added to the gradient,
batch 100 of fresh draws per step: `train_toy.py`'s defaults) by maximum likelihood
(`genjax.objectives.maximum_likelihood`) for `--budget_s` seconds of training (the first,
compiling step is timed apart), once per variant: "plain" (no regularisation) and "rnode"
(kinetic and Jacobian-Frobenius weights `--kinetic_weight`, `--jacobian_weight`).
Every `--eval_every_s` seconds of training the test NLL is measured on `--num_test`
fixed held-out points with the exact trace and dopri5 (rtol = atol = 1e-5, FFJORD's test
solver), beside the true NLL of the same points under the exact mixture density; their
paired difference estimates KL(p_data || p_model) with a small standard error.

The data's entropy H = -E log p(x) of `genjax.data.toy.eight_gaussians` (8 equal
components, radius 4 / sqrt(2), std 0.5 / sqrt(2)) is estimated by Monte Carlo with the
exact mixture density (`--entropy_samples` draws, standard error reported).

`--mode=adjoints` times value-and-gradient of the loss on one batch with the two
adjoints (backprop through the solver vs the continuous adjoint), with the training
solver flags, at the initial parameters, and reports their gradient agreement.

Writes DIR/cnf_toy.json, DIR/cnf_toy.md (and adjoints.json/.md, entropy.json). The
machine may be shared: the 1-minute load average is recorded at start and end.
"""
from __future__ import annotations

import functools
import json
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from genjax import workdir as workdir_lib
from genjax.data import toy
from genjax.data.gaussian_mixture import make_gaussian_mixture
from genjax.nets.concatsquash import ConcatSquashMLP, end_time
from genjax.objectives.maximum_likelihood import SOLVERS, cnf_loss_and_metrics, cnf_terms
from genjax.samplers.prior import example_keys
from genjax.train.state import create_train_state, ema_update

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for the results (created if missing).")
flags.DEFINE_enum("mode", "train", ["train", "adjoints", "entropy"], "What to run.")
flags.DEFINE_float("budget_s", 300.0, "Training wall-clock seconds per variant (compilation excluded).")
flags.DEFINE_list("variants", ["plain", "rnode"], "Variants to train: plain, rnode.")
flags.DEFINE_float("kinetic_weight", 0.01, "RNODE weight of int |v|^2 dt (variant rnode).")
flags.DEFINE_float("jacobian_weight", 0.01, "RNODE weight of int |dv/dx|_F^2 dt (variant rnode).")
flags.DEFINE_enum("solver", "dopri5", list(SOLVERS), "Training solver.")
flags.DEFINE_integer("num_steps", 8, "Steps of a fixed-step training solver.")
flags.DEFINE_float("rtol", 1e-5, "Adaptive training solver rtol.")
flags.DEFINE_float("atol", 1e-5, "Adaptive training solver atol.")
flags.DEFINE_enum("divergence", "exact", ["exact", "hutchinson"], "Trace during training.")
flags.DEFINE_enum("adjoint", "recursive_checkpoint", ["recursive_checkpoint", "backsolve"], "Gradient method.")
flags.DEFINE_integer("batch_size", 100, "Fresh data points per step (FFJORD: 100).")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate (FFJORD: 1e-3).")
flags.DEFINE_float("weight_decay", 1e-5, "L2 weight decay added to the gradient, as torch Adam (FFJORD: 1e-5).")
flags.DEFINE_float("end_time", 0.5, "Initial end time T (trained, FFJORD's train_T).")
flags.DEFINE_list("hidden_dims", ["64", "64", "64"], "Hidden widths of the concatsquash MLP.")
flags.DEFINE_string("activation", "tanh", "Nonlinearity (FFJORD toy default: tanh).")
flags.DEFINE_float("eval_every_s", 30.0, "Seconds of training between test NLL evaluations.")
flags.DEFINE_integer("num_test", 10_000, "Held-out points for the test NLL.")
flags.DEFINE_integer("log_every", 10, "Steps between host syncs (iterations/s, NFE).")
flags.DEFINE_integer("entropy_samples", 1_000_000, "Monte Carlo draws for the data's entropy.")
flags.DEFINE_integer("seed", 0, "Seed of initialisation, data and probes.")
_OWN_FLAGS = ("mode", "budget_s", "variants", "kinetic_weight", "jacobian_weight", "solver", "num_steps", "rtol", "atol",
              "divergence", "adjoint", "batch_size", "learning_rate", "weight_decay", "end_time", "hidden_dims",
              "activation", "eval_every_s", "num_test", "log_every", "entropy_samples", "seed")


class _UnitIntervalPrior:
    """The flow runs on s in [0, 1] (the network carries FFJORD's T); prior N(0, I)."""

    t_max = 1.0

    @staticmethod
    def prior_log_prob(z):
        return -0.5 * jnp.sum(z**2) - 0.5 * z.size * math.log(2.0 * math.pi)


PRIOR = _UnitIntervalPrior()
TEST_SOLVE = {"divergence": "exact", "solver": "dopri5", "rtol": 1e-5, "atol": 1e-5, "max_steps": 4096}


def eight_gaussians_mixture():
    angles = np.arange(8) * np.pi / 4
    means = toy.EIGHT_GAUSSIANS_RADIUS * np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    return make_gaussian_mixture(np.full(8, 1 / 8), means, np.full(8, toy.EIGHT_GAUSSIANS_STD))


def data_entropy(key, num: int) -> dict:
    """Monte Carlo H = -E log p(x) over draws of toy.eight_gaussians, exact mixture density."""
    mixture = eight_gaussians_mixture()
    log_prob = jax.jit(jax.vmap(mixture.log_prob))
    values = []
    for i, chunk_key in enumerate(jax.random.split(key, max(1, num // 100_000))):
        values.append(np.asarray(log_prob(toy.eight_gaussians(chunk_key, min(num, 100_000))), np.float64))
    values = -np.concatenate(values)
    separated = 1.0 + math.log(2 * math.pi * toy.EIGHT_GAUSSIANS_STD**2) + math.log(8)
    return {"entropy": float(values.mean()), "standard_error": float(values.std(ddof=1) / math.sqrt(len(values))),
            "num_samples": len(values), "well_separated_limit": separated}


def make_network():
    return ConcatSquashMLP(hidden_dims=tuple(int(d) for d in FLAGS.hidden_dims), activation=FLAGS.activation,
                           end_time=FLAGS.end_time, train_end_time=True)


def velocity_of(network, params):
    return lambda x, s: network.apply(params, x[None], s[None])[0]


def solve_options() -> dict:
    return {"divergence": FLAGS.divergence, "solver": FLAGS.solver, "num_steps": FLAGS.num_steps,
            "rtol": FLAGS.rtol, "atol": FLAGS.atol, "adjoint": FLAGS.adjoint}


def make_step(network, optimizer, weights: dict):
    """One Adam update on a fresh batch; per-step key fold_in(rng, step) as the engine's
    train step, kept separate so that this study's timing loop stays as it was measured (the
    engine's step now logs the same NFE metrics); the state is the engine's TrainState (EMA decay 0: FFJORD evaluates the
    raw weights)."""

    def loss_fn(params, batch, keys):
        return cnf_loss_and_metrics(velocity_of(network, params), PRIOR, batch, keys, **weights, **solve_options())

    @functools.partial(jax.jit, donate_argnums=0)
    def step(state):
        step_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        data_key, probe_key = jax.random.split(step_key)
        batch = toy.eight_gaussians(data_key, FLAGS.batch_size)
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, batch, example_keys(probe_key, FLAGS.batch_size))
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        state = state.replace(step=state.step + 1, params=params, ema_params=ema_update(state.ema_params, params, 0.0),
                              opt_state=opt_state)
        return state, {"loss": loss, **metrics}

    return step


def make_test_nll(network, test_points):
    mixture = eight_gaussians_mixture()
    true_log_prob = np.asarray(jax.jit(jax.vmap(mixture.log_prob))(test_points), np.float64)
    keys = example_keys(jax.random.key(0), len(test_points))

    @jax.jit
    def model_log_prob(params):
        terms = cnf_terms(velocity_of(network, params), PRIOR.prior_log_prob, test_points, keys, t_max=1.0,
                          **TEST_SOLVE)
        return terms.log_prob, terms.nfe, terms.successful

    def evaluate(params) -> dict:
        log_prob, nfe, successful = (np.asarray(v) for v in model_log_prob(params))
        gap = true_log_prob - log_prob.astype(np.float64)
        n = len(gap)
        return {"test_nll": float(-log_prob.mean()), "test_nll_se": float(log_prob.std(ddof=1) / math.sqrt(n)),
                "true_nll_same_points": float(-true_log_prob.mean()),
                "kl_estimate": float(gap.mean()), "kl_se": float(gap.std(ddof=1) / math.sqrt(n)),
                "test_nfe_mean": float(nfe.mean()), "failed": int((~successful).sum())}

    return evaluate


def train_variant(name: str, weights: dict, evaluate) -> dict:
    network = make_network()
    key = jax.random.key(FLAGS.seed)
    params = network.init(jax.random.fold_in(key, 1), jnp.zeros((1, 2)), jnp.zeros((1,)))
    optimizer = optax.chain(optax.add_decayed_weights(FLAGS.weight_decay), optax.adam(FLAGS.learning_rate))
    state = create_train_state(params, optimizer, jax.random.key_data(jax.random.fold_in(key, 2)))
    step = make_step(network, optimizer, weights)

    start = time.perf_counter()
    state, metrics = step(state)
    jax.block_until_ready(metrics["loss"])
    compile_s = time.perf_counter() - start
    history, log = [], []
    trained_s, steps_since, next_eval = 0.0, 0, 0.0
    window_start = time.perf_counter()
    while True:
        if trained_s >= next_eval or trained_s >= FLAGS.budget_s:
            row = {"train_s": round(trained_s, 2), "step": int(state.step),
                   "end_time": float(end_time(state.params)), **evaluate(state.params)}
            history.append(row)
            print(f"[{name}] {row['train_s']:7.1f}s step {row['step']:5d} | test NLL {row['test_nll']:.4f} "
                  f"(true {row['true_nll_same_points']:.4f}, KL {row['kl_estimate']:.4f} +- {row['kl_se']:.4f}) "
                  f"| T {row['end_time']:.3f} | test NFE {row['test_nfe_mean']:.0f}", flush=True)
            next_eval += FLAGS.eval_every_s
            if trained_s >= FLAGS.budget_s:
                break
            window_start = time.perf_counter()
        for _ in range(FLAGS.log_every):
            state, metrics = step(state)
        values = jax.device_get(metrics)
        elapsed = time.perf_counter() - window_start
        trained_s += elapsed
        if not np.isfinite(values["loss"]):
            raise RuntimeError(f"[{name}] non-finite loss at step {int(state.step)} "
                               f"({int(values['failed_solves'])} failed solves)")
        log.append({"train_s": round(trained_s, 2), "step": int(state.step),
                    "iterations_per_s": FLAGS.log_every / elapsed,
                    **{k: float(v) for k, v in values.items()}})
        window_start = time.perf_counter()
    its = [row["iterations_per_s"] for row in log]
    return {"variant": name, "weights": weights, "compile_s": compile_s, "steps": int(state.step),
            "iterations_per_s_median": float(np.median(its)),
            "nfe_forward_mean": float(np.mean([row["nfe_forward"] for row in log])),
            "nfe_forward_last": log[-1]["nfe_forward"],
            "final": history[-1], "best_test_nll": min(row["test_nll"] for row in history),
            "history": history, "log": log}


def markdown(entropy: dict, results: list[dict], config: dict, load: tuple) -> str:
    lines = [
        "# FFJORD on eight Gaussians: test NLL in a fixed training budget",
        "",
        f"Command: `python -m experiments.cnf_toy --workdir=DIR {config['command_flags']}`",
        "",
        f"Data entropy (Monte Carlo, {entropy['num_samples']:,} draws, exact mixture density): "
        f"**{entropy['entropy']:.4f} +- {entropy['standard_error']:.4f} nats** "
        f"(well-separated limit 1 + log(2 pi sigma^2) + log 8 = {entropy['well_separated_limit']:.4f}).",
        "",
        f"Training: {config['solver_description']}, batch {FLAGS.batch_size}, Adam {FLAGS.learning_rate:g} "
        f"(weight decay {FLAGS.weight_decay:g}), budget {FLAGS.budget_s:g} s per variant (compilation apart). "
        f"Test: {FLAGS.num_test:,} held-out points, exact trace, dopri5 1e-5. "
        f"Load average (1 min) at start / end: {load[0]:.1f} / {load[1]:.1f} on {os.cpu_count()} cores.",
        "",
        "| variant | steps | it/s (median) | NFE fwd (mean) | compile s | final T | test NLL | true NLL, same points | "
        "KL estimate +- se | NLL - entropy |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        f = r["final"]
        lines.append(
            f"| {r['variant']} | {r['steps']} | {r['iterations_per_s_median']:.1f} | {r['nfe_forward_mean']:.0f} | "
            f"{r['compile_s']:.0f} | {f['end_time']:.3f} | {f['test_nll']:.4f} | {f['true_nll_same_points']:.4f} | "
            f"{f['kl_estimate']:.4f} +- {f['kl_se']:.4f} | {f['test_nll'] - entropy['entropy']:+.4f} |")
    lines += ["", "Test NLL over training time (s of training: NLL):", ""]
    for r in results:
        points = ", ".join(f"{h['train_s']:.0f}: {h['test_nll']:.3f}" for h in r["history"])
        lines.append(f"- {r['variant']}: {points}")
    return "\n".join(lines) + "\n"


def run_train(out) -> None:
    load_start = os.getloadavg()[0]
    entropy = data_entropy(jax.random.key(FLAGS.seed + 7), FLAGS.entropy_samples)
    print(f"data entropy {entropy['entropy']:.4f} +- {entropy['standard_error']:.4f}", flush=True)
    test_points = toy.eight_gaussians(jax.random.key(FLAGS.seed + 3), FLAGS.num_test)
    evaluate = make_test_nll(make_network(), test_points)
    variants = {"plain": {}, "rnode": {"kinetic_weight": FLAGS.kinetic_weight, "jacobian_weight": FLAGS.jacobian_weight}}
    results = [train_variant(name, variants[name], evaluate) for name in FLAGS.variants]
    fixed = FLAGS.solver in ("euler", "heun", "rk4")
    config = {
        "command_flags": " ".join(f"--{name}={FLAGS[name].value}" for name in
                                  ("budget_s", "solver", "num_steps" if fixed else "rtol", "divergence", "adjoint")),
        "solver_description": (f"{FLAGS.solver} with {FLAGS.num_steps} steps" if fixed else
                               f"{FLAGS.solver} rtol {FLAGS.rtol:g} atol {FLAGS.atol:g}") +
                              f", {FLAGS.divergence} trace, {FLAGS.adjoint}",
        "flags": {name: FLAGS[name].value for name in _OWN_FLAGS if name != "workdir"},
    }
    load = (load_start, os.getloadavg()[0])
    workdir_lib.write_json(out / "cnf_toy.json", {"entropy": entropy, "load_average_1min": load,
                                                  "results": results, "config": config})
    text = markdown(entropy, results, config, load)
    workdir_lib.write_text(out / "cnf_toy.md", text)
    print(text)


def run_adjoints(out) -> None:
    """Time value-and-grad with both adjoints on one batch; gradient agreement."""
    network = make_network()
    params = network.init(jax.random.key(FLAGS.seed + 1), jnp.zeros((1, 2)), jnp.zeros((1,)))
    batch = toy.eight_gaussians(jax.random.key(5), FLAGS.batch_size)
    keys = example_keys(jax.random.key(6), FLAGS.batch_size)
    rows = []
    for adjoint in ("recursive_checkpoint", "backsolve"):
        options = {**solve_options(), "adjoint": adjoint}
        fn = jax.jit(jax.value_and_grad(
            lambda p: cnf_loss_and_metrics(velocity_of(network, p), PRIOR, batch, keys, **options), has_aux=True))
        start = time.perf_counter()
        (loss, metrics), grads = fn(params)
        jax.block_until_ready(loss)
        compile_s = time.perf_counter() - start
        times = []
        for _ in range(5):
            start = time.perf_counter()
            jax.block_until_ready(fn(params))
            times.append(time.perf_counter() - start)
        rows.append({"adjoint": adjoint, "loss": float(loss), "nfe_forward": float(metrics["nfe_forward"]),
                     "compile_s": compile_s, "seconds_per_iteration": float(np.median(times)),
                     "grads": grads})
    flat = [np.concatenate([np.ravel(g) for g in jax.tree.leaves(r.pop("grads"))]) for r in rows]
    relative = float(np.linalg.norm(flat[0] - flat[1]) / np.linalg.norm(flat[0]))
    result = {"rows": rows, "relative_gradient_difference": relative, "solver": solve_options(),
              "load_average_1min": os.getloadavg()[0]}
    workdir_lib.write_json(out / "adjoints.json", result)
    lines = ["| adjoint | s / iteration (value and grad, batch %d) | compile s | NFE forward |" % FLAGS.batch_size,
             "|---|---|---|---|"]
    lines += [f"| {r['adjoint']} | {r['seconds_per_iteration']:.3f} | {r['compile_s']:.1f} | {r['nfe_forward']:.0f} |"
              for r in rows]
    lines += ["", f"|grad_backprop - grad_backsolve| / |grad_backprop| = {relative:.2e}"]
    workdir_lib.write_text(out / "adjoints.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv):
    del argv
    if not FLAGS.workdir:
        sys.stderr.write("error: --workdir is required, e.g. --workdir=runs/cnf_toy\n")
        sys.exit(2)
    unknown = sorted(set(FLAGS.variants) - {"plain", "rnode"})
    if unknown or not FLAGS.variants:
        sys.stderr.write(f"error: --variants={','.join(FLAGS.variants)}: choose from plain, rnode\n")
        sys.exit(2)
    if not FLAGS.budget_s > 0 or FLAGS.batch_size < 1 or FLAGS.num_test < 2 or FLAGS.log_every < 1:
        sys.stderr.write("error: --budget_s must be > 0, --batch_size and --log_every >= 1, --num_test >= 2\n")
        sys.exit(2)
    try:
        make_network()
    except ValueError as error:
        sys.stderr.write(f"error: {error}\n")
        sys.exit(2)
    try:
        out = workdir_lib.resolve(FLAGS.workdir)
        out.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError, workdir_lib.WorkdirError) as error:
        sys.stderr.write(f"error: --workdir={FLAGS.workdir!r} cannot be written ({error}); choose a writable directory\n")
        sys.exit(2)
    if FLAGS.mode == "entropy":
        entropy = data_entropy(jax.random.key(FLAGS.seed + 7), FLAGS.entropy_samples)
        workdir_lib.write_json(out / "entropy.json", entropy)
        print(json.dumps(entropy, indent=2))
    elif FLAGS.mode == "adjoints":
        run_adjoints(out)
    else:
        run_train(out)


def parse_flags(argv):
    """absl's parser, with a bad flag reported on one line (exit status 2)."""
    try:
        return FLAGS(argv)
    except flags.Error as error:
        sys.stderr.write(f"error: {error}\n")
        sys.exit(2)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
