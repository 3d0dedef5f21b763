"""RPM distributions: headers are one ``kernel-devel`` .rpm unpacking to ``/usr/src/kernels/<release>``.

Naming (falcoctl ``generic.go``; ``rhel.go``, ``centos.go``, ``oracle.go`` only add detection): the target
is the os-release ID itself (``centos``, ``rocky``, ``almalinux``, ``fedora``, ``rhel``, ``ol``), the
kernelrelease is ``uname -r`` (``<version>-<release>.<arch>`` of the kernel package), the kernelversion
the number after ``#`` in ``uname -v`` (``1`` for these distributions' builds).

Each variant is one small class: which mirror, which repositories, which package names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from repogen.distro import Distro, PackageFormat

if TYPE_CHECKING:
    from repogen.crawl import CrawlContext, Found
    from repogen.crawl.rpm import RpmPackage
    from repogen.model import Kernel


class RpmDistro(Distro):
    """What every RPM distribution shares; not a target itself."""

    package_format = PackageFormat.rpm
    kernel_dir_globs = ("usr/src/kernels/*",)
    kernelversion_hint = "the number after '#' in `uname -v` ('1' for RPM kernels)"
    #: The mirror and the repositories under it (``{arch}`` is replaced) the crawl reads.
    mirror: ClassVar[str] = ""
    repositories: ClassVar[tuple[str, ...]] = ()
    #: headers package -> kernel image packages to pair (first found wins).
    packages: ClassVar[dict[str, tuple[str, ...]]] = {"kernel-devel": ("kernel-core", "kernel")}

    @classmethod
    def rule_problems(cls, kernel: Kernel) -> list[str]:
        problems = super().rule_problems(kernel)
        if not kernel.kernelrelease.endswith(("." + kernel.architecture, kernel.architecture)):
            problems.append(f"kernelrelease {kernel.kernelrelease!r} is not `uname -r` of a {kernel.architecture} "
                            f"RPM kernel (<version>-<release>.{kernel.architecture})")
        return problems

    @classmethod
    def crawl(cls, ctx: CrawlContext) -> list[Found]:
        from repogen.crawl import Found, MirrorFile
        from repogen.crawl.rpm import read_repo

        arches = set(ctx.architectures or ("x86_64", "aarch64"))
        names = set(cls.packages) | {i for images in cls.packages.values() for i in images}
        target = cls.targets[0]
        found: list[Found] = []
        for template in ctx.releases or cls.repositories:
            paths = {template.format(arch=a) for a in arches} if "{arch}" in template else {template}
            for path in sorted(paths):
                packages = read_repo(ctx, cls.mirror or target, path, names, arches)
                by_key: dict[tuple[str, str], RpmPackage] = {(p.name, p.uname_release): p for p in packages}
                for p in packages:
                    if p.name not in cls.packages:
                        continue
                    if ctx.since and p.build_time and p.build_time < ctx.since.timestamp():
                        continue
                    image = next((by_key[(i, p.uname_release)] for i in cls.packages[p.name]
                                  if (i, p.uname_release) in by_key), None)
                    mirror = cls.mirror or target

                    def file(q: RpmPackage, mirror: str = mirror) -> MirrorFile | str:
                        return q.location if q.absolute else MirrorFile(mirror, q.location, q.sha256)

                    found.append(Found(target, p.uname_release, "1", p.arch, (file(p),), file(image) if image else None,
                                       note=f"{p.name}-{p.version}-{p.release} ({p.repo or path})"))
        return found


class Rhel(RpmDistro, name="rhel"):
    targets = ("rhel",)
    aliases: ClassVar[dict[str, str]] = {"redhat": "rhel"}
    os_ids = ("rhel",)
    mirror = "rhel"  # no public mirror: --mirror rhel=URL of a repository (subscription, Satellite, proxy)
    repositories = ("",)


class CentOS(RpmDistro, name="centos"):
    targets = ("centos",)
    os_ids = ("centos",)
    mirror = "centos-stream"
    repositories = ("9-stream/BaseOS/{arch}/os", "9-stream/AppStream/{arch}/os",
                    "10-stream/BaseOS/{arch}/os", "10-stream/AppStream/{arch}/os")


class Rocky(RpmDistro, name="rocky"):
    targets = ("rocky",)
    os_ids = ("rocky",)
    mirror = "rocky"
    repositories = ("8/BaseOS/{arch}/os", "9/BaseOS/{arch}/os", "9/AppStream/{arch}/os",
                    "10/BaseOS/{arch}/os", "10/AppStream/{arch}/os")


class AlmaLinux(Rocky, name="almalinux"):
    targets = ("almalinux",)
    os_ids = ("almalinux",)
    mirror = "almalinux"


class Fedora(RpmDistro, name="fedora"):
    targets = ("fedora",)
    os_ids = ("fedora",)
    mirror = "fedora"
    repositories = ("releases/42/Everything/{arch}/os", "updates/42/Everything/{arch}",
                    "releases/43/Everything/{arch}/os", "updates/43/Everything/{arch}")


class OracleLinux(RpmDistro, name="ol"):
    targets = ("ol",)
    aliases: ClassVar[dict[str, str]] = {"oracle": "ol"}
    os_ids = ("ol",)
    mirror = "ol"
    repositories = ("OL8/baseos/latest/{arch}", "OL8/UEKR7/{arch}", "OL9/baseos/latest/{arch}",
                    "OL9/appstream/{arch}", "OL9/UEKR7/{arch}", "OL9/UEKR8/{arch}")
    packages: ClassVar[dict[str, tuple[str, ...]]] = {
        "kernel-devel": ("kernel-core", "kernel"), "kernel-uek-devel": ("kernel-uek-core", "kernel-uek")}
