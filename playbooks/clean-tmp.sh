#!/usr/bin/env bash
# ---
# name: clean-tmp
# description: Delete files older than an age from a temporary directory (/tmp or /var/tmp only).
# risk: change
# timeout: 300
# params:
#   path:
#     type: path
#     required: true
#     pattern: ^/(tmp|var/tmp)(/.*)?$
#     description: The directory to clean; it must be /tmp, /var/tmp or below them.
#   age:
#     type: duration
#     default: 7d
#     min: 60
#     max: 31536000
#     description: Only files not modified for this long are deleted (e.g. 7d, 12h).
# check: bash "$PLAYBOOK_PATH" check
# verify: bash "$PLAYBOOK_PATH" verify
# ---
# The header's pattern is checked before the script runs; the script checks again after
# resolving symlinks, so /tmp/link-to-etc cannot lead it out of the allowed set.
set -euo pipefail
mode="${1:-run}"

real="$(realpath -e -- "$PARAM_PATH" 2>/dev/null)" || { echo "no such directory: $PARAM_PATH" >&2; exit 3; }
case "$real" in
  /tmp|/tmp/*|/var/tmp|/var/tmp/*) ;;
  *) echo "refusing: $PARAM_PATH resolves to $real, outside /tmp and /var/tmp" >&2; exit 4 ;;
esac
[ -d "$real" ] || { echo "not a directory: $real" >&2; exit 3; }

cutoff=$(( $(date +%s) - PARAM_AGE ))
old_files() {
  # -xdev: never cross into another filesystem; find does not follow symlinks.
  find "$real" -xdev -mindepth 1 \( -type f -o -type l \) ! -newermt "@$cutoff" -print0
}

case "$mode" in
  check)
    count=0
    while IFS= read -r -d '' f; do
      count=$((count + 1))
      [ "$count" -le 200 ] && printf 'would delete: %q\n' "$f"
    done < <(old_files)
    echo "$count file(s) older than ${PARAM_AGE}s under $real would be deleted"
    ;;
  verify)
    left=$(old_files | tr -cd '\0' | wc -c)
    echo "$left file(s) older than ${PARAM_AGE}s left under $real"
    [ "$left" -eq 0 ]
    ;;
  run)
    before=$(du -sk -- "$real" | cut -f1)
    count=0
    while IFS= read -r -d '' f; do
      rm -f -- "$f" && count=$((count + 1))
    done < <(old_files)
    # then directories left empty by that, if they are old too
    find "$real" -xdev -mindepth 1 -depth -type d -empty ! -newermt "@$cutoff" -delete 2>/dev/null || true
    after=$(du -sk -- "$real" | cut -f1)
    echo "deleted $count file(s) under $real; freed $((before - after)) KiB"
    ;;
  *) echo "unknown mode: $mode" >&2; exit 2 ;;
esac
