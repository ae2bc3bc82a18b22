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
# verify: bash "$PLAYBOOK_PATH" verify
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
  verify)
    # debug mode again (changes nothing): after the run no log of this config is due;
    # the state file remembers the forced rotation, so time-based logs are not due either
    due=$(logrotate -d -- "$PARAM_CONFIG" 2>&1 | grep -c '^ *log needs rotating' || true)
    echo "$due log(s) of $PARAM_CONFIG still need rotating"
    [ "$due" -eq 0 ]
    ;;
  run)
    logrotate -v -f -- "$PARAM_CONFIG" 2>&1 | tail -n 200
    ;;
  *) echo "unknown mode: $mode" >&2; exit 2 ;;
esac
