"""Two processes on localhost (2 simulated CPU devices each) train like one process with
4 devices, write one checkpoint between them, sample on the joint mesh, and hand the run
to a single process that continues it exactly as a single-process run would."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.subprocess_env import cpu_environment
from tests.tiny_config import tiny_overrides

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow  # several multi-process trainings end to end: minutes on 2 cores
COMMON = ["--config.training.log_every=1", "--config.evaluate.samplers=euler_maruyama"]


def environment(devices_per_process):
    return cpu_environment(devices_per_process, PYTHON=sys.executable)


def run_single(workdir, steps, devices=4):
    command = [sys.executable, "-m", "experiments.main", f"--workdir={workdir}", "--config=configs/base.py", *tiny_overrides(num_steps=steps), *COMMON]
    # SIGKILL on time-out: a stuck collective ignores gentler signals.
    result = subprocess.run(["timeout", "-s", "KILL", "300", *command], cwd=ROOT, env=environment(devices),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def run_two_processes(workdir, steps):
    command = ["bash", "launch/local_multiprocess.sh", "2", f"--workdir={workdir}",
               "--config=configs/base.py", *tiny_overrides(num_steps=steps), *COMMON]
    result = subprocess.run(["timeout", "-s", "KILL", "300", *command], cwd=ROOT, env=environment(2),
                            capture_output=True, text=True)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
    return result


def losses(workdir):
    return {r["step"]: r["loss"] for r in map(json.loads, open(os.path.join(workdir, "metrics.jsonl")))}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    single = str(tmp_path_factory.mktemp("single"))
    multi = str(tmp_path_factory.mktemp("multi"))
    run_single(single, steps=30)
    result = run_two_processes(multi, steps=20)
    return single, multi, result


def test_two_processes_follow_the_single_process_loss_trajectory(runs):
    single, multi, _ = runs
    one, two = losses(single), losses(multi)
    assert sorted(two) == list(range(1, 21))
    np.testing.assert_allclose([two[s] for s in range(1, 21)], [one[s] for s in range(1, 21)], rtol=1e-5, atol=1e-6)


def test_two_processes_write_one_checkpoint_and_gather_samples(runs):
    _, multi, result = runs
    assert sorted(int(d) for d in os.listdir(os.path.join(multi, "checkpoints")) if d.isdigit()) == [10, 20]
    samples = np.load(os.path.join(multi, "samples", "step_20_euler_maruyama.npz"))
    assert samples["samples"].shape == (256, 2) and np.isfinite(samples["samples"]).all()
    # Progress lines come from process 0 only.
    assert result.stdout.count("step 20/20") == 1


def test_samples_do_not_depend_on_the_process_count(runs):
    """The 2-process run's samples (4 devices) equal a 1-device resample of its checkpoint."""
    _, multi, _ = runs
    resample_dir = multi + "_resample"
    shutil.copytree(multi, resample_dir)
    os.remove(os.path.join(resample_dir, "samples", "step_20_euler_maruyama.npz"))
    command = [sys.executable, "-m", "experiments.main", f"--workdir={resample_dir}", "--mode=sample",
               "--config=configs/base.py", *tiny_overrides(num_steps=20), *COMMON]
    result = subprocess.run(["timeout", "-s", "KILL", "300", *command], cwd=ROOT, env=environment(1),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    a = np.load(os.path.join(multi, "samples", "step_20_euler_maruyama.npz"))["samples"]
    b = np.load(os.path.join(resample_dir, "samples", "step_20_euler_maruyama.npz"))["samples"]
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_two_process_checkpoint_resumes_in_one_process_like_the_single_run(runs):
    single, multi, _ = runs
    resumed = multi + "_resumed"
    shutil.copytree(multi, resumed)
    result = run_single(resumed, steps=30, devices=4)
    assert "resumed from checkpoint 20" in result.stdout
    one, continued = losses(single), losses(resumed)
    np.testing.assert_allclose([continued[s] for s in range(21, 31)], [one[s] for s in range(21, 31)],
                               rtol=1e-5, atol=1e-6)


def test_every_process_of_a_launch_on_a_held_workdir_exits_non_zero(tmp_path):
    """Process 0 takes the lock for the run; when it is refused, all processes exit (no hang)."""
    import socket

    from genjax import workdir as workdir_lib

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "experiments.main", f"--workdir={tmp_path}", "--config=configs/base.py",
               *tiny_overrides(num_steps=20), *COMMON, f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2"]
    with workdir_lib.RunLock(workdir_lib.resolve(str(tmp_path))):
        processes = [subprocess.Popen(["timeout", "-s", "KILL", "120", *command, f"--process_id={i}"], cwd=ROOT,
                                      env=environment(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for i in range(2)]
        results = [p.communicate() for p in processes]
    codes = [p.returncode for p in processes]
    assert codes == [1, 1], (codes, [r[1][-2000:] for r in results])
    assert results[0][1].startswith("error: ") and results[0][1].count("\n") == 1
    assert f"in use by another training run (pid {os.getpid()}" in results[0][1]
    assert results[1][1].startswith("error: process 0 could not take the workdir lock")
    assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))
