"""What was read from each package, cached in SQLite so a publish re-reads only new packages.

Two levels: a file's identity (device, inode, size, mtime_ns) maps to its sha256 without reading it,
and a sha256 maps to what the index needs (a rendered ``Packages`` stanza, createrepo_c XML chunks).
Pool files are hard-linked from one tree to the next, so they keep their inode and hit the first level;
a copied file is hashed once and hits the second. The cache is disposable: a broken one is rebuilt.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import multiprocessing
import os
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any, NamedTuple, TypeVar, cast

from repogen.repos.compress import Piece

# Bump when what is cached changes shape or meaning (layout, stanza fields): old rows are dropped.
SCHEMA_VERSION = 4

_CHUNK = 1 << 20
_PARALLEL_FROM = 64  # below this, a process pool costs more than it saves
_BATCH = 2500  # records per background cache write while the workers read
#: A compressed piece of an index no publish used for this long is dropped (it is recompressed if
#: ever needed again: a few milliseconds).
PIECES_KEPT_SECONDS = 14 * 86400


# Records are named tuples: 10,000 of them are made from cache rows at each publish, and a tuple is
# made (and pickled from a worker) several times faster than a frozen dataclass.
class DebRecord(NamedTuple):
    """One .deb as the APT index needs it; ``stanza`` is its whole Packages paragraph."""

    sha256: str
    name: str
    version: str
    arch: str
    size: int
    pool_path: str
    stanza: str


class RpmRecord(NamedTuple):
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


def file_digest(path: str | Path) -> str:
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
        # One connection; new records are written by one background thread (sqlite releases the GIL)
        # while the caller links the pool and writes the index; every other call waits for it first.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pkgcache")
        self._pending: Future[None] | None = None
        db = sqlite3.connect(self.path, check_same_thread=False)
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
            -- rowid tables: WITHOUT ROWID stores these kilobyte rows in the key's b-tree (2x slower).
            CREATE TABLE IF NOT EXISTS deb (
                sha256 TEXT PRIMARY KEY, name TEXT, version TEXT, arch TEXT, size INTEGER,
                pool_path TEXT, stanza TEXT);
            CREATE TABLE IF NOT EXISTS rpm (
                sha256 TEXT PRIMARY KEY, name TEXT, epoch TEXT, version TEXT, release TEXT, arch TEXT,
                size INTEGER, pool_path TEXT, primary_xml TEXT, filelists_xml TEXT, other_xml TEXT);
            -- Pieces of index files and their compressions (repos.compress), by what they are made of;
            -- "used" is when a publish last used one (unix seconds): unused ones are dropped after a
            -- while. Small columns first: a row's blobs spill into overflow pages, read only when asked.
            DROP TABLE IF EXISTS pieces;  -- (earlier layouts)
            DROP TABLE IF EXISTS index_pieces;
            CREATE TABLE IF NOT EXISTS index_parts (
                key BLOB PRIMARY KEY, used INTEGER, xz_unpadded INTEGER, text BLOB, deflate BLOB, xz_block BLOB);
            CREATE INDEX IF NOT EXISTS index_parts_used ON index_parts (used);
            -- An index file's size and hashes (JSON), by its sha256.
            CREATE TABLE IF NOT EXISTS index_files (key BLOB PRIMARY KEY, info TEXT, used INTEGER);
            """
        )
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        db.commit()
        return db

    def close(self) -> None:
        try:
            self._wait()
        finally:
            self._writer.shutdown()
            self._db.close()

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    # -- level 1: file identity -> sha256 ----------------------------------------------------

    def known_digests(self, stats: Sequence[os.stat_result]) -> list[str | None]:
        """sha256 for each stat whose file was hashed before, unchanged since; None otherwise."""
        self._wait()
        if not stats:
            return []
        keys = list(map(attrgetter("st_dev", "st_ino", "st_size", "st_mtime_ns"), stats))
        # The rows of the inode ranges the files are in (files made together have nearby inodes): an
        # indexed range each, matched in Python; not the rows of other files (the pool's copies, say).
        rows: list[tuple[int, int, int, int, str]] = []
        for dev, low, high in _inode_ranges(key[:2] for key in keys):
            rows += self._db.execute("SELECT dev, ino, size, mtime_ns, sha256 FROM files "
                                     "WHERE dev = ? AND ino BETWEEN ? AND ?", (dev, low, high)).fetchall()
        found = dict(zip(map(itemgetter(0, 1, 2, 3), rows), map(itemgetter(4), rows), strict=True))
        return list(map(found.get, keys))

    def remember_digests(self, entries: Iterable[tuple[os.stat_result, str]]) -> None:
        """Store file identities, in the background like ``put`` (the next call on the cache waits)."""
        rows = [(*_file_key(st), sha) for st, sha in entries]
        if rows:
            self._pending = self._writer.submit(self._remember, rows, self._pending)

    def _remember(self, rows: list[tuple[int, int, int, int, str]], previous: Future[None] | None) -> None:
        if previous is not None:
            previous.result()  # already done (one writer thread, in order): re-raise its error, if any
        rows.sort()
        self._db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)", rows)
        self._db.commit()

    # -- level 2: sha256 -> record -----------------------------------------------------------

    def get(self, kind: type[Record], digests: Iterable[str], pool_prefix: str = "") -> dict[str, Record]:
        """The cached records of these sha256s whose pool path starts with ``pool_prefix`` (and maybe
        others: callers look up what they want)."""
        self._wait()
        table = _table(kind)
        wanted = set(digests)
        make = partial(tuple.__new__, kind)  # (kind._make, without a Python call per row)
        where = "substr(pool_path, 1, ?) = ?"
        bound: tuple[int, str] = (len(pool_prefix), pool_prefix)
        if len(wanted) > 900:
            # Most of a repository's packages (a republish): one scan of the whole table costs a third
            # of looking each up, unless the table holds many more (old packages, other sites).
            (rows,) = self._db.execute(f"SELECT max(rowid) FROM {table}").fetchone()
            if (rows or 0) < 3 * len(wanted):
                found = list(map(make, self._db.execute(f"SELECT * FROM {table} WHERE {where}", bound)))
                return dict(zip(map(itemgetter(0), found), found, strict=True))
        ordered = sorted(wanted)
        out: dict[str, Record] = {}
        for start in range(0, len(ordered), 900):
            chunk: list[Any] = ordered[start:start + 900]
            marks = ",".join("?" * len(chunk))
            for row in self._db.execute(f"SELECT * FROM {table} WHERE sha256 IN ({marks}) AND {where}",
                                        [*chunk, *bound]):
                out[row[0]] = make(row)
        return out

    def put(self, records: Iterable[DebRecord | RpmRecord]) -> None:
        """Store new records and commit, in the background (the next call on the cache waits)."""
        by_kind: dict[type[Any], list[tuple[Any, ...]]] = {}
        for record in records:
            kind = type(record)
            by_kind.setdefault(kind, []).append(tuple(record))
        if by_kind:
            # Queued behind a pending write (one writer thread: they run in order), never waiting.
            self._pending = self._writer.submit(self._insert, by_kind, self._pending)

    def _insert(self, by_kind: dict[type[Any], list[tuple[Any, ...]]], previous: Future[None] | None = None) -> None:
        if previous is not None:
            previous.result()  # already done (one writer thread, in order): re-raise its error, if any
        for kind, rows in by_kind.items():
            rows.sort()  # in key order: appends to the b-tree instead of splitting pages all over
            marks = ",".join("?" * len(kind._fields))
            self._db.executemany(f"INSERT OR REPLACE INTO {_table(kind)} VALUES ({marks})", rows)
        self._db.commit()

    # -- compressed pieces of index files ------------------------------------------------------

    def pieces(self, keys: Iterable[bytes]) -> dict[bytes, Piece]:
        """The cached pieces among ``keys``."""
        self._wait()
        wanted = sorted(set(keys))
        out: dict[bytes, Piece] = {}
        for start in range(0, len(wanted), 900):
            chunk = wanted[start:start + 900]
            query = ("SELECT key, text, deflate, xz_block, xz_unpadded FROM index_parts "
                     f"WHERE key IN ({','.join('?' * len(chunk))})")
            for row in self._db.execute(query, chunk):
                out[row[0]] = Piece(*row)
        return out

    def index_files(self, keys: Iterable[bytes]) -> dict[bytes, dict[str, str | int]]:
        """The remembered size and hashes of index files, by the key of their content."""
        self._wait()
        wanted = sorted(set(keys))
        query = f"SELECT key, info FROM index_files WHERE key IN ({','.join('?' * len(wanted))})"
        return {key: json.loads(info) for key, info in self._db.execute(query, wanted)} if wanted else {}

    def keep_pieces(self, new: Sequence[Piece], used: Iterable[bytes], files: Mapping[bytes, Mapping[str, str | int]],
                    now: int, max_unused_seconds: int = PIECES_KEPT_SECONDS) -> None:
        """Store new pieces and index files' hashes (``files``), mark the ``used`` pieces used at
        ``now``, and drop what no publish used for ``max_unused_seconds``; in the background like ``put``."""
        rows = [(key, json.dumps(info), now) for key, info in files.items()]
        self._pending = self._writer.submit(self._keep_pieces, list(new), sorted(set(used)), rows, now,
                                            max_unused_seconds, self._pending)

    def _keep_pieces(self, new: list[Piece], used: list[bytes], files: list[tuple[bytes, str, int]], now: int,
                     max_unused_seconds: int, previous: Future[None] | None) -> None:
        if previous is not None:
            previous.result()
        self._db.executemany("INSERT OR REPLACE INTO index_parts VALUES (?, ?, ?, ?, ?, ?)",
                             [(p.key, now, p.xz_unpadded, p.text, p.deflate, p.xz_block) for p in new])
        self._db.executemany("INSERT OR REPLACE INTO index_files VALUES (?, ?, ?)", files)
        for start in range(0, len(used), 900):
            chunk = used[start:start + 900]
            marks = ",".join("?" * len(chunk))
            self._db.execute(f"UPDATE index_parts SET used = ? WHERE used < ? AND key IN ({marks})",
                             [now, now - 3600, *chunk])  # (at most once an hour: fewer page writes)
        for table in ("index_parts", "index_files"):
            self._db.execute(f"DELETE FROM {table} WHERE used < ?", (now - max_unused_seconds,))
        self._db.commit()

    def has_record(self, kind: type[Any], digest: str) -> bool:
        """Whether the cache has a record of this sha256."""
        self._wait()
        query = f"SELECT 1 FROM {_table(kind)} WHERE sha256 = ?"
        return self._db.execute(query, (digest,)).fetchone() is not None

    def digests(self, kind: type[Record]) -> frozenset[str]:
        """Every sha256 the cache has a record of (to skip parsing a known package under a new name)."""
        self._wait()
        return frozenset(sha for (sha,) in self._db.execute(f"SELECT sha256 FROM {_table(kind)}"))

    def commit(self) -> None:
        self._wait()
        self._db.commit()


