#!/bin/bash
# Build script of the kbuild recipe; runs inside the builder container.
#   kmod: /work is a copy of the source         -> /work/$DRIVER_NAME.ko
#   ebpf: /work/bpf holds the probe's Makefile  -> /work/bpf/probe.o
set -euo pipefail
phase=$1
case "$phase" in
kmod)
    make -C "$KERNELDIR" M=/work modules
    ;;
ebpf)
    test -f /work/bpf/Makefile || { echo "this kbuild driver has no bpf/Makefile: no eBPF probe" >&2; exit 1; }
    make -C /work/bpf KERNELDIR="$KERNELDIR" CLANG="${CLANG:-clang}" LLC="${LLC:-llc}"
    ;;
*)
    echo "unknown phase: $phase" >&2
    exit 2
    ;;
esac
