"""Architectures: one table for every name an architecture goes by (Falco, Debian, kbuild, ELF, QEMU).

Falco's clients publish under ``x86_64``/``aarch64`` (``uname -m``); Debian calls them ``amd64``/``arm64``;
kbuild wants ``ARCH=x86``/``arm64``; a module's ELF header says ``EM_X86_64``/``EM_AARCH64``. Builds for
an architecture other than the build host's are cross-compiled with the GNU triplet's tools.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass


@dataclass(frozen=True)
class Arch:
    name: str  # Falco's name, as published: driver/<version>/<name>/...
    debian: str
    kbuild: str
    elf_machine: str
    triplet: str
    qemu: str | None  # qemu-system-* binary for the boot check

    @property
    def cross_compile(self) -> str:
        """kbuild's CROSS_COMPILE prefix when building on this machine ('' when native)."""
        return "" if self.name == host().name else f"{self.triplet}-"


ARCHES: dict[str, Arch] = {a.name: a for a in (
    Arch("x86_64", "amd64", "x86", "EM_X86_64", "x86_64-linux-gnu", "qemu-system-x86_64"),
    Arch("aarch64", "arm64", "arm64", "EM_AARCH64", "aarch64-linux-gnu", "qemu-system-aarch64"),
    Arch("s390x", "s390x", "s390", "EM_S390", "s390x-linux-gnu", None),
    Arch("ppc64le", "ppc64el", "powerpc", "EM_PPC64", "powerpc64le-linux-gnu", None),
    Arch("riscv64", "riscv64", "riscv", "EM_RISCV", "riscv64-linux-gnu", None),
)}

#: Every spelling accepted in kernels.yaml, to Falco's name.
ALIASES: dict[str, str] = {**{a.name: a.name for a in ARCHES.values()}, **{a.debian: a.name for a in ARCHES.values()}}

#: Architectures the builder images can cross-compile for (their binutils and gcc are installed).
CROSS_BUILT = ("x86_64", "aarch64")


def get(name: str) -> Arch:
    """The architecture for any accepted spelling (``amd64`` or ``x86_64``); KeyError if unknown."""
    return ARCHES[ALIASES[name]]


def host() -> Arch:
    return ARCHES.get(platform.machine(), ARCHES["x86_64"])
