"""A plain kbuild directory (``Kbuild``/``Makefile`` with ``obj-m``), with an optional ``bpf/`` probe."""

from __future__ import annotations

from typing import ClassVar

from repogen.model import Driver, Kind
from repogen.recipes import Recipe


class Kbuild(Recipe):
    name = "kbuild"
    kbuild_dirs: ClassVar[dict[Kind, str]] = {Kind.kmod: "src", Kind.ebpf: "src"}
    needs_prepare = False

    @classmethod
    def output(cls, driver: Driver, kind: Kind) -> str:
        return f"{driver.name}.ko" if kind is Kind.kmod else "bpf/probe.o"
