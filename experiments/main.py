"""Train, sample from, or evaluate an experiment.

    python -m experiments.main --config=configs/default.py --workdir=DIR [--mode=train]
    python -m experiments.main --config=configs/default.py --workdir=DIR --mode=sample
    python -m experiments.main --config=configs/default.py --workdir=DIR --mode=evaluate

train: trains to config.training.num_steps (resuming from DIR's latest checkpoint), then
       draws samples, a picture and an evaluation with the EMA weights.
sample: loads DIR's latest checkpoint and writes config.sampling.num_samples samples
       (samples/step_<N>_<sampler>.npz, with per-example NFE) and a picture.
evaluate: loads it and writes eval/step_<N>.json (sample quality per sampler, baselines).
compile: lowers and compiles the train step for the configured mesh (simulated devices
       work: XLA_FLAGS=--xla_force_host_platform_device_count=8) and prints per-device
       memory and FLOPs, to check that a config fits before paying for the hardware.

Multi-process: --coordinator_address=HOST:PORT --num_processes=N --process_id=I on every
process (launch/local_multiprocess.sh does this), or --distributed alone where JAX detects
the cluster (TPU pods, SLURM).

Any config field can be overridden: --config.training.num_steps=200. Bad input ends with
one line on stderr saying what is wrong, exit status 2 (usage) or 1 (run failed), and no
existing checkpoint touched.
"""
from __future__ import annotations

import os
import sys
import tempfile

import logging

from absl import app, flags
from absl import logging as absl_logging
import ml_collections
from ml_collections import config_flags

from experiments.flag_errors import explain_config_error

MODES = ("train", "sample", "evaluate", "compile")

config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, logs, samples, evaluations.")
flags.DEFINE_enum("mode", "train", MODES, "What to do (compile: lower and compile the train step for the "
                  "configured mesh and print its memory and FLOPs; writes nothing).")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize, detecting the cluster from the "
                  "environment (Cloud TPU VM, SLURM, Open MPI, Kubernetes) unless the three flags below are given.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (explicit multi-process start-up).")
flags.DEFINE_integer("num_processes", None, "Number of processes (explicit multi-process start-up).")
flags.DEFINE_integer("process_id", None, "This process's index (explicit multi-process start-up).")
FLAGS = flags.FLAGS


def fail(message: str, status: int = 2) -> None:
    """One line on stderr and a non-zero exit."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    sys.exit(status)


def parse_flags(argv: list[str]) -> list[str]:
    try:
        remaining = FLAGS(argv)
        if FLAGS.config is not None and not isinstance(FLAGS.config, ml_collections.ConfigDict):
            FLAGS.config.seed  # a file that failed to load holds its error until first use
    except flags.Error as error:
        fail(f"{error} (see --helpfull for the flags)".replace("\n", " "))
    except Exception as error:  # a config file that fails to load, or an unknown field
        fail(explain_config_error(argv, error))
    if FLAGS.config is None:
        fail("--config is required, e.g. --config=configs/default.py")
    if not FLAGS.workdir and FLAGS.mode != "compile":
        fail("--workdir is required: the run directory to create or resume")
    return remaining


def ensure_writable(workdir: str) -> None:
    try:
        os.makedirs(workdir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write_test_"):
            pass
    except OSError as error:
        fail(f"--workdir={workdir!r} cannot be written ({error.strerror or error}); choose a writable directory")


def configure_console() -> None:
    """Our progress lines on stdout; libraries' INFO chatter (orbax, absl) silenced."""
    absl_logging.set_verbosity(absl_logging.WARNING)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    console = logging.getLogger("genjax")
    console.handlers[:] = [handler]
    console.setLevel(logging.INFO)
    console.propagate = False


def main(argv: list[str]) -> None:
    configure_console()
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}; flags take the form --name=value")
    # Imported here so that flag errors are reported before JAX starts up.
    import jax

    from genjax import checkpoint
    from genjax.evaluate.evaluator import evaluate, format_table
    from genjax.evaluate.sampling import SamplingError, draw, write_sample_set
    from genjax.train.compile_report import compile_report, format_compile_report
    from genjax.train.distributed import initialize
    from genjax.train.preemption import Preempted
    from genjax.experiment import build_experiment
    from genjax.factory import ConfigError
    from genjax.train.loop import TrainingDivergedError, save_resolved_config, train

    try:
        initialize(FLAGS.distributed, FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    except ValueError as error:
        fail(str(error))
    console = logging.getLogger("genjax")
    if jax.process_index() != 0:
        console.setLevel(logging.WARNING)  # progress and results from process 0 only

    config, workdir = FLAGS.config, FLAGS.workdir
    try:
        experiment = build_experiment(config)
    except ConfigError as error:
        fail(str(error))
    if FLAGS.mode == "train":
        ensure_writable(workdir)
    elif FLAGS.mode != "compile" and not os.path.isdir(workdir):
        fail(f"--workdir={workdir!r} does not exist; train first with --mode=train")

    try:
        if FLAGS.mode == "compile":
            print(format_compile_report(compile_report(experiment)), flush=True)
            return
        if FLAGS.mode == "train":
            save_resolved_config(config, workdir)
            state = train(experiment, workdir)
        else:
            manager = checkpoint.open_manager(
                workdir, max_to_keep=config.training.keep_checkpoints, save_interval_steps=1, create=False
            )
            state, _, _ = checkpoint.restore(manager, experiment.abstract_state())
            manager.close()
        step = int(jax.device_get(state.step))
        if FLAGS.mode == "sample":
            name = config.sampling.sampler
            drawn = draw(experiment, state.ema_params, name, config.sampling.num_samples)
            if jax.process_index() == 0:
                reference = experiment.reference_data(config.sampling.num_samples)
                npz, png = write_sample_set(workdir, step, name, drawn, reference)
                console.info("%d samples (%s, mean NFE %.1f) in %s and %s", len(drawn["samples"]), name,
                             drawn["nfe"].mean(), npz, png)
        else:
            results = evaluate(experiment, state.ema_params, step, workdir)
            if results is not None:
                print(f"evaluation at step {step} ({results['num_samples']} samples, {results['dataset']}):")
                print(format_table(results), flush=True)
    except Preempted as stop:
        console.info("%s", stop)
    except ConfigError as error:
        fail(str(error))
    except (checkpoint.CheckpointError, TrainingDivergedError, SamplingError) as error:
        fail(str(error), status=1)

if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
