#!/bin/bash
# Build script of the kbuild recipe; runs inside the builder container.
#   kmod: /work is a copy of the source         -> /work/$DRIVER_NAME.ko
#   ebpf: /work/bpf holds the probe's Makefile  -> /work/bpf/probe.o
# Environment: KERNELDIR, DRIVER_NAME, KARCH (kbuild ARCH), CROSS_COMPILE ('' when native), MAKE_JOBS.
set -euo pipefail
phase=$1
make_args=(-j"${MAKE_JOBS:-1}")
if [ -n "${CROSS_COMPILE:-}" ]; then
    export PATH="/opt/cross/$KARCH/bin:$PATH" CLANG=clang  # the image's cross binutils and target clang
    make_args+=(ARCH="$KARCH" CROSS_COMPILE="$CROSS_COMPILE")
fi
case "$phase" in
kmod)
    make -C "$KERNELDIR" "${make_args[@]}" M=/work modules
    ;;
ebpf)
    test -f /work/bpf/Makefile || { echo "error: this kbuild driver has no bpf/Makefile: no eBPF probe" >&2; exit 1; }
    make -C /work/bpf "${make_args[@]}" KERNELDIR="$KERNELDIR" CLANG="${CLANG:-clang}" LLC="${LLC:-llc}"
    ;;
*)
    echo "unknown phase: $phase" >&2
    exit 2
    ;;
esac
