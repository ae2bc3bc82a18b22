#!/usr/bin/env bash
# ---
# name: journal-vacuum
# description: Shrink the systemd journal to a size limit, oldest entries first.
# risk: change
# timeout: 300
# params:
#   size:
#     type: string
#     default: 500M
#     pattern: ^[0-9]{1,6}[KMG]$
#     description: Keep at most this much journal (e.g. 500M, 2G).
# check: bash "$PLAYBOOK_PATH" check
# verify: bash "$PLAYBOOK_PATH" verify
# ---
set -euo pipefail
mode="${1:-run}"

command -v journalctl >/dev/null || { echo "journalctl is not installed" >&2; exit 3; }
if [ -z "$(find /var/log/journal /run/log/journal -name '*.journal' -print -quit 2>/dev/null)" ]; then
  echo "no journal on this machine: nothing to vacuum" >&2
  exit 3
fi

case "$mode" in
  check)
    journalctl --disk-usage
    echo "would run: journalctl --vacuum-size=$PARAM_SIZE"
    ;;
  verify)
    journalctl --disk-usage
    ;;
  run)
    journalctl --disk-usage
    journalctl --vacuum-size="$PARAM_SIZE"
    journalctl --disk-usage
    ;;
  *) echo "unknown mode: $mode" >&2; exit 2 ;;
esac
