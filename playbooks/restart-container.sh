#!/usr/bin/env bash
# ---
# name: restart-container
# description: Restart a container with docker or podman, then check that it runs.
# risk: change
# timeout: 180
# params:
#   container:
#     type: string
#     required: true
#     pattern: ^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$
#     description: Container name or id.
#   runtime:
#     type: enum
#     enum: [auto, docker, podman]
#     default: auto
#     description: Which container engine; auto picks docker, else podman.
# check: bash "$PLAYBOOK_PATH" check
# verify: bash "$PLAYBOOK_PATH" verify
# ---
set -euo pipefail
mode="${1:-run}"

engine="$PARAM_RUNTIME"
if [ "$engine" = auto ]; then
  if command -v docker >/dev/null; then engine=docker
  elif command -v podman >/dev/null; then engine=podman
  else echo "neither docker nor podman is installed" >&2; exit 3
  fi
fi
command -v "$engine" >/dev/null || { echo "$engine is not installed" >&2; exit 3; }

running() {
  "$engine" inspect --format '{{.State.Running}}' -- "$PARAM_CONTAINER"
}

case "$mode" in
  check)
    echo "engine: $engine"
    state=$(running)  # not inside echo: a container that does not exist must fail the check
    echo "running: $state"
    echo "would run: $engine restart $PARAM_CONTAINER"
    ;;
  verify)
    [ "$(running)" = true ]
    ;;
  run)
    "$engine" restart -- "$PARAM_CONTAINER"
    sleep 2
    state=$(running)
    echo "running: $state"
    [ "$state" = true ]
    ;;
  *) echo "unknown mode: $mode" >&2; exit 2 ;;
esac
