#!/usr/bin/env bash
# Train on a Cloud TPU VM pod slice: install this repository on every worker, then run the
# same command on all of them. JAX finds the other workers itself (--distributed).
#   launch/tpu_pod.sh TPU_NAME ZONE --config=configs/default.py --workdir=gs://BUCKET/runs/x [ARGS...]
# The workdir must be shared storage (a GCS bucket); orbax writes each worker's shards there.
# Set REPO to where the code comes from (a git URL or a path already on the workers).
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 TPU_NAME ZONE ARGS..." >&2
  exit 2
fi
tpu=$1 zone=$2
shift 2
repo=${REPO:?set REPO to a git URL of this repository}
args=$(printf '%q ' "$@")
ssh() { gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command="$1"; }
ssh "set -e; [ -d genjax ] || git clone $repo genjax; cd genjax && git pull --ff-only && python3 -m venv .venv && .venv/bin/pip install -q -e . 'jax[tpu]==0.10.2'"
ssh "cd genjax && .venv/bin/python -m experiments.main --distributed $args"
