"""Per-distribution knowledge: which targets exist, how their headers are packaged and laid out.

Adding a distribution is adding one module here with one small class; variants inherit from their
parent and override only what differs (as mkosi's ``mkosi/distribution/`` does).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from enum import StrEnum
from typing import ClassVar


class PackageFormat(StrEnum):
    deb = "deb"
    rpm = "rpm"
    tarball = "tarball"


class Distro:
    """A family of Falco targets sharing how kernel headers are shipped."""

    registry: ClassVar[dict[str, type[Distro]]] = {}

    #: Falco target names this class serves (exact) ...
    targets: ClassVar[tuple[str, ...]] = ()
    #: ... or a regular expression for target families such as ``ubuntu-<flavour>``.
    target_pattern: ClassVar[str | None] = None
    package_format: ClassVar[PackageFormat] = PackageFormat.deb
    #: Globs, relative to the unpacked headers root, where the kernel build directory may be.
    kernel_dir_globs: ClassVar[tuple[str, ...]] = ("usr/src/linux-headers-*",)
    #: Hint for ``repogen validate`` about the kernelversion field.
    kernelversion_hint: ClassVar[str] = "the number after '#' in `uname -v`"

    def __init_subclass__(cls, *, name: str | None = None, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if name:
            Distro.registry[name] = cls

    @classmethod
    def serves(cls, target: str) -> bool:
        if target in cls.targets:
            return True
        return bool(cls.target_pattern and re.fullmatch(cls.target_pattern, target))


def _load_all() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def for_target(target: str) -> type[Distro] | None:
    """The distribution that serves a Falco target name, or None if it is unknown."""
    if not Distro.registry:
        _load_all()
    for cls in Distro.registry.values():
        if cls.serves(target):
            return cls
    return None


def known_targets() -> list[str]:
    if not Distro.registry:
        _load_all()
    names: list[str] = []
    for cls in Distro.registry.values():
        names.extend(cls.targets)
        if cls.target_pattern:
            names.append(cls.target_pattern.replace("[a-z0-9.-]+", "<flavour>"))
    return sorted(names)
