#!/usr/bin/env bash
# Installs what is missing, builds the release binary and runs the loopback transfer benchmark
# (the README's main job). Extra arguments go to `ackxfer-fast bench`.
#   tools/bench.sh                 # table
#   tools/bench.sh --json          # one JSON object
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup-deps.sh
tools/build.sh release >&2
exec build/cli/ackxfer-fast bench "$@"
