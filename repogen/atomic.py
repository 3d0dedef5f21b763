"""All-or-nothing files and directories: written beside their final name, then renamed into place.

A reader (or the next run, after a kill -9 or a power cut) sees the old state or the new one, never
half of one: a directory is filled under a scratch name owned by this process (see
:mod:`repogen.locks`), marked ``.complete``, and renamed to its final name; with ``durable`` its files
and directories are fsynced first, and the parent directory after, so the rename cannot reach the disk
before the data it names.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import stat
import threading
from collections.abc import Callable
from pathlib import Path

from repogen import locks

COMPLETE = ".complete"


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every directory under ``root`` and every file only linked once.

    A file with several links is a hard link to a store object or to an earlier generation's file,
    both made durable when they were written: syncing them again would only cost time.
    """
    for directory, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        fsync_dir(Path(directory))


def sync_filesystem(path: Path) -> None:
    """Flush the whole file system holding ``path`` (syncfs(2)): one call for a tree too large to
    fsync file by file (a shared package pool)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if ctypes.CDLL(None, use_errno=True).syncfs(fd) != 0:
            raise OSError(ctypes.get_errno(), "syncfs failed", str(path))
    finally:
        os.close(fd)


def write_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` durably: a scratch file, fsync, rename, fsync the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(locks.owned(f".{path.name}") + f"~{threading.get_ident()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def copy_file(source: Path, dest: Path, mode: int = 0o644) -> None:
    """Copy ``source`` to ``dest`` durably (scratch name, fsync, rename, fsync the directory)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(locks.owned(f".{dest.name}") + f"~{threading.get_ident()}")
    try:
        shutil.copyfile(source, tmp)
        os.chmod(tmp, mode)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(dest.parent)


def completed(final: Path) -> str | None:
    """The text a complete directory was marked with, or None if it is missing or incomplete."""
    try:
        return (final / COMPLETE).read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None


def install_dir(final: Path, fill: Callable[[Path], str | None], *, durable: bool = False,
                finish: Callable[[Path], None] | None = None) -> str:
    """Build ``final`` all at once: ``fill(staging)`` writes the content into a scratch directory
    beside it (its return value is kept in ``.complete``; then ``finish(staging)``, if given), which is
    then renamed to ``final``.

    Callers hold the key's lock (:class:`repogen.locks.KeyLocks`), so an existing ``final`` here is an
    incomplete leftover: it is moved aside and removed, never deleted under a reader of a complete one.
    If ``fill`` fails, nothing is left behind; a kill -9 leaves a scratch directory that
    :func:`repogen.locks.sweep` removes on the next run. Returns the ``.complete`` text.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.with_name(locks.owned(f".{final.name}.staging") + f"~{threading.get_ident()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        marker = fill(staging) or ""
        (staging / COMPLETE).write_text(marker)
        if finish is not None:  # e.g. seal it read-only, once complete
            finish(staging)
        if durable:
            fsync_tree(staging)
        if (done := completed(final)) is not None:
            return done  # filled meanwhile under another key: keep the one readers may already use
        if final.exists() or final.is_symlink():
            old = final.with_name(locks.owned(f".{final.name}.old") + f"~{threading.get_ident()}")
            os.rename(final, old)
            shutil.rmtree(old, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
        try:
            os.rename(staging, final)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or (done := completed(final)) is None:
                raise
            return done
        if durable:
            fsync_dir(final.parent)
        return marker
    finally:
        shutil.rmtree(staging, ignore_errors=True)
