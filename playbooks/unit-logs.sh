#!/usr/bin/env bash
# ---
# name: unit-logs
# description: Show a unit's recent log lines and state (read-only diagnostics).
# risk: read-only
# timeout: 30
# params:
#   unit:
#     type: unit
#     required: true
#     description: The unit whose logs to show.
#   lines:
#     type: int
#     default: 100
#     min: 1
#     max: 2000
#     description: How many of the newest lines.
# ---
set -euo pipefail

has_journal() {
  command -v journalctl >/dev/null \
    && [ -n "$(find /var/log/journal /run/log/journal -name '*.journal' -print -quit 2>/dev/null)" ]
}

if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl status --no-pager --lines=0 -- "$PARAM_UNIT" || true
fi
if has_journal; then
  echo "== last $PARAM_LINES log lines of $PARAM_UNIT (journald)"
  journalctl --no-pager -o short-iso -n "$PARAM_LINES" -u "$PARAM_UNIT"
else
  # No journal: fall back to syslog files, matching the unit's base name.
  name="${PARAM_UNIT%.*}"
  found=0
  for f in /var/log/syslog /var/log/messages /var/log/daemon.log; do
    if [ -r "$f" ]; then
      echo "== last $PARAM_LINES lines mentioning $name in $f"
      grep -F -- "$name" "$f" | tail -n "$PARAM_LINES" || true
      found=1
    fi
  done
  if [ "$found" = 0 ]; then
    echo "== no journal and no syslog file on this machine: no logs for $PARAM_UNIT"
  fi
fi
