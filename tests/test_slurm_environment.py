"""SLURM start-up as a pure function of the environment: for each way of placing tasks on
GPUs, the variables srun gives one task, and the `jax.distributed.initialize` arguments
(coordinator, process id and count, GPU ordinals) that task must start with."""
import os
import subprocess
import sys

import pytest

from genjax.train import distributed
from genjax.train.distributed import DistributedSetupError, first_host, slurm_arguments, tasks_on_node

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOB_ID = 123456
PORT = JOB_ID % 4096 + 61440  # JAX's SLURM port rule


def srun_task(procid, localid, nodeid, ntasks, tasks_per_node, visible, **extra):
    """The variables srun sets for one task of job JOB_ID on nodes gpu[017-018]."""
    env = {
        "SLURM_JOB_ID": str(JOB_ID), "SLURM_STEP_ID": "0", "SLURM_PROCID": str(procid),
        "SLURM_LOCALID": str(localid), "SLURM_NODEID": str(nodeid), "SLURM_NTASKS": str(ntasks),
        "SLURM_STEP_NUM_TASKS": str(ntasks), "SLURM_STEP_TASKS_PER_NODE": tasks_per_node,
        "SLURM_TASKS_PER_NODE": tasks_per_node, "SLURM_NODELIST": "gpu[017-018]",
        "SLURM_JOB_NODELIST": "gpu[017-018]", "SLURM_STEP_NODELIST": "gpu[017-018]",
        "SLURM_STEP_NUM_NODES": "2",
    }
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    env.update({name: str(value) for name, value in extra.items()})
    return env


@pytest.mark.parametrize("name, env, expected", [
    # sbatch --nodes=2 --ntasks-per-node=8 --gpus-per-task=1: SLURM binds GPU 3 of node 1 to
    # local task 3; the task sees one GPU (ordinal 0). JAX's default asks for ordinal 3.
    ("one task per GPU, bound", srun_task(11, 3, 1, 16, "8(x2)", "3", SLURM_GPUS_PER_TASK=1,
                                          SLURM_NTASKS_PER_NODE=8), (0,)),
    # The same under cgroup device isolation, which renumbers the task's GPU to 0.
    ("one task per GPU, cgroup", srun_task(11, 3, 1, 16, "8(x2)", "0", SLURM_GPUS_PER_TASK=1), (0,)),
    # sbatch --nodes=2 --ntasks-per-node=1 --gpus-per-node=8: one process drives all eight.
    ("one task per node", srun_task(1, 0, 1, 2, "1(x2)", "0,1,2,3,4,5,6,7", SLURM_GPUS_PER_NODE=8), tuple(range(8))),
    # --ntasks-per-node=8 --gpus-per-node=8: every task sees all eight and takes its own.
    ("one task per GPU, shared", srun_task(13, 5, 1, 16, "8(x2)", "0,1,2,3,4,5,6,7"), (5,)),
    # --ntasks-per-node=2 --gpus-per-task=4: task 1 is bound to GPUs 4-7, ordinals 0-3.
    ("four GPUs per task, bound", srun_task(3, 1, 1, 4, "2(x2)", "4,5,6,7", SLURM_GPUS_PER_TASK=4), (0, 1, 2, 3)),
    # --ntasks-per-node=4 --gpus-per-task=2 --gpu-bind=none: all eight visible, task 2 takes 4-5.
    ("two GPUs per task, unbound", srun_task(6, 2, 1, 8, "4(x2)", "0,1,2,3,4,5,6,7", SLURM_GPUS_PER_TASK=2), (4, 5)),
    # Part of a node: GPUs 2 and 3, one task each without binding; ordinals, not GPU numbers.
    ("part of a node", srun_task(1, 1, 0, 2, "2", "2,3"), (1,)),
    # Uneven nodes '3(x2),1': the third node runs one task and keeps all its GPUs.
    ("uneven tasks per node", srun_task(6, 0, 2, 7, "3(x2),1", "0,1,2"), (0, 1, 2)),
    ("CPU job", srun_task(1, 1, 0, 2, "2", None), None),
    ("no GPU on this node", srun_task(1, 1, 0, 2, "2", "NoDevFiles"), None),
    ("user override", srun_task(1, 1, 0, 2, "2", "0,1", JAX_LOCAL_DEVICE_IDS="0,1"), (0, 1)),
])
def test_slurm_arguments_per_placement(name, env, expected):
    args = slurm_arguments(env)
    assert args.local_device_ids == expected, name
    assert args.coordinator_address == f"gpu017:{PORT}"
    assert (args.process_id, args.num_processes) == (int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]))


def test_every_task_of_a_node_gets_disjoint_gpus():
    for tasks, per_task in [(8, 1), (4, 2), (2, 4), (1, 8)]:
        owned = [slurm_arguments(srun_task(i, i, 0, tasks, str(tasks), "0,1,2,3,4,5,6,7")).local_device_ids
                 for i in range(tasks)]
        assert sorted(sum(owned, ())) == list(range(8)) and {len(o) for o in owned} == {per_task}


