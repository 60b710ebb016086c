"""The training loop: data -> step -> logs/checkpoints, resuming from the latest checkpoint.

    ---- restore the newest intact checkpoint (damaged newer ones go to quarantine/)
    ----   or create the state (created directly with its shardings)
    ---- for step in [start, num_steps): global batch -> jitted train_step
    ----   every sync_every steps: block on the loss (short dispatch queue)
    ----   every log_every steps: fetch metrics, check they are finite, log
    ----   every checkpoint_every steps: check finite, save asynchronously
    ---- on a preemption signal: save this step, wait, raise Preempted
    ---- final checkpoint; wait for the writes

The loss, the gradient norm and the batch of every step are checked to be finite before
any checkpoint is written, so a diverged run (or bad data) stops with an error naming the
step, and the last good checkpoint stays the latest. A resume that would change the
learning-rate schedule (a cosine horizon that moved with training.num_steps) is refused
unless training.allow_schedule_change is set.
"""
from __future__ import annotations

import json
import time

import jax
import numpy as np
from etils import epath

from genjax import checkpoint, workdir as workdir_lib
from genjax.experiment import Experiment
from genjax.factory import ConfigError
from genjax.train.logging import MetricsLogger, console
from genjax.train.optimizer import learning_rate_at, schedule_record
from genjax.train.preemption import Preempted, PreemptionWatcher
from genjax.train.state import TrainState


class TrainingDivergedError(RuntimeError):
    """The loss, the gradient or the data became non-finite; nothing after the last good
    step was saved."""


def stream_meta(experiment: Experiment, next_step: int) -> dict:
    """The data stream's identity and position, and the learning-rate schedule, stored beside
    the state in each checkpoint."""
    config = experiment.config
    return {
        "data": {"name": config.data.name, "num_train_examples": config.data.num_train_examples,
                 "seed": config.seed, "global_batch_size": config.training.batch_size, "next_step": int(next_step)},
        "schedule": schedule_record(total_steps=config.training.num_steps, **config.optimizer),
    }


def _check_resumable(experiment: Experiment, meta: dict, workdir: epath.Path) -> None:
    saved = meta.get("data", {})
    current = stream_meta(experiment, 0)["data"]
    changed = [k for k in ("name", "num_train_examples", "seed", "global_batch_size") if saved.get(k) != current[k]]
    if changed:
        details = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs config {current[k]!r}" for k in changed)
        raise checkpoint.CheckpointError(
            f"the checkpoint in {str(workdir)!r} was trained on a different data stream ({details}); "
            f"resume with the original config or use a new --workdir"
        )


def _check_schedule(experiment: Experiment, meta: dict, step: int) -> None:
    """Refuse a resume whose learning-rate schedule horizon differs from the checkpoint's."""
    saved = meta.get("schedule")
    current = stream_meta(experiment, step)["schedule"]
    if saved is None or (saved["decay"], saved["horizon"]) == (current["decay"], current["horizon"]):
        return
    before, after = learning_rate_at(saved, step), learning_rate_at(current, step)
    if experiment.config.training.allow_schedule_change:
        console.info("learning-rate schedule changed at step %d (training.allow_schedule_change): "
                     "%.4g -> %.4g", step, before, after)
        return
    raise ConfigError(
        f"resuming at step {step} would change the learning-rate schedule: the checkpoint was trained with "
        f"optimizer.decay={saved['decay']} over training.num_steps={saved['horizon']}, the config now gives "
        f"optimizer.decay={current['decay']} over {current['horizon']}, so the learning rate would jump from "
        f"{before:.4g} to {after:.4g}; keep the original training.num_steps, or pass "
        f"--config.training.allow_schedule_change=True to continue on the new schedule"
    )


class _PendingMetrics:
    """Metrics still on device since the last check, fetched in one transfer. Each entry is
    one dispatch: scalars for one step, or arrays [k] for k steps in one dispatch."""

    def __init__(self):
        self.first_steps: list[int] = []
        self.values: list[dict] = []

    def add(self, first_step: int, metrics: dict) -> None:
        self.first_steps.append(first_step)
        self.values.append(metrics)

    def fetch_and_check(self, last_good_step: int | None) -> dict[str, np.ndarray]:
        """Host copies concatenated over steps; TrainingDivergedError at the first non-finite step."""
        if not self.values:
            return {}
        fetched = jax.device_get(self.values)
        stacked = {k: np.concatenate([np.atleast_1d(m[k]) for m in fetched]) for k in fetched[0]}
        per_dispatch = len(np.atleast_1d(fetched[0]["loss"]))
        steps = np.concatenate([first + np.arange(per_dispatch) for first in self.first_steps])
        kept = "no checkpoint was written" if last_good_step is None else f"the latest checkpoint is step {last_good_step}"
        nonfinite_inputs = stacked.pop("nonfinite_inputs")
        bad_data = nonfinite_inputs > 0
        if bad_data.any():
            index = int(np.argmax(bad_data))
            raise TrainingDivergedError(
                f"non-finite values in the training batch of step {int(steps[index]) + 1} "
                f"({int(nonfinite_inputs[index])} entries); {kept} and it is untouched. "
                f"Check the data set and its preprocessing."
            )
        bad = ~np.all([np.isfinite(v) for v in stacked.values()], axis=0)
        if bad.any():
            step = int(steps[int(np.argmax(bad))]) + 1
            raise TrainingDivergedError(
                f"training diverged: non-finite loss or gradient at step {step}; {kept} and it is untouched. "
                f"Lower optimizer.learning_rate or set optimizer.grad_clip_norm, then rerun to resume."
            )
        self.first_steps, self.values = [], []
        return stacked


