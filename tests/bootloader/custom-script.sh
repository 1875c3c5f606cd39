#!/bin/sh
# A custom bootloader script for the tests: keeps RAUC's protocol state in
# files next to itself (primary, <X>.state, current).
dir=$(dirname "$0")
case "$1" in
  get-primary) cat "$dir/primary" 2>/dev/null || true ;;
  set-primary) echo "$2" > "$dir/primary"; echo good > "$dir/$2.state" ;;
  get-state) if [ -f "$dir/$2.state" ]; then cat "$dir/$2.state"; else echo bad; fi ;;
  set-state)
    [ "$3" = fail ] && { echo "cannot write $2: device busy" >&2; exit 3; }
    echo "$3" > "$dir/$2.state"
    if [ "$3" = bad ] && [ "$(cat "$dir/primary" 2>/dev/null)" = "$2" ]; then rm -f "$dir/primary"; fi ;;
  get-current) [ -f "$dir/current" ] || { echo "not supported" >&2; exit 1; }; cat "$dir/current" ;;
  *) echo "unknown command $1" >&2; exit 2 ;;
esac
