"""The store: content-addressed artifacts plus a SQLite database of what was built from what.

A build key is the sha256 of every input that changes the output, so "already built" is one set
lookup and a changed input (driver source, headers, builder image, recipe) is a new key.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repogen import atomic
from repogen.fetch import UrlIndex

if TYPE_CHECKING:
    from repogen.boot import BootResult

SCHEMA = """
CREATE TABLE IF NOT EXISTS downloads (
    url TEXT PRIMARY KEY, sha256 TEXT NOT NULL, size INTEGER NOT NULL, fetched_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS builds (
    build_key TEXT PRIMARY KEY, job_id TEXT NOT NULL, status TEXT NOT NULL,
    artifact_sha256 TEXT, size INTEGER, image_id TEXT, toolchain TEXT, vermagic TEXT,
    kernel_release TEXT, kernel_config_sha256 TEXT, inputs TEXT NOT NULL,
    started_at REAL, finished_at REAL, seconds REAL, log_path TEXT, error TEXT);
CREATE INDEX IF NOT EXISTS builds_job ON builds(job_id);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY, last_key TEXT NOT NULL, last_status TEXT NOT NULL, good_key TEXT);
CREATE TABLE IF NOT EXISTS images (
    tag TEXT PRIMARY KEY, image_id TEXT NOT NULL, seen_at REAL NOT NULL, toolchain_id TEXT);
CREATE TABLE IF NOT EXISTS kernels (
    headers_key TEXT PRIMARY KEY, release TEXT, gcc INTEGER, config_sha256 TEXT);
CREATE TABLE IF NOT EXISTS sources (
    location TEXT NOT NULL, version TEXT NOT NULL, sha256 TEXT NOT NULL, fetched_at REAL NOT NULL,
    PRIMARY KEY (location, version));
CREATE TABLE IF NOT EXISTS boots (
    artifact_sha256 TEXT NOT NULL, image_sha256 TEXT NOT NULL, format INTEGER NOT NULL, status TEXT NOT NULL,
    seconds REAL, kernel TEXT, reason TEXT, console TEXT, checked_at REAL NOT NULL,
    PRIMARY KEY (artifact_sha256, image_sha256));
