"""What was read from each package, cached in SQLite so a publish re-reads only new packages.

Two levels: a file's identity (device, inode, size, mtime_ns) maps to its sha256 without reading it,
and a sha256 maps to what the index needs (a rendered ``Packages`` stanza, createrepo_c XML chunks).
Pool files are hard-linked from one tree to the next, so they keep their inode and hit the first level;
a copied file is hashed once and hits the second. The cache is disposable: a broken one is rebuilt.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

# Bump when what is cached changes shape or meaning (layout, stanza fields): old rows are dropped.
SCHEMA_VERSION = 3

_CHUNK = 1 << 20
_PARALLEL_FROM = 64  # below this, a process pool costs more than it saves


@dataclass(frozen=True)
class DebRecord:
    """One .deb as the APT index needs it; ``stanza`` is its whole Packages paragraph."""

    sha256: str
    name: str
    version: str
    arch: str
    size: int
    pool_path: str
    stanza: str


@dataclass(frozen=True)
class RpmRecord:
    """One .rpm as repodata needs it: NEVRA for retention, createrepo_c's XML chunks for the index."""

    sha256: str
    name: str
    epoch: str
    version: str
    release: str
    arch: str
    size: int
    pool_path: str
    primary: str
    filelists: str
    other: str


Record = TypeVar("Record", DebRecord, RpmRecord)


@dataclass
class ReadStats:
    """How much work an index needed: the incremental-publish promise, made measurable."""

    read: int = 0
    cached: int = 0
    hashed: int = 0


def file_digest(path: Path) -> str:
    """The sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _file_key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class PackageCache:
    """The SQLite store under ``cache_dir``; one connection, used from the publishing process only."""

    def __init__(self, cache_dir: Path) -> None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        self.path = cache_dir / "packages.sqlite3"
        try:
            self._db = self._open()
        except sqlite3.DatabaseError:
            # A cache is never worth failing a publish for: start again from nothing.
            self.path.unlink(missing_ok=True)
            self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version != SCHEMA_VERSION:
            db.executescript("DROP TABLE IF EXISTS files; DROP TABLE IF EXISTS deb; DROP TABLE IF EXISTS rpm;")
        db.executescript(
            """
            CREATE TABLE IF NOT EXISTS files (
                dev INTEGER, ino INTEGER, size INTEGER, mtime_ns INTEGER, sha256 TEXT NOT NULL,
                PRIMARY KEY (dev, ino, size, mtime_ns)) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS deb (
                sha256 TEXT PRIMARY KEY, name TEXT, version TEXT, arch TEXT, size INTEGER,
                pool_path TEXT, stanza TEXT) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS rpm (
                sha256 TEXT PRIMARY KEY, name TEXT, epoch TEXT, version TEXT, release TEXT, arch TEXT,
                size INTEGER, pool_path TEXT, primary_xml TEXT, filelists_xml TEXT, other_xml TEXT)
                WITHOUT ROWID;
            """
        )
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        db.commit()
        return db

    def close(self) -> None:
        self._db.close()

    # -- level 1: file identity -> sha256 ----------------------------------------------------

    def known_digests(self, stats: Sequence[os.stat_result]) -> list[str | None]:
        """sha256 for each stat whose file was hashed before, unchanged since; None otherwise."""
        keys = {_file_key(st) for st in stats}
        found: dict[tuple[int, int, int, int], str] = {}
        sizes = sorted({key[2] for key in keys})
        # Select by size (an indexed prefix would need dev,ino first): read the rows, match in Python.
        for start in range(0, len(sizes), 500):
            chunk = sizes[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for dev, ino, size, mtime_ns, sha in self._db.execute(
                f"SELECT dev, ino, size, mtime_ns, sha256 FROM files WHERE size IN ({marks})", chunk
            ):
                key = (dev, ino, size, mtime_ns)
                if key in keys:
                    found[key] = sha
        return [found.get(_file_key(st)) for st in stats]

    def remember_digests(self, entries: Iterable[tuple[os.stat_result, str]]) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)",
            [(*_file_key(st), sha) for st, sha in entries],
        )

    # -- level 2: sha256 -> record -----------------------------------------------------------

    def get(self, kind: type[Record], digests: Iterable[str]) -> dict[str, Record]:
        table = _table(kind)
        wanted = sorted(set(digests))
        out: dict[str, Record] = {}
        for start in range(0, len(wanted), 900):
            chunk = wanted[start:start + 900]
            marks = ",".join("?" * len(chunk))
            for row in self._db.execute(f"SELECT * FROM {table} WHERE sha256 IN ({marks})", chunk):
                out[row[0]] = kind(*row)
        return out

    def put(self, records: Iterable[DebRecord | RpmRecord]) -> None:
        for record in records:
            table = _table(type(record))
            marks = ",".join("?" * len(fields(record)))
            self._db.execute(f"INSERT OR REPLACE INTO {table} VALUES ({marks})", astuple(record))

    def commit(self) -> None:
        self._db.commit()


def _table(kind: type[Any]) -> str:
    return {DebRecord: "deb", RpmRecord: "rpm"}[kind]


def identify(
    paths: Sequence[Path],
    cache: PackageCache,
    kind: type[Record],
    reader: Callable[[Path, str | None], Record],
    stats: ReadStats,
    valid: Callable[[Record], bool] = lambda record: True,
) -> list[Record]:
    """A record for every path, in order, reading only the packages the cache has never seen.

    ``reader(path, sha256_or_None)`` must be picklable (it may run in a worker process), compute the
    sha256 itself when given None, and raise ``PublishError`` for a file that is not a valid package.
    A cached record that ``valid`` rejects (made under other options) is read again.
    """
    file_stats = [os.stat(path) for path in paths]
    digests = cache.known_digests(file_stats)
    records: list[Record | None] = [None] * len(paths)

    def lookup(indexes: list[int]) -> None:
        found = cache.get(kind, [digests[i] for i in indexes if digests[i] is not None])
        for i in indexes:
            record = found.get(digests[i] or "")
            if record is not None and valid(record):
                records[i] = record
                stats.cached += 1

    lookup(list(range(len(paths))))
    pending = [i for i, record in enumerate(records) if record is None]
    unhashed = [i for i in pending if digests[i] is None]
    # Hash before parsing, so a known package under a new name or inode is not parsed again.
    # Reading a file releases the GIL: threads overlap the I/O.
    with ThreadPoolExecutor(max_workers=4) as threads:
        for i, digest in zip(unhashed, threads.map(file_digest, [paths[i] for i in unhashed]), strict=True):
            digests[i] = digest
    lookup(unhashed)
    pending = [i for i in pending if records[i] is None]
    if len(pending) < _PARALLEL_FROM or (os.cpu_count() or 1) < 2:
        new_records = [reader(paths[i], digests[i]) for i in pending]
    else:
        new_records = _read_parallel([paths[i] for i in pending], [digests[i] for i in pending], reader)
    for i, record in zip(pending, new_records, strict=True):
        records[i] = record
        digests[i] = record.sha256
    stats.read += len(new_records)
    stats.hashed += len(unhashed)
    cache.put(new_records)
    cache.remember_digests((file_stats[i], digests[i] or "") for i in unhashed)
    cache.commit()
    return [record for record in records if record is not None]


def _read_parallel(paths: list[Path], digests: list[str | None],
                   reader: Callable[[Path, str | None], Record]) -> list[Record]:
    workers = min(os.cpu_count() or 1, 8)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(reader, paths, digests, chunksize=max(1, len(paths) // (workers * 8))))
