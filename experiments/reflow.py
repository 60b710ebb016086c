"""Reflow (Liu et al. 2023, "Flow straight and fast", section 2.3): a trained flow's ODE pairs
each source draw x_1 with its sample x_0; a new model is trained by flow matching on these
fixed pairs (coupling "given_pairs"), whose straight-line interpolations cross less, so the
new flow is straighter and needs fewer steps.

    python -m experiments.main --config=configs/flow_matching.py --workdir=runs/fm_icfm
    python -m experiments.reflow --teacher_workdir=runs/fm_icfm --workdir=runs/fm_reflow \\
        [--num_pairs=20000] [--steps=6000]

The student has the teacher's config (network, optimizer, batch) with
process.kwargs.coupling = "given_pairs"; it starts from fresh weights (--init=teacher starts
from the teacher's EMA weights, as Liu et al. do). The pairs go to WORKDIR/reflow_pairs.npz,
the student's checkpoint and config.json to WORKDIR, so `experiments.main --mode=evaluate
--config=WORKDIR/config.json`-style evaluation and sampling work on it as on any run. Printed
and written to WORKDIR/reflow.json, for teacher and student:

  straightness  S = E (1/K) sum_k |v(x_{t_k}, t_k) - (x_1 - x_0)|^2 along K = 64 Euler
                steps of the model's own ODE from N(0, I) (Liu et al. eq. 4; 0 iff straight);
  swd_euler_N   sliced Wasserstein distance to held-out data of N-step Euler samples
                (N = 1, 2, 4) and of the adaptive solve (swd_ode, with its mean NFE).

Measured on a 3000-step I-CFM teacher (configs/flow_matching.py with
--config.training.num_steps=3000) on 2 loaded CPU cores: 20,000 pairs drawn in 512 s (622 NFE
each), student trained 3000 steps in 42 s; straightness 1.76 -> 0.0001; Euler SWD with 1 / 2 / 4
steps 2.03 / 1.16 / 0.59 -> 0.179 / 0.175 / 0.176; adaptive-ODE SWD 0.112 -> 0.174 at NFE 91 -> 48
(the student is straight but, trained on the teacher's samples, inherits and adds their error).
"""
from __future__ import annotations

import copy
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from genjax.evaluate.reflow import draw_pairs, euler_trajectory, straightness

flags.DEFINE_string("teacher_workdir", None, "Run directory of a trained flow-matching model (config.json + checkpoints).")
flags.DEFINE_string("workdir", None, "Run directory of the reflowed student (created).")
flags.DEFINE_integer("num_pairs", 20_000, "ODE pairs drawn from the teacher.")
flags.DEFINE_integer("steps", 0, "Student train steps (0: the teacher config's training.num_steps).")
flags.DEFINE_enum("init", "fresh", ["fresh", "teacher"], "Student's initial weights.")
flags.DEFINE_string("pairs", "", "An npz of pairs (x, source) written by an earlier run: reused instead of drawing.")
flags.DEFINE_float("pair_tolerance", 1e-5, "rtol = atol of the adaptive solve that draws the pairs.")
flags.DEFINE_integer("num_eval", 4000, "Samples per quality figure.")
FLAGS = flags.FLAGS
EULER_STEPS = (1, 2, 4)


def figures(experiment, params, key, reference: np.ndarray) -> dict:
    from genjax.evaluate.two_sample import sliced_wasserstein
    from genjax.processes import views
    from genjax.samplers.probability_flow import solve_probability_flow

    process = experiment.process
    model = experiment.model(params)
    velocity = views.velocity_fn(process, model)
    shape = reference.shape[1:]
    x1 = process.source_sample(key, (len(reference), *shape))
    out = {"straightness": straightness(velocity, x1[:1000])}
    swd = lambda x: float(sliced_wasserstein(jax.random.key(1), jnp.asarray(x), jnp.asarray(reference)))
    for steps in EULER_STEPS:
        x0, _ = jax.jit(jax.vmap(lambda x: euler_trajectory(velocity, x, steps)))(x1)
        out[f"swd_euler_{steps}"] = swd(x0)
    result = jax.jit(lambda x: solve_probability_flow(process, model, x, "tsit5", 1e-3, 1e-3))(x1)
    out["swd_ode"], out["nfe_ode"] = swd(result.samples), float(result.nfe.mean())
    return out


def fail(message: str) -> None:
    sys.stderr.write(f"error: {message}\n")
    sys.exit(2)


