#!/usr/bin/env bash
# Installs the Debian packages ackxfer-fast builds and tests with. Idempotent: does nothing
# (and needs no network) when they are already installed. Run as root or with sudo available.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config git
  liburing-dev libboost-program-options-dev libxxhash-dev
  libssl-dev  # libcrypto: HMAC-SHA256 and HKDF for --secret-file; libssl: TLS 1.3 (engine/tls)
  libgtest-dev googletest libbenchmark-dev
  clang libclang-rt-14-dev  # libFuzzer and its sanitizer runtimes (tools/test.sh fuzz)
  groff-base  # renders the man page in its test (packaging.man_page)
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null; then
    echo "setup-deps: these packages are missing: ${missing[*]}" >&2
    echo "setup-deps: installing them needs root, and sudo is not installed; run this script" \
      "as root, or install them with: apt-get install ${missing[*]}" >&2
    exit 1
  fi
  SUDO="sudo"
fi
echo "setup-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
