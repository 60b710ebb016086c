#!/usr/bin/env bash
# Train on a SLURM GPU cluster. Submit from the repository root; every task runs the trainer with
# --distributed, which reads the srun environment (genjax/train/distributed.py): process id and
# count, the coordinator on the first node, and the GPUs this task drives. Two placements work:
# one task per GPU (SLURM binds one GPU to each task):
#   sbatch --nodes=2 --ntasks-per-node=8 --gpus-per-task=1 launch/slurm_gpu.sh --config=configs/default.py --workdir=/shared/runs/x
# one task per node, driving all of its GPUs:
#   sbatch --nodes=2 --ntasks-per-node=1 --gpus-per-node=8 launch/slurm_gpu.sh --config=configs/default.py --workdir=/shared/runs/x
# (--ntasks-per-node=8 --gpus-per-node=8 also works: each task takes the GPU of its local id.
# More tasks than GPUs on a node is refused with one line.) Check what each task would start
# with, inside an allocation: srun python -m genjax.train.distributed
# The workdir must be on a file system every node sees. Install first, in this repository:
#   python -m venv .venv && .venv/bin/pip install -e . "jax[cuda12]==0.10.2"
# The interpreter is $PYTHON (default: .venv/bin/python); DRY_RUN=1 prints the srun command instead.
#SBATCH --job-name=genjax
#SBATCH --output=slurm-%j.out
set -euo pipefail
# sbatch runs a copy of this script from its spool directory: find the repository by the submit dir.
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
if [ ! -f launch/common.sh ] || [ ! -f experiments/main.py ]; then
  echo "error: $(pwd) is not the genjax repository; submit with sbatch from the repository root" >&2
  exit 2
fi
source launch/common.sh
# --kill-on-bad-exit: one failed task ends the step instead of leaving the others waiting in a collective.
run srun --kill-on-bad-exit=1 "${PYTHON:-.venv/bin/python}" -m experiments.main --distributed "$@"
