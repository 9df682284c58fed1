#!/usr/bin/env bash
# Checks docs/ackxfer-fast.1: it documents every option the built binary's `<command> --help`
# lists and every exit code `ackxfer-fast --help` lists, and groff renders it without a warning.
# Without groff (Debian: groff-base) the rest is checked, then it exits 77 (ctest: skipped).
#   tests/packaging/man_page_test.sh docs/ackxfer-fast.1 build/cli/ackxfer-fast
set -uo pipefail

page=$1
binary=$2
failures=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}

for section in NAME SYNOPSIS DESCRIPTION OPTIONS '"EXIT STATUS"' FILES EXAMPLES SECURITY '"SEE ALSO"'; do
  grep -qxF ".SH $section" "$page" || fail "no .SH $section section"
done

# In roff source an option is written \-\-name\-part.
for command in recv send bench; do
  help=$("$binary" "$command" --help) || {
    fail "$binary $command --help exited $?"
    continue
  }
  # Option lines start with two spaces; wrapped descriptions are indented further.
  options=$(grep -oE '^  (-[a-zA-Z] \[ )?--[a-z][a-z0-9-]*' <<<"$help" | grep -oE -- '--[a-z0-9-]+')
  [[ -n $options ]] || fail "found no options in '$command --help'"
  section=$(sed -n "/^\.SS \"$command options\"/,/^\.S[SH] /p" "$page")
  [[ -n $section ]] || fail "no '.SS \"$command options\"' subsection"
  for option in $options; do
    # Under "Common to every command" (--tls-* are common to recv and send).
    [[ $option == --help || $option == --secret-file || $option == --tls-* ]] && continue
    # \-\-keep, not the start of \-\-keep\-partials.
    roff=${option//-/\\\\-}
    grep -qE -- "$roff([^a-z0-9\\]|\$)" <<<"$section" ||
      fail "'$command options' does not document $option (listed by '$command --help')"
  done
done

# Exit codes: the "  N  meaning" lines of `ackxfer-fast --help` against the EXIT STATUS section.
exit_section=$(sed -n '/^\.SH "EXIT STATUS"/,/^\.SH /p' "$page")
codes=$("$binary" --help | sed -n 's/^  \([0-9]\+\)  .*/\1/p')
[[ -n $codes ]] || fail "found no exit codes in 'ackxfer-fast --help'"
for code in $codes; do
  grep -qx "\.B $code" <<<"$exit_section" || fail "EXIT STATUS does not list $code"
done

if ((failures)); then
  echo "man page: $failures checks failed"
  exit 1
fi
if ! command -v groff >/dev/null; then
  echo "SKIP: options and exit codes checked, but not the rendering: groff is not installed" \
    "(apt-get install groff-base)"
  exit 77
fi
warnings=$(groff -man -Tutf8 -ww -z "$page" 2>&1)
if [[ -n $warnings ]]; then
  echo "FAIL: groff -man -ww warns about $page:"$'\n'"$warnings"
  exit 1
fi
echo "man page: all checks passed"
