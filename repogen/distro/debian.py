"""Debian: headers come as ``linux-headers-<abi>-<flavour>`` + ``-common`` + ``linux-kbuild`` .debs.

Naming (falcoctl ``debian.go``, falco-driver-loader): ``uname -r`` is the ABI (``6.1.0-56-amd64``), which
many package versions share, so clients take the first ``\\d+.\\d+.\\d+-\\d+`` of the package version
found in ``uname -v`` (``... Debian 6.1.192-2 (2026-11-16)``) and append the flavour suffix of
``uname -r`` matching ``(rt-|cloud-|)(amd64|arm64)``: ``6.1.192-2-amd64``, kernelversion ``1``. So a
backport ``6.12.12-1~bpo12+1`` is published as ``6.12.12-1-amd64``. Other flavours (``arm64-16k``,
``686-pae``) would collide with or lack a suffix, so the crawl leaves them out.

The flavour Makefile includes the ``-common`` tree by its absolute ``/usr/src`` path, which is why the
build mounts the unpacked ``usr/src`` at ``/usr/src``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import TYPE_CHECKING, ClassVar

from repogen.distro import Distro, KernelName, PackageFormat, Uname

if TYPE_CHECKING:
    from repogen.crawl import CrawlContext, Found
    from repogen.crawl.deb import DebPackage
    from repogen.model import Kernel

FLAVOUR_SUFFIX = re.compile(r"-?(rt-|cloud-|)(amd64|arm64)")
PACKAGE_VERSION = re.compile(r"\d+\.\d+\.\d+-\d+")
#: ``linux-headers-<abi>-<flavour>`` for the flavours clients can name (not the ``linux-headers-amd64`` metas).
HEADERS_PACKAGE = re.compile(r"linux-headers-(\d+\.\d+\.\d+[^-]*(?:-\d+)?)-((?:rt-|cloud-)?(?:amd64|arm64))")
DEB_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
# The naming rule, checked on each of 10,000 entries of a big matrix: compiled once.
_RELEASE_RULE = re.compile(r"(\d+\.\d+\.\d+-\d+)(?:-(rt-|cloud-|)(amd64|arm64))?")
_HEADERS_FILE = re.compile(r"(linux-headers-[^_]+)_([^_]+)_[^_]+\.deb")
#: The build host's architecture: kbuild tools (fixdep, modpost) run there, also for arm64 kernels.
BUILD_HOST_ARCH = "amd64"


def _extraversion(uname_release: str) -> str:
    """What follows ``X.Y.Z`` in ``uname -r`` (driverkit's FullExtraversion, where the flavour is looked for)."""
    return re.sub(r"^\d+(\.\d+){0,2}", "", uname_release)


def release_from_package(package_version: str, flavour: str) -> str | None:
    """The kernelrelease clients request for a headers package version and flavour (None: no rule)."""
    m = PACKAGE_VERSION.search(package_version)
    if not m:
        return None
    suffix = FLAVOUR_SUFFIX.search(f"-{flavour}")
    return m.group(0) + (f"-{suffix.group(1)}{suffix.group(2)}" if suffix else "")


class Debian(Distro, name="debian"):
    targets: ClassVar[tuple[str, ...]] = ("debian",)
    os_ids: ClassVar[tuple[str, ...]] = ("debian",)
    package_format = PackageFormat.deb
    kernel_dir_globs = ("usr/src/linux-headers-*",)
    kernelversion_hint = "'1' for Debian kernels"
    #: (mirror, suite) read by default: Debian 11, 12 and 13 with their security suites and backports.
    suites: ClassVar[tuple[str, ...]] = ("bullseye", "bullseye-security", "bookworm", "bookworm-security",
                                         "bookworm-backports", "trixie", "trixie-security")

    @classmethod
    def name(cls, uname: Uname) -> KernelName:
        m = PACKAGE_VERSION.search(uname.version)
        if not m:  # not a Debian-built kernel: falcoctl falls back to the generic rule
            return super().name(uname)
        suffix = FLAVOUR_SUFFIX.search(_extraversion(uname.release))
        release = m.group(0) + (f"-{suffix.group(1)}{suffix.group(2)}" if suffix else "")
        return KernelName("debian", release, "1")

    @classmethod
    def rule_problems(cls, kernel: Kernel) -> list[str]:
        problems = []
        if kernel.kernelversion != "1":
            problems.append(f"kernelversion {kernel.kernelversion!r}: Debian clients always request '1'")
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(kernel.architecture)
        m = _RELEASE_RULE.fullmatch(kernel.kernelrelease)
        if not m:
            problems.append(f"kernelrelease {kernel.kernelrelease!r} is not <package version>-<flavour> "
                            "(e.g. 6.1.192-2-amd64): clients never request it")
        elif arch and m.group(3) != arch:
            problems.append(f"kernelrelease {kernel.kernelrelease!r} lacks the '-{arch}' (or -rt-/-cloud-{arch}) "
                            f"suffix a {kernel.architecture} client requests")
        for header in kernel.headers:
            file = header.url.rsplit("/", 1)[-1]
            h = _HEADERS_FILE.fullmatch(file)
            hm = HEADERS_PACKAGE.fullmatch(h.group(1)) if h else None
            if h and hm:
                expected = release_from_package(h.group(2).replace("%3a", ":"), hm.group(2))
                if expected and expected != kernel.kernelrelease:
                    problems.append(f"headers {file} are requested as kernelrelease {expected!r}, "
                                    f"not {kernel.kernelrelease!r}")
        return problems

    # -- crawl --------------------------------------------------------------------------------

    @classmethod
    def mirror_for(cls, suite: str) -> str:
        return "debian-security" if suite.endswith("-security") else "debian"

    @classmethod
    def crawl(cls, ctx: CrawlContext) -> list[Found]:
        from repogen.crawl.deb import read_packages, read_release

        wanted = [DEB_ARCH[a] for a in (ctx.architectures or ("x86_64", "aarch64")) if a in DEB_ARCH]
        index_arches = sorted({*wanted, BUILD_HOST_ARCH})
        by_release: dict[str, list[DebPackage]] = defaultdict(list)
        fresh: set[str] = set()
        for suite in ctx.releases or cls.suites:
            mirror = cls.mirror_for(suite)
            release = read_release(ctx, mirror, suite)
            if ctx.since is None or release.date is None or release.date >= ctx.since:
                fresh.add(suite)
            for arch in index_arches:
                by_release[suite.split("-")[0]].extend(read_packages(
                    ctx, mirror, suite, arch, ("linux-headers-", "linux-kbuild-", "linux-image-"), release))
        # Falco's name drops the ABI: bookworm's 6.12.107+deb12 build and trixie's 6.12.107+deb13 build
        # are both requested as 6.12.107-1-amd64. One file can serve only one of them: the newest
        # release (the kernel's home) is kept, and the collision is reported.
        kept: dict[tuple[str, str, str, str], Found] = {}
        for packages in reversed(by_release.values()):
            for f in cls._pair(ctx, packages, set(wanted), fresh):
                if f.ident in kept:
                    ctx.warn(f"{f.kernelrelease} ({f.architecture}): {f.note} is requested under the same name as "
                             f"{kept[f.ident].note}; only the latter is kept (Falco's Debian name has no ABI)")
                    continue
                kept[f.ident] = f
        return list(kept.values())

    @classmethod
    def _pair(cls, ctx: CrawlContext, packages: list[DebPackage], arches: set[str], fresh: set[str]) -> list[Found]:
        """Each flavour's headers with its -common, kbuild and image packages (one release's suites)."""
        from debian.deb822 import PkgRelation

        from repogen.crawl import Found, MirrorFile

        exact: dict[tuple[str, str, str], DebPackage] = {}
        by_name: dict[str, list[DebPackage]] = defaultdict(list)
        for p in packages:  # suites come main archive first: keep its copy of a file both hold
            if (p.name, p.version, p.architecture) not in exact:
                exact[(p.name, p.version, p.architecture)] = p
                by_name[p.name].append(p)

        def file(p: DebPackage) -> MirrorFile:
            return MirrorFile(p.mirror, p.filename, p.sha256)

        out = []
        for p in list(exact.values()):
            m = HEADERS_PACKAGE.fullmatch(p.name)
            if not m or p.architecture not in arches or p.suite not in fresh:
                continue
            abi, flavour = m.groups()
            release = release_from_package(p.version, flavour)
            relations = [alts[0] for alts in PkgRelation.parse_relations(p.depends) if alts]
            common = kbuild = None
            for rel in relations:
                name, constraint = rel["name"], rel.get("version")
                if name.startswith("linux-headers-") and re.search(r"-common(-rt)?$", name):
                    version = constraint[1] if constraint and constraint[0] == "=" else p.version
                    common = exact.get((name, version, "all"))
                    if common is None:
                        ctx.warn(f"{p.name} {p.version}: no {name} {version} in the index: left out")
                elif name.startswith("linux-kbuild-"):
                    kbuild = _best(by_name.get(name, []), BUILD_HOST_ARCH, p.version, constraint)
                    if kbuild is None:
                        ctx.warn(f"{p.name} {p.version}: no {BUILD_HOST_ARCH} {name} "
                                 f"{' '.join(constraint or ())} in the index: left out")
            if common is None or kbuild is None or release is None:
                continue
            image = (exact.get((f"linux-image-{abi}-{flavour}", p.version, p.architecture))
                     or exact.get((f"linux-image-{abi}-{flavour}-unsigned", p.version, p.architecture)))
            arch = "x86_64" if p.architecture == "amd64" else "aarch64"
            out.append(Found("debian", release, "1", arch, (file(common), file(p), file(kbuild)),
                             file(image) if image else None, note=f"uname -r: {abi}-{flavour} ({p.suite})"))
        return out


def _best(candidates: list[DebPackage], arch: str, version: str,
          constraint: tuple[str, str] | None) -> DebPackage | None:
    """The kbuild package to pair: the headers' own version if the archive still has it, else the closest
    version satisfying the dependency (a suite keeps one version per package name, so after a point
    release the older ABIs' exact kbuild is gone)."""
    from debian.debian_support import Version

    pool = [c for c in candidates if c.architecture == arch]
    for c in pool:
        if c.version == version:
            return c
    if constraint:
        op, bound = constraint
        b = Version(bound)
        checks = {">=": lambda v: v >= b, "<=": lambda v: v <= b, ">>": lambda v: v > b, "<<": lambda v: v < b,
                  "=": lambda v: v == b}
        check = checks.get(op, lambda v: True)
        pool = [c for c in pool if check(Version(c.version))]
    return min(pool, key=lambda c: Version(c.version), default=None)
