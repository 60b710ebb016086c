"""The command line end to end: train, resume, sample and evaluate in fresh processes on
different device counts (the shared run's workdir is a file:// URL); a damaged newest
checkpoint is skipped with one line; a second trainer on a held workdir is refused; every
kind of bad input gives exactly one line on stderr and a non-zero exit."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.subprocess_env import cpu_environment
from tests.tiny_config import tiny_overrides

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(workdir, *args, devices=1, steps=20):
    env = cpu_environment(devices)
    command = [sys.executable, "-m", "experiments.main", "--config=configs/base.py", f"--workdir={workdir}",
               *tiny_overrides(num_steps=steps), *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


# For runs whose evaluation is not what the test checks: one cheap sampler, no NLL.
LIGHT_EVALUATION = ("--config.evaluate.samplers=euler_maruyama", "--config.evaluate.nll_num_points=0")


def checkpoint_steps(workdir):
    return sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())


def snapshot(workdir):
    """Every file under the checkpoints with its size and modification time."""
    found = {}
    for root, _, files in os.walk(os.path.join(workdir, "checkpoints")):
        for name in files:
            path = os.path.join(root, name)
            found[path] = (os.path.getsize(path), os.path.getmtime(path))
    return found


def unexpected_stderr(result) -> list[str]:
    """stderr lines other than orbax's advisory that a save waited for the previous one (which
    a loaded machine triggers at this checkpoint interval; it is not an error)."""
    return [line for line in result.stderr.splitlines() if "Waiting for previous save to complete" not in line]


def assert_one_error_line(result, message):
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr[-3000:]
    assert message in result.stderr, result.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """20 steps on 4 simulated devices, then the built-in sampling and evaluation; the
    workdir is given as a file:// URL. No held-out NLL (its compile is a third of the run):
    test_nll_evaluation checks the NLL, and the slow set's digits and gs:// runs its place in
    the evaluation."""
    workdir = str(tmp_path_factory.mktemp("run"))
    result = run_main(f"file://{workdir}", "--config.evaluate.nll_num_points=0", devices=4)
    assert result.returncode == 0, result.stderr[-3000:]
    assert unexpected_stderr(result) == [], result.stderr[-3000:]
    return workdir, result


def test_train_writes_checkpoints_logs_samples_and_evaluation(trained):
    workdir, result = trained
    assert checkpoint_steps(workdir) == [10, 20]
    config = json.load(open(os.path.join(workdir, "config.json")))
    assert config["training"]["num_steps"] == 20 and config["data"]["name"] == "eight_gaussians"
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [r["step"] for r in records] == [5, 10, 15, 20]
    assert all(np.isfinite(r["loss"]) and r["steps_per_second"] > 0 for r in records)
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(os.path.join(workdir, "tensorboard")))
    assert "step 20/20" in result.stdout and "steps/s" in result.stdout and "ETA" in result.stdout
    assert not os.path.exists(os.path.join(ROOT, "file:"))  # the URL was not taken for a relative path
    evaluation = json.load(open(os.path.join(workdir, "eval", "step_20.json")))
    for name in ("euler_maruyama", "probability_flow"):
        entry = evaluation["samplers"][name]
        assert entry["nfe_mean"] > 0 and np.isfinite(entry["swd"]) and np.isfinite(entry["mmd"])
        saved = np.load(os.path.join(workdir, entry["samples"]))
        assert saved["samples"].shape == (256, 2) and saved["nfe"].shape == (256,)
        assert os.path.getsize(os.path.join(workdir, entry["figure"])) > 10_000
    assert evaluation["samplers"]["euler_maruyama"]["nfe_mean"] == 21  # 20 steps + the denoising step


def test_sample_in_a_fresh_process_on_another_device_count(trained):
    workdir, _ = trained
    trained_set = np.load(os.path.join(workdir, "samples", "step_20_euler_maruyama.npz"))["samples"]
    os.remove(os.path.join(workdir, "samples", "step_20_euler_maruyama.npz"))
    result = run_main(f"file://{workdir}", "--mode=sample", devices=1)
    assert result.returncode == 0, result.stderr[-3000:]
    resampled = np.load(os.path.join(workdir, "samples", "step_20_euler_maruyama.npz"))["samples"]
    # Same EMA weights and per-example keys: the same samples as right after training on 4 devices.
    np.testing.assert_allclose(resampled, trained_set, rtol=1e-4, atol=1e-4)


def test_evaluate_in_a_fresh_process(trained):
    workdir, _ = trained
    result = run_main(workdir, "--mode=evaluate", devices=2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "prior vs data" in result.stdout and "probability_flow" in result.stdout


def test_rerun_does_nothing_and_longer_target_resumes(trained, tmp_path):
    workdir = copy_of_run(trained, tmp_path)  # the module's run stays at step 20 for the other tests
    before = snapshot(workdir)
    result = run_main(f"file://{workdir}", *LIGHT_EVALUATION, devices=1)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "already trained to step 20" in result.stdout
    assert snapshot(workdir) == before
    result = run_main(f"file://{workdir}", *LIGHT_EVALUATION, devices=1, steps=30)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from checkpoint 20" in result.stdout
    assert checkpoint_steps(workdir)[-1] == 30


# Flag-level errors cost a fraction of a second; those found by building the experiment start
# JAX (seconds each): one of them runs by default, the others, whose messages
# tests/test_config_validation.py checks in-process, in the slow set.
SLOW = pytest.mark.slow
BAD_INPUTS = [
    (["--config.training.not_a_field=1"], "training has no field 'not_a_field'; valid fields: allow_schedule_change, batch_size"),
    (["--config.training.num_steps=many"], "--config.training.num_steps=many"),
    (["--config.process.name=ncsn"], "process.name='ncsn' is not known; valid choices: "),
    pytest.param(["--config.data.name=mnist"], "data.name='mnist' is not known; valid choices: checkerboard", marks=SLOW),
    pytest.param(["--config.sampling.sampler=dpm_solver"], "sampling.sampler='dpm_solver' is not known; valid "
                 "choices: ddim, edm_heun, euler_maruyama", marks=SLOW),
    pytest.param(["--config.evaluate.samplers=euler_maruyama,heun"], "evaluate.samplers='heun' is not known", marks=SLOW),
    (["--config.model.kwargs.width=3"], "model.kwargs has no field 'width'"),
    pytest.param(["--config.training.batch_size=66"], "does not divide over the 4 devices", marks=SLOW),
    (["--mode=fit"], "value should be one of <train|sample|evaluate|compile>"),
    (["--config=configs/missing.py"], "no such file"),
]


def input_id(case):
    args = case.values[0] if hasattr(case, "values") else case[0]
    return args[0]


@pytest.mark.parametrize("args, message", BAD_INPUTS, ids=[input_id(case) for case in BAD_INPUTS])
def test_bad_input_gives_one_line_and_touches_no_checkpoint(trained, args, message):
    workdir, _ = trained
    before = snapshot(workdir)
    result = run_main(workdir, *args, devices=4)
    assert_one_error_line(result, message)
    assert snapshot(workdir) == before


def copy_of_run(trained, tmp_path):
    import shutil

    workdir = str(tmp_path / "copy")
    shutil.copytree(trained[0], workdir)
    return workdir


def truncate_array_files(step_directory):
    for root, _, names in os.walk(os.path.join(step_directory, "state")):
        for name in names if os.path.basename(root) == "d" else ():
            os.truncate(os.path.join(root, name), os.path.getsize(os.path.join(root, name)) // 2)


def test_rerun_after_damage_resumes_from_the_previous_checkpoint_and_says_so(trained, tmp_path):
    workdir = copy_of_run(trained, tmp_path)
    truncate_array_files(os.path.join(workdir, "checkpoints", "20"))
    result = run_main(f"file://{workdir}", *LIGHT_EVALUATION, devices=1)
    assert result.returncode == 0 and unexpected_stderr(result) == [], result.stderr[-3000:]
    damage = [line for line in result.stdout.splitlines() if "damaged" in line]
    assert len(damage) == 1 and "checkpoint 20 is damaged" in damage[0] and "using checkpoint 10" in damage[0]
    assert "quarantine" in damage[0] and "resumed from checkpoint 10" in result.stdout
    assert checkpoint_steps(workdir) == [10, 20] and len(os.listdir(os.path.join(workdir, "quarantine"))) == 1


ERROR_PATHS = [
    ("no intact checkpoint", ["--mode=sample"], "no checkpoint in", 1),
    ("changed cosine horizon", ["--config.optimizer.decay=cosine"], "would change the learning-rate schedule", 2),
    ("unknown URL scheme", ["--workdir=ftp://host/run"], "unknown URL scheme ftp://", 2),
    ("relative file URL", ["--workdir=file://run"], "needs an absolute path", 2),
]


@pytest.mark.parametrize("damage, args, message, status", ERROR_PATHS, ids=[e[0] for e in ERROR_PATHS])
def test_run_failures_give_exactly_one_line(trained, tmp_path, damage, args, message, status):
    workdir = copy_of_run(trained, tmp_path)
    if damage == "no intact checkpoint":
        for step in checkpoint_steps(workdir):
            truncate_array_files(os.path.join(workdir, "checkpoints", str(step)))
    before = snapshot(workdir)
    config_json = os.path.join(workdir, "config.json")
    config_before = open(config_json).read() if os.path.exists(config_json) else None
    result = run_main(workdir, *args, devices=1, steps=40)
    assert_one_error_line(result, message)
    assert result.returncode == status
    assert snapshot(workdir) == before
    assert (open(config_json).read() if os.path.exists(config_json) else None) == config_before


def test_unwritable_workdir_is_reported(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = run_main(str(blocker / "run"))
    assert result.returncode != 0
    assert result.stderr.strip().startswith("error: --workdir=") and "cannot be written" in result.stderr


def test_sampling_without_a_checkpoint_is_reported(tmp_path):
    result = run_main(str(tmp_path), "--mode=sample")
    assert result.returncode == 1
    assert "no checkpoints" in result.stderr and "--mode=train" in result.stderr


def test_diverging_run_exits_non_zero_and_keeps_the_checkpoint(trained, tmp_path):
    import shutil

    workdir = str(tmp_path / "copy")
    shutil.copytree(trained[0], workdir)
    latest = checkpoint_steps(workdir)[-1]
    before = snapshot(workdir)
    result = run_main(workdir, "--config.optimizer.learning_rate=inf", devices=1, steps=latest + 20)
    assert result.returncode == 1
    assert "training diverged" in result.stderr and f"latest checkpoint is step {latest}" in result.stderr
    assert snapshot(workdir) == before


@pytest.mark.slow  # a training killed by SIGTERM and a second training
def test_sigterm_saves_a_checkpoint_and_the_next_start_resumes(tmp_path):
    import signal
    import time

    workdir = str(tmp_path)
    env = cpu_environment(1)
    command = [sys.executable, "-m", "experiments.main", "--config=configs/base.py", f"--workdir={workdir}",
               *tiny_overrides(num_steps=1_000_000, checkpoint_every=1_000_000)]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = os.path.join(workdir, "metrics.jsonl")
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (os.path.exists(metrics) and len(open(metrics).readlines()) >= 3):
            time.sleep(0.2)
        # A second trainer on the held workdir is refused with one line naming the first.
        second = run_main(workdir, steps=40)
        assert_one_error_line(second, f"is in use by another training run (pid {process.pid} on")
        assert second.returncode == 1 and process.poll() is None
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 0, stderr[-3000:]
    assert "preempted: checkpoint saved at step" in stdout
    saved = checkpoint_steps(workdir)
    assert len(saved) == 1 and saved[0] >= 15
    result = run_main(workdir, "--config.evaluate.samplers=euler_maruyama", steps=saved[0] + 5)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resumed from checkpoint {saved[0]}" in result.stdout
    assert checkpoint_steps(workdir)[-1] == saved[0] + 5
