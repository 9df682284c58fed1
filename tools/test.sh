#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test: the release build, then the whole
# suite again under ASan+UBSan and under TSan, then each libFuzzer target for a short while
# from its checked-in corpus. This is the README's test command and what CI runs (.ci/run).
#   tools/test.sh               everything
#   tools/test.sh release       one flavour (release, asan, tsan or fuzz)
# ACKXFER_FUZZ_SECONDS sets how long each fuzzer runs (default 60).
set -euo pipefail
cd "$(dirname "$0")/.."

tools/setup-deps.sh

flavours=("$@")
if [ ${#flavours[@]} -eq 0 ]; then
  flavours=(release asan tsan fuzz)
fi

run_fuzzers() {
  local seconds=${ACKXFER_FUZZ_SECONDS:-60}
  for pair in "control_line_fuzzer control" "data_frame_fuzzer frame" "tls_server_fuzzer tls"; do
    set -- $pair
    # Work on a copy: what the run discovers is not written into the repository.
    local corpus
    corpus=$(mktemp -d)
    cp fuzz/corpus/"$2"/* "$corpus"/
    echo "=== fuzz: $1 for ${seconds} s" >&2
    build-fuzz/fuzz/"$1" "$corpus" -max_total_time="$seconds" -print_final_stats=1 \
      -artifact_prefix=build-fuzz/"$1"- 2>&1 | tail -3
    rm -rf "$corpus"
  done
}

for flavour in "${flavours[@]}"; do
  echo "=== $flavour: build" >&2
  tools/build.sh "$flavour"
  if [ "$flavour" = fuzz ]; then
    run_fuzzers
    continue
  fi
  dir=build
  [ "$flavour" = release ] || dir="build-$flavour"
  echo "=== $flavour: test" >&2
  env_vars=()
  if [ "$flavour" != release ]; then
    # Sanitized builds run several times slower: keep the big-file test meaningful but shorter.
    env_vars+=(ACKXFER_TEST_BIG_BYTES=$((256 * 1024 * 1024)))
  fi
  # halt_on_error: a sanitizer report fails the test even if the process would carry on.
  env "${env_vars[@]}" \
    ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=1 \
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
    ctest --test-dir "$dir" --output-on-failure -j "$(nproc)" --timeout 900
done
echo "=== all tests passed (${flavours[*]})" >&2
