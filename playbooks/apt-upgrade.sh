#!/usr/bin/env bash
# ---
# name: apt-upgrade
# description: Apply pending package updates with apt-get (the check is a simulated run).
# risk: change
# timeout: 3600
# params:
#   kind:
#     type: enum
#     enum: [upgrade, dist-upgrade]
#     default: upgrade
#     description: upgrade never removes packages; dist-upgrade may, to resolve dependencies.
# check: bash "$PLAYBOOK_PATH" check
# verify: bash "$PLAYBOOK_PATH" verify
# ---
set -euo pipefail
mode="${1:-run}"
export DEBIAN_FRONTEND=noninteractive

command -v apt-get >/dev/null || { echo "apt-get is not installed: not a Debian-family system" >&2; exit 3; }

case "$mode" in
  check)
    # -s: simulate; prints the Inst/Remv lines and changes nothing
    apt-get -s -q "$PARAM_KIND" | grep -E '^(Inst|Remv|Conf)|upgraded' || true
    ;;
  verify)
    pending=$(apt-get -s -q "$PARAM_KIND" | grep -c '^Inst' || true)
    echo "$pending package(s) still pending"
    [ "$pending" -eq 0 ]
    ;;
  run)
    apt-get -q update
    apt-get -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$PARAM_KIND"
    ;;
  *) echo "unknown mode: $mode" >&2; exit 2 ;;
esac
