"""Every command documented in a launcher's header, run with DRY_RUN=1: the command lines it
would execute call the trainer with the arguments unchanged (a workdir on GCS, an argument
holding spaces), with the start-up flags of its kind of cluster."""
import glob
import os
import re
import shlex
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPACED = "--config.evaluate.samplers=euler_maruyama, ddim"  # one argument holding spaces


def documented_commands(launcher: str) -> list[str]:
    """The example command lines of a launcher's header comment ('#   ... launch/X.sh ...')."""
    lines = []
    for line in open(os.path.join(ROOT, launcher)):
        if not line.startswith("#"):
            break
        match = re.match(r"#\s{3}(.*\blaunch/\w+\.sh\b.*)$", line.rstrip())
        if match:
            lines.append(match.group(1))
    return lines


def dry_run(command_line: str, extra_args=(), env=None):
    """Run a documented command line with DRY_RUN=1 (an `sbatch OPTIONS` prefix runs the script as
    sbatch would, from the submit directory); returns (the launcher's args, printed commands)."""
    words = shlex.split(command_line)
    variables = {}
    while "=" in words[0] and not words[0].startswith("-"):
        name, value = words.pop(0).split("=", 1)
        variables[name] = value
    script = next(i for i, w in enumerate(words) if w.startswith("launch/"))
    if words[0] == "sbatch":
        variables.update(SLURM_SUBMIT_DIR=ROOT, SLURM_JOB_ID="7")
    else:
        assert script == 0, command_line
    args = words[script + 1:] + list(extra_args)
    full_env = dict(os.environ, DRY_RUN="1", COORDINATOR_PORT="23456", REV="0123abc", **variables, **(env or {}))
    full_env.pop("PYTHON", None)
    result = subprocess.run(["bash", words[script], *args], cwd=ROOT, env=full_env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return args, [shlex.split(line) for line in result.stdout.splitlines()]


def trainer_args(argv: list[str]) -> list[str]:
    """The arguments after `-m experiments.main`."""
    i = argv.index("-m")
    assert argv[i + 1] == "experiments.main"
    return argv[i + 2:]


def test_every_launcher_documents_its_commands():
    launchers = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "launch", "*.sh")))
    assert launchers == ["common.sh", "local.sh", "local_multiprocess.sh", "slurm_gpu.sh", "tpu_pod.sh"]
    for name in launchers[1:]:
        assert documented_commands(f"launch/{name}"), name


@pytest.mark.parametrize("command_line", documented_commands("launch/local.sh"))
def test_local(command_line):
    args, commands = dry_run(command_line, [SPACED])
    assert len(commands) == 1 and commands[0][:3] == ["python", "-m", "experiments.main"]
    assert trainer_args(commands[0]) == args and args[-1] == SPACED


@pytest.mark.parametrize("command_line", documented_commands("launch/local_multiprocess.sh"))
def test_local_multiprocess(command_line):
    args, commands = dry_run(command_line, [SPACED])
    num_processes, passed = int(args[0]), args[1:]
    assert len(commands) == num_processes == 2
    for i, argv in enumerate(commands):
        assert argv[0] == "python"
        assert trainer_args(argv) == passed + [
            "--coordinator_address=127.0.0.1:23456", f"--num_processes={num_processes}", f"--process_id={i}"]


@pytest.mark.parametrize("command_line", documented_commands("launch/slurm_gpu.sh"))
def test_slurm(command_line):
    args, commands = dry_run(command_line, [SPACED])
    assert len(commands) == 1
    argv = commands[0]
    assert argv[:2] == ["srun", "--kill-on-bad-exit=1"] and argv[2] == ".venv/bin/python"
    assert trainer_args(argv) == ["--distributed"] + args


def test_slurm_submitted_from_elsewhere_says_so(tmp_path):
    result = subprocess.run(["bash", os.path.join(ROOT, "launch", "slurm_gpu.sh"), "--config=configs/default.py"],
                            env=dict(os.environ, DRY_RUN="1", SLURM_SUBMIT_DIR=str(tmp_path)),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"error: {tmp_path} is not the genjax repository; submit with sbatch from the repository root\n"


@pytest.mark.parametrize("command_line", documented_commands("launch/tpu_pod.sh"))
def test_tpu_pod(command_line):
    args, commands = dry_run(command_line, [SPACED])
    tpu, zone, passed = args[0], args[1], args[2:]
    assert any(a.startswith("--workdir=gs://") for a in passed)
    assert len(commands) == 2
    remote = []
    for argv in commands:
        assert argv[:7] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", tpu, f"--zone={zone}"]
        assert argv[7] == "--worker=all" and argv[8].startswith("--command=") and len(argv) == 9
        remote.append(argv[8][len("--command="):])
    # The worker's shell splits each remote command once more.
    install = shlex.split(remote[0])
    repo = shlex.split(command_line)[0].split("=", 1)[1]
    assert install[:2] == ["set", "-e;"] and f"|| git clone -q {repo} genjax; cd genjax;" in " ".join(install)
    assert "git fetch -q origin && git checkout -q --detach 0123abc;" in " ".join(install)
    assert "|| python3.11 -m venv .venv;" in " ".join(install)
    assert install[-5:] == ["install", "-q", "-e", ".", "jax[tpu]==0.10.2"]
    train = shlex.split(remote[1])
    assert train[:3] == ["cd", "genjax", "&&"] and train[3] == ".venv/bin/python"
    assert trainer_args(train) == ["--distributed"] + passed


def test_tpu_pod_needs_a_repository():
    result = subprocess.run(["bash", "launch/tpu_pod.sh", "tpu", "zone", "--config=configs/default.py"], cwd=ROOT,
                            env={k: v for k, v in os.environ.items() if k != "REPO"} | {"DRY_RUN": "1"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "set REPO to a git URL" in result.stderr and result.stdout == ""
