#!/usr/bin/env bash
# ---
# name: logrotate-force
# description: Force a logrotate run now (all logs, or one config from /etc/logrotate.d).
# risk: change
# timeout: 300
# params:
#   config:
#     type: path
#     default: /etc/logrotate.conf
#     pattern: ^/etc/logrotate\.(conf|d/[A-Za-z0-9_.-]+)$
#     description: The logrotate configuration to apply.
# check: bash "$PLAYBOOK_PATH" check
# ---
set -euo pipefail
mode="${1:-run}"

command -v logrotate >/dev/null || { echo "logrotate is not installed" >&2; exit 3; }
[ -r "$PARAM_CONFIG" ] || { echo "no such logrotate config: $PARAM_CONFIG" >&2; exit 3; }

case "$mode" in
  check)
    # -d: debug mode, changes nothing
    logrotate -d -- "$PARAM_CONFIG" 2>&1 | tail -n 200
    ;;
  run)
    logrotate -v -f -- "$PARAM_CONFIG" 2>&1 | tail -n 200
    ;;
  *) echo "unknown mode: $mode" >&2; exit 2 ;;
esac
