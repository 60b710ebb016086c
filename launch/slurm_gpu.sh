#!/usr/bin/env bash
# Train on a SLURM GPU cluster, one process per GPU; JAX reads the SLURM environment
# (--distributed) to find the coordinator, the process count and this process's index.
#   sbatch --nodes=2 --ntasks-per-node=8 --gpus-per-task=1 launch/slurm_gpu.sh --config=configs/default.py --workdir=/shared/runs/x
# For one process per node that drives all of its GPUs, use --ntasks-per-node=1 --gpus-per-node=8.
# The workdir must be on a file system every node sees. Install first, in this repository:
#   python -m venv .venv && .venv/bin/pip install -e . "jax[cuda12]==0.10.2"
#SBATCH --job-name=genjax
#SBATCH --output=slurm-%j.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
srun .venv/bin/python -m experiments.main --distributed "$@"
