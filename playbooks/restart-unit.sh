#!/usr/bin/env bash
# ---
# name: restart-unit
# description: Restart a systemd unit, then show whether it came back.
# risk: change
# timeout: 120
# params:
#   unit:
#     type: unit
#     required: true
#     description: The unit to restart, e.g. nginx.service.
# check: bash "$PLAYBOOK_PATH" check
# verify: bash "$PLAYBOOK_PATH" verify
# ---
# Parameters arrive only as environment variables (PARAM_UNIT), already validated.
set -euo pipefail
mode="${1:-run}"

if ! command -v systemctl >/dev/null || [ ! -d /run/systemd/system ]; then
  echo "systemd is not running on this machine: nothing to restart" >&2
  exit 3
fi

case "$mode" in
  check)
    systemctl show --no-pager -p Id -p ActiveState -p SubState -p NRestarts -- "$PARAM_UNIT"
    echo "would run: systemctl restart -- $PARAM_UNIT"
    ;;
  verify)
    systemctl is-active --quiet -- "$PARAM_UNIT"
    ;;
  run)
    systemctl restart -- "$PARAM_UNIT"
    sleep 2
    systemctl status --no-pager --lines=20 -- "$PARAM_UNIT" || true
    systemctl is-active --quiet -- "$PARAM_UNIT"
    ;;
  *) echo "unknown mode: $mode" >&2; exit 2 ;;
esac
