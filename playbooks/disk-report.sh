#!/usr/bin/env bash
# ---
# name: disk-report
# description: Free space per filesystem, what the shipped fixes could reclaim there, and the largest directories under a path (read-only).
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
echo
# What each shipped fix could free on this filesystem, so the rule can propose the one the
# evidence favours (the `largest reclaimable:` line; see docs/rules.md, if_output).
mount_of() { df -P -- "$1" 2>/dev/null | awk 'NR == 2 {print $6}'; }
target="$(mount_of "$PARAM_PATH")"
echo "== reclaimable on $target"
best=none
best_kib=0
consider() {  # fix kib
  echo "reclaimable: $1 $2 KiB"
  if [ "$2" -gt "$best_kib" ]; then best="$1"; best_kib="$2"; fi
}
seen=" "
for d in /tmp /var/tmp "$PARAM_PATH"; do
  case "$d" in /tmp | /tmp/* | /var/tmp | /var/tmp/*) ;; *) continue ;; esac
  if [ ! -d "$d" ] || [ "$(mount_of "$d")" != "$target" ]; then continue; fi
  case "$seen" in *" $d "*) continue ;; esac
  seen="$seen$d "
  # what clean-tmp deletes at age 1d: files not modified for a day
  # find exits 1 when a file vanishes mid-walk (busy /tmp): what it printed still counts
  kib=$({ find "$d" -xdev -mindepth 1 -type f -mmin +1440 -printf '%k\n' 2>/dev/null || true; } | awk '{s += $1} END {print s + 0}')
  consider "clean-tmp $d" "$kib"
done
if [ -d /var/log/journal ] && [ "$(mount_of /var/log/journal)" = "$target" ]; then
  kib=$({ du -sk /var/log/journal 2>/dev/null || true; } | awk '{print $1 + 0}')
  consider journal-vacuum "$(( kib > 204800 ? kib - 204800 : 0 ))"  # journal-vacuum keeps 200M
fi
if command -v apt-get >/dev/null && [ "$(mount_of /usr)" = "$target" ]; then
  pkgs=$(apt-get -s -q autoremove 2>/dev/null | awk '/^Remv/ {print $2}' || true)
  kib=0
  if [ -n "$pkgs" ]; then
    # shellcheck disable=SC2086 # one package name per word
    kib=$(dpkg-query -W -f='${Installed-Size}\n' $pkgs 2>/dev/null | awk '{s += $1} END {print s + 0}')
  fi
  consider apt-autoremove "$kib"
fi
if [ -d /var/log ] && [ "$(mount_of /var/log)" = "$target" ]; then
  # logs of 10 MiB and more that logrotate would compress (about nine tenths freed)
  kib=$({ find /var/log -xdev -type f -size +10M ! -name '*.gz' ! -name '*.xz' ! -name '*.journal*' \
        -printf '%k\n' 2>/dev/null || true; } | awk '{s += $1} END {print int(s * 0.9)}')
  consider logrotate-force "$kib"
fi
echo "largest reclaimable: $best"
