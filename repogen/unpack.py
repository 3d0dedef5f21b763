"""Unpack archives repogen did not make, member by member, so that nothing lands outside the tree.

Python's own tar filters changed across 3.11/3.12 patch releases (3.11.7's ``filter="tar"`` lets a
hard link to an absolute path followed by a regular file of the same name overwrite that path), and
``cpio`` writes through a symbolic link planted by an earlier package. So the checks are ours:

- a member name is relative and has no ``..`` component;
- no component above a member is traversed when it is a symbolic link: every directory is opened
  relative to its parent with ``O_NOFOLLOW``, so a link planted by an earlier member (or an earlier
  archive unpacked into the same tree) is never followed while writing;
- an existing file is unlinked before it is replaced, so neither a symbolic nor a hard link is
  written through;
- a hard link names a regular file already inside the tree;
- symbolic links are kept as they are (kernel headers need absolute ones such as
  ``build -> /usr/src/...``) unless ``contained_links`` asks that they stay inside the tree;
- no device, FIFO or socket; modes lose setuid, setgid, sticky and group/world write.

Tarballs (``.tar.*``, a ``.deb``'s data member) and ``rpm2cpio``'s cpio "newc" stream go through
the same :class:`TreeWriter`.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from repogen.errors import FetchError

_CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


class UnsafeArchive(FetchError):
    """An archive member that would leave its directory, or is not a plain file, link or directory."""

    def __init__(self, message: str) -> None:
        super().__init__(f"unsafe archive refused: {message}")


class MemberType(StrEnum):
    file = "file"
    directory = "directory"
    symlink = "symlink"
    hardlink = "hardlink"
    special = "special"  # device, FIFO, socket: never unpacked


@dataclass(frozen=True)
class Member:
    name: str
    type: MemberType
    mode: int = 0o644
    mtime: float | None = None
    linkname: str = ""  # symlink target, or the archive name a hard link points to


def safe_name(name: str) -> str:
    """``name`` as a relative, normalised path inside the tree; "" for the tree's root."""
    if "\0" in name:
        raise UnsafeArchive(f"member {name!r}: NUL in its name")
    if name.startswith("/"):
        raise UnsafeArchive(f"member {name!r}: absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"member {name!r}: '..' in its path")
    return "/".join(parts)


def file_mode(mode: int) -> int:
    """Permissions kept for a file: no setuid/setgid/sticky, no group/world write, owner rw."""
    return (stat.S_IMODE(mode) & 0o755) | 0o600


def dir_mode(mode: int) -> int:
    return (stat.S_IMODE(mode) & 0o755) | 0o700


class TreeWriter:
    """Writes members into ``root`` without ever following a link it did not check."""

    def __init__(self, root: Path, *, contained_links: bool = False) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.contained_links = contained_links
        self._root_fd = os.open(root, _DIR_FLAGS)

    def close(self) -> None:
        if self._root_fd >= 0:
            os.close(self._root_fd)
            self._root_fd = -1

    def __enter__(self) -> TreeWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- walking ----------------------------------------------------------------------------------
    def _open_dir(self, parts: list[str], member: str, *, create: bool) -> int:
        """An fd for the directory ``parts`` below the root; never through a symbolic link."""
        fd = os.dup(self._root_fd)
        try:
            for i, part in enumerate(parts):
                try:
                    next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(part, 0o755, dir_fd=fd)
                    next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        where = "/".join(parts[: i + 1])
                        st = self._lstat(part, fd)
                        what = "a symbolic link" if st and stat.S_ISLNK(st.st_mode) else "not a directory"
                        raise UnsafeArchive(f"member {member!r}: its parent {where!r} is {what} in the tree "
                                            "(refusing to write through it)") from None
                    raise
                os.close(fd)
                fd = next_fd
            return fd
        except BaseException:
            os.close(fd)
            raise

    @staticmethod
    def _lstat(name: str, dir_fd: int) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def _clear(self, name: str, dir_fd: int, member: str) -> None:
        """Remove what sits at ``name`` (a file or link: unlinked, never written through)."""
        st = self._lstat(name, dir_fd)
        if st is None:
            return
        if stat.S_ISDIR(st.st_mode):
            raise UnsafeArchive(f"member {member!r}: replaces a directory of the tree")
        os.unlink(name, dir_fd=dir_fd)

    # -- members ----------------------------------------------------------------------------------
    def add(self, member: Member, data: Readable | None = None) -> None:
        """Write one member; ``data`` is a regular file's content."""
        name = safe_name(member.name)
        if member.type is MemberType.special:
            raise UnsafeArchive(f"member {member.name!r}: a device, FIFO or socket")
        if not name:
            return  # the root itself ("./")
        *parents, leaf = name.split("/")
        parent_fd = self._open_dir(parents, member.name, create=True)
        try:
            if member.type is MemberType.directory:
                self._add_dir(leaf, parent_fd, member)
            elif member.type is MemberType.file:
                self._add_file(leaf, parent_fd, member, data)
            elif member.type is MemberType.symlink:
                self._add_symlink(name, leaf, parent_fd, member)
            else:
                self._add_hardlink(leaf, parent_fd, member)
        finally:
            os.close(parent_fd)

    def _add_dir(self, leaf: str, parent_fd: int, member: Member) -> None:
        st = self._lstat(leaf, parent_fd)
        if st is None:
            os.mkdir(leaf, 0o700, dir_fd=parent_fd)
        elif not stat.S_ISDIR(st.st_mode):
            kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "a file"
            raise UnsafeArchive(f"member {member.name!r}: a directory where the tree has {kind}")
        fd = os.open(leaf, _DIR_FLAGS, dir_fd=parent_fd)
        try:
            os.fchmod(fd, dir_mode(member.mode))
        finally:
            os.close(fd)

    def _add_file(self, leaf: str, parent_fd: int, member: Member, data: Readable | None) -> None:
        self._clear(leaf, parent_fd, member.name)
        fd = os.open(leaf, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=parent_fd)
        try:
            if data is not None:
                while chunk := data.read(_CHUNK):
                    _write_all(fd, chunk)
            os.fchmod(fd, file_mode(member.mode))
            if member.mtime is not None:
                os.utime(fd, (member.mtime, member.mtime))
        finally:
            os.close(fd)

    def _add_symlink(self, name: str, leaf: str, parent_fd: int, member: Member) -> None:
        target = member.linkname
        if not target or "\0" in target:
            raise UnsafeArchive(f"member {member.name!r}: empty or invalid symbolic link target")
        if self.contained_links:
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
            if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
                raise UnsafeArchive(f"member {member.name!r}: symbolic link to {target!r} leaves the tree")
        self._clear(leaf, parent_fd, member.name)
        os.symlink(target, leaf, dir_fd=parent_fd)

    def _add_hardlink(self, leaf: str, parent_fd: int, member: Member) -> None:
        if not member.linkname or member.linkname.startswith("/"):
            raise UnsafeArchive(f"member {member.name!r}: hard link to {member.linkname!r}, outside the tree")
        try:
            target = safe_name(member.linkname)
        except UnsafeArchive:
            raise UnsafeArchive(f"member {member.name!r}: hard link to {member.linkname!r}, outside the tree") \
                from None
        if not target:
            raise UnsafeArchive(f"member {member.name!r}: hard link to the tree's root")
        *parents, target_leaf = target.split("/")
        try:
            target_fd = self._open_dir(parents, member.name, create=False)
        except FileNotFoundError:
            target_fd = -1
        try:
            st = self._lstat(target_leaf, target_fd) if target_fd >= 0 else None
            if st is None or not stat.S_ISREG(st.st_mode):
                raise UnsafeArchive(f"member {member.name!r}: hard link to {member.linkname!r}, "
                                    "which is not a regular file already in the tree")
            self._clear(leaf, parent_fd, member.name)
            os.link(target_leaf, leaf, src_dir_fd=target_fd, dst_dir_fd=parent_fd, follow_symlinks=False)
        finally:
            if target_fd >= 0:
                os.close(target_fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# -- readers -----------------------------------------------------------------------------------------
def _tar_member(info: tarfile.TarInfo) -> Member:
    if info.isdir():
        kind = MemberType.directory
    elif info.isreg():
        kind = MemberType.file
    elif info.issym():
        kind = MemberType.symlink
    elif info.islnk():
        kind = MemberType.hardlink
    else:
        kind = MemberType.special
    return Member(info.name, kind, info.mode, float(info.mtime), info.linkname)


def extract_tar(tar: tarfile.TarFile, dest: Path, *, contained_links: bool = False) -> int:
    """Unpack every member of an open tar archive into ``dest``; the number of members."""
    count = 0
    with TreeWriter(dest, contained_links=contained_links) as writer:
        for info in tar:
            member = _tar_member(info)
            data = tar.extractfile(info) if member.type is MemberType.file else None
            try:
                writer.add(member, data)
            finally:
                if data is not None:
                    data.close()
            count += 1
    return count


_NEWC = (b"070701", b"070702")
_TRAILER = "TRAILER!!!"


class _Limited:
    """The next ``size`` bytes of a stream, as a file object (``read`` only)."""

    def __init__(self, stream: Readable, size: int) -> None:
        self.stream = stream
        self.left = size

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        n = self.left if n < 0 else min(n, self.left)
        chunk = self.stream.read(n)
        if not chunk:
            raise FetchError("cpio archive cut short inside a file")
        self.left -= len(chunk)
        return chunk

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass


def _read_exact(stream: Readable, size: int, what: str) -> bytes:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            raise FetchError(f"cpio archive cut short in {what}")
        data += chunk
    return data


def _cpio_entries(stream: Readable) -> Iterator[tuple[Member, _Limited]]:
    """(member, its data) per entry of a cpio "newc" stream; hard links become hard-link members.

    In newc, the names of a file with several links come first with no data, the last one carries
    it; so a hard link is emitted once its data has been written.
    """
    pending: dict[tuple[int, int, int], list[Member]] = {}
    written: dict[tuple[int, int, int], str] = {}
    offset = 0
    while True:
        header = _read_exact(stream, 110, "a header")
        if header[:6] not in _NEWC:
            raise FetchError(f"not a cpio newc archive (magic {header[:6]!r} at byte {offset})")
        try:
            (ino, mode, _uid, _gid, nlink, mtime, size, dev_major, dev_minor, _rmaj, _rmin, name_size,
             _check) = (int(header[6 + 8 * i: 14 + 8 * i], 16) for i in range(13))
        except ValueError:
            raise FetchError(f"corrupt cpio header at byte {offset}") from None
        if not 0 < name_size <= 4096:
            raise FetchError(f"corrupt cpio header at byte {offset}: name length {name_size}")
        name = _read_exact(stream, name_size, "a name").rstrip(b"\0").decode("utf-8", "surrogateescape")
        _read_exact(stream, -(110 + name_size) % 4, "padding")
        offset += 110 + name_size + (-(110 + name_size) % 4) + size + (-size % 4)
        if name == _TRAILER:
            break
        body = _Limited(stream, size)
        key = (dev_major, dev_minor, ino)
        if stat.S_ISREG(mode):
            if nlink > 1 and key in written:
                yield Member(name, MemberType.hardlink, mode, mtime, written[key]), body
            elif nlink > 1 and size == 0:
                pending.setdefault(key, []).append(Member(name, MemberType.file, mode, mtime))
            else:
                yield Member(name, MemberType.file, mode, mtime), body
                if nlink > 1:
                    written[key] = name
                    for link in pending.pop(key, []):
                        yield Member(link.name, MemberType.hardlink, mode, mtime, name), _Limited(stream, 0)
        elif stat.S_ISDIR(mode):
            yield Member(name, MemberType.directory, mode, mtime), body
        elif stat.S_ISLNK(mode):
            if size > 4096:
                raise FetchError(f"corrupt cpio entry {name!r}: symbolic link target of {size} bytes")
            target = body.read(size).decode("utf-8", "surrogateescape")
            yield Member(name, MemberType.symlink, mode, mtime, target), body
        else:
            yield Member(name, MemberType.special, mode, mtime), body
        body.drain()
        _read_exact(stream, -size % 4, "padding")
    for links in pending.values():  # names of a linked file whose data never came: empty files
        for link in links:
            yield link, _Limited(stream, 0)


def extract_cpio(stream: Readable, dest: Path, *, contained_links: bool = False) -> int:
    """Unpack a cpio "newc" stream (what ``rpm2cpio`` writes) into ``dest``; the number of members."""
    count = 0
    with TreeWriter(dest, contained_links=contained_links) as writer:
        for member, body in _cpio_entries(stream):
            writer.add(member, body if member.type is MemberType.file else None)
            count += 1
    return count


# -- reading a tree that came from an archive ----------------------------------------------------------
def is_contained(root: Path, path: Path) -> bool:
    """Whether ``path`` is below ``root`` with no symbolic link among its components (itself included)."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        return False
    current = root
    for part in rel.parts:
        if part == "..":
            return False
        current = current / part
        if current.is_symlink():
            return False
    return True


def read_contained(root: Path, rel: str) -> bytes | None:
    """The bytes of ``root/rel`` if it is a regular file reached without any symbolic link, else None."""
    try:
        name = safe_name(rel)
    except UnsafeArchive:
        return None
    *parents, leaf = name.split("/")
    fd = os.open(root, _DIR_FLAGS)
    try:
        for part in parents:
            try:
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError:
                return None
            os.close(fd)
            fd = next_fd
        try:
            file_fd = os.open(leaf, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=fd)
        except OSError:
            return None
        with os.fdopen(file_fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                return None
            return fh.read()
    finally:
        os.close(fd)