def _inode_ranges(files: Iterable[tuple[int, int]], gap: int = 4096, most: int = 64) -> list[tuple[int, int, int]]:
    """(dev, lowest, highest inode) covering every (dev, inode) given: runs split where inodes are
    more than ``gap`` apart, at most ``most`` of them (the closest runs are merged)."""
    ranges: list[tuple[int, int, int]] = []
    by_dev: dict[int, list[int]] = defaultdict(list)
    for dev, ino in files:
        by_dev[dev].append(ino)
    for dev, inodes in by_dev.items():
        inodes.sort()
        cuts = sorted((b - a, i) for i, (a, b) in enumerate(itertools.pairwise(inodes)) if b - a > gap)
        ends = sorted(i for _size, i in cuts[-most:])  # the widest gaps
        start = 0
        for end in [*ends, len(inodes) - 1]:
            ranges.append((dev, inodes[start], inodes[end]))
            start = end + 1
    return ranges


def _table(kind: type[Any]) -> str:
    return {DebRecord: "deb", RpmRecord: "rpm"}[kind]


def identify(
    paths: Sequence[str],
    cache: PackageCache,
    kind: type[Record],
    reader: Callable[[str, str | None, Container[str]], Record | str],
    stats: ReadStats,
    pool_prefix: str = "",
    known_stats: Sequence[os.stat_result] = (),
    known_first: Sequence[str] = (),
) -> list[Record]:
    """A record for every path, in order, reading only the packages the cache has never seen.

    ``reader(path, sha256_or_None, known)`` must be picklable (it may run in a worker process). Given
    None, it computes the sha256 itself first and, when that digest is in ``known`` (the cache has the
    package), returns just the digest instead of parsing; it raises ``PublishError`` for a file that is
    not a valid package. Each file is read once: hashing and parsing are one pass, in parallel for many.
    A cached record whose pool path does not start with ``pool_prefix`` (made under other options) is
    read again.
    ``known_stats`` are the ``os.stat`` of the last paths, when the caller has them already;
    ``known_first`` the sha256 of the first paths (files that never change: the live manifest's
    pool files), which are then not looked at at all unless the cache lacks their record.
    ``stats`` counts each package (sha256) once, however many of the paths hold it.
    """
    # ``known_stats``: those of the last paths, taken already (check_inputs does, for the inputs).
    stat = os.stat
    head = len(known_first)
    file_stats: list[os.stat_result] = [stat(path) for path in paths[head:len(paths) - len(known_stats)]]
    file_stats += known_stats
    digests: list[str | None] = [*known_first, *cache.known_digests(file_stats)]
    records: list[Record | None] = [None] * len(paths)
    from_cache: set[str] = set()

    found: dict[str | None, Record] = {}  # valid cached records by digest

    def lookup(indexes: Sequence[int] | None) -> None:
        """Records for ``digests[i]`` (all of them for None) from the cache."""
        # Each record is fetched (and checked) once, however many paths hold it (inputs copied in
        # the pool, an input already published).
        some = set(digests) if indexes is None else {digests[i] for i in indexes}
        some.difference_update(found)
        some.discard(None)
        wanted = cast("set[str]", some)
        if wanted:  # (a get waits for the cache's background writes)
            fetched = cache.get(kind, wanted, pool_prefix)
            found.update({sha: record for sha in wanted if (record := fetched.get(sha)) is not None})
        if indexes is None:
            records[:] = map(found.get, digests)
        else:
            for i in indexes:
                records[i] = found.get(digests[i])
        from_cache.update(sha for sha in found if sha is not None)

    lookup(None)
    unhashed = [i for i, digest in enumerate(digests) if digest is None]
    # Unknown files: hash, and parse only those whose digest the cache does not know (a known package
    # under a new name or inode is not parsed again).
    known: Container[str] = frozenset()
    if unhashed:  # every digest for the worker processes; a few files ask the cache one by one
        known = cache.digests(kind) if _parallel(len(unhashed)) else _KnownDigests(cache, kind)
    # New records go to the cache's writer thread as the workers return them (its disk writes overlap
    # the reading); a package met twice under two names is written twice, harmlessly (same row).
    results = _scan(kind, [paths[i] for i in unhashed], [None] * len(unhashed), reader, known,
                    on_records=cache.put)
    known_again: list[int] = []
    read: list[Record] = []
    for i, result in zip(unhashed, results, strict=True):
        if isinstance(result, str):
            digests[i] = result
            known_again.append(i)
        else:
            records[i] = result
            digests[i] = result.sha256
            read.append(result)
    lookup(known_again)
    # Left: files whose digest the cache knows but whose record is missing or was made under other
    # options (or a new package met twice under two names): read them, checking the digest.
    pending = [i for i, record in enumerate(records) if record is None]
    stored = len(read)  # the records read so far are in the cache already (or on their way)
    if pending:
        cache.commit()  # the writer idle before workers may be forked (it must not hold sqlite's locks)
    reread = _scan(kind, [paths[i] for i in pending], [digests[i] for i in pending], reader, frozenset())
    for i, result in zip(pending, reread, strict=True):
        assert not isinstance(result, str)
        records[i] = result
        read.append(result)
    fresh = {record.sha256: record for record in read}
    stats.read += len(fresh)
    stats.cached += len(from_cache - fresh.keys())
    stats.hashed += len(unhashed)
    cache.remember_digests((file_stats[i - head], digests[i] or "") for i in unhashed)  # (never i < head)
    cache.put({record.sha256: record for record in read[stored:]}.values())  # in the background too
    return [record for record in records if record is not None]


