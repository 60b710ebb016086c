"""Train, sample from, or evaluate an experiment.

    python -m experiments.main --config=configs/default.py --workdir=DIR [--mode=train]
    python -m experiments.main --config=configs/default.py --workdir=DIR --mode=sample
    python -m experiments.main --config=configs/default.py --workdir=DIR --mode=evaluate

train: trains to config.training.num_steps (resuming from DIR's latest checkpoint), then
       draws samples, a picture and an evaluation with the EMA weights.
sample: loads DIR's latest checkpoint and writes config.sampling.num_samples samples
       (samples/step_<N>_<sampler>.npz, with per-example NFE) and a picture, drawn in chunks
       of config.sampling.chunk_size; finished chunks are kept in samples/step_<N>_<sampler>.parts/
       until the set is complete, so rerunning an interrupted command resumes it. A class-conditional
       set is class-balanced and its grid has one row per class; --config.sampling.guidance=W > 0
       draws it with classifier-free guidance (w: (1 + w) cond - w uncond) into
       samples/step_<N>_<sampler>_guidance<W>.*.
evaluate: loads it and writes eval/step_<N>.json (sample quality per sampler, baselines).
compile: lowers and compiles the train step for the configured mesh (simulated devices
       work: XLA_FLAGS=--xla_force_host_platform_device_count=8) and prints per-device
       memory and FLOPs, to check that a config fits before paying for the hardware.

Multi-process: --coordinator_address=HOST:PORT --num_processes=N --process_id=I on every
process (launch/local_multiprocess.sh does this), or --distributed alone where JAX detects
the cluster (TPU pods, SLURM).

--workdir is a local path, file:///absolute/path, or an object-store URL (gs://bucket/run,
which needs gcsfs or TensorFlow installed); orbax receives the URL unchanged. Training holds
the workdir's lock (a second trainer on the same workdir is refused); sample and evaluate
take none and never move checkpoints. A damaged newest checkpoint is skipped with one line
(training moves it to DIR/quarantine/) and the newest intact one is used.

Any config field can be overridden: --config.training.num_steps=200. Every error ends with
one line on stderr saying what is wrong, exit status 2 (usage) or 1 (run failed), and no
existing checkpoint touched (--traceback adds the Python traceback of unexpected errors).
"""
from __future__ import annotations

import os
import sys

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
flags.DEFINE_bool("traceback", False, "On an unexpected error, print the Python traceback after the one-line message.")
FLAGS = flags.FLAGS


def fail(message: str, status: int = 2) -> None:
    """One line on stderr and a non-zero exit, with nothing after it: pending checkpoint
    writes are not awaited and library shutdown hooks (asyncio, orbax) do not run."""
    sys.stderr.write(f"error: {message}\n".replace("\n", " ").rstrip() + "\n")
    sys.stderr.flush()
    sys.stdout.flush()
    logging.shutdown()
    os._exit(status)


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


def ensure_writable(workdir) -> None:
    from genjax import workdir as workdir_lib

    probe = workdir / f".write_test_{os.getpid()}"
    try:
        workdir_lib.write_bytes(probe, b"")
        probe.unlink()
    except OSError as error:
        fail(f"--workdir={FLAGS.workdir!r} cannot be written ({error.strerror or error}); choose a writable directory")


