#!/bin/bash
# Export the age of the newest restic snapshot for node_exporter's textfile collector.
set -euo pipefail
repo="rest:http://nas1:8000/$(hostname)"
latest=$(restic -r "$repo" snapshots --latest 1 --json | jq -r '.[0].time')
age=$(( $(date +%s) - $(date -d "$latest" +%s) ))
tmp=$(mktemp /var/lib/node_exporter/restic.prom.XXXX)
echo "restic_last_snapshot_age_seconds $age" > "$tmp"
mv "$tmp" /var/lib/node_exporter/restic.prom
