"""Kernel headers: unpack a kernel's header packages once into a tree the builds mount read-only.

The package format differs per distribution (``.deb``, ``.rpm``, kernel.org tarballs); each has
one small unpacker here behind :func:`unpack`, and the distribution says where the kernel build
directory lies in the unpacked tree.
"""

from __future__ import annotations

import glob
import hashlib
import json
import lzma
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repogen import atomic, distro
from repogen.distro import PackageFormat
from repogen.errors import FetchError
from repogen.fetch import Download
from repogen.locks import KeyLocks
from repogen.store import headers_key
from repogen.unpack import UnsafeArchive, extract_cpio, extract_tar, is_contained, read_contained


@dataclass(frozen=True)
class KernelTree:
    """Unpacked headers: ``root`` mirrors ``/``; ``kernel_dir`` is the build directory inside it."""

    root: Path
    kernel_dir: Path
    release: str  # UTS_RELEASE, read from the headers themselves
    config_sha256: str | None
    gcc: int | None = None  # major version of the gcc that built the kernel (CONFIG_GCC_VERSION)

    @property
    def symvers(self) -> Path | None:
        """The kernel's ``Module.symvers``: the CRC of every exported symbol, for modversions."""
        path = self.kernel_dir / "Module.symvers"
        return path if path.exists() and stat.S_ISREG(path.lstat().st_mode) else None

    @property
    def container_kernel_dir(self) -> str:
        return "/" + str(self.kernel_dir.relative_to(self.root))

    def mounts(self) -> list[tuple[Path, str]]:
        """What to bind read-only into a build: ``usr/src`` and kernel helpers under ``usr/lib``.

        Debian's flavour Makefile includes the ``-common`` tree by an absolute ``/usr/src`` path and
        its ``scripts`` link points to ``/usr/lib/linux-kbuild-X.Y``, so both keep their real paths.
        """
        out: list[tuple[Path, str]] = []
        for rel in ("usr/src",):
            if (self.root / rel).is_dir() and is_contained(self.root, self.root / rel):
                out.append((self.root / rel, "/" + rel))
        for lib in sorted((self.root / "usr/lib").glob("linux-*")):
            if lib.is_dir() and is_contained(self.root, lib):  # a link would mount a host directory
                out.append((lib, "/usr/lib/" + lib.name))
        if not any(self.kernel_dir.is_relative_to(src) for src, _ in out):
            out.append((self.kernel_dir, self.container_kernel_dir))
        return out


def _unpack_deb(path: Path, dest: Path) -> None:
    from debian import arfile, debfile

    try:
        deb = debfile.DebFile(str(path))
        extract_tar(deb.data.tgz(), dest)
    except (debfile.DebError, arfile.ArError, tarfile.TarError, EOFError, lzma.LZMAError,
            zlib.error, OSError, ValueError, KeyError) as exc:
        raise FetchError(f"corrupt or truncated .deb: {exc or type(exc).__name__}") from None


def _unpack_rpm(path: Path, dest: Path) -> None:
    for tool, package in (("rpmkeys", "rpm"), ("rpm2cpio", "rpm2cpio")):
        if not shutil.which(tool):
            raise FetchError(f"unpacking .rpm headers needs {tool} (Debian package '{package}')")
    # rpm2cpio accepts a payload cut inside its compression trailer; the package's own digests do
    # not: check them first (signatures are the distribution's business, not ours).
    check = subprocess.run(["rpmkeys", "--checksig", "--nosignature", str(path)], capture_output=True)
    if check.returncode:
        detail = (check.stdout + check.stderr).decode(errors="replace").strip().splitlines()
        raise FetchError(f"corrupt or truncated .rpm: {detail[-1] if detail else 'digest check failed'}")
    # rpm2cpio only decompresses; the cpio stream is unpacked here, member by member (unlike cpio,
    # never through a symbolic link an earlier package planted).
    with tempfile.TemporaryFile() as errors:
        rpm2cpio = subprocess.Popen(["rpm2cpio", str(path)], stdout=subprocess.PIPE, stderr=errors)
        assert rpm2cpio.stdout is not None
        stream: Any = rpm2cpio.stdout
        failure: str | None = None
        try:
            extract_cpio(stream, dest)
            while stream.read(1 << 16):  # the padding after the trailer
                pass
        except UnsafeArchive:
            rpm2cpio.kill()
            raise
        except FetchError as exc:
            rpm2cpio.kill()
            failure = exc.message
        finally:
            stream.close()
            rpm2cpio.wait()
        if rpm2cpio.returncode or failure:
            errors.seek(0)
            message = errors.read().decode(errors="replace").strip() or failure or "rpm2cpio failed"
            raise FetchError(f"corrupt or truncated .rpm: {message}")


