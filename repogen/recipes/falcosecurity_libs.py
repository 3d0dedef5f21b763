"""falcosecurity/libs: cmake on ``driver/`` writes ``build/src`` (module) and ``build/bpf/src`` (probe)."""

from __future__ import annotations

from typing import ClassVar

from repogen.model import Driver, Kind
from repogen.recipes import Recipe


class FalcosecurityLibs(Recipe):
    name = "falcosecurity-libs"
    boot_device = True  # falco.ko makes /dev/falco<cpu>
    kbuild_dirs: ClassVar[dict[Kind, str]] = {Kind.kmod: "build/src", Kind.ebpf: "build/bpf/src"}

    @classmethod
    def output(cls, driver: Driver, kind: Kind) -> str:
        return f"{driver.name}.ko" if kind is Kind.kmod else "probe.o"
