#!/usr/bin/env bash
# The classic SEND/READY client that ackxfer-fast grew from, in a few lines of bash, for
# testing `ackxfer-fast recv --legacy`:
#   tests/legacy/classic_client.sh HOST CONTROL_PORT DATA_PORT NAME FILE [--no-newline]
# Sends `SEND <name>` on the control port, reads exactly READY, then sends FILE's bytes on a
# new connection to the data port and closes it. Exits 0 once the bytes are handed over.
set -euo pipefail
host=$1 control=$2 data=$3 name=$4 file=$5
exec 3<>"/dev/tcp/$host/$control"
if [ "${6:-}" = --no-newline ]; then printf 'SEND %s' "$name" >&3; else printf 'SEND %s\n' "$name" >&3; fi
IFS= read -r -n 5 -t 60 reply <&3
[ "$reply" = READY ] || { echo "classic_client: expected READY, got '$reply'" >&2; exit 1; }
exec 4<>"/dev/tcp/$host/$data"
cat "$file" >&4
exec 4>&- 3>&-