def _restore_or_init(experiment: Experiment, manager, workdir: epath.Path):
    """(state, meta or None, step of the restored checkpoint or None)."""
    if manager.latest_step() is None:
        console.info("initialised a new run in %s", workdir)
        return experiment.init_state(), None, None
    restored = checkpoint.restore_newest_intact(manager, experiment.abstract_state(), quarantine=True)
    if restored.report():
        console.warning("warning: %s", restored.report())
    console.info("resumed from checkpoint %d in %s", restored.step, workdir)
    return restored.state, restored.meta, restored.step


def train(experiment: Experiment, workdir: str | epath.Path) -> TrainState:
    """Train to config.training.num_steps, resuming from the newest intact checkpoint in `workdir`."""
    config = experiment.config
    training = config.training
    workdir = workdir_lib.resolve(workdir)
    is_chief = jax.process_index() == 0
    manager = checkpoint.open_manager(
        workdir, max_to_keep=training.keep_checkpoints, save_interval_steps=training.checkpoint_every, create=True
    )
    try:
        state, meta, latest = _restore_or_init(experiment, manager, workdir)
        if meta is not None:
            _check_resumable(experiment, meta, workdir)
    except BaseException:
        manager.close()
        raise
    start = int(jax.device_get(state.step))
    if start >= training.num_steps:
        console.info("already trained to step %d (training.num_steps=%d); nothing to do", start, training.num_steps)
        manager.close()
        return state
    if meta is not None:
        try:
            _check_schedule(experiment, meta, start)
        except BaseException:
            manager.close()
            raise
    # Written only once the checkpoint and the config are known to fit: a refused resume
    # leaves the previous run's config.json as it was.
    save_resolved_config(config, workdir)

    num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
    console.info("model: %d parameters; mesh %s; global batch %d", num_params, dict(experiment.mesh.shape),
                 training.batch_size)
    stream = experiment.train_stream()
    step_fn = experiment.jitted_train_step()
    logger = MetricsLogger(workdir, enabled=is_chief)
    pending = _PendingMetrics()
    since_log: list[dict[str, np.ndarray]] = []  # checked metrics not yet logged
    last_saved = latest
    interval_start, interval_first_step = time.perf_counter(), start
    try:
        k = experiment.steps_per_dispatch
        if (training.num_steps - start) % k:
            raise ConfigError(
                f"{training.num_steps - start} steps remain from step {start}, not a multiple of "
                f"training.steps_per_dispatch={k}; pick num_steps so that they are"
            )
        with PreemptionWatcher() as preemption:
            for step in range(start, training.num_steps, k):
                state, metrics = step_fn(state, experiment.global_batch(stream, step))
                pending.add(step, metrics)
                done = step + k
                if done % training.sync_every == 0:
                    jax.block_until_ready(metrics["loss"])
                preempted = preemption.requested(done)
                is_log_step = done % training.log_every == 0 or done == training.num_steps
                is_save_step = done % training.checkpoint_every == 0 or done == training.num_steps or preempted
                if is_log_step or is_save_step:
                    since_log.append(pending.fetch_and_check(last_saved))
                    if is_log_step:
                        now = time.perf_counter()
                        rate = (done - interval_first_step) / (now - interval_start)
                        means = {name: float(np.concatenate([f[name] for f in since_log]).mean())
                                 for name in since_log[0]}
                        since_log = []
                        logger.write_scalars(done, {**means, "steps_per_second": rate})
                        objective_metrics = {k: v for k, v in means.items() if k not in ("loss", "grad_norm")}
                        logger.log_progress(done, training.num_steps, means["loss"], rate, objective_metrics)
                        interval_start, interval_first_step = now, done
                    if is_save_step:
                        checkpoint.save(manager, done, state, stream_meta(experiment, done), force=True)
                        last_saved = done
                if preempted:
                    manager.wait_until_finished()
                    raise Preempted(done)
        manager.wait_until_finished()
    finally:
        logger.close()
        manager.close()
    return state


def save_resolved_config(config, workdir: str | epath.Path) -> None:
    """The run's full config, as JSON, beside the checkpoints."""
    if jax.process_index() != 0:
        return
    text = json.dumps(json.loads(config.to_json()), indent=2, sort_keys=True) + "\n"
    workdir_lib.write_text(workdir_lib.resolve(workdir) / "config.json", text)
