#!/bin/bash
# Build script of the falcosecurity-libs recipe; runs inside the builder container.
#   prepare: /src (read-only libs tree) -> /out/build (kernel-independent kbuild directories)
#   kmod:    /work is a copy of build/src      -> /work/$DRIVER_NAME.ko
#   ebpf:    /work is a copy of build/bpf/src  -> /work/probe.o
set -euo pipefail
phase=$1
case "$phase" in
prepare)
    cmake -S /src/driver -B /out/build \
        -DCMAKE_MODULE_PATH=/src/cmake/modules \
        -DDRIVER_NAME="$DRIVER_NAME" \
        -DDRIVER_VERSION="$DRIVER_VERSION" \
        -DDRIVER_DEVICE_NAME="$DRIVER_NAME" \
        -DPROBE_NAME="$DRIVER_NAME" \
        -DBUILD_BPF=ON
    test -d /out/build/src || { echo "cmake did not write build/src" >&2; exit 1; }
    ;;
kmod)
    make -C /work KERNELDIR="$KERNELDIR"
    ;;
ebpf)
    make -C /work KERNELDIR="$KERNELDIR" CLANG="${CLANG:-clang}" LLC="${LLC:-llc}"
    ;;
*)
    echo "unknown phase: $phase" >&2
    exit 2
    ;;
esac