def _parallel(count: int) -> bool:
    """Whether reading ``count`` packages is worth worker processes."""
    return count >= _PARALLEL_FROM and (os.cpu_count() or 1) >= 2


class _KnownDigests(Container[str]):
    """Whether the cache has a record of a sha256, asked for each (in this process only)."""

    def __init__(self, cache: PackageCache, kind: type[Any]) -> None:
        self._cache = cache
        self._kind = kind

    def __contains__(self, digest: object) -> bool:
        return isinstance(digest, str) and self._cache.has_record(self._kind, digest)


_known: Container[str] = frozenset()


def _set_known(known: Container[str]) -> None:
    global _known
    _known = known


def _scan_one(reader: Callable[[str, str | None, Container[str]], Record | str], path: str,
              sha256: str | None) -> tuple[Any, ...] | str:
    """In a worker: the record as a plain tuple (pickled without its class)."""
    result = reader(path, sha256, _known)
    return result if isinstance(result, str) else tuple(result)


def _scan(kind: type[Record], paths: list[str], digests: list[str | None],
          reader: Callable[[str, str | None, Container[str]], Record | str],
          known: Container[str], on_records: Callable[[list[Record]], None] | None = None,
          ) -> list[Record | str]:
    """``reader`` over the paths, in worker processes when there are many; ``on_records`` gets the
    records (not the bare digests) in batches as they come, while the workers go on."""
    if not _parallel(len(paths)):
        found = [reader(path, digest, known) for path, digest in zip(paths, digests, strict=True)]
        if on_records is not None:
            on_records([result for result in found if not isinstance(result, str)])
        return found
    workers = min(os.cpu_count() or 1, 8)
    # fork: the workers inherit ``known`` (it may hold every digest ever cached) without pickling it.
    context = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_set_known,
                             initargs=(known,)) as pool:
        # All workers are forked by the first submit (map submits every chunk at once), before
        # ``on_records`` starts the cache's writer thread: no fork while it holds sqlite's locks.
        results = pool.map(functools.partial(_scan_one, reader), paths, digests,
                           chunksize=max(1, len(paths) // (workers * 8)))
        out: list[Record | str] = []
        batch: list[Record] = []
        for result in results:
            if isinstance(result, str):
                out.append(result)
                continue
            record = kind._make(result)
            out.append(record)
            batch.append(record)
            if on_records is not None and len(batch) >= _BATCH:
                on_records(batch)
                batch = []
        if on_records is not None and batch:
            on_records(batch)
        return out
