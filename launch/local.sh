#!/usr/bin/env bash
# One process on this machine, all its local devices ($PYTHON, default python on the PATH). Arguments go straight to the trainer:
#   launch/local.sh --config=configs/default.py --workdir=runs/default [--mode=sample] [--config.x=y ...]
# Simulate N CPU devices (to try a sharded config without accelerators) with
#   XLA_FLAGS=--xla_force_host_platform_device_count=N launch/local.sh ...
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m experiments.main "$@"
