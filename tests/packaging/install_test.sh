#!/usr/bin/env bash
# Checks what `cmake --install` puts where: exactly the files packaging/CMakeLists.txt lists
# (no tool or test binary), the unit's paths adapted to the prefix, and a binary that runs.
# Twice: to a plain prefix, and to the prefix /usr under DESTDIR, the layout of the .deb.
#   tests/packaging/install_test.sh build
set -uo pipefail

build=$(realpath "$1")
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failures=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}

# check ROOT PREFIX SYSCONFDIR: the tree under ROOT holds exactly the expected files, for an
# install to PREFIX whose settings file goes to SYSCONFDIR (both as the installed files see
# them: ROOT is DESTDIR, or empty).
check() {
  local root=$1 prefix=$2 sysconfdir=$3
  local want got unit
  want=$(
    LC_ALL=C sort <<LIST
$root$prefix/bin/ackxfer-fast
$root$prefix/share/man/man1/ackxfer-fast.1
$root$prefix/share/bash-completion/completions/ackxfer-fast
$root$prefix/lib/systemd/system/ackxfer-fast-recv.service
$root$prefix/lib/sysusers.d/ackxfer-fast.conf
$root$prefix/lib/tmpfiles.d/ackxfer-fast.conf
$root$sysconfdir/default/ackxfer-fast
LIST
  )
  got=$(find "$scratch" \( -type f -o -type l \) -path "${root:-$prefix}/*" | LC_ALL=C sort)
  [[ $got == "$want" ]] ||
    fail "installed files differ from the expected list (< expected, > installed):"$'\n'"$(diff <(echo "$want") <(echo "$got"))"

  local binary=$root$prefix/bin/ackxfer-fast
  [[ -x $binary ]] || fail "$binary is not executable"
  "$binary" --version | grep -q '^ackxfer-fast ' || fail "the installed binary does not run: $binary --version"
  unit=$root$prefix/lib/systemd/system/ackxfer-fast-recv.service
  grep -qxF "ExecStart=$prefix/bin/ackxfer-fast recv --dir \${ACKXFER_DIR} \$ACKXFER_OPTS" "$unit" ||
    fail "$unit: ExecStart= does not run $prefix/bin/ackxfer-fast: $(grep ExecStart= "$unit")"
  grep -qxF "EnvironmentFile=-$sysconfdir/default/ackxfer-fast" "$unit" ||
    fail "$unit: EnvironmentFile= is not $sysconfdir/default/ackxfer-fast: $(grep EnvironmentFile= "$unit")"
  grep -qxF 'u ackxfer - "ackxfer-fast receiver" /srv/ackxfer' "$root$prefix/lib/sysusers.d/ackxfer-fast.conf" ||
    fail "the sysusers.d file does not create the user ackxfer"
  grep -qxF 'ACKXFER_DIR=/srv/ackxfer' "$root$sysconfdir/default/ackxfer-fast" ||
    fail "the settings file does not set ACKXFER_DIR=/srv/ackxfer"
  cmp -s "$root$prefix/share/man/man1/ackxfer-fast.1" "$source/docs/ackxfer-fast.1" ||
    fail "the installed man page is not docs/ackxfer-fast.1"
}

source=$(cd "$(dirname "$0")/../.." && pwd)

# A plain prefix: everything beneath it, the settings in <prefix>/etc.
out=$(cmake --install "$build" --prefix "$scratch/opt" 2>&1) ||
  fail "cmake --install --prefix failed:"$'\n'"$out"
check "" "$scratch/opt" "$scratch/opt/etc"

# The prefix /usr, as in the .deb: settings in /etc.
out=$(DESTDIR="$scratch/root" cmake --install "$build" --prefix /usr 2>&1) ||
  fail "DESTDIR=... cmake --install --prefix /usr failed:"$'\n'"$out"
check "$scratch/root" "/usr" "/etc"

if ((failures)); then
  echo "install: $failures checks failed"
  exit 1
fi
echo "install: all checks passed"
