"""Multi-process start-up: one code path for a laptop, a GPU cluster and a TPU pod.

`initialize` calls `jax.distributed.initialize` once, before any JAX computation, in one of
three ways:

- explicit: coordinator address, process count and id from flags (the local multi-process
  launcher);
- SLURM (`--distributed` inside an `srun` step): the arguments come from
  `slurm_arguments(os.environ)`, a pure function of the environment that also derives which
  GPUs this process drives (below);
- elsewhere (`--distributed` on Cloud TPU VMs, Open MPI, Kubernetes): JAX detects the cluster.

Without `enabled` and without a coordinator the run is a single process and nothing is called.

GPUs under SLURM. JAX's own SLURM detection makes process `SLURM_LOCALID` drive the GPU of
that ordinal, which is right only when every task sees all GPUs of its node and there is one
task per GPU. With `--gpus-per-task=1` SLURM binds one GPU to each task, so each process sees
a single GPU (ordinal 0) and local id 3 asks for ordinal 3: "invalid device ordinal"; with one
task per node, local id 0 drives only the first of its GPUs. `local_device_ids` are ordinals
among the GPUs this process sees (CUDA_VISIBLE_DEVICES renumbers them from 0), so here:

- the GPUs it sees are its own (one task on the node, or SLURM bound them to the task:
  `--gpus-per-task=G` and G visible): all of them, 0..n-1;
- n visible GPUs shared by the k tasks of the node (`--gpus-per-node=n --ntasks-per-node=k`,
  or `--gpus-per-task` with `--gpu-bind=none`): task `SLURM_LOCALID` takes its n/k
  consecutive ordinals; k > n or k not dividing n is an error.
"""
from __future__ import annotations

import dataclasses
import os
import re
import sys
from typing import Mapping

import jax

# JAX's SLURM port rule (jax/_src/clusters/slurm_cluster.py), so both agree: a port in the
# top 4096 of the ephemeral range, from the job id; JAX_COORDINATOR_PORT overrides it.
_PORT_RANGE, _PORT_TOP = 2**12, 65535


class DistributedSetupError(ValueError):
    """The cluster environment cannot start this run; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class DistributedArguments:
    """Keyword arguments of `jax.distributed.initialize`. `local_device_ids` are ordinals
    among the GPUs this process sees; None: no GPUs assigned, leave device visibility alone."""

    coordinator_address: str
    num_processes: int
    process_id: int
    local_device_ids: tuple[int, ...] | None


def is_slurm_task(env: Mapping[str, str]) -> bool:
    """Inside a SLURM job (batch script or srun step)."""
    return "SLURM_JOB_ID" in env


def first_host(nodelist: str) -> str:
    """The first host of a SLURM host list: 'node[001-004,9],gpu1' -> 'node001',
    'rack[1-2]-n[07-08]' -> 'rack1-n07'."""
    depth = 0
    for i, char in enumerate(nodelist):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            nodelist = nodelist[:i]
            break
    return re.sub(r"\[([^\]]*)\]", lambda m: re.split(r"[,-]", m.group(1))[0], nodelist.strip())


def tasks_on_node(tasks_per_node: str, node_index: int) -> int:
    """Tasks on node `node_index` from SLURM's compressed count list: '8(x2)', '3(x2),1'."""
    counts = []
    for item in tasks_per_node.split(","):
        match = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", item)
        if match is None:
            raise DistributedSetupError(f"cannot read the tasks-per-node list {tasks_per_node!r}")
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    if not 0 <= node_index < len(counts):
        raise DistributedSetupError(f"node index {node_index} is outside the tasks-per-node list {tasks_per_node!r}")
    return counts[node_index]


def _int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except KeyError:
        raise DistributedSetupError(
            f"{name} is not set although SLURM_JOB_ID is: start every process with srun inside the job "
            "(launch/slurm_gpu.sh does), not directly from the batch script") from None
    except ValueError:
        raise DistributedSetupError(f"{name}={env[name]!r} is not an integer") from None


def _visible_gpus(env: Mapping[str, str]) -> list[str] | None:
    """The GPUs this process sees (CUDA_VISIBLE_DEVICES, as SLURM sets it), None if unset."""
    value = env.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    value = value.strip()
    if value in ("", "NoDevFiles"):  # SLURM's value when the job holds no GPU on this node
        return []
    return [entry.strip() for entry in value.split(",")]


def _local_task_count(env: Mapping[str, str]) -> int:
    node_index = _int(env, "SLURM_NODEID") if "SLURM_NODEID" in env else 0
    for name in ("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"):
        if name in env:
            return tasks_on_node(env[name], node_index)
    if "SLURM_NTASKS_PER_NODE" in env:
        return _int(env, "SLURM_NTASKS_PER_NODE")
    if _int(env, "SLURM_NTASKS") == 1:
        return 1
    raise DistributedSetupError("cannot tell how many tasks share this node: none of SLURM_STEP_TASKS_PER_NODE, "
                                "SLURM_TASKS_PER_NODE, SLURM_NTASKS_PER_NODE is set; start the processes with srun")


