#!/usr/bin/env python3
"""Fetch real Debian kernel headers (and kernel images) into a local mirror, for the demo and the tests.

For a Debian suite and architecture, picks the newest N ``linux-headers-<abi>-<flavour>`` packages
the machine's mirror has (through a private apt configuration: any suite, any architecture, nothing
of the system's apt touched, no archive host named anywhere), downloads each with its ``-common``,
the ``linux-kbuild`` package of the BUILD machine's architecture (an arm64 kernel is cross-built on
x86_64 with the host's kbuild tools) and, with ``--image``, the ``linux-image`` package for the boot
check; then writes kernels.yaml entries whose URLs point at a server on 127.0.0.1 serving the mirror.

    python3 scripts/debian_headers.py --suite bookworm --arch amd64 --count 1 --image \\
        --dest .demo/mirror --base-url http://127.0.0.1:8099 --kernels-out examples/kernels.d/debian-demo.yaml
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from debian_archive import AptArchive, apt_download

__all__ = ["AptArchive", "Catalog", "apt_download", "archive", "fetch", "kernels_yaml"]

SUITES = ("bullseye", "bookworm", "trixie")
ARCHES = {"amd64": "x86_64", "arm64": "aarch64"}
BUILD_ARCH = "amd64"  # the build machine's: its kbuild tools run on it, whatever the kernel's architecture
CACHE = Path(os.environ.get("REPOGEN_TEST_CACHE", Path.home() / ".cache" / "repogen-tests"))


def archive(root: Path | None = None) -> AptArchive:
    """The private apt archive over every suite and architecture the tests and the demo use."""
    return AptArchive(root or CACHE / "apt", list(SUITES), list(ARCHES))


def _version_key(version: str) -> list[object]:
    return [int(p) if p.isdigit() else p for p in re.split(r"[.\-+~]", version)]


@dataclass
class DebianKernel:
    suite: str
    abi: str  # 6.1.0-50, 6.12.117+deb13
    flavour: str  # amd64, arm64, cloud-amd64, rt-amd64
    arch: str  # Debian architecture of the kernel
    version: str  # package version: 6.1.176-1
    specs: list[str] = field(default_factory=list)  # headers: -common, -<flavour>, linux-kbuild
    image: str | None = None

    @property
    def kernelrelease(self) -> str:
        """Falco's kernelrelease for Debian: ``<package version>-<flavour>`` (kernel-crawler, falcoctl)."""
        return f"{self.version}-{self.flavour}"

    @property
    def uname_r(self) -> str:
        return f"{self.abi}-{self.flavour}"


def _kbuild(known: dict[str, list[tuple[str, str, str]]], abi: str, version: str, suite: str) -> str | None:
    """The kbuild package for the build machine: ``linux-kbuild-<abi>`` (Debian 13) or ``-<major.minor>``,
    at the headers' version when the mirror has it, else the nearest newer (same stable series)."""
    major_minor = ".".join(abi.split(".")[:2])
    for name in (f"linux-kbuild-{abi}", f"linux-kbuild-{major_minor}"):
        versions = sorted({v for v, a, s in known.get(name, []) if s == suite and a == BUILD_ARCH},
                          key=_version_key)
        newer = [v for v in versions if _version_key(v) >= _version_key(version)]
        if newer:
            return f"{name}={newer[0]}"
        if versions:
            return f"{name}={versions[-1]}"
    return None


class Catalog:
    """What the mirror holds of Debian's kernel packages, read with two apt-cache calls in all."""

    def __init__(self, apt: AptArchive) -> None:
        names = [n for n in apt.pkgnames("linux-") if n.startswith(("linux-headers-", "linux-image-", "linux-kbuild-"))]
        self.apt = apt
        self.names = names
        self.known = apt.madison([f"{n}:{arch}" for n in names for arch in ARCHES])

    def newest(self, suite: str, arch: str, count: int, image: bool = False) -> list[DebianKernel]:
        """The newest ``count`` kernels of the plain flavour, then of the cloud flavour if more are asked."""
        found: list[DebianKernel] = []
        for flavour in (arch, f"cloud-{arch}", f"rt-{arch}"):
            found += self.find(suite, arch, flavour, count - len(found), image)
            if len(found) >= count:
                break
        return found

    def find(self, suite: str, arch: str = "amd64", flavour: str | None = None, count: int = 1,
             image: bool = False, skip: int = 0) -> list[DebianKernel]:
        """The newest ``count`` kernels of ``suite`` (after skipping ``skip``) with all their packages."""
        flavour = flavour or arch
        known = self.known
        pattern = re.compile(rf"linux-headers-(\d+\.\d+\.\d+(?:-\d+|\+deb\d+))-{re.escape(flavour)}")
        found: list[DebianKernel] = []
        for name in self.names:
            m = pattern.fullmatch(name)
            versions = [v for v, a, s in known.get(name, []) if s == suite and a == arch] if m else []
            if not m or not versions:
                continue
            abi, version = m.group(1), sorted(versions, key=_version_key)[-1]
            common = f"linux-headers-{abi}-common{'-rt' if flavour.startswith('rt-') else ''}"
            kbuild = _kbuild(known, abi, version, suite)
            if kbuild is None or not any(v == version and s == suite for v, _, s in known.get(common, [])):
                continue
            kbuild_name, _, kbuild_version = kbuild.partition("=")
            kernel = DebianKernel(suite, abi, flavour, arch, version,
                                  [f"{common}={version}", f"{name}:{arch}={version}",
                                   f"{kbuild_name}:{BUILD_ARCH}={kbuild_version}"])
            if image:
                image_name = f"linux-image-{abi}-{flavour}"
                if not any(v == version and a == arch and s == suite for v, a, s in known.get(image_name, [])):
                    continue
                kernel.image = f"{image_name}:{arch}={version}"
            found.append(kernel)
        found.sort(key=lambda k: _version_key(k.version), reverse=True)
        return found[skip:skip + count]


