"""kill -9 aimed at each phase of a training run (start-up, mid-step, mid-save, sampling),
resuming after every kill: every finished checkpoint restores, each new start resumes from
the newest one, and the final state and final sample set equal an uninterrupted run's, bit
for bit. Prints its figures (kills per phase, resumes, wall time) in one line.

Phases and the signal each kill waits for (polled every 2 ms), then a short random delay:
  start-up  the launch (imports, config, restore), within the time an uninterrupted run
            takes to set up its state
  mid-step  a progress line of a step that saves nothing, and no checkpoint being written
  mid-save  a temporary checkpoint directory of this run appearing (orbax writes into
            `<step>.orbax-checkpoint-tmp` and renames it when complete)
  sampling  the final checkpoint finished, or "already trained" (evaluation follows)
A kill is counted in the phase the run was really in: mid-save if it left a temporary
directory of its own behind, sampling once training was over, mid-step after a progress
line, start-up otherwise. A kill that found the process already exited is not a kill: it
is drawn again. Sampling needs a finished training, so the start-up, mid-step and mid-save
kills come first (in a seeded order), then the sampling kills with more start-ups.

Subprocesses share a JAX compilation cache filled by the uninterrupted run, so that a
restart costs seconds; bit-for-bit equality with that (uncached) run covers the cache too.
"""
from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest

from genjax import checkpoint
from genjax.experiment import build_experiment
from tests.test_checkpoint import assert_trees_equal
from tests.subprocess_env import cpu_environment
from tests.tiny_config import tiny_config, tiny_overrides

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = dict(num_steps=800, checkpoint_every=40, log_every=10, sync_every=10, keep_checkpoints=3)
EXTRA = ["--config.evaluate.samplers=euler_maruyama", "--config.evaluate.nll_num_points=0"]
FINAL_STEP = SETTINGS["num_steps"]
PHASES = ("start-up", "mid-step", "mid-save", "sampling")
TRAINING_TARGETS = ["start-up"] * 3 + ["mid-step"] * 5 + ["mid-save"] * 5
SAMPLING_TARGETS = ["start-up"] * 2 + ["sampling"] * 5
MIN_KILLS_PER_PHASE = 3
MAX_TRIES_PER_TARGET = 3
POLL_SECONDS = 0.002
SIGNAL_TIMEOUT_SECONDS = 300
SAMPLES = f"samples/step_{FINAL_STEP}_euler_maruyama.npz"


class Run:
    """One `experiments.main` training process; its console lines are collected as they come."""

    def __init__(self, workdir: str, log_path, cache_dir: str):
        env = cpu_environment(1, JAX_COMPILATION_CACHE_DIR=cache_dir, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
        command = [sys.executable, "-m", "experiments.main", "--config=configs/base.py", f"--workdir={workdir}",
                   *tiny_overrides(**SETTINGS), *EXTRA]
        self.workdir = workdir
        self.launched_ns = time.time_ns()
        self.launched = time.perf_counter()
        self.lines: list[tuple[float, str]] = []
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        self._reader = threading.Thread(target=self._read, args=(open(log_path, "w"),), daemon=True)
        self._reader.start()

    def _read(self, log) -> None:
        with log:
            for line in self.process.stdout:
                self.lines.append((time.perf_counter() - self.launched, line))
                log.write(line)

    def output(self) -> str:
        return "".join(line for _, line in self.lines)

    def seconds_to(self, text: str) -> float:
        return next(t for t, line in self.lines if text in line)

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout: float = 600) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join()
        return code

    def kill(self) -> bool:
        """kill -9; True if it killed a running process (False: it had already exited)."""
        self.process.send_signal(signal.SIGKILL)
        return self.wait() == -signal.SIGKILL

    # ---- what the run has done so far
    def own_temporary_checkpoints(self) -> set[str]:
        """Temporary (unfinished) checkpoint directories created by this process."""
        directory = os.path.join(self.workdir, checkpoint.CHECKPOINT_SUBDIR)
        own = set()
        for name in os.listdir(directory) if os.path.isdir(directory) else ():
            try:
                if "tmp" in name and os.stat(os.path.join(directory, name)).st_ctime_ns >= self.launched_ns:
                    own.add(name)
            except FileNotFoundError:  # renamed between listing and stat
                pass
        return own

    def progress_steps(self) -> list[int]:
        return [int(line.split("step ")[1].split("/")[0]) for _, line in self.lines if f"/{FINAL_STEP} | loss" in line]

    def training_over(self) -> bool:
        """This run found training done, or finished it and its final checkpoint."""
        output = self.output()
        final = os.path.join(self.workdir, checkpoint.CHECKPOINT_SUBDIR, str(FINAL_STEP))
        return "already trained" in output or (f"step {FINAL_STEP}/{FINAL_STEP}" in output and os.path.isdir(final))


def wait_for(run: Run, condition) -> bool:
    """Poll `condition` every few ms; False if the process exits first."""
    deadline = time.perf_counter() + SIGNAL_TIMEOUT_SECONDS
    while not condition():
        if not run.alive():
            return False
        assert time.perf_counter() < deadline, f"no signal within {SIGNAL_TIMEOUT_SECONDS} s:\n{run.output()}"
        time.sleep(POLL_SECONDS)
    return True