def slurm_local_device_ids(env: Mapping[str, str]) -> tuple[int, ...] | None:
    """Ordinals (among its visible GPUs) that this SLURM task drives; see the module docstring."""
    if "JAX_LOCAL_DEVICE_IDS" in env:  # the user's explicit choice, as JAX honours it
        return tuple(int(i) for i in env["JAX_LOCAL_DEVICE_IDS"].split(","))
    visible = _visible_gpus(env)
    if not visible:  # a CPU job, or GPUs not managed by SLURM: nothing to restrict
        return None
    n, tasks, local_id = len(visible), _local_task_count(env), _int(env, "SLURM_LOCALID")
    shown = f"CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']}"
    per_task = env.get("SLURM_GPUS_PER_TASK")
    if per_task is not None:
        per_task = int(per_task.split(":")[-1])  # '1' or 'a100:1'
        if n == per_task:  # bound to this task (SLURM's default with --gpus-per-task)
            return tuple(range(n))
        if n != per_task * tasks:
            raise DistributedSetupError(
                f"this task sees {n} GPU(s) ({shown}) but --gpus-per-task={per_task} with {tasks} task(s) on the "
                f"node; let SLURM bind GPUs to tasks (drop --gpu-bind) or use --gpus-per-node")
    if tasks == 1:
        return tuple(range(n))
    if tasks > n or n % tasks:
        raise DistributedSetupError(
            f"{tasks} tasks on this node share {n} GPU(s) ({shown}); run one task per GPU "
            f"(--ntasks-per-node={n} --gpus-per-node={n}, or --gpus-per-task=1) or one task per node "
            "(--ntasks-per-node=1)")
    share = n // tasks
    if not 0 <= local_id < tasks:
        raise DistributedSetupError(f"SLURM_LOCALID={local_id} is not below the {tasks} tasks on this node")
    return tuple(range(local_id * share, (local_id + 1) * share))


def slurm_arguments(env: Mapping[str, str]) -> DistributedArguments:
    """`jax.distributed.initialize` arguments of an srun task, from its environment:
    process id SLURM_PROCID of SLURM_NTASKS, coordinator on the first host of
    SLURM_STEP_NODELIST at JAX's port for SLURM_JOB_ID, and the GPUs it drives."""
    num_processes, process_id = _int(env, "SLURM_NTASKS"), _int(env, "SLURM_PROCID")
    if not 0 <= process_id < num_processes:
        raise DistributedSetupError(f"SLURM_PROCID={process_id} is not below SLURM_NTASKS={num_processes}")
    nodelist = env.get("SLURM_STEP_NODELIST")
    if not nodelist:
        raise DistributedSetupError(
            "SLURM_STEP_NODELIST is not set: start every process with srun inside the job "
            "(launch/slurm_gpu.sh does), not directly from the batch script")
    port = env.get("JAX_COORDINATOR_PORT") or str(_int(env, "SLURM_JOB_ID") % _PORT_RANGE + _PORT_TOP - _PORT_RANGE + 1)
    return DistributedArguments(f"{first_host(nodelist)}:{port}", num_processes, process_id,
                                slurm_local_device_ids(env))


def initialize(enabled: bool, coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, environ: Mapping[str, str] | None = None) -> None:
    """Start multi-process JAX as the module docstring describes; raises ValueError (a
    DistributedSetupError for the environment) with one line saying what to change."""
    explicit = (coordinator_address, num_processes, process_id)
    if any(value is not None for value in explicit) and not all(value is not None for value in explicit):
        raise ValueError(
            "--coordinator_address, --num_processes and --process_id go together: give all three, "
            "or none of them with --distributed to detect the cluster from the environment"
        )
    if coordinator_address is not None:
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                   process_id=process_id)
    elif enabled:
        env = os.environ if environ is None else environ
        if is_slurm_task(env):
            args = slurm_arguments(env)
            # An empty list (not None) keeps JAX from substituting [SLURM_LOCALID].
            jax.distributed.initialize(coordinator_address=args.coordinator_address,
                                       num_processes=args.num_processes, process_id=args.process_id,
                                       local_device_ids=list(args.local_device_ids or []))
        else:
            jax.distributed.initialize()


if __name__ == "__main__":
    # `srun python -m genjax.train.distributed`: what each task would start with, without starting.
    try:
        print(slurm_arguments(os.environ) if is_slurm_task(os.environ) else "not inside a SLURM job")
    except DistributedSetupError as error:
        sys.exit(f"error: {error}")
