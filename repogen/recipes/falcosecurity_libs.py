"""falcosecurity/libs: cmake on ``driver/`` writes ``build/src`` (module) and ``build/bpf/src`` (probe).

Every libs driver line from 8.x builds unmodified: cmake runs on a private writable copy of the tree
(``driver/bpf/CMakeLists.txt`` writes ``driver_config.h`` into its source directory, and
``project(driver)`` wants a C++ compiler, which the builder images have). libs 10.0 removed the legacy
eBPF probe (``driver/bpf``), so a 10.x version has only the module.
"""

from __future__ import annotations

import re
from typing import ClassVar

from repogen.model import Driver, Kind
from repogen.recipes import Recipe

#: The first libs driver major without the legacy eBPF probe.
NO_LEGACY_PROBE_FROM = 10


class FalcosecurityLibs(Recipe):
    name = "falcosecurity-libs"
    boot_device = True  # falco.ko makes /dev/falco<cpu>
    kbuild_dirs: ClassVar[dict[Kind, str]] = {Kind.kmod: "build/src", Kind.ebpf: "build/bpf/src"}
    kinds_note = "libs 10.0 removed the legacy eBPF probe"

    @classmethod
    def kinds_for(cls, version: str) -> tuple[Kind, ...] | None:
        m = re.match(r"(\d+)\.\d+\.\d+", version)
        if not m:  # a branch or a commit: the source will tell
            return None
        return (Kind.kmod,) if int(m.group(1)) >= NO_LEGACY_PROBE_FROM else (Kind.kmod, Kind.ebpf)

    @classmethod
    def output(cls, driver: Driver, kind: Kind) -> str:
        return f"{driver.name}.ko" if kind is Kind.kmod else "probe.o"
