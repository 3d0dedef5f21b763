"""Who owns a tree a build container writes, and its modes, changed without following a link.

A work copy or a prepare output holds whatever a driver source or a recipe put there, symbolic
links to host files included; ``os.chmod``/``os.chown`` on such a path would change the host file.
Every change here is made through a descriptor opened with ``O_NOFOLLOW`` (links are only
``lchown``-ed), so nothing outside the tree is ever touched.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

_NOFOLLOW = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def container_user() -> tuple[int, int]:
    """The uid:gid build containers run as: the caller's, or the images' ``builder`` (1000) for root."""
    return (os.getuid(), os.getgid()) if os.getuid() != 0 else (1000, 1000)


def _each(root: Path, change: Callable[[int, os.stat_result], None], link: Callable[[str], None]) -> None:
    """Apply ``change`` to an fd of every directory and regular file under ``root`` (itself included)
    and ``link`` to every symbolic link; other entries (FIFOs, devices) are left alone."""
    paths = [str(root)]
    for dirpath, dirnames, filenames in os.walk(root):  # never descends into a linked directory
        paths += [os.path.join(dirpath, name) for name in dirnames + filenames]
    for path in paths:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            link(path)
        elif stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
            fd = os.open(path, _NOFOLLOW)
            try:
                change(fd, os.fstat(fd))
            finally:
                os.close(fd)


def hand_over(root: Path, uid: int, gid: int) -> None:
    """Give ``root`` to ``uid:gid`` (the build container's user), writable by that owner only.

    Group and world bits are left as they were minus write: nothing becomes 0666/0777.
    """
    def change(fd: int, st: os.stat_result) -> None:
        if os.getuid() == 0 and (st.st_uid, st.st_gid) != (uid, gid):
            os.fchown(fd, uid, gid)
        os.fchmod(fd, (stat.S_IMODE(st.st_mode) & 0o755) | (0o700 if stat.S_ISDIR(st.st_mode) else 0o600))

    def link(path: str) -> None:
        if os.getuid() == 0:
            os.chown(path, uid, gid, follow_symlinks=False)

    _each(root, change, link)


def seal(root: Path) -> None:
    """Make ``root`` a read-only cache owned by the caller: readable by all, writable by none."""
    uid, gid = os.getuid(), os.getgid()

    def change(fd: int, st: os.stat_result) -> None:
        if uid == 0 and (st.st_uid, st.st_gid) != (uid, gid):
            os.fchown(fd, uid, gid)
        executable = stat.S_ISDIR(st.st_mode) or st.st_mode & stat.S_IXUSR
        os.fchmod(fd, 0o555 if executable else 0o444)

    def link(path: str) -> None:
        if uid == 0:
            os.chown(path, uid, gid, follow_symlinks=False)

    _each(root, change, link)


def unseal(root: Path) -> None:
    """Let the caller remove a sealed tree (root needs no help; another user does)."""
    if root.exists() and not root.is_symlink():
        _each(root, lambda fd, st: os.fchmod(fd, stat.S_IMODE(st.st_mode) | stat.S_IWUSR)
              if stat.S_ISDIR(st.st_mode) else None, lambda _path: None)
