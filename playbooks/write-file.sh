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

# Walk the path one component at a time from /, opening each directory with O_NOFOLLOW and
# writing through the last one's descriptor: whoever controls a directory on the path cannot
# redirect the write with a symbolic link (not even by swapping one in mid-run). A symbolic
# link anywhere on the path, or as the file itself, is refused. `place check` only walks.
place() {
  python3 - "$1" "$target" "$tmp" "$PARAM_MODE" "$owner" <<'PY'
import os, pwd, stat, sys

action, target, src, mode, owner = sys.argv[1:6]
parts = [p for p in target.split("/") if p]
if not target.startswith("/") or not parts or any(p in (".", "..") for p in parts):
    sys.exit(f"refusing {target!r}: not a plain absolute path")
NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
for i, part in enumerate(parts[:-1]):
    try:
        nfd = os.open(part, NOFOLLOW_DIR, dir_fd=fd)
    except FileNotFoundError:
        if action == "check":
            sys.exit(0)  # the rest of the path would be created, as real directories
        os.mkdir(part, 0o755, dir_fd=fd)
        nfd = os.open(part, NOFOLLOW_DIR, dir_fd=fd)
    except OSError:  # ELOOP: a symbolic link; ENOTDIR: not a directory
        sys.exit(f"refusing {target}: /{'/'.join(parts[:i + 1])} is a symbolic link or not a directory")
    os.close(fd)
    fd = nfd
name = parts[-1]
try:
    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
except FileNotFoundError:
    st = None
if st is not None and not stat.S_ISREG(st.st_mode):
    sys.exit(f"refusing {target}: it is a symbolic link or not a regular file")
if action == "check":
    sys.exit(0)


def write(dest, data, mode, uid, gid):
    tmpname = f".{dest}.homelab-{os.getpid()}"
    out = os.open(tmpname, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=fd)
    try:
        os.write(out, data)
        os.fchown(out, uid, gid)
        os.fchmod(out, mode)
        os.fsync(out)
    finally:
        os.close(out)
    os.rename(tmpname, dest, src_dir_fd=fd, dst_dir_fd=fd)  # rename replaces a link, never follows it


if st is not None:  # keep the previous file, as it was
    old = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)
    with os.fdopen(old, "rb") as f:
        write(name + ".homelab-bak", f.read(), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
pw = pwd.getpwnam(owner)
with open(src, "rb") as f:
    write(name, f.read(), int(mode, 8), pw.pw_uid, pw.pw_gid)
PY
}

case "$mode" in
  check)
    place check || exit 4
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
    place check && [ "$(current)" = "$PARAM_SHA256" ]
    ;;
  run)
    place run || exit 4
    echo "wrote $target"
    ;;
  *) echo "unknown mode: $mode" >&2; exit 2 ;;
esac