@pytest.mark.parametrize("env, message", [
    (srun_task(9, 1, 1, 16, "8(x2)", "0,1,2,3"), r"8 tasks on this node share 4 GPU\(s\)"),
    (srun_task(2, 2, 0, 3, "3", "0,1,2,3"), r"3 tasks on this node share 4 GPU\(s\)"),
    (srun_task(3, 1, 1, 4, "2(x2)", "0,1,2", SLURM_GPUS_PER_TASK=4), r"sees 3 GPU\(s\).*--gpus-per-task=4"),
    (srun_task(3, 1, 1, 2, "1(x2)", "0"), "SLURM_PROCID=3 is not below SLURM_NTASKS=2"),
    (srun_task(1, 1, 0, 2, "2", "0,1", SLURM_LOCALID="x"), "SLURM_LOCALID='x' is not an integer"),
])
def test_bad_placements_are_named(env, message):
    with pytest.raises(DistributedSetupError, match=message):
        slurm_arguments(env)


def test_the_batch_script_itself_is_told_to_use_srun():
    # What `python -m experiments.main --distributed` sees when run outside srun in sbatch.
    env = {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "16", "SLURM_PROCID": "0", "SLURM_NODELIST": "gpu[1-2]",
           "SLURM_TASKS_PER_NODE": "8(x2)", "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}
    with pytest.raises(DistributedSetupError, match="SLURM_STEP_NODELIST is not set: start every process with srun"):
        slurm_arguments(env)


def test_coordinator_port_override():
    env = srun_task(0, 0, 0, 1, "1", "0", JAX_COORDINATOR_PORT=4321)
    assert slurm_arguments(env).coordinator_address == "gpu017:4321"


@pytest.mark.parametrize("nodelist, host, jax_agrees", [
    ("node001", "node001", True), ("node001,host2", "node001", True), ("node[001-015],host2", "node001", True),
    ("node[007,009-015]", "node007", True),
    # JAX's parser reads one bracket group holding a ',' or '-' ('a-b[3]' gives 'a-b3]').
    ("rack[1-2]-n[07-08],x", "rack1-n07", False), ("a-b[3]", "a-b3", False),
])
def test_first_host_matches_jax(nodelist, host, jax_agrees, monkeypatch):
    assert first_host(nodelist) == host
    if jax_agrees:
        from jax._src.clusters.slurm_cluster import SlurmCluster
        monkeypatch.setenv("SLURM_STEP_NODELIST", nodelist)
        monkeypatch.setenv("SLURM_JOB_ID", str(JOB_ID))
        assert SlurmCluster.get_coordinator_address(None, None) == f"{host}:{PORT}"


def test_tasks_on_node():
    assert [tasks_on_node("3(x2),1", i) for i in range(3)] == [3, 3, 1]
    assert tasks_on_node("8", 0) == 8
    with pytest.raises(DistributedSetupError, match="cannot read"):
        tasks_on_node("8(2)", 0)


def test_initialize_passes_the_derived_arguments(monkeypatch):
    calls = []
    monkeypatch.setattr(distributed.jax.distributed, "initialize", lambda *a, **k: calls.append((a, k)))
    distributed.initialize(True, environ=srun_task(11, 3, 1, 16, "8(x2)", "3", SLURM_GPUS_PER_TASK=1))
    distributed.initialize(True, environ=srun_task(1, 1, 0, 2, "2", None))
    distributed.initialize(True, environ={})  # not SLURM: JAX detects TPU / MPI / Kubernetes itself
    distributed.initialize(False, environ=srun_task(1, 1, 0, 2, "2", "0,1"))  # single process: no call
    distributed.initialize(False, "10.0.0.1:1234", 2, 1, environ={})
    assert calls == [
        ((), dict(coordinator_address=f"gpu017:{PORT}", num_processes=16, process_id=11, local_device_ids=[0])),
        ((), dict(coordinator_address=f"gpu017:{PORT}", num_processes=2, process_id=1, local_device_ids=[])),
        ((), {}),
        ((), dict(coordinator_address="10.0.0.1:1234", num_processes=2, process_id=1)),
    ]
    with pytest.raises(ValueError, match="go together"):
        distributed.initialize(True, "10.0.0.1:1234", None, None)


def test_trainer_reports_a_bad_placement_in_one_line(tmp_path):
    env = dict(os.environ, **srun_task(9, 1, 1, 16, "8(x2)", "0,1,2,3"), JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, "-m", "experiments.main", "--config=configs/default.py", f"--workdir={tmp_path}/run",
         "--distributed"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("error: 8 tasks on this node share 4 GPU(s) (CUDA_VISIBLE_DEVICES=0,1,2,3)")
    assert not os.path.exists(tmp_path / "run")