def fetch(apt: AptArchive, kernels: list[DebianKernel], dest: Path, base_url: str) -> list[dict[str, object]]:
    """Download every package into ``dest`` and return kernels.yaml entries pointing at ``base_url``."""
    entries: list[dict[str, object]] = []
    base_url = base_url.rstrip("/")

    def ref(path: Path) -> dict[str, str]:
        return {"url": f"{base_url}/{path.name}", "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}

    for kernel in kernels:
        headers = apt.download(kernel.specs, dest)
        entry: dict[str, object] = {"target": "debian", "kernelrelease": kernel.kernelrelease, "kernelversion": "1",
                                    "architecture": ARCHES[kernel.arch], "headers": [ref(p) for p in headers],
                                    "uname_r": kernel.uname_r, "suite": kernel.suite}
        if kernel.image:
            entry["image"] = ref(apt.download([kernel.image], dest)[0])
        entries.append(entry)
    return entries


def kernels_yaml(entries: list[dict[str, object]], comment: str) -> str:
    lines = [f"# {comment}", "kernels:"]
    for e in entries:
        lines += [f"  - target: {e['target']}  # Debian {e['suite']}, uname -r: {e['uname_r']}",
                  f"    kernelrelease: {e['kernelrelease']}",
                  f"    kernelversion: \"{e['kernelversion']}\"",
                  f"    architecture: {e['architecture']}",
                  "    headers:"]
        for h in e["headers"]:  # type: ignore[attr-defined]
            lines += [f"      - url: {h['url']}", f"        sha256: {h['sha256']}"]
        if e.get("image"):
            image = e["image"]
            lines += [f"    image: {{url: {image['url']}, sha256: {image['sha256']}}}"]  # type: ignore[index]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="bookworm", choices=SUITES)
    parser.add_argument("--arch", default="amd64", choices=sorted(ARCHES), help="Debian architecture")
    parser.add_argument("--flavour", help="default: the architecture's plain flavour, then cloud- and rt- ones "
                        "when --count asks for more kernels than it has")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--skip", type=int, default=0, help="skip the newest N kernels")
    parser.add_argument("--image", action="store_true", help="also fetch the kernel image (boot check)")
    parser.add_argument("--dest", type=Path, required=True)
    parser.add_argument("--base-url", required=True, help="URL the mirror directory is served at")
    parser.add_argument("--apt-dir", type=Path, help=f"private apt state (default {CACHE / 'apt'})")
    parser.add_argument("--kernels-out", type=Path, help="write a kernels.yaml fragment here")
    parser.add_argument("--json", action="store_true", help="print the kernels as JSON")
    args = parser.parse_args()

    apt = archive(args.apt_dir)
    apt.update()
    catalog = Catalog(apt)
    kernels = (catalog.find(args.suite, args.arch, args.flavour, args.count, args.image, args.skip) if args.flavour
               else catalog.newest(args.suite, args.arch, args.count + args.skip, args.image)[args.skip:])
    if len(kernels) < args.count:
        print(f"only {len(kernels)} {args.suite} {args.flavour or args.arch} kernels found on the mirror",
              file=sys.stderr)
        return 1
    entries = fetch(apt, kernels, args.dest, args.base_url)
    if args.kernels_out:
        args.kernels_out.parent.mkdir(parents=True, exist_ok=True)
        args.kernels_out.write_text(kernels_yaml(
            entries, "Generated by scripts/debian_headers.py: real Debian kernels served from a local mirror."))
    if args.json:
        print(json.dumps(entries, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