def take_run_lock(workdir):
    """The workdir's training lock, taken by process 0; every process of a refused launch
    exits non-zero (process 0 with the holder's description)."""
    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    from genjax.workdir import RunLock, WorkdirError

    lock, refusal = None, None
    if jax.process_index() == 0:
        try:
            lock = RunLock(workdir).acquire()
        except WorkdirError as error:
            refusal = str(error)
    refused = refusal is not None
    if jax.process_count() > 1:
        refused = bool(multihost_utils.broadcast_one_to_all(np.int32(refused)))
    if refused:
        fail(refusal or "process 0 could not take the workdir lock (its error line names the holder)", status=1)
    return lock


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
    # A bad workdir URL is reported before JAX starts up, as flag errors are.
    from genjax.workdir import WorkdirError, resolve

    try:
        workdir = resolve(FLAGS.workdir) if FLAGS.mode != "compile" else None
    except WorkdirError as error:
        fail(str(error))
    # Imported here so that flag errors are reported before JAX starts up.
    import jax

    from genjax import checkpoint
    from genjax.evaluate.evaluator import evaluate, format_table
    from genjax.evaluate.resumable import draw_resumably, remove_parts
    from genjax.evaluate.sampling import SamplingError, sample_set_name, write_sample_set
    from genjax.train.compile_report import compile_report, format_compile_report
    from genjax.train.distributed import initialize
    from genjax.train.preemption import Preempted
    from genjax.experiment import build_experiment
    from genjax.factory import ConfigError
    from genjax.train.loop import TrainingDivergedError, train

    try:
        initialize(FLAGS.distributed, FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    except ValueError as error:
        fail(str(error))
    console = logging.getLogger("genjax")
    if jax.process_index() != 0:
        console.setLevel(logging.WARNING)  # progress and results from process 0 only

    config = FLAGS.config
    try:
        experiment = build_experiment(config)
    except ConfigError as error:
        fail(str(error))
    if FLAGS.mode == "train":
        ensure_writable(workdir)
    elif FLAGS.mode != "compile" and not workdir.is_dir():
        fail(f"--workdir={FLAGS.workdir!r} does not exist; train first with --mode=train")

    lock, failure = None, None
    try:
        if FLAGS.mode == "compile":
            print(format_compile_report(compile_report(experiment)), flush=True)
            return
        if FLAGS.mode == "train":
            lock = take_run_lock(workdir)
            state = train(experiment, workdir)
        else:
            manager = checkpoint.open_manager(
                workdir, max_to_keep=config.training.keep_checkpoints, save_interval_steps=1, create=False
            )
            try:
                restored = checkpoint.restore_newest_intact(manager, experiment.abstract_state(), quarantine=False)
            finally:
                manager.close()
            if restored.report():
                console.warning("warning: %s", restored.report())
            state = restored.state
        step = int(jax.device_get(state.step))
        if FLAGS.mode == "sample":
            sampler, num, guidance = config.sampling.sampler, config.sampling.num_samples, config.sampling.guidance
            name = sample_set_name(sampler, guidance)
            drawn = draw_resumably(experiment, state.ema_params, sampler, num, workdir, step, guidance=guidance)
            if jax.process_index() == 0:
                reference = experiment.reference_data(num)
                npz, png = write_sample_set(workdir, step, name, drawn, reference, data_range=experiment.data_range,
                                            labels=experiment.default_condition(num))
                remove_parts(workdir, step, name)
                spent = "unknown" if drawn["spent_nfe"] is None else f"{drawn['spent_nfe'] / len(drawn['nfe']):.1f}"
                console.info("%d samples (%s, mean NFE %.1f, max NFE %d, spent NFE %s per sample) in %s and %s",
                             len(drawn["samples"]), name, drawn["nfe"].mean(), drawn["nfe"].max(), spent,
                             workdir / npz, workdir / png)
        else:
            results = evaluate(experiment, state.ema_params, step, workdir)
            if results is not None:
                print(f"evaluation at step {step} ({results['num_samples']} samples, {results['dataset']}):")
                print(format_table(results), flush=True)
    except Preempted as stop:
        console.info("%s", stop)
    except ConfigError as error:
        failure = (str(error), 2)
    except (checkpoint.CheckpointError, TrainingDivergedError, SamplingError, WorkdirError) as error:
        failure = (str(error), 1)
    except Exception as error:  # a bug or an environment failure: still one line (--traceback for more)
        if FLAGS.traceback:
            import traceback

            traceback.print_exc()
        text = str(error).strip().splitlines()
        failure = (f"unexpected {type(error).__name__}: {text[0] if text else ''} "
                   f"(rerun with --traceback for details)", 1)
    finally:
        if lock is not None:
            lock.release()
    if failure is not None:
        fail(*failure)

if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
