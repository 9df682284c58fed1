#!/usr/bin/env bash
# Checks packaging/bash-completion/ackxfer-fast: what it offers for a few command lines, and
# that it offers every option the built binary's `<command> --help` lists.
#   tests/packaging/bash_completion_test.sh packaging/bash-completion/ackxfer-fast build/cli/ackxfer-fast
set -uo pipefail

completion=$(realpath "$1")
binary=$(realpath "$2")
failures=0

# shellcheck source=/dev/null
source "$completion" || {
  echo "FAIL: cannot source $completion"
  exit 1
}
if [[ $(complete -p ackxfer-fast 2>/dev/null) != "complete -F _ackxfer_fast ackxfer-fast" ]]; then
  echo "FAIL: 'complete -p ackxfer-fast' is '$(complete -p ackxfer-fast 2>&1)'"
  failures=$((failures + 1))
fi

# offers WORD... : completes the command line made of WORDs (the last one is the word being
# completed, "" for a new word) and prints the candidates sorted, one line.
offers() {
  COMP_WORDS=("$@")
  COMP_CWORD=$(($# - 1))
  COMP_LINE="$*"
  COMP_POINT=${#COMP_LINE}
  COMPREPLY=()
  _ackxfer_fast ackxfer-fast "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
  printf '%s\n' "${COMPREPLY[@]}" | LC_ALL=C sort | paste -sd ' ' -
}

# expect "CANDIDATES" WORD... : the candidates must be exactly these (sorted, space-separated).
expect() {
  local want=$1 got
  shift
  got=$(offers "$@")
  if [[ $got != "$want" ]]; then
    echo "FAIL: completing '$*': got '$got', want '$want'"
    failures=$((failures + 1))
  fi
}

expect "--help --version bench recv send" ackxfer-fast ""
expect "recv" ackxfer-fast re
expect "--dir --discard" ackxfer-fast recv --di
expect "--legacy --listen --log-level" ackxfer-fast recv --l
expect "--stats-interval" ackxfer-fast recv --stats-interval 5 --st
expect "--quiet" ackxfer-fast send --to host --q
expect "auto copy mmap splice" ackxfer-fast send --send-path ""
expect "mmap" ackxfer-fast send --send-path m
expect "buffers splice" ackxfer-fast recv --recv-path ""
expect "splice" ackxfer-fast bench --recv-path s
expect "debug error info warning" ackxfer-fast recv --log-level ""
# Bash splits `--log-level=w` at "=": the words are --log-level, =, w.
expect "warning" ackxfer-fast send --log-level = w
expect "auto copy mmap splice" ackxfer-fast send --send-path =
expect "all large medium small" ackxfer-fast bench --dataset ""
expect "medium" ackxfer-fast bench --dataset large m
expect "" ackxfer-fast recv --port ""
expect "--warm-gib --warmup --work-dir" ackxfer-fast bench --w

# File names: PATH and --secret-file take any file, --dir and --work-dir only directories.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir "$scratch/sub dir" "$scratch/src"
touch "$scratch/secret.key" "$scratch/src/a.bin" "$scratch/src/b.bin"
cd "$scratch" || exit 1
expect "secret.key src sub dir" ackxfer-fast send --to host ""
expect "src/a.bin src/b.bin" ackxfer-fast send --to host src/
expect "secret.key" ackxfer-fast recv --secret-file se
expect "src sub dir" ackxfer-fast recv --dir ""
expect "sub dir" ackxfer-fast recv --dir = su
expect "src sub dir" ackxfer-fast bench --work-dir ""
cd - >/dev/null || exit 1

# Every option of the built binary is offered (a new option must be added to the completion
# and to docs/ackxfer-fast.1; tests/packaging/man_page_test.sh checks the man page).
for command in recv send bench; do
  offered=" $(offers ackxfer-fast "$command" --) "
  help=$("$binary" "$command" --help) || {
    echo "FAIL: $binary $command --help exited $?"
    failures=$((failures + 1))
    continue
  }
  # Option lines start with two spaces; wrapped descriptions are indented further.
  options=$(grep -oE '^  (-[a-zA-Z] \[ )?--[a-z][a-z0-9-]*' <<<"$help" | grep -oE -- '--[a-z0-9-]+')
  if [[ -z $options ]]; then
    echo "FAIL: found no options in '$command --help'"
    failures=$((failures + 1))
  fi
  for option in $options; do
    if [[ $offered != *" $option "* ]]; then
      echo "FAIL: 'ackxfer-fast $command --' does not offer $option (listed by --help);" \
        "add it to packaging/bash-completion/ackxfer-fast"
      failures=$((failures + 1))
    fi
  done
done

if ((failures)); then
  echo "bash completion: $failures checks failed"
  exit 1
fi
echo "bash completion: all checks passed"
