"""Driver sources: fetched once per driver version, prepared once, never once per kernel.

A source is a tarball URL (GitHub archive style: one top directory) or a local directory. Its
digest (tarball sha256, or a hash over the directory's files) is part of every build key, so a
branch whose content moved is rebuilt and an unchanged one is not.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import shutil
import stat
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from repogen import atomic
from repogen.errors import FetchError
from repogen.fetch import DownloadCache
from repogen.locks import KeyLocks
from repogen.model import Driver
from repogen.unpack import UnsafeArchive, extract_tar


def tree_digest(root: Path) -> str:
    """A digest over relative paths, modes and contents, stable across machines."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            st = path.lstat()
            h.update(rel.encode() + b"\0" + (b"x" if st.st_mode & stat.S_IXUSR else b"-"))
            if stat.S_ISLNK(st.st_mode):
                h.update(b"L" + os.readlink(path).encode())
            else:
                with path.open("rb") as fh:
                    h.update(hashlib.file_digest(fh, "sha256").digest())
    return h.hexdigest()


@dataclass(frozen=True)
class SourceTree:
    digest: str
    root: Path  # holds ``src/``: the driver's source tree, top directory stripped


class SourceCache:
    """``<root>/<digest>/src``: each source fetched and unpacked once per run, shared by all jobs."""

    def __init__(self, root: Path, downloads: DownloadCache) -> None:
        self.root = root
        self.downloads = downloads
        self._locks = KeyLocks.beside(root)
        self._resolved: dict[tuple[str, str], SourceTree] = {}
        self.fetches = 0

    def resolve(self, driver: Driver) -> SourceTree:
        """The driver's source tree; an unpinned URL (a branch) is re-fetched once per run."""
        key = (driver.source.location, driver.version)
        with self._locks.hold(f"{key[0]}@{key[1]}", f"fetching {driver.name} {driver.version}"):
            if key in self._resolved:
                return self._resolved[key]
            tree = self._resolve(driver)
            self._resolved[key] = tree
            return tree

    def _resolve(self, driver: Driver) -> SourceTree:
        source = driver.source
        if source.path:
            path = Path(source.path)
            if path.is_dir():
                digest = tree_digest(path)
                final = self.root / digest
                if atomic.completed(final) is None:
                    self._install(final, lambda dest: shutil.copytree(path, dest, symlinks=True))
                return SourceTree(digest, final)
            return self._from_tarball(path, hashlib.sha256(path.read_bytes()).hexdigest())
        assert source.url
        download = self.downloads.get(source.url, source.sha256, refresh=not source.pinned)
        self.fetches += int(download.fetched)
        return self._from_tarball(download.path, download.sha256)

    def _from_tarball(self, tarball: Path, digest: str) -> SourceTree:
        final = self.root / digest
        if atomic.completed(final) is None:
            self._install(final, lambda dest: _unpack_source(tarball, dest))
        return SourceTree(digest, final)

    def _install(self, final: Path, fill: Callable[[Path], object]) -> None:
        def fill_src(staging: Path) -> None:
            fill(staging / "src")

        atomic.install_dir(final, fill_src)


def _unpack_source(tarball: Path, dest: Path) -> None:
    """Unpack a source tarball into ``dest``, stripping its single top directory if it has one.

    Member by member with :mod:`repogen.unpack`'s checks; a source's links must stay inside it.
    """
    scratch = dest.with_name("unpack")
    try:
        with tarfile.open(tarball) as tar:
            extract_tar(tar, scratch, contained_links=True)
    except UnsafeArchive as exc:
        raise FetchError(f"{tarball.name}: {exc.message}") from None
    except (tarfile.TarError, EOFError, OSError, lzma.LZMAError, zlib.error) as exc:
        raise FetchError(f"{tarball.name}: not a readable source tarball: {exc}") from None
    entries = list(scratch.iterdir())
    top = entries[0] if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink() else scratch
    os.replace(top, dest)
    shutil.rmtree(scratch, ignore_errors=True)
