#!/bin/bash
# Build script of the falcosecurity-libs recipe; runs inside the builder container.
#   prepare: /src (read-only libs tree) -> /out/build (kernel-independent kbuild directories)
#   kmod:    /work is a copy of build/src      -> /work/$DRIVER_NAME.ko
#   ebpf:    /work is a copy of build/bpf/src  -> /work/probe.o
# Environment: KERNELDIR, DRIVER_NAME, DRIVER_VERSION, KARCH (kbuild ARCH), CROSS_COMPILE ('' when
# native), MAKE_JOBS.
set -euo pipefail
phase=$1
make_args=(-j"${MAKE_JOBS:-1}" KERNELDIR="${KERNELDIR:-}")
if [ -n "${CROSS_COMPILE:-}" ]; then
    # libs' configure checks run make with a cleared environment keeping PATH: unprefixed cross binutils first.
    export PATH="/opt/cross/$KARCH/bin:$PATH" CLANG=clang  # the image's cross binutils and target clang
    make_args+=(ARCH="$KARCH" CROSS_COMPILE="$CROSS_COMPILE")
fi
case "$phase" in
prepare)
    # libs' driver/bpf/CMakeLists.txt writes driver_config.h into its source tree: configure a private copy.
    cp -a /src /out/tree
    bpf=OFF
    [ -d /out/tree/driver/bpf ] && bpf=ON
    cmake -S /out/tree/driver -B /out/build \
        -DCMAKE_MODULE_PATH=/out/tree/cmake/modules \
        -DDRIVER_NAME="$DRIVER_NAME" \
        -DDRIVER_VERSION="$DRIVER_VERSION" \
        -DDRIVER_DEVICE_NAME="$DRIVER_NAME" \
        -DPROBE_NAME="$DRIVER_NAME" \
        -DBUILD_BPF="$bpf" \
        -DENABLE_DKMS=OFF
    test -d /out/build/src || { echo "error: cmake did not write build/src" >&2; exit 1; }
    rm -rf /out/tree
    ;;
kmod)
    make -C /work "${make_args[@]}"
    ;;
ebpf)
    test -f /work/Makefile || { echo "error: this driver version has no legacy eBPF probe (driver/bpf)" >&2; exit 1; }
    make -C /work "${make_args[@]}" CLANG="${CLANG:-clang}" LLC="${LLC:-llc}"
    ;;
*)
    echo "unknown phase: $phase" >&2
    exit 2
    ;;
esac
