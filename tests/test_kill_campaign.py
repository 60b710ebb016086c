"""kill -9 at random moments (start-up, mid-step, mid-save, during sampling), resuming each
time: no checkpoint is ever unreadable and the final state equals an uninterrupted run's,
bit for bit. Prints its figures (kills per phase, resumes, wall time)."""
import collections
import os
import random
import subprocess
import sys
import time

import jax
import pytest

from genjax import checkpoint
from genjax.experiment import build_experiment
from tests.test_checkpoint import assert_trees_equal
from tests.tiny_config import tiny_config, tiny_overrides

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILLS = 20
SETTINGS = dict(num_steps=3000, checkpoint_every=100, log_every=50, sync_every=10, keep_checkpoints=3)
EXTRA = ["--config.evaluate.samplers=euler_maruyama", "--config.evaluate.nll_num_points=0"]


def start(workdir, log):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu")
    command = [sys.executable, "-m", "experiments.main", "--config=configs/base.py", f"--workdir={workdir}",
               *tiny_overrides(**SETTINGS), *EXTRA]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def phase(workdir, output: str) -> str:
    checkpoints = os.path.join(workdir, "checkpoints")
    if os.path.isdir(checkpoints) and any("tmp" in name for name in os.listdir(checkpoints)):
        return "mid-save"
    if f"step {SETTINGS['num_steps']}/" in output or "already trained" in output:
        return "sampling"
    if "initialised a new run" in output or "resumed from checkpoint" in output:
        return "training"
    return "start-up"


def restore_all(workdir, experiment):
    """Every finished step restores (none unreadable); returns the newest state."""
    manager = checkpoint.open_manager(workdir, max_to_keep=3, save_interval_steps=1, create=False)
    try:
        states = [checkpoint.restore(manager, experiment.abstract_state(), step)[0] for step in manager.all_steps()]
    finally:
        manager.close()
    return states[-1] if states else None


@pytest.mark.slow
def test_kill_9_at_twenty_random_moments_then_resume_bit_for_bit(tmp_path):
    experiment = build_experiment(tiny_config(**SETTINGS), jax.devices()[:1])
    reference_dir = str(tmp_path / "reference")
    began = time.perf_counter()
    with open(tmp_path / "reference.log", "w") as log:
        assert start(reference_dir, log).wait(timeout=600) == 0
    duration = time.perf_counter() - began
    reference = jax.device_get(restore_all(reference_dir, experiment))

    rng = random.Random(0)
    workdir, phases, resumes = str(tmp_path / "killed"), collections.Counter(), 0
    campaign_began = time.perf_counter()
    for kill in range(KILLS):
        log_path = tmp_path / f"run_{kill}.log"
        with open(log_path, "w") as log:
            process = start(workdir, log)
            time.sleep(rng.uniform(0.0, 0.8 * duration))
            output = open(log_path).read()
            seen = phase(workdir, output)
            process.kill()
            process.wait()
        phases[seen if process.returncode == -9 else "after exit"] += 1
        resumes += "resumed from checkpoint" in output
        if os.path.isdir(os.path.join(workdir, "checkpoints")):
            restore_all(workdir, experiment)
    with open(tmp_path / "final.log", "w") as log:
        assert start(workdir, log).wait(timeout=600) == 0
    final = jax.device_get(restore_all(workdir, experiment))
    seconds = time.perf_counter() - campaign_began
    print(f"\nkill campaign: {KILLS} kills {dict(phases)}, {resumes} resumes seen, campaign {seconds:.0f} s "
          f"(one uninterrupted run {duration:.0f} s); final state equal to the uninterrupted run's")
    assert int(final.step) == SETTINGS["num_steps"]
    assert_trees_equal(final, reference)
