#!/usr/bin/env bash
# Configures and builds one flavour of the tree.
#   tools/build.sh [release|asan|tsan|fuzz] [extra cmake args...]
# Build directories: build/ (release), build-asan/, build-tsan/, build-fuzz/ (clang, libFuzzer).
set -euo pipefail
cd "$(dirname "$0")/.."

flavour="${1:-release}"
shift || true
case "$flavour" in
  release) dir=build;      args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo) ;;
  asan)    dir=build-asan; args=(-DCMAKE_BUILD_TYPE=Debug -DACKXFER_SANITIZE=address -DACKXFER_BUILD_BENCH=OFF) ;;
  tsan)    dir=build-tsan; args=(-DCMAKE_BUILD_TYPE=Debug -DACKXFER_SANITIZE=thread -DACKXFER_BUILD_BENCH=OFF) ;;
  fuzz)    dir=build-fuzz; args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DACKXFER_FUZZ=ON -DCMAKE_CXX_COMPILER=clang++) ;;
  *) echo "usage: tools/build.sh [release|asan|tsan|fuzz]" >&2; exit 2 ;;
esac

cmake -S . -B "$dir" -DACKXFER_WERROR=ON "${args[@]}" "$@" >/dev/null
cmake --build "$dir" -j "$(nproc)"
