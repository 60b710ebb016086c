# Sourced by the launchers. `run CMD ARGS...` executes the command; with DRY_RUN=1 it prints
# it instead, shell-quoted on one line, so the launchers' commands can be checked anywhere.
run() {
  if [ "${DRY_RUN:-0}" != 0 ]; then
    printf '%q' "$1"
    shift
    [ $# -eq 0 ] || printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}
