"""Who owns what: per-key locks shared by threads and processes, and owners that die with their process.

Two ``repogen`` runs on one home (or two threads of one run) must not fetch, unpack, prepare or build
the same thing at once. :class:`KeyLocks` is the one lock for that: a thread lock per key (threads of
this process) around an ``flock(2)`` on ``<dir>/<key>.lock`` (other processes). The kernel drops an
flock when its process dies, kill -9 included, so a crashed run never leaves a lock behind.

Scratch files and directories carry their owner in their name (:func:`owned`): ``<base>~run<pid>-<start>``
where ``<start>`` is the process's start time in clock ticks since boot, so a recycled pid is not
mistaken for the owner. :func:`sweep` removes what dead owners left and never touches a live one's.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

_OWNER = re.compile(r"~run(\d+)-(\d+)(?:~|$)")


def _start_time(pid: int) -> int | None:
    """The process's start time (clock ticks after boot), or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: fields after the last ')' are safe.
    return int(stat.rsplit(")", 1)[1].split()[19])


def token(pid: int | None = None) -> str:
    """This process's (or ``pid``'s) identity: ``<pid>-<start time>``, unique on this host since boot."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}-{_start_time(pid) or 0}"


HOST = socket.gethostname()


def alive(owner: str) -> bool:
    """Whether the process named by a :func:`token` still runs (a recycled pid does not count)."""
    try:
        pid_text, start_text = owner.split("-", 1)
        pid, start = int(pid_text), int(start_text)
    except ValueError:
        return True  # not ours to judge: keep it
    return _start_time(pid) == start


def owned(base: str) -> str:
    """A scratch name for ``base`` that says this process owns it: ``<base>~run<pid>-<start>``."""
    return f"{base}~run{token()}"


def owner_of(name: str) -> str | None:
    """The owner token in a name made by :func:`owned` (or a ``mkstemp`` prefix of one), else None."""
    match = _OWNER.search(name)
    return f"{match.group(1)}-{match.group(2)}" if match else None


def sweep(directory: Path, *, keep: Callable[[Path], bool] = lambda _path: False) -> int:
    """Remove the entries of ``directory`` whose owner is dead; returns how many were removed.

    Entries without an owner in their name, entries of live owners and those ``keep`` accepts stay.
    """
    removed = 0
    try:
        entries = list(directory.iterdir())
    except FileNotFoundError:
        return 0
    for entry in entries:
        owner = owner_of(entry.name)
        if owner is None or alive(owner) or keep(entry):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        removed += 1
    return removed


# -- per-key locks ----------------------------------------------------------------------------------

Notifier = Callable[[str], None]
_notifier: Notifier | None = None


def notify_waits(notifier: Notifier | None) -> None:
    """Where "waiting for ..." messages go (the CLI's console); None: nowhere."""
    global _notifier
    _notifier = notifier


class KeyLocks:
    """One lock per key for the threads of this process and for other processes, in ``directory``.

    ``with locks.hold(key, what="building x"):`` waits for whoever holds ``key`` (saying so once
    when it is another process) and holds it until the block ends.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._threads: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    @classmethod
    def beside(cls, cache: Path) -> KeyLocks:
        """The locks of a cache directory, kept out of it: ``<parent>/.locks/<name>/``."""
        return cls(cache.parent / ".locks" / cache.name)

    def path(self, key: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", key)[:80]
        if safe != key:
            safe += "." + hashlib.sha256(key.encode()).hexdigest()[:16]
        return self.directory / f"{safe}.lock"

    @contextlib.contextmanager
    def hold(self, key: str, what: str | None = None) -> Iterator[None]:
        with self._guard:
            thread_lock = self._threads.setdefault(key, threading.Lock())
        with thread_lock:
            path = self.path(key)
            fd = self._acquire(path, what or key)
            try:
                yield
            finally:
                # Removed while still held (one file per build key would pile up): a process waiting
                # on this file finds it unlinked once it gets the lock, and starts again.
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                os.close(fd)  # closing the descriptor releases the flock

    def _acquire(self, path: Path, what: str) -> int:
        told = False
        for _ in range(10_000):  # bounded: only a file removed under a waiter makes it go round
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                        raise
                    if _notifier is not None and not told:
                        told = True
                        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another run"
                        _notifier(f"waiting for {holder} ({what})")
                    fcntl.flock(fd, fcntl.LOCK_EX)
                held = os.fstat(fd)
                try:
                    current = os.stat(path)
                except FileNotFoundError:
                    current = None
                if current is not None and (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino):
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, f"pid {os.getpid()} on {HOST}\n".encode(), 0)
                    return fd
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        raise OSError(errno.EAGAIN, f"could not lock {path}")
