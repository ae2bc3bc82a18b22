#!/usr/bin/env bash
# ---
# name: install-packages
# description: Install packages with the node's package manager (apt-get, dnf or pacman); used by node profiles.
# risk: change
# timeout: 1800
# params:
#   packages:
#     type: string
#     pattern: "[a-z0-9][a-z0-9+.-]{0,99}( [a-z0-9][a-z0-9+.-]{0,99}){0,199}"
#     max_length: 4096
#     required: true
#     description: Space-separated package names, e.g. "git htop tmux".
# check: bash "$PLAYBOOK_PATH" check
# verify: bash "$PLAYBOOK_PATH" verify
# ---
# Parameters arrive only as environment variables (PARAM_PACKAGES), already validated:
# names of letters, digits and + . - separated by single spaces, so word splitting is safe.
set -euo pipefail
mode="${1:-run}"
export DEBIAN_FRONTEND=noninteractive
read -r -a pkgs <<<"$PARAM_PACKAGES"

installed() {
  if command -v dpkg-query >/dev/null; then
    [ "$(dpkg-query -W -f='${Status}' -- "$1" 2>/dev/null)" = "install ok installed" ]
  elif command -v rpm >/dev/null; then
    rpm -q -- "$1" >/dev/null 2>&1
  elif command -v pacman >/dev/null; then
    pacman -Q -- "$1" >/dev/null 2>&1
  else
    return 1
  fi
}

missing=()
for p in "${pkgs[@]}"; do
  installed "$p" || missing+=("$p")
done

case "$mode" in
  check)
    echo "already installed: $(( ${#pkgs[@]} - ${#missing[@]} )) of ${#pkgs[@]}"
    echo "would install: ${missing[*]:-nothing}"
    ;;
  verify)
    echo "missing: ${missing[*]:-none}"
    [ ${#missing[@]} -eq 0 ]
    ;;
  run)
    [ ${#missing[@]} -eq 0 ] && { echo "all ${#pkgs[@]} packages already installed"; exit 0; }
    if command -v apt-get >/dev/null; then
      apt-get -q update
      apt-get -y -q install --no-install-recommends -- "${missing[@]}"
    elif command -v dnf >/dev/null; then
      dnf -y -q install -- "${missing[@]}"
    elif command -v pacman >/dev/null; then
      pacman -S --noconfirm --needed -- "${missing[@]}"
    else
      echo "no supported package manager (apt-get, dnf, pacman)" >&2
      exit 3
    fi
    ;;
  *) echo "unknown mode: $mode" >&2; exit 2 ;;
esac
