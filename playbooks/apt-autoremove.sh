#!/usr/bin/env bash
# ---
# name: apt-autoremove
# description: Remove packages that were installed as dependencies and are no longer needed.
# risk: change
# timeout: 1800
# check: bash "$PLAYBOOK_PATH" check
# verify: bash "$PLAYBOOK_PATH" verify
# ---
set -euo pipefail
mode="${1:-run}"
export DEBIAN_FRONTEND=noninteractive

command -v apt-get >/dev/null || { echo "apt-get is not installed: not a Debian-family system" >&2; exit 3; }

case "$mode" in
  check)
    apt-get -s -q autoremove | grep -E '^Remv|removed' || true
    ;;
  verify)
    left=$(apt-get -s -q autoremove | grep -c '^Remv' || true)
    echo "$left package(s) still removable"
    [ "$left" -eq 0 ]
    ;;
  run)
    apt-get -y -q autoremove
    ;;
  *) echo "unknown mode: $mode" >&2; exit 2 ;;
esac
