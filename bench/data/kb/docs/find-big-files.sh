#!/bin/bash
# Largest files on one filesystem, human readable. Usage: find-big-files.sh /var 20
dir=${1:-/}
n=${2:-20}
find "$dir" -xdev -type f -printf '%s\t%p\n' 2>/dev/null | sort -nr | head -n "$n" |
  awk -F'\t' '{ printf "%8.1f MiB  %s\n", $1/1048576, $2 }'
