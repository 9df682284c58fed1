#!/usr/bin/env bash
# Installs what the peer comparison and the WAN simulation need, on top of tools/setup-deps.sh:
# iperf3, OpenBSD nc, rsync, an ssh client and server (for scp), iproute2, nftables and perf.
# Idempotent; run as root or with sudo available.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup-deps.sh
PACKAGES=(iperf3 netcat-openbsd rsync openssh-client openssh-server iproute2 nftables python3
          linux-perf)  # perf: tools/measure-contention, tools/profile-transfer
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null; then
    echo "setup-bench: missing ${missing[*]}; installing them needs root, and sudo is not" \
      "installed: run this script as root, or apt-get install them" >&2
    exit 1
  fi
  SUDO="sudo"
fi
echo "setup-bench: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# policy-rc.d keeps the packaged sshd from being started as a service: compare-peers runs its
# own throwaway one on a loopback port.
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