def main(argv):
    del argv
    import ml_collections
    from genjax import checkpoint
    from genjax.experiment import build_experiment
    from genjax.factory import ConfigError
    from genjax.train.loop import save_resolved_config
    from genjax.train.step import train_step
    from genjax.workdir import resolve

    if not FLAGS.teacher_workdir or not FLAGS.workdir:
        fail("give --teacher_workdir=RUN (a trained flow-matching run) and --workdir=DIR (the student's)")
    if FLAGS.num_pairs < 1 or FLAGS.steps < 0:
        fail(f"--num_pairs={FLAGS.num_pairs} must be >= 1 and --steps={FLAGS.steps} >= 0")
    teacher_dir, workdir = resolve(FLAGS.teacher_workdir), resolve(FLAGS.workdir)
    if not (teacher_dir / "config.json").exists():
        fail(f"--teacher_workdir={FLAGS.teacher_workdir!r} has no config.json; train it first with "
             "python -m experiments.main --config=configs/flow_matching.py --workdir=...")
    if workdir.exists() and any(workdir.iterdir()):
        fail(f"--workdir={FLAGS.workdir!r} is not empty; give a new directory for the student")
    config = ml_collections.ConfigDict(json.loads((teacher_dir / "config.json").read_text()))
    if config.process.name != "flow_matching" or config.process.kwargs.get("coupling") == "given_pairs":
        fail(f"the teacher must be a flow-matching run drawn from the source (process.name={config.process.name!r}, "
             f"coupling={config.process.kwargs.get('coupling')!r})")
    try:
        teacher = build_experiment(config)
        student_config = copy.deepcopy(config)
        student_config.process.kwargs.coupling = "given_pairs"
        student_config.training.ema_decay = config.training.ema_decay
        if FLAGS.steps:
            student_config.training.num_steps = FLAGS.steps
        student = build_experiment(student_config)
    except ConfigError as error:
        fail(str(error))
    manager = checkpoint.open_manager(teacher_dir, max_to_keep=config.training.keep_checkpoints,
                                      save_interval_steps=1, create=False)
    try:
        restored = checkpoint.restore_newest_intact(manager, teacher.abstract_state(), quarantine=False)
    finally:
        manager.close()
    teacher_params = restored.state.ema_params

    key = jax.random.key(config.seed)
    shape = tuple(teacher.reference_data(1).shape[1:])
    start = time.perf_counter()
    if FLAGS.pairs:
        try:
            with np.load(FLAGS.pairs) as saved:
                x0, x1 = saved["x"], saved["source"]
        except (OSError, KeyError) as error:
            fail(f"--pairs={FLAGS.pairs!r} cannot be read as an npz with 'x' and 'source' ({error})")
        pair_nfe = float("nan")
    else:
        x0, x1, pair_nfe = draw_pairs(teacher.process, teacher.model(teacher_params), teacher.process.source_sample(
            jax.random.fold_in(key, 1), (FLAGS.num_pairs, *shape)), FLAGS.pair_tolerance)
    if x0.shape[1:] != shape or x0.shape != x1.shape:
        fail(f"the pairs have shapes {x0.shape} and {x1.shape}; the teacher's data is {shape} per example")
    num_pairs = len(x0)
    pair_seconds = time.perf_counter() - start
    workdir.mkdir(parents=True, exist_ok=True)
    np.savez(workdir / "reflow_pairs.npz", x=x0, source=x1)
    print(f"{num_pairs} pairs in {pair_seconds:.1f} s (mean NFE {pair_nfe:.1f})", flush=True)

    state = student.init_state()
    if FLAGS.init == "teacher":
        state = state.replace(params=teacher_params, ema_params=teacher_params)
    step_fn = jax.jit(lambda s, b: train_step(s, b, loss_fn=student.loss_fn, optimizer=student.optimizer,
                                              ema_decay=student_config.training.ema_decay))
    rng = np.random.default_rng(config.seed)
    batch_size, num_steps = student_config.training.batch_size, student_config.training.num_steps
    start = time.perf_counter()
    for step in range(num_steps):
        rows = rng.integers(0, num_pairs, batch_size)
        state, metrics = step_fn(state, {"x": jnp.asarray(x0[rows]), "source": jnp.asarray(x1[rows])})
        if (step + 1) % student_config.training.log_every == 0 or step + 1 == num_steps:
            print(f"step {step + 1}: loss {float(metrics['loss']):.4f}", flush=True)
    train_seconds = time.perf_counter() - start

    manager = checkpoint.open_manager(workdir, max_to_keep=1, save_interval_steps=1, create=True)
    checkpoint.save(manager, num_steps, state, {"reflow_of": str(teacher_dir), "num_pairs": num_pairs},
                    force=True)
    manager.wait_until_finished()
    manager.close()
    save_resolved_config(student_config, workdir)

    reference = np.asarray(teacher.reference_data(FLAGS.num_eval))
    eval_key = jax.random.fold_in(key, 2)
    report = {"teacher": figures(teacher, teacher_params, eval_key, reference),
              "student": figures(student, state.ema_params, eval_key, reference),
              "pair_nfe": pair_nfe, "pair_seconds": pair_seconds, "train_seconds": train_seconds,
              "num_pairs": num_pairs, "steps": num_steps}
    (workdir / "reflow.json").write_text(json.dumps(report, indent=2) + "\n")
    keys = list(report["teacher"])
    print(f"{'':8s}" + "".join(f"{k:>14s}" for k in keys))
    for who in ("teacher", "student"):
        print(f"{who:8s}" + "".join(f"{report[who][k]:14.4f}" for k in keys))


if __name__ == "__main__":
    app.run(main)
