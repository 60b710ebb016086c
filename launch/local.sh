#!/usr/bin/env bash
# One process on this machine, all its local devices. Arguments go straight to the trainer:
#   launch/local.sh --config=configs/default.py --workdir=runs/default
#   launch/local.sh --config=configs/default.py --workdir=runs/default --mode=sample
# Simulate 8 CPU devices (to try a sharded config without accelerators):
#   XLA_FLAGS=--xla_force_host_platform_device_count=8 launch/local.sh --config=configs/mlp_50m.py --mode=compile
# The interpreter is $PYTHON (default: python on the PATH); DRY_RUN=1 prints the command instead.
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/common.sh
run "${PYTHON:-python}" -m experiments.main "$@"
