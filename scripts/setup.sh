#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian 12 machine (as root): system packages, the Python package,
# a running Docker engine, the builder images, and real kernel headers in a local mirror.
#   scripts/setup.sh            everything
#   scripts/setup.sh --no-images  skip the builder images
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

PACKAGES=(docker.io debootstrap dnf rpm rpm2cpio cpio createrepo-c apt-utils dpkg-dev gnupg xz-utils zstd
          qemu-system-x86 qemu-system-arm busybox-static
          python3-pip python3-venv curl ca-certificates)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}" >/dev/null
elif [ ! -d /var/lib/apt/lists ] || [ -z "$(ls /var/lib/apt/lists 2>/dev/null | grep -v lock)" ]; then
    $SUDO apt-get update -q
fi

# A virtual environment per checkout, so two clones never fight over which `repogen` is installed.
# --system-site-packages reuses what the machine already has; pip adds only what is missing.
if [ ! -x .venv/bin/python ]; then
    log "creating .venv"
    python3 -m venv --system-site-packages .venv
fi
log "installing repogen into .venv (pip install -e .[test])"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
export PATH="$ROOT/.venv/bin:$PATH"

log "a static arm64 busybox for the boot check of aarch64 modules (Debian's busybox-static:arm64; once)"
.venv/bin/python scripts/arm64_busybox.py

log "ensuring the Docker engine runs"
"$ROOT/scripts/ensure-docker.sh"

if [ "${1:-}" != "--no-images" ]; then
    log "builder images: Debian 11, 12 and 13 toolchains (debootstrap + docker import, then gcc/clang; once)"
    repogen images build --all
fi
