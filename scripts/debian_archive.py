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
import pwd
import shutil
import subprocess
import sys
import tempfile
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


def apt_download(command: list[str], dest: Path) -> None:
    """Run ``apt-get download`` in a scratch directory apt's sandbox user (_apt) may write, then move
    the files to ``dest``: as root into a root-only directory, apt warns "Download is performed
    unsandboxed as root" once per file."""
    with tempfile.TemporaryDirectory(prefix="repogen-apt-") as scratch:
        # Without a sandbox user on this system, apt runs as root and does not warn.
        if os.geteuid() == 0 and any(user.pw_name == "_apt" for user in pwd.getpwall()):
            os.chown(scratch, pwd.getpwnam("_apt").pw_uid, -1)
        subprocess.run(command, cwd=scratch, check=True, stdout=subprocess.DEVNULL, timeout=1800)
        for path in Path(scratch).glob("*.deb"):
            shutil.move(str(path), dest / path.name)


def deb_member(deb: Path, member: str, dest: Path) -> Path:
    """One file of a .deb's data (``./bin/busybox``), written to ``dest`` as an executable: whole or not
    at all (a temporary file renamed)."""
    from debian import debfile

    data = debfile.DebFile(str(deb)).data.tgz().extractfile(member)
    if data is None:
        raise SystemExit(f"{deb.name} has no file {member}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.with_name(dest.name + ".tmp")
    staging.write_bytes(data.read())
    staging.chmod(0o755)
    os.replace(staging, dest)
    return dest


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
                "-oDir::Etc::PreferencesParts=/dev/null",
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
            # Its warnings (root-only lists dir: "performed unsandboxed as root") name the mirror's host:
            # kept out of logs unless the update fails.
            done = subprocess.run(["apt-get", *self.options(), "-q", "update"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True, timeout=900)
            if done.returncode:
                raise SystemExit(f"apt-get update of {self.root} failed (exit {done.returncode}):\n"
                                 + "\n".join(done.stderr.strip().splitlines()[-5:]))
            stamp.touch()

    def cache(self, *args: str) -> str:
        return subprocess.run(["apt-cache", *self.options(), *args], check=True, capture_output=True, text=True,
                              timeout=300).stdout

    def pkgnames(self, prefix: str) -> list[str]:
        return sorted(set(self.cache("pkgnames", prefix).split()))

    def versions(self, package: str) -> list[tuple[str, str, str]]:
        """(version, architecture, suite) of ``package`` (``name`` or ``name:arch``) as apt knows it."""
        return self.madison([package]).get(package.partition(":")[0], [])

    def madison(self, packages: list[str]) -> dict[str, list[tuple[str, str, str]]]:
        """Name -> (version, architecture, suite) for many packages in one apt-cache call."""
        out: dict[str, list[tuple[str, str, str]]] = {}
        if not packages:
            return out
        seen: set[tuple[str, str, str, str]] = set()
        for line in self.cache("madison", *packages).splitlines():
            parts = [p.strip() for p in line.split("|")]
            where = parts[2].split() if len(parts) >= 3 else []
            if len(where) >= 3:  # <uri> <suite>/<component> <arch> Packages
                row = (parts[0].partition(":")[0], parts[1], where[-2], where[-3].split("/")[0])
                if row not in seen:
                    seen.add(row)
                    out.setdefault(row[0], []).append(row[1:])
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
                    apt_download(["apt-get", *self.options(), "-q", "download", *missing], dest)
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