def aim(run: Run, target: str, rng: random.Random, timing: dict) -> None:
    """Wait for `target`'s signal in `run`, then a short random delay (the kill follows)."""
    if target == "start-up":
        time.sleep(rng.uniform(0.0, 0.8 * timing["start-up"]))
    elif target == "mid-step":
        nth = rng.randint(1, 4)  # the nth progress line of a step that saves nothing
        quiet = lambda: [s for s in run.progress_steps() if s % SETTINGS["checkpoint_every"]]
        if wait_for(run, lambda: len(quiet()) >= nth) and wait_for(run, lambda: not run.own_temporary_checkpoints()):
            time.sleep(rng.uniform(0.0, 0.02))
    elif target == "mid-save":
        nth = rng.randint(1, 3)  # the nth save of this run
        started: set[str] = set()

        def nth_save_started() -> bool:
            started.update(run.own_temporary_checkpoints())
            return len(started) >= nth

        if wait_for(run, nth_save_started):
            time.sleep(rng.uniform(0.0, 0.05))
    else:
        if wait_for(run, run.training_over):
            time.sleep(rng.uniform(0.0, 0.4 * timing["sampling"]))


def phase_of_kill(run: Run) -> str:
    """The phase a just-killed run was in (see the module docstring)."""
    if run.own_temporary_checkpoints():
        return "mid-save"
    if run.training_over():
        return "sampling"
    if run.progress_steps():
        return "mid-step"
    return "start-up"


def finished_steps(workdir: str) -> list[int]:
    directory = os.path.join(workdir, checkpoint.CHECKPOINT_SUBDIR)
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit()) if os.path.isdir(directory) else []


def restore_all(workdir: str, experiment):
    """Every finished step restores (none unreadable); returns the newest state."""
    manager = checkpoint.open_manager(workdir, max_to_keep=3, save_interval_steps=1, create=False)
    try:
        assert sorted(manager.all_steps()) == finished_steps(workdir)
        states = [checkpoint.restore(manager, experiment.abstract_state(), step)[0] for step in manager.all_steps()]
    finally:
        manager.close()
    return states[-1]


def check_start(run: Run, steps_before: list[int]) -> bool:
    """The run started from the newest finished checkpoint (or fresh if there was none), with
    no checkpoint found damaged; True if it got as far as resuming."""
    output = run.output()
    assert "damaged" not in output, output
    if steps_before:
        assert "initialised a new run" not in output, output
        return f"resumed from checkpoint {steps_before[-1]} " in output
    assert "resumed from checkpoint" not in output, output
    return False


@pytest.mark.slow
def test_kill_9_in_every_phase_then_resume_bit_for_bit(tmp_path):
    began = time.perf_counter()
    experiment = build_experiment(tiny_config(**SETTINGS), jax.devices()[:1])
    cache = str(tmp_path / "jax_cache")

    reference_dir = str(tmp_path / "reference")
    reference_run = Run(reference_dir, tmp_path / "reference.log", cache)
    assert reference_run.wait() == 0, reference_run.output()
    reference_seconds = reference_run.lines[-1][0]
    final_line = f"step {FINAL_STEP}/{FINAL_STEP}"
    timing = {"start-up": reference_run.seconds_to("initialised a new run"),
              "sampling": reference_seconds - reference_run.seconds_to(final_line)}
    reference = jax.device_get(restore_all(reference_dir, experiment))

    rng = random.Random(0)
    targets = rng.sample(TRAINING_TARGETS, len(TRAINING_TARGETS)) + rng.sample(SAMPLING_TARGETS, len(SAMPLING_TARGETS))
    workdir, kills, redrawn, resumes, restores = str(tmp_path / "killed"), collections.Counter(), 0, 0, 0
    for number, target in enumerate(targets):
        for attempt in range(MAX_TRIES_PER_TARGET):
            steps_before = finished_steps(workdir)
            run = Run(workdir, tmp_path / f"run_{number}_{attempt}.log", cache)
            aim(run, target, rng, timing)
            killed = run.kill()
            resumes += check_start(run, steps_before)
            if finished_steps(workdir):
                restore_all(workdir, experiment)
                restores += 1
            if killed:
                kills[phase_of_kill(run)] += 1
                break
            assert run.process.returncode == 0, run.output()
            redrawn += 1  # the process had exited before the kill: not a kill, draw again

    steps_before = finished_steps(workdir)
    last = Run(workdir, tmp_path / "final.log", cache)
    assert last.wait() == 0, last.output()
    resumes += check_start(last, steps_before)
    final = jax.device_get(restore_all(workdir, experiment))
    with np.load(os.path.join(workdir, SAMPLES)) as got, np.load(os.path.join(reference_dir, SAMPLES)) as want:
        samples, reference_samples = dict(got), dict(want)
    same_state = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(final), jax.tree.leaves(reference)))
    same_samples = samples.keys() == reference_samples.keys() and all(
        np.array_equal(samples[name], reference_samples[name]) for name in samples)
    seconds = time.perf_counter() - began
    print(f"\nkill campaign: {sum(kills.values())} kill -9 ("
          + ", ".join(f"{phase} {kills[phase]}" for phase in PHASES)
          + f"), {redrawn} redrawn (process had exited), {resumes} resumes, every finished checkpoint restored "
          f"after each kill ({restores} checks); final state {'equal' if same_state else 'DIFFERENT'} and final "
          f"samples {'equal' if same_samples else 'DIFFERENT'} bit for bit vs the uninterrupted run; "
          f"{seconds:.0f} s in all (uninterrupted run {reference_seconds:.0f} s)", flush=True)

    assert not os.path.exists(os.path.join(workdir, checkpoint.QUARANTINE_SUBDIR))
    assert int(final.step) == FINAL_STEP
    assert_trees_equal(final, reference)
    assert samples.keys() == reference_samples.keys()
    for name in reference_samples:
        np.testing.assert_array_equal(samples[name], reference_samples[name])
    for phase in PHASES:
        assert kills[phase] >= MIN_KILLS_PER_PHASE, f"only {kills[phase]} kills landed {phase}: {dict(kills)}"
