"""Per-distribution knowledge: which targets exist, how Falco's clients name their kernels, how their
headers are packaged and laid out, and where a crawl finds them.

Adding a distribution is adding one module here with one small class; variants inherit from their
parent and override only what differs (as mkosi's ``mkosi/distribution/`` does). Each class owns its
naming rule, read from Falco's clients (falcoctl's ``pkg/driver/distro`` and the older
falco-driver-loader): from ``uname -r``, ``uname -v`` and ``/etc/os-release`` to the
``(target, kernelrelease, kernelversion)`` a host asks the driver repository for.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from repogen.crawl import CrawlContext, Found
    from repogen.model import Kernel


class PackageFormat(StrEnum):
    deb = "deb"
    rpm = "rpm"
    tarball = "tarball"
    #: No headers package: the kernel is known by its configuration only (needs kernel sources).
    config = "config"


@dataclass(frozen=True)
class Uname:
    """What a Falco client reads on the host it runs on."""

    release: str  #: ``uname -r``
    version: str  #: ``uname -v``
    os_id: str  #: ``ID`` of /etc/os-release
    version_id: str = ""  #: ``VERSION_ID`` of /etc/os-release
    variant_id: str = ""  #: ``VARIANT_ID`` of /etc/os-release (bottlerocket)
    minikube_version: str = ""  #: contents of /etc/VERSION (its presence makes the host minikube)


@dataclass(frozen=True)
class KernelName:
    """The identifiers a client requests: ``<driver>_<target>_<kernelrelease>_<kernelversion>.ko``."""

    target: str
    kernelrelease: str
    kernelversion: str


_HASH_NUMBER = re.compile(r"#(\d+)")
_DIGITS = re.compile(r"\d+")


class Distro:
    """A family of Falco targets sharing how kernel headers are shipped and how kernels are named."""

    registry: ClassVar[dict[str, type[Distro]]] = {}

    #: Falco target names this class serves (exact) ...
    targets: ClassVar[tuple[str, ...]] = ()
    #: ... or a regular expression for target families such as ``ubuntu-<flavour>``.
    target_pattern: ClassVar[str | None] = None
    #: Accepted for old matrices but requested by no client: validate warns and names the right one.
    aliases: ClassVar[dict[str, str]] = {}
    #: /etc/os-release IDs whose hosts this class names.
    os_ids: ClassVar[tuple[str, ...]] = ()
    package_format: ClassVar[PackageFormat] = PackageFormat.deb
    #: Globs, relative to the unpacked headers root, where the kernel build directory may be.
    kernel_dir_globs: ClassVar[tuple[str, ...]] = ("usr/src/linux-headers-*",)
    #: Hint for ``repogen validate`` about the kernelversion field.
    kernelversion_hint: ClassVar[str] = "the number after '#' in `uname -v`"
    #: Building needs the kernel sources (a later step): the matrix lists it, plan says so.
    needs_sources: ClassVar[bool] = False

    def __init_subclass__(cls, *, name: str | None = None, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if name:
            Distro.registry[name] = cls

    @classmethod
    def serves(cls, target: str) -> bool:
        if target in cls.targets or target in cls.aliases:
            return True
        return bool(cls.target_pattern and re.fullmatch(cls.target_pattern, target))

    # -- naming: what the client computes on the host ------------------------------------------

    @classmethod
    def target_for(cls, uname: Uname) -> str:
        return uname.os_id.lower()

    @classmethod
    def kernelversion_for(cls, uname: Uname) -> str:
        """falcoctl's generic rule: the number after '#' in ``uname -v``, else ``uname -v`` as is."""
        m = _HASH_NUMBER.search(uname.version)
        return m.group(1) if m else uname.version

    @classmethod
    def name(cls, uname: Uname) -> KernelName:
        """The name a Falco client on this host requests."""
        return KernelName(cls.target_for(uname), uname.release, cls.kernelversion_for(uname))

    # -- validate: a hand-written entry against the rule ---------------------------------------

    @classmethod
    def rule_problems(cls, kernel: Kernel) -> list[str]:
        """Why no client would request this entry (empty when it follows the rule)."""
        problems = []
        if kernel.target in cls.aliases:
            problems.append(f"no Falco client requests target {kernel.target!r}; "
                            f"hosts with this distribution ask for {cls.aliases[kernel.target]!r}")
        if not _DIGITS.fullmatch(kernel.kernelversion):
            problems.append(f"kernelversion {kernel.kernelversion!r} is not what clients request "
                            f"({cls.kernelversion_hint})")
        return problems

    # -- crawl: where its kernels are published -------------------------------------------------

    @classmethod
    def crawl(cls, ctx: CrawlContext) -> list[Found]:
        from repogen.errors import RepogenError

        raise RepogenError(f"no crawler for {cls.__name__} kernels",
                           hint="import them with `repogen crawl --from kernel-crawler list.json`")


_loaded = False


def _registry() -> dict[str, type[Distro]]:
    """Every distribution module, imported once (importing one directly must not hide the others)."""
    global _loaded
    if not _loaded:
        for module in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{module.name}")
        _loaded = True
    return Distro.registry


def for_target(target: str) -> type[Distro] | None:
    """The distribution that serves a Falco target name, or None if it is unknown."""
    for cls in _registry().values():
        if cls.serves(target):
            return cls
    return None


def for_os_id(os_id: str) -> type[Distro]:
    """The class naming a host with this os-release ID (falcoctl falls back to the generic rule)."""
    registry = _registry()
    for cls in registry.values():
        if os_id.lower() in cls.os_ids:
            return cls
    return registry["generic"]


def client_name(uname: Uname) -> KernelName:
    """What a Falco client on a host with these facts requests (minikube is detected by /etc/VERSION)."""
    os_id = "minikube" if uname.minikube_version else uname.os_id
    return for_os_id(os_id).name(uname)


def known_targets() -> list[str]:
    names: list[str] = []
    for cls in _registry().values():
        names.extend(cls.targets)
        if cls.target_pattern:
            names.append(cls.target_pattern.replace("[a-z0-9.-]+", "<flavour>").replace("[a-z]+", "<flavour>"))
    return sorted(set(names))


def crawlable() -> dict[str, type[Distro]]:
    """Crawl names (``repogen crawl NAME``) and the class that crawls each."""
    base = Distro.crawl.__func__  # type: ignore[attr-defined]
    return {name: cls for name, cls in _registry().items()
            if getattr(cls.crawl, "__func__", None) is not base and getattr(cls, "repositories", True)}
