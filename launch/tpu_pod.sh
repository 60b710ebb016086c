#!/usr/bin/env bash
# Train on a Cloud TPU VM pod slice: install this repository on every worker at this checkout's
# commit, then run the same command on all of them. JAX finds the other workers itself (--distributed).
#   REPO=https://github.com/ORG/genjax.git launch/tpu_pod.sh my-v4-32 us-central2-b --config=configs/default.py --workdir=gs://BUCKET/runs/x
# The workdir must be shared storage (a GCS bucket); orbax writes each worker's shards there.
# REPO: where the workers get the code (a git URL, or a path already on the workers). REV: the
# commit they check out (default: this checkout's HEAD, which must be pushed to REPO).
# REMOTE_PYTHON: a Python >= 3.11 on the workers (default python3.11; TPU VM images ship 3.10, e.g.
# `sudo apt-get install -y python3.11-venv` from the deadsnakes PPA). DRY_RUN=1 prints the gcloud commands.
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/common.sh
if [ $# -lt 3 ]; then
  echo "usage: $0 TPU_NAME ZONE ARGS..." >&2
  exit 2
fi
tpu=$1 zone=$2
shift 2
repo=${REPO:?set REPO to a git URL of this repository}
rev=${REV:-$(git rev-parse HEAD)}
python=${REMOTE_PYTHON:-python3.11}
# One level of quoting: each string below is run by the worker's shell.
install="set -e; [ -d genjax ] || git clone -q $(printf '%q' "$repo") genjax; cd genjax"
install+="; git fetch -q origin && git checkout -q --detach $(printf '%q' "$rev")"
install+="; [ -x .venv/bin/python ] || $(printf '%q' "$python") -m venv .venv"
install+="; .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -e . 'jax[tpu]==0.10.2'"
train="cd genjax && .venv/bin/python -m experiments.main --distributed$(printf ' %q' "$@")"
run gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command="$install"
run gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command="$train"
