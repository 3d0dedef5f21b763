#!/usr/bin/env python3
"""A private apt configuration over this machine's Debian mirror: any suite, any architecture.

The system's apt knows one suite and one architecture; tests, the demo and benchmarks need Debian
11, 12 and 13 for amd64 and arm64. This keeps its own sources list, lists, cache and state under one
directory (nothing of the system's apt is touched) and builds the sources from the mirror the
machine's own apt sources name, so no archive host is written anywhere.

    from debian_archive import AptArchive
    archive = AptArchive(Path("~/.cache/x/apt"), suites=["bookworm", "trixie"], architectures=["amd64", "arm64"])
    archive.update()                       # once; again only when older than max_age
    archive.download(["linux-headers-6.1.0-50-arm64:arm64"], dest)
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


def machine_mirror() -> str:
    """The Debian archive URI from this machine's apt sources (never written in a file)."""
    from repogen.images import host_debian_mirror

    mirror = host_debian_mirror()
    if not mirror:
        raise SystemExit("no Debian mirror in /etc/apt/sources.list*: cannot fetch Debian packages")
    return mirror


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


class AptArchive:
    """apt-get/apt-cache with a sources list and state of their own."""

    def __init__(self, root: Path, suites: list[str], architectures: list[str], mirror: str | None = None) -> None:
        self.root = root.expanduser().absolute()
        self.suites = suites
        self.architectures = architectures
        self.mirror = mirror or machine_mirror()

    @property
    def lists(self) -> Path:
        return self.root / "lists"

    def options(self) -> list[str]:
        opts = [f"-oDir::Etc::SourceList={self.root / 'sources.list'}", "-oDir::Etc::SourceParts=/dev/null",
                f"-oDir::State={self.root / 'state'}", f"-oDir::State::Lists={self.lists}",
                f"-oDir::Cache={self.root / 'cache'}", "-oDir::Etc::Preferences=/dev/null",
                "-oDir::Etc::PreferencesParts=/dev/null", "-oAPT::Sandbox::User=root",
                "-oDebug::NoLocking=true", "-oAcquire::Languages=none"]
        opts += [f"-oAPT::Architectures::={arch}" for arch in self.architectures]
        return opts

    def _write_sources(self) -> bool:
        text = "".join(f"deb [signed-by={KEYRING}] {self.mirror} {suite} main\n" for suite in self.suites)
        path = self.root / "sources.list"
        if path.is_file() and path.read_text() == text:
            return False
        for sub in ("lists/partial", "cache/archives/partial", "state"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "state" / "status").touch()
        path.write_text(text)
        return True

    def update(self, max_age: float = 12 * 3600) -> None:
        """``apt-get update`` into the private lists, unless they are fresh (tests run often)."""
        with _locked(self.root / ".lock"):
            changed = self._write_sources()
            stamp = self.root / ".updated"
            if not changed and stamp.is_file() and time.time() - stamp.stat().st_mtime < max_age:
                return
            subprocess.run(["apt-get", *self.options(), "-q", "update"], check=True, stdout=subprocess.DEVNULL,
                           timeout=900)
            stamp.touch()

    def cache(self, *args: str) -> str:
        return subprocess.run(["apt-cache", *self.options(), *args], check=True, capture_output=True, text=True,
                              timeout=300).stdout

    def pkgnames(self, prefix: str) -> list[str]:
        return sorted(set(self.cache("pkgnames", prefix).split()))

    def versions(self, package: str) -> list[tuple[str, str]]:
        """(version, architecture) pairs apt knows for ``package`` (``name`` or ``name:arch``)."""
        out = []
        for line in self.cache("madison", package).splitlines():
            parts = [p.strip() for p in line.split("|")]
            if len(parts) >= 3:
                out.append((parts[1], parts[2].split()[-2] if len(parts[2].split()) >= 2 else ""))
        return out

    def packages_files(self) -> list[Path]:
        """The decompressed ``Packages`` indexes apt keeps, one per suite and architecture."""
        return sorted(p for p in self.lists.glob("*_Packages") if p.is_file())

    def download(self, specs: list[str], dest: Path) -> list[Path]:
        """``apt-get download`` each ``name[:arch]=version`` into ``dest`` (skipping files already there)."""
        dest.mkdir(parents=True, exist_ok=True)
        missing = [s for s in specs if not self.find(s, dest)]
        if missing:
            with _locked(dest / ".apt-download.lock"):
                missing = [s for s in specs if not self.find(s, dest)]
                if missing:
                    subprocess.run(["apt-get", *self.options(), "-q", "download", *missing], cwd=dest, check=True,
                                   stdout=subprocess.DEVNULL, timeout=1800)
        found = [self.find(s, dest) for s in specs]
        lost = [s for s, f in zip(specs, found, strict=True) if f is None]
        if lost:
            raise SystemExit(f"apt-get download left no file for {', '.join(lost)}")
        return [f for f in found if f is not None]

    @staticmethod
    def find(spec: str, dest: Path) -> Path | None:
        name_arch, _, version = spec.partition("=")
        name, _, arch = name_arch.partition(":")
        quoted = version.replace(":", "%3a") if version else "*"
        matches = sorted(dest.glob(f"{name}_{quoted}_{arch or '*'}.deb"))
        return matches[-1] if matches else None


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--suite", action="append", required=True)
    parser.add_argument("--arch", action="append", default=[])
    args = parser.parse_args()
    archive = AptArchive(args.root, args.suite, args.arch or ["amd64"])
    archive.update()
    print("\n".join(str(p) for p in archive.packages_files()))
    os._exit(0)