def _unpack_tarball(path: Path, dest: Path) -> None:
    try:
        with tarfile.open(path) as tar:
            extract_tar(tar, dest)
    except (tarfile.TarError, EOFError, lzma.LZMAError, zlib.error, OSError) as exc:
        raise FetchError(f"corrupt or truncated tarball: {exc}") from None


UNPACKERS: dict[PackageFormat, Callable[[Path, Path], None]] = {
    PackageFormat.deb: _unpack_deb,
    PackageFormat.rpm: _unpack_rpm,
    PackageFormat.tarball: _unpack_tarball,
}

_UTS = re.compile(rb'#define\s+UTS_RELEASE\s+"([^"]+)"')


def read_release(kernel_dir: Path) -> str | None:
    """The kernel release the headers were built for, as modules' vermagic will carry it."""
    # Read without following links: the tree came from an archive, its links may point at the host.
    uts = read_contained(kernel_dir, "include/generated/utsrelease.h")
    if uts is not None:
        m = _UTS.search(uts)
        if m:
            return m.group(1).decode(errors="replace")
    release = read_contained(kernel_dir, "include/config/kernel.release")
    if release is not None:
        return release.decode(errors="replace").strip() or None
    return None


_GCC_VERSION = re.compile(rb"^(?:#define\s+|)CONFIG_GCC_VERSION[ =](\d+)", re.M)


def read_gcc_major(kernel_dir: Path) -> int | None:
    """The major version of the gcc that built the kernel, as its headers record it (0 for clang)."""
    for rel in ("include/generated/autoconf.h", ".config"):
        data = read_contained(kernel_dir, rel)  # the tree is not ours: no link is followed
        m = _GCC_VERSION.search(data) if data else None
        if m:
            return int(m.group(1)) // 10000 or None
    return None


def _find_kernel_dir(root: Path, target: str) -> Path:
    family = distro.for_target(target)
    patterns = family.kernel_dir_globs if family else ("usr/src/*",)
    candidates = []
    for pattern in patterns:
        for match in sorted(glob.glob(str(root / pattern))):
            path = Path(match)
            if path.is_dir() and is_contained(root, path) and read_release(path):
                candidates.append(path)
    if not candidates:
        raise FetchError("the headers hold no kernel build directory (no include/generated/utsrelease.h "
                         f"under {', '.join(patterns)}): is a flavour package missing from 'headers'?")
    if len(candidates) > 1:
        names = ", ".join(str(c.relative_to(root)) for c in candidates)
        raise FetchError(f"the headers hold several kernel build directories ({names}): "
                         "give one kernel's packages per entry")
    return candidates[0]


def _facts(unpacked: Path) -> dict[str, Any] | None:
    """What every build of an unpacked kernel needs, worked out once at unpack and kept beside it."""
    try:
        facts = json.loads((unpacked / ".complete").read_text())
    except (OSError, ValueError):
        return None
    # Trees unpacked before the gcc was recorded are read again, once.
    return facts if isinstance(facts, dict) and "kernel_dir" in facts and "gcc" in facts else None


class HeadersCache:
    """``<root>/<key>/`` per distinct set of header files; each unpacked once, whatever asks."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._locks = KeyLocks.beside(root)
        self.unpacked = 0

    key = staticmethod(headers_key)

    def tree(self, target: str, files: list[Download]) -> KernelTree:
        key = self.key([f.sha256 for f in files])
        with self._locks.hold(key, f"unpacking the headers of {target} {key[:12]}"):
            final = self.root / key
            facts = _facts(final)
            if facts is None:
                self._unpack(target, files, final)
                facts = _facts(final)
                assert facts is not None
            return KernelTree(final / "root", final / "root" / facts["kernel_dir"], facts["release"],
                              facts["config_sha256"], facts.get("gcc"))

    def _unpack(self, target: str, files: list[Download], final: Path) -> None:
        family = distro.for_target(target)
        unpack = UNPACKERS[family.package_format if family else PackageFormat.deb]

        def fill(staging: Path) -> str:
            for download in files:
                try:
                    unpack(download.path, staging / "root")
                except FetchError as exc:
                    raise FetchError(f"{download.url}: {exc.message}", url=download.url) from None
            kernel_dir = _find_kernel_dir(staging / "root", target)
            config = read_contained(kernel_dir, ".config")
            facts = {"kernel_dir": str(kernel_dir.relative_to(staging / "root")), "release": read_release(kernel_dir),
                     "config_sha256": hashlib.sha256(config).hexdigest() if config is not None else None,
                     "gcc": read_gcc_major(kernel_dir)}
            return json.dumps(facts)

        atomic.install_dir(final, fill)
        self.unpacked += 1
