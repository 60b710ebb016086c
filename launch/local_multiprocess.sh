#!/usr/bin/env bash
# N processes of the trainer on this machine, joined with jax.distributed over localhost:
#   launch/local_multiprocess.sh N --config=configs/default.py --workdir=runs/mp [--config.x=y ...]
# The interpreter is $PYTHON (default: python on the PATH). Each process gets --coordinator_address=127.0.0.1:PORT --num_processes=N --process_id=I.
# On CPU give each process its own simulated devices, e.g.
#   XLA_FLAGS=--xla_force_host_platform_device_count=2 launch/local_multiprocess.sh 2 ...
# If any process fails, the others are killed (SIGKILL: JAX catches SIGTERM in distributed
# mode) and the script exits with the failing status.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ] || ! [[ "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 NUM_PROCESSES ARGS..." >&2
  exit 2
fi
num_processes=$1
shift
port=${COORDINATOR_PORT:-$("${PYTHON:-python}" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}

pids=()
cleanup() { kill -KILL "${pids[@]}" 2>/dev/null; }
trap cleanup INT TERM
for ((i = 0; i < num_processes; i++)); do
  "${PYTHON:-python}" -m experiments.main "$@" --coordinator_address="127.0.0.1:${port}" \
    --num_processes="${num_processes}" --process_id="${i}" &
  pids+=($!)
done

status=0
for ((i = 0; i < num_processes; i++)); do
  wait -n "${pids[@]}"
  code=$?
  if [ "$code" -ne 0 ]; then
    status=$code
    cleanup
    break
  fi
done
wait 2>/dev/null
exit "$status"
