#!/usr/bin/env bash
# ---
# name: disk-report
# description: Free space per filesystem and the largest directories under a path (read-only).
# risk: read-only
# timeout: 120
# params:
#   path:
#     type: path
#     default: /
#     description: Where to look for the largest directories (stays on that filesystem).
#   top:
#     type: int
#     default: 15
#     min: 1
#     max: 200
#     description: How many of the largest directories to list.
# ---
set -euo pipefail

echo "== filesystems"
df -hPT -x tmpfs -x devtmpfs -x squashfs -x overlay 2>/dev/null || df -hP
echo
echo "== inodes"
df -iP "$PARAM_PATH"
echo
echo "== largest directories under $PARAM_PATH (this filesystem only)"
du -xh --max-depth=2 -- "$PARAM_PATH" 2>/dev/null | sort -rh | head -n "$PARAM_TOP" || true
