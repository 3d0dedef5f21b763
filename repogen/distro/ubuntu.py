"""Ubuntu: Debian packaging; the target names the flavour (``ubuntu-generic``, ``ubuntu-aws``).

Naming (falcoctl ``ubuntu.go``, falco-driver-loader): the flavour is the first ``-([a-zA-Z]+)(-.*)?$``
of ``uname -r`` (``5.15.0-1009-aws`` -> ``ubuntu-aws``, default ``generic``); the kernelrelease is
``uname -r``; the kernelversion is ``uname -v`` after ``#`` up to the first space, without
``-Ubuntu``: ``29`` or, for HWE kernels, ``26~22.04.1``. In the archive that is the headers package
version after ``<abi>.``: ``linux-headers-6.8.0-45-generic`` ``6.8.0-45.45~22.04.1`` -> ``45~22.04.1``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import TYPE_CHECKING, ClassVar

from repogen.distro import KernelName, Uname
from repogen.distro.debian import DEB_ARCH, Debian

if TYPE_CHECKING:
    from repogen.crawl import CrawlContext, Found
    from repogen.crawl.deb import DebPackage
    from repogen.model import Kernel

FLAVOUR = re.compile(r"-([a-zA-Z]+)(-.*)?$")
HEADERS_PACKAGE = re.compile(r"linux-headers-(\d+\.\d+\.\d+-\d+)-([a-z][a-z0-9-]*)")
_VERSION_PREFIX = re.compile(r"^\d+(\.\d+){0,2}")
_KERNELVERSION = re.compile(r"\d+(~[0-9.]+)?")


def flavour_of(uname_release: str) -> str:
    m = FLAVOUR.search(_VERSION_PREFIX.sub("", uname_release))
    return m.group(1) if m else "generic"


def kernelversion_from_package(abi: str, package_version: str) -> str | None:
    """``6.8.0-45.45~22.04.1`` -> ``45~22.04.1``: what ``uname -v`` shows after '#'."""
    prefix = abi + "."
    return package_version[len(prefix):] if package_version.startswith(prefix) else None


class Ubuntu(Debian, name="ubuntu"):
    targets = ()
    target_pattern = r"ubuntu-[a-z]+"
    os_ids: ClassVar[tuple[str, ...]] = ("ubuntu",)
    kernelversion_hint = "`uname -v` after '#' without '-Ubuntu', e.g. 45 or 45~22.04.1"
    suites: ClassVar[tuple[str, ...]] = ("jammy", "jammy-updates", "jammy-security",
                                         "noble", "noble-updates", "noble-security")

    @classmethod
    def name(cls, uname: Uname) -> KernelName:
        version = uname.version.lstrip("#").split(" ")[0].removesuffix("-Ubuntu")
        return KernelName(f"ubuntu-{flavour_of(uname.release)}", uname.release, version)

    @classmethod
    def rule_problems(cls, kernel: Kernel) -> list[str]:
        problems = []
        expected = f"ubuntu-{flavour_of(kernel.kernelrelease)}"
        if kernel.target != expected:
            problems.append(f"a host running {kernel.kernelrelease} requests target {expected!r}, "
                            f"not {kernel.target!r}")
        if not _KERNELVERSION.fullmatch(kernel.kernelversion):
            problems.append(f"kernelversion {kernel.kernelversion!r} is not what clients request "
                            f"({cls.kernelversion_hint})")
        return problems

    @classmethod
    def crawl(cls, ctx: CrawlContext) -> list[Found]:
        from repogen.crawl import Found, MirrorFile
        from repogen.crawl.deb import read_packages, read_release

        found: list[Found] = []
        for arch in ctx.architectures or ("x86_64", "aarch64"):
            deb_arch = DEB_ARCH[arch]
            mirror = "ubuntu" if deb_arch == "amd64" else "ubuntu-ports"
            packages: list[DebPackage] = []
            for suite in ctx.releases or cls.suites:
                release = read_release(ctx, mirror, suite)
                packages += read_packages(ctx, mirror, suite, deb_arch, ("linux-",), release)  # linux-<src>-headers-*
            exact = {(p.name, p.version): p for p in packages}
            by_name: dict[str, list[DebPackage]] = defaultdict(list)
            for p in packages:
                by_name[p.name].append(p)
            for p in packages:
                m = HEADERS_PACKAGE.fullmatch(p.name)
                if not m or p.architecture != deb_arch:
                    continue
                abi, flavour_part = m.groups()
                uname_r = f"{abi}-{flavour_part}"
                version = kernelversion_from_package(abi, p.version)
                # The flavour package depends on the source's shared headers (linux-<src>-headers-<abi>).
                common = next((exact.get((name, p.version)) for name in _depends(p.depends)
                               if name.endswith(f"-headers-{abi}")), None)
                if version is None or common is None:
                    continue
                image = exact.get((f"linux-image-{uname_r}", p.version)) or exact.get(
                    (f"linux-image-unsigned-{uname_r}", p.version))
                found.append(Found(
                    f"ubuntu-{flavour_of(uname_r)}", uname_r, version, arch,
                    (MirrorFile(mirror, common.filename, common.sha256), MirrorFile(mirror, p.filename, p.sha256)),
                    MirrorFile(mirror, image.filename, image.sha256) if image else None,
                    note=f"{p.suite}"))
        return found


def _depends(depends: str) -> list[str]:
    return [part.strip().split(" ")[0] for group in depends.split(",") for part in group.split("|") if part.strip()]


