#!/usr/bin/env bash
# N processes of the trainer on this machine, joined with jax.distributed over localhost:
#   launch/local_multiprocess.sh 2 --config=configs/default.py --workdir=runs/mp
# On CPU give each process its own simulated devices:
#   XLA_FLAGS=--xla_force_host_platform_device_count=2 launch/local_multiprocess.sh 2 --config=configs/default.py --workdir=runs/mp
# Each process gets --coordinator_address=127.0.0.1:PORT --num_processes=N --process_id=I (PORT: a free
# one, or $COORDINATOR_PORT). The interpreter is $PYTHON (default: python on the PATH); DRY_RUN=1 prints
# the N commands instead. If any process fails, the others are killed (SIGKILL: JAX catches SIGTERM in
# distributed mode) and the script exits with the failing status.
set -uo pipefail
cd "$(dirname "$0")/.."
source launch/common.sh
if [ $# -lt 1 ] || ! [[ "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 NUM_PROCESSES ARGS..." >&2
  exit 2
fi
num_processes=$1
shift
python=${PYTHON:-python}
port=${COORDINATOR_PORT:-$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
command_of() {  # the command line of process $1
  command=("$python" -m experiments.main "${@:2}" --coordinator_address="127.0.0.1:${port}"
           --num_processes="${num_processes}" --process_id="$1")
}

if [ "${DRY_RUN:-0}" != 0 ]; then
  for ((i = 0; i < num_processes; i++)); do
    command_of "$i" "$@"
    run "${command[@]}"
  done
  exit 0
fi

pids=()
cleanup() { kill -KILL "${pids[@]}" 2>/dev/null; }
trap cleanup INT TERM
for ((i = 0; i < num_processes; i++)); do
  command_of "$i" "$@"
  "${command[@]}" &
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