"""


@dataclass(frozen=True)
class BuildRecord:
    build_key: str
    job_id: str
    status: str
    artifact_sha256: str | None
    size: int | None
    image_id: str | None
    toolchain: str | None
    vermagic: str | None
    kernel_release: str | None
    kernel_config_sha256: str | None
    inputs: str
    started_at: float | None
    finished_at: float | None
    seconds: float | None
    log_path: str | None
    error: str | None


class Store(UrlIndex):
    """``<home>/state.db`` and ``<home>/store/sha256/<ab>/<digest>``; safe to use from threads."""

    def __init__(self, home: Path, *, create: bool = True) -> None:
        self.home = home
        self.objects = home / "store" / "sha256"
        # A read-only command on a home that does not exist yet sees an empty database in memory
        # and leaves nothing on disk.
        self.in_memory = not create and not (home / "state.db").exists()
        if not self.in_memory:
            home.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._write_lock = threading.Lock()
        with self._write_lock:
            conn = self._connection()
            conn.executescript(SCHEMA)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(images)")}
            if "toolchain_id" not in columns:  # a database from before toolchain ids
                conn.execute("ALTER TABLE images ADD COLUMN toolchain_id TEXT")

    # -- database -------------------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None and self.in_memory:
            conn = self._local.conn = sqlite3.connect(":memory:", isolation_level=None)
            conn.executescript(SCHEMA)
        if conn is None:
            conn = sqlite3.connect(self.home / "state.db", timeout=60, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # a recorded build survives a power cut
            self._local.conn = conn
        return conn

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        conn = self._connection()
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    # -- UrlIndex -------------------------------------------------------------------------------
    def get(self, url: str) -> str | None:
        row = self._connection().execute("SELECT sha256 FROM downloads WHERE url=?", (url,)).fetchone()
        return row[0] if row else None

    def put(self, url: str, sha256: str, size: int) -> None:
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO downloads VALUES (?,?,?,?)", (url, sha256, size, time.time()))

    def drop(self, url: str) -> None:
        with self._db() as db:
            db.execute("DELETE FROM downloads WHERE url=?", (url,))

    def url_digests(self) -> dict[str, str]:
        return dict(self._connection().execute("SELECT url, sha256 FROM downloads").fetchall())

    # -- builder images ---------------------------------------------------------------------------
    def record_images(self, ids: dict[str, str], toolchain_ids: dict[str, str]) -> None:
        """Remember the builder images Docker reported (toolchain name -> image id) and their
        toolchain ids (what build keys hold), so `plan` needs no Docker engine."""
        with self._db() as db:
            db.execute("DELETE FROM images")
            db.executemany("INSERT INTO images VALUES (?,?,?,?)",
                           [(t, i, time.time(), toolchain_ids.get(t)) for t, i in ids.items()])

    def image_ids(self) -> dict[str, str]:
        """Toolchain name -> this machine's builder image id: what containers run."""
        return dict(self._connection().execute("SELECT tag, image_id FROM images"))

    def toolchain_ids(self) -> dict[str, str]:
        """Toolchain name -> toolchain id: what build keys hold (see :func:`repogen.images.toolchain_id`)."""
        return dict(self._connection().execute("SELECT tag, toolchain_id FROM images WHERE toolchain_id IS NOT NULL"))

    # -- kernels ----------------------------------------------------------------------------------
    def record_kernel(self, headers_key: str, release: str, gcc: int | None, config_sha256: str | None) -> None:
        """What a kernel's headers say (its release, the gcc that built it), so `plan` can choose the
        toolchain without unpacking them."""
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO kernels VALUES (?,?,?,?)", (headers_key, release, gcc, config_sha256))

    def kernel_gcc(self, headers_key: str) -> tuple[bool, int | None]:
        """(known, gcc major) for one kernel's headers: a keyed lookup, for a build's every job."""
        row = self._connection().execute("SELECT gcc FROM kernels WHERE headers_key=?", (headers_key,)).fetchone()
        return (row is not None, row[0] if row else None)

    def kernel_gccs(self) -> dict[str, int | None]:
        """headers key -> major version of the gcc that built that kernel."""
        return dict(self._connection().execute("SELECT headers_key, gcc FROM kernels"))

    # -- driver sources ---------------------------------------------------------------------------
    def source_digest(self, location: str, version: str) -> str | None:
        row = self._connection().execute(
            "SELECT sha256 FROM sources WHERE location=? AND version=?", (location, version)).fetchone()
        return row[0] if row else None

    def record_source(self, location: str, version: str, sha256: str) -> None:
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO sources VALUES (?,?,?,?)", (location, version, sha256, time.time()))

    # -- artifacts ------------------------------------------------------------------------------
    def object_path(self, digest: str) -> Path:
        return self.objects / digest[:2] / digest

    def put_object(self, path: Path) -> tuple[str, int]:
        """Copy a file into the content-addressed store (read-only); returns (sha256, size)."""
        h = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        digest = h.hexdigest()
        final = self.object_path(digest)
        if not final.exists():  # durable before the database names it: a power cut cannot leave a hole
            atomic.copy_file(path, final, mode=0o444)
        return digest, final.stat().st_size

    # -- builds ---------------------------------------------------------------------------------
    def record_build(self, record: BuildRecord) -> None:
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO builds VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                       tuple(record.__dict__.values()))
            good = record.build_key if record.status == "ok" else None
            db.execute(
                "INSERT INTO jobs VALUES (?,?,?,?) ON CONFLICT(job_id) DO UPDATE SET last_key=excluded.last_key,"
                " last_status=excluded.last_status, good_key=COALESCE(excluded.good_key, jobs.good_key)",
                (record.job_id, record.build_key, record.status, good))

    def fail_build(self, job_id: str, build_key: str, error: str) -> None:
        """A build found bad after it was recorded (the boot check): failed, and no longer published."""
        with self._db() as db:
            db.execute("UPDATE builds SET status='failed', error=? WHERE build_key=?", (error, build_key))
            db.execute("UPDATE jobs SET last_key=?, last_status='failed', good_key=NULL WHERE job_id=? AND "
                       "(good_key=? OR last_key=?)", (build_key, job_id, build_key, build_key))

    def forget_build(self, build_key: str) -> None:
        """Make a build count as not done (``--rebuild``), keeping its history row."""
        with self._db() as db:
            db.execute("UPDATE builds SET status='discarded' WHERE build_key=?", (build_key,))
            db.execute("UPDATE jobs SET good_key=NULL WHERE good_key=?", (build_key,))

    def set_good(self, job_id: str, build_key: str) -> None:
        with self._db() as db:
            db.execute("INSERT INTO jobs VALUES (?,?,'ok',?) ON CONFLICT(job_id) DO UPDATE SET "
                       "last_key=excluded.last_key, last_status='ok', good_key=excluded.good_key",
                       (job_id, build_key, build_key))

    def is_ok(self, build_key: str) -> bool:
        row = self._connection().execute(
            "SELECT 1 FROM builds WHERE build_key=? AND status='ok'", (build_key,)).fetchone()
        return row is not None

    def good_keys(self) -> dict[str, str | None]:
        """job_id -> the key of the artifact publish serves (None if none)."""
        return dict(self._connection().execute("SELECT job_id, good_key FROM jobs"))

    def good_keys_of(self, job_ids: list[str]) -> dict[str, str | None]:
        """good_keys() for a few jobs only."""
        conn = self._connection()
        out: dict[str, str | None] = {}
        for i in range(0, len(job_ids), 500):
            chunk = job_ids[i:i + 500]
            out.update(conn.execute(
                f"SELECT job_id, good_key FROM jobs WHERE job_id IN ({','.join('?' * len(chunk))})", chunk))
        return out

    def failed_jobs(self) -> dict[str, str]:
        """job_id -> key of the last attempt, for jobs whose last attempt failed."""
        return dict(self._connection().execute("SELECT job_id, last_key FROM jobs WHERE last_status='failed'"))

    # -- garbage collection (repogen gc) -----------------------------------------------------------
    def current_artifacts(self) -> set[str]:
        """Digests of the artifacts some job's current build points at."""
        return {row[0] for row in self._connection().execute(
            "SELECT b.artifact_sha256 FROM jobs j JOIN builds b ON b.build_key = j.good_key "
            "WHERE b.artifact_sha256 IS NOT NULL")}

    def current_logs(self) -> set[str]:
        """Log paths of each job's last and current build."""
        return {row[0] for row in self._connection().execute(
            "SELECT b.log_path FROM jobs j JOIN builds b ON b.build_key IN (j.good_key, j.last_key) "
            "WHERE b.log_path IS NOT NULL")}

    def mark_collected(self, digests: list[str]) -> None:
        """Builds whose artifact gc removes no longer count as done (their history rows stay)."""
        with self._db() as db:
            db.executemany("UPDATE builds SET status='collected' WHERE artifact_sha256=? AND status='ok'",
                           [(d,) for d in digests])

    def forget_downloads(self, digests: set[str]) -> None:
        with self._db() as db:
            db.executemany("DELETE FROM downloads WHERE sha256=?", [(d,) for d in digests])

    # -- boot checks (repogen.boot): per (artifact sha256, kernel image sha256) ---------------------
    def record_boot(self, artifact_sha256: str, image_sha256: str, fmt: int, result: BootResult) -> None:
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO boots VALUES (?,?,?,?,?,?,?,?,?)",
                       (artifact_sha256, image_sha256, fmt, result.status.value, result.seconds, result.kernel,
                        result.reason, result.console, time.time()))

    def boot_result(self, artifact_sha256: str, image_sha256: str, fmt: int) -> BootResult | None:
        row = self._connection().execute(
            "SELECT status, seconds, kernel, reason, console FROM boots WHERE artifact_sha256=? AND "
            "image_sha256=? AND format=?", (artifact_sha256, image_sha256, fmt)).fetchone()
        return _boot_result(row) if row else None

    def boot_results(self, fmt: int) -> dict[tuple[str, str], BootResult]:
        """(artifact sha256, image sha256) -> the last result, for plan and publish (one query)."""
        rows = self._connection().execute(
            "SELECT artifact_sha256, image_sha256, status, seconds, kernel, reason, console FROM boots "
            "WHERE format=?", (fmt,))
        return {(r[0], r[1]): _boot_result(r[2:]) for r in rows}

    def builds(self, keys: list[str]) -> dict[str, BuildRecord]:
        out: dict[str, BuildRecord] = {}
        conn = self._connection()
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            rows = conn.execute(f"SELECT * FROM builds WHERE build_key IN ({','.join('?' * len(chunk))})", chunk)
            for row in rows:
                out[row[0]] = BuildRecord(*row)
        return out


# -- boot checks (repogen.boot) ---------------------------------------------------------------------
def _boot_result(row: tuple[Any, ...]) -> BootResult:
    from repogen.boot import BootResult, BootStatus

    status, seconds, kernel, reason, console = row
    return BootResult(BootStatus(status), seconds or 0.0, kernel, reason, console)


def headers_key(digests: list[str]) -> str:
    """The key of a kernel's set of header files: its unpacked tree's name, its row in ``kernels``."""
    return hashlib.sha256("\n".join(sorted(digests)).encode()).hexdigest()[:32]


def build_key(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
