#!/usr/bin/env bash
# ---
# name: write-file
# description: Write one file of a node profile (content as base64) with its mode and owner; the previous file is kept as FILE.homelab-bak.
# risk: change
# timeout: 60
# params:
#   path:
#     type: path
#     required: true
#     description: Absolute path; with user set, the path inside that user's home (e.g. /.bashrc).
#   user:
#     type: string
#     pattern: "([a-z_][a-z0-9_-]{0,31})?"
#     default: ""
#     description: A dotfile's owner; path is then relative to their home directory.
#   content:
#     type: string
#     pattern: "[A-Za-z0-9+/]*={0,2}"
#     max_length: 4096
#     default: ""
#     description: The file's content, base64-encoded (at most about 3 KiB of content).
#   sha256:
#     type: string
#     pattern: "[0-9a-f]{64}"
#     required: true
#     description: SHA-256 of the content; the run refuses anything else and verify checks it.
#   mode:
#     type: string
#     pattern: "0?[0-7]{3}"
#     default: "0644"
#     description: File mode in octal.
#   owner:
#     type: string
#     pattern: "[a-z_][a-z0-9_-]{0,31}"
#     default: root
#     description: Owning user (a dotfile defaults to its user).
# check: bash "$PLAYBOOK_PATH" check
# verify: bash "$PLAYBOOK_PATH" verify
# ---
# Parameters arrive only as environment variables (PARAM_*), already validated.
set -euo pipefail
mode="${1:-run}"

target="$PARAM_PATH"
owner="$PARAM_OWNER"
if [ -n "$PARAM_USER" ]; then
  home=$(getent passwd "$PARAM_USER" | cut -d: -f6)
  [ -n "$home" ] || { echo "no such user: $PARAM_USER" >&2; exit 3; }
  target="${home%/}$PARAM_PATH"
  [ "$owner" = root ] && owner="$PARAM_USER"
fi
getent passwd "$owner" >/dev/null || { echo "no such user: $owner" >&2; exit 3; }

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
printf '%s' "$PARAM_CONTENT" | base64 -d >"$tmp"
got=$(sha256sum "$tmp" | cut -d' ' -f1)
[ "$got" = "$PARAM_SHA256" ] || { echo "content does not match its sha256 ($got)" >&2; exit 2; }

current() { [ -f "$target" ] && sha256sum "$target" | cut -d' ' -f1 || echo none; }

case "$mode" in
  check)
    if [ "$(current)" = "$PARAM_SHA256" ]; then
      echo "$target already has this content"
    else
      echo "would write $target (mode $PARAM_MODE, owner $owner):"
      # the output reaches the hub's events and Datasette: show a diff only where the file
      # collector would send the content too (world-readable before and after)
      if [ $((8#$PARAM_MODE & 4)) -ne 0 ] && { [ ! -e "$target" ] || [ $((8#$(stat -c %a -- "$target") & 4)) -ne 0 ]; }; then
        diff -u "$( [ -f "$target" ] && echo "$target" || echo /dev/null)" "$tmp" || true
      else
        echo "content not shown: the file is not world-readable (now $(current | cut -c1-16), new ${PARAM_SHA256:0:16})"
      fi
    fi
    ;;
  verify)
    [ "$(current)" = "$PARAM_SHA256" ]
    ;;
  run)
    mkdir -p -- "$(dirname -- "$target")"
    [ -f "$target" ] && cp -p -- "$target" "$target.homelab-bak"
    install -m "$PARAM_MODE" -o "$owner" -g "$(id -gn "$owner")" -- "$tmp" "$target"
    echo "wrote $target"
    ;;
  *) echo "unknown mode: $mode" >&2; exit 2 ;;
esac
