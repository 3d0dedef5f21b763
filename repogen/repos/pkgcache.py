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
from concurrent.futures import ProcessPoolExecutor
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
    reader: Callable[[Path, str], Record],
    stats: ReadStats,
    valid: Callable[[Record], bool] = lambda record: True,
) -> list[Record]:
    """A record for every path, in order, reading only the packages the cache has never seen.

    ``reader(path, sha256)`` must be picklable (it may run in a worker process) and raise
    ``PublishError`` for a file that is not a valid package. A cached record that ``valid`` rejects
    (made under other options) is read again.
    """
    file_stats = [os.stat(path) for path in paths]
    digests = cache.known_digests(file_stats)
    fresh: list[tuple[os.stat_result, str]] = []
    for index, digest in enumerate(digests):
        if digest is None:
            digest = file_digest(paths[index])
            digests[index] = digest
            fresh.append((file_stats[index], digest))
            stats.hashed += 1
    known = {digest: record for digest, record in cache.get(kind, [d for d in digests if d is not None]).items()
             if valid(record)}
    to_read: dict[str, Path] = {}
    for path, digest in zip(paths, digests, strict=True):
        assert digest is not None
        if digest not in known and digest not in to_read:
            to_read[digest] = path
    stats.cached += sum(1 for d in digests if d in known)
    new_records = _read_all(list(to_read.items()), reader)
    stats.read += len(new_records)
    cache.put(new_records)
    cache.remember_digests(fresh)
    cache.commit()
    known.update({record.sha256: record for record in new_records})
    return [known[digest] for digest in digests if digest is not None]


def _read_all(jobs: list[tuple[str, Path]], reader: Callable[[Path, str], Record]) -> list[Record]:
    if len(jobs) < _PARALLEL_FROM or (os.cpu_count() or 1) < 2:
        return [reader(path, digest) for digest, path in jobs]
    workers = min(os.cpu_count() or 1, 8)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        paths = [path for _, path in jobs]
        digests = [digest for digest, _ in jobs]
        return list(pool.map(reader, paths, digests, chunksize=max(1, len(jobs) // (workers * 8))))
