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
limit=$(numfmt --from=iec -- "$PARAM_SIZE")

# Bytes on disk of the archived journal files (system@...journal, ...journal~), which vacuum
# removes, and of the largest active one (system.journal, user-1000.journal), which it never
# touches: only rotating archives an active file.
usage() {  # archived|active
  find /var/log/journal /run/log/journal -type f \( -name '*.journal' -o -name '*.journal~' \) \
       -printf '%f %b\n' 2>/dev/null | awk -v want="$1" '
    { bytes = $2 * 512; archived = ($1 ~ /@/ || $1 ~ /~$/) }
    want == "archived" && archived { s += bytes }
    want == "active" && !archived && bytes > s { s = bytes }
    END { print s + 0 }'
}

case "$mode" in
  check)
    journalctl --disk-usage
    echo "would run: journalctl --rotate --vacuum-size=$PARAM_SIZE"
    ;;
  verify)
    journalctl --disk-usage
    archived=$(usage archived)
    active=$(usage active)
    echo "archived journal files: $archived bytes; largest active file: $active bytes; limit $limit bytes"
    [ "$archived" -le "$limit" ] && [ "$active" -le "$limit" ]
    ;;
  run)
    journalctl --disk-usage
    # vacuum removes archived files only: a journal still in its active file (journald
    # archives one at 1/8 of its limit, up to 128M) would not shrink at all without this
    journalctl --rotate
    journalctl --vacuum-size="$PARAM_SIZE"
    journalctl --disk-usage
    ;;
  *) echo "unknown mode: $mode" >&2; exit 2 ;;
esac
