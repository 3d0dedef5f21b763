"""A shared remote build cache in S3, modelled on Bazel's: an action cache and a content-addressed store.

Layout under ``s3://BUCKET/PREFIX/``::

    cas/sha256/<ab>/<digest>                         artifacts, named by their sha256
    lease/<name>/<version>/<build_key>.json          "being built by OWNER until T" (conditional PUT)
    ac/<name>/<version>/<build_key>.json             build key -> artifact digest + the build record
    index/<name>/<version>/gen/<NNNNNNNNNN>.json.gz  compacted index: every build key of that driver version
    index/<name>/<version>/log/<time>-<id>.json      small append objects: keys pushed since

``build`` looks up the action cache before compiling (a hit downloads the artifact, checks its sha256
and records it locally) and pushes what it built: the artifact first, then the action-cache entry, so
an entry never names a missing artifact. ``plan`` answers from the index without a request per job:
one listing of ``index/<name>/<version>/`` per driver version (in parallel), then a GET of the newest
generation and of each log object not yet compacted, unless the home holds a parsed copy of that
object with the ETag the listing shows (index objects are written once under their names, so that
is the common case: a plan of an unchanged cache downloads nothing but the listings). Whoever reads
more than :data:`COMPACT_AFTER` log objects writes the next generation with a conditional PUT
(``If-None-Match: *``: one writer wins) and deletes the log objects the previous generation had
already absorbed.

Before compiling, a machine takes the key's lease with a conditional PUT (``If-None-Match: *``); a
machine that finds it taken waits for the holder's entry instead of compiling the same thing, and
takes over when the lease expires (a holder that crashed) or is released without an entry (a failed
build). So any number of machines sharing one cache compile each build key once.

Nothing in the bucket is trusted: a malformed entry or index, or an artifact whose digest differs, is
reported, never served, and rebuilt (an index from a listing of ``ac/``, an entry by building again
and overwriting it). A cache that cannot be reached mid-run only costs local builds (a warning),
as with Bazel.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import logging
import os
import re
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repogen import atomic, s3
from repogen.model import Job
from repogen.store import BuildRecord, Store

FORMAT = 1
#: Log objects a reader accepts before it compacts them into a new index generation.
COMPACT_AFTER = 32
#: A writer writes a log object once this many keys are queued, or the oldest waited this long.
LOG_BATCH = 64
LOG_SECONDS = 20.0
KEEP_GENERATIONS = 3
#: How often a machine waiting for another's build of the same key looks again.
LEASE_POLL_SECONDS = 2.0
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX_DIGITS = re.compile(r"[0-9a-f]*")
#: Fields of a build record that travel in an action-cache entry (machine-local ones stay home).
_RECORD_FIELDS = ("image_id", "toolchain", "vermagic", "kernel_release", "kernel_config_sha256", "inputs",
                  "started_at", "finished_at", "seconds")

log = logging.getLogger("repogen.remote_cache")


@dataclass(frozen=True)
class Entry:
    """One action-cache entry, validated."""

    build_key: str
    job_id: str
    artifact_sha256: str
    size: int
    record: dict[str, Any]


@dataclass
class Stats:
    hits: int = 0
    misses: int = 0
    corrupt: int = 0
    pushed: int = 0
    warnings: list[str] = field(default_factory=list)


@dataclass
class _IndexObject:
    """One index object, parsed and checked: a generation (its number, keys and the log objects it
    absorbed) or a log object (generation 0, keys). ``keys`` belongs to whoever asked for it."""

    generation: int
    keys: set[str]
    absorbed: frozenset[str] = frozenset()


class _LocalCopies:
    """Parsed copies of index objects in the home (``cache/remote-index/``), one file per object and ETag.

    A file is its own sha256 (first line), a JSON header (object key, ETag, generation, absorbed logs)
    and the keys, one per line: loading 20,000 keys takes a few milliseconds, against ~25 ms for
    decompressing and checking the JSON generation. A copy that does not match its digest is removed
    and the object downloaded again. Writes are atomic; failures to write only cost a download later.
    """

    MAGIC = b"repogen-index-copy 1 "

    def __init__(self, root: Path | None, location: str) -> None:
        self.root = root
        self._cache = hashlib.sha256(location.encode()).hexdigest()[:16]

    def _prefix(self, name: str, version: str) -> str:
        driver = hashlib.sha256("\0".join((name, version)).encode()).hexdigest()[:16]
        return f"{self._cache}-{driver}-"

    def path(self, name: str, version: str, key: str, etag: str) -> Path | None:
        if self.root is None:
            return None
        digest = hashlib.sha256("\0".join((key, etag)).encode()).hexdigest()[:32]
        return self.root / (self._prefix(name, version) + digest)

    def load(self, name: str, version: str, obj: s3.ObjectInfo) -> _IndexObject | None:
        where = self.path(name, version, obj.key, obj.etag)
        if where is None or not obj.etag:
            return None
        try:
            data = where.read_bytes()
        except OSError:
            return None
        # Sliced through a memoryview: the keys (1.3 MB for 20,000) are copied once, into text.
        view = memoryview(data)
        first = data.find(b"\n")
        second = data.find(b"\n", first + 1)
        try:
            if first < 0 or data[:first] != self.MAGIC + hashlib.sha256(view[first + 1:]).hexdigest().encode():
                raise ValueError("digest mismatch")
            header = json.loads(data[first + 1:second if second >= 0 else len(data)])
            if not isinstance(header, dict) or header.get("key") != obj.key or header.get("etag") != obj.etag:
                raise ValueError("not this object")
            body = str(view[second + 1:], "ascii") if second >= 0 else ""
            keys = set(body.split("\n")) if body else set()
            return _IndexObject(int(header["generation"]), keys, frozenset(header["absorbed"]))
        except (ValueError, TypeError, KeyError, UnicodeDecodeError):
            log.warning("dropping a damaged local copy of the build cache index: %s", where)
            where.unlink(missing_ok=True)
            return None

    def save(self, name: str, version: str, key: str, etag: str, parsed: _IndexObject) -> Path | None:
        where = self.path(name, version, key, etag)
        if where is None or not etag:
            return None
        header = json.dumps({"key": key, "etag": etag, "generation": parsed.generation,
                             "absorbed": sorted(parsed.absorbed)}).encode()
        rest = header + b"\n" + "\n".join(parsed.keys).encode()
        try:
            atomic.write_file(where, self.MAGIC + hashlib.sha256(rest).hexdigest().encode() + b"\n" + rest)
        except OSError as exc:
            log.warning("could not keep a local copy of the build cache index (%s): %s", where, exc)
            return None
        return where

    def prune(self, name: str, version: str, keep: set[Path]) -> None:
        """Remove this driver version's copies of objects no longer listed (compacted, deleted)."""
        if self.root is None:
            return
        prefix = self._prefix(name, version)
        try:
            stale = [e for e in self.root.iterdir() if e.name.startswith(prefix) and e not in keep]
        except OSError:
            return
        for entry in stale:
            entry.unlink(missing_ok=True)


@dataclass
class _Partition:
    """What one driver version's index says: its keys, and the objects that said it."""

    name: str
    version: str
    generation: int = 0
    keys: set[str] = field(default_factory=set)
    absorbed: set[str] = field(default_factory=set)  # log objects the generation already holds
    logs: list[str] = field(default_factory=list)  # log objects present now
    generations: list[str] = field(default_factory=list)  # generation objects present now, newest first
    unreadable: bool = False


class RemoteCache:
    """The cache at one ``s3://BUCKET/PREFIX``; safe to use from threads (boto3 clients are)."""

    def __init__(self, location: s3.S3Location, client: Any | None = None, *,
                 warn: Callable[[str], None] | None = None, local: Path | None = None) -> None:
        """``local``: where to keep parsed copies of the index (the home's ``cache/remote-index``);
        None keeps none (a read-only command without a home)."""
        self.location = location
        self._client = client
        self._client_lock = threading.Lock()
        self._reader: s3.SignedReader | None = None
        self._reader_tried = client is not None  # a client given: use it for everything
        self._copies = _LocalCopies(local, str(location))
        self.stats = Stats()
        self._warn_callback = warn
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], list[str]] = {}
        self._pending_count = 0
        self._oldest_pending = 0.0
        self._logged: set[tuple[str, str]] = set()  # driver versions this run wrote log objects for

    @classmethod
    def from_url(cls, url: str, *, warn: Callable[[str], None] | None = None,
                 local: Path | None = None) -> RemoteCache:
        return cls(s3.location(url), warn=warn, local=local)

    @property
    def url(self) -> str:
        return str(self.location)

    @property
    def client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._client = s3.client()
            return self._client

    def __getstate__(self) -> dict[str, Any]:  # sent to Dask workers: they make their own client
        return {"location": self.location}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["location"])  # type: ignore[misc]

    def warn(self, message: str) -> None:
        with self._lock:
            self.stats.warnings.append(message)
        log.warning(message)
        if self._warn_callback:
            self._warn_callback(message)

    def drain_warnings(self) -> list[str]:
        with self._lock:
            warnings, self.stats.warnings = self.stats.warnings, []
        return warnings

    # -- names ------------------------------------------------------------------------------------
    def _ac_key(self, name: str, version: str, build_key: str) -> str:
        return self.location.key("ac", name, version, f"{build_key}.json")

    def _cas_key(self, digest: str) -> str:
        return self.location.key("cas", "sha256", digest[:2], digest)

    def _index(self, name: str, version: str, *parts: str) -> str:
        return self.location.key("index", name, version, *parts)

    # -- small S3 helpers ---------------------------------------------------------------------------
    def check(self) -> None:
        """Fail early and clearly (no credentials, wrong endpoint, no bucket) before any work."""
        try:
            self.client.list_objects_v2(Bucket=self.location.bucket, Prefix=self.location.key("ac") + "/", MaxKeys=1)
        except Exception as exc:
            raise s3.explain(exc, self.location, "reading the build cache") from None

    def _get(self, key: str) -> bytes | None:
        try:
            return bytes(self.client.get_object(Bucket=self.location.bucket, Key=key)["Body"].read())
        except Exception as exc:
            if s3.is_missing(exc):
                return None
            raise

    def _signed_reader(self) -> s3.SignedReader | None:
        """The lean read path while no boto3 client exists (``plan``: see :class:`repogen.s3.SignedReader`)."""
        with self._client_lock:
            if self._client is not None:
                return None
            if not self._reader_tried:
                self._reader_tried = True
                try:
                    self._reader = s3.SignedReader.create()
                except Exception as exc:  # a configuration boto3 will explain
                    log.debug("no signed reader: %s", exc)
            return self._reader

    def _fell_back(self, exc: BaseException) -> None:
        log.debug("build cache %s: the signed reader falls back to boto3: %s", self.location, exc)
        with self._client_lock:
            self._reader = None

    def _list_objects(self, prefix: str) -> list[s3.ObjectInfo]:
        """Keys, ETags and sizes under ``prefix``."""
        reader = self._signed_reader()
        if reader is not None:
            try:
                return reader.list(self.location.bucket, prefix)
            except s3.Fallback as exc:
                self._fell_back(exc)
        found: list[s3.ObjectInfo] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.location.bucket, Prefix=prefix):
            found.extend(s3.ObjectInfo(o["Key"], str(o.get("ETag", "")), int(o.get("Size", -1)))
                         for o in page.get("Contents", []))
        return found

    def _get_tagged(self, key: str) -> tuple[bytes, str] | None:
        """An object's bytes and ETag, None when it is missing."""
        reader = self._signed_reader()
        if reader is not None:
            try:
                return reader.get(self.location.bucket, key)
            except s3.Fallback as exc:
                self._fell_back(exc)
        try:
            response = self.client.get_object(Bucket=self.location.bucket, Key=key)
        except Exception as exc:
            if s3.is_missing(exc):
                return None
            raise
        return bytes(response["Body"].read()), str(response.get("ETag", ""))

    def _list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.location.bucket, Prefix=prefix):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return keys

    def _delete(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):
            chunk = keys[i:i + 1000]
            self.client.delete_objects(Bucket=self.location.bucket,
                                       Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True})

    # -- action cache -------------------------------------------------------------------------------
    def lookup(self, job: Job, build_key: str) -> Entry | None:
        """The entry for ``build_key``, or None (missing or corrupt: both mean build it)."""
        where = self._ac_key(job.driver.name, job.driver.version, build_key)
        data = self._get(where)
        if data is None:
            with self._lock:
                self.stats.misses += 1
            return None
        try:
            entry = _parse_entry(data, build_key)
        except ValueError as exc:
            with self._lock:
                self.stats.corrupt += 1
            self.warn(f"corrupt build cache entry s3://{self.location.bucket}/{where}: {exc}; rebuilding it")
            return None
        return entry

    def restore(self, job: Job, build_key: str, store: Store) -> BuildRecord | None:
        """A cache hit made local: download, verify, store and record the artifact; None on a miss.

        The cache never fails a build: an unreachable cache is a warning and the job is built here.
        """
        try:
            entry = self.lookup(job, build_key)
            if entry is None:
                return None
            if not self.fetch_object(entry.artifact_sha256, entry.size, store):
                return None
        except Exception as exc:
            self.warn(f"build cache {self.location}: {_short(exc)}; building {job.label} here")
            return None
        record = BuildRecord(build_key=build_key, job_id=job.job_id, status="ok",
                             artifact_sha256=entry.artifact_sha256, size=entry.size, log_path=None, error=None,
                             **{f: entry.record.get(f) for f in _RECORD_FIELDS if f != "inputs"},
                             inputs=str(entry.record.get("inputs") or ""))
        store.record_build(record)
        with self._lock:
            self.stats.hits += 1
        return record

    def fetch_object(self, digest: str, size: int, store: Store) -> bool:
        """Download ``cas/<digest>`` into the local store, checking size and sha256 on the way."""
        final = store.object_path(digest)
        if final.is_file() and final.stat().st_size == size:
            return True
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{digest[:12]}.", suffix=".download", dir=final.parent)
        tmp = Path(tmp_name)
        try:
            body = None
            try:
                body = self.client.get_object(Bucket=self.location.bucket, Key=self._cas_key(digest))["Body"]
            except Exception as exc:
                if not s3.is_missing(exc):
                    raise
            if body is None:
                with self._lock:
                    self.stats.corrupt += 1
                self.warn(f"build cache {self.location}: artifact {digest[:16]} is missing; rebuilding")
                return False
            h = hashlib.sha256()
            got = 0
            with os.fdopen(fd, "wb") as out:
                fd = -1
                for chunk in body.iter_chunks(1 << 20):
                    h.update(chunk)
                    got += len(chunk)
                    out.write(chunk)
            if h.hexdigest() != digest or got != size:
                with self._lock:
                    self.stats.corrupt += 1
                self.warn(f"build cache {self.location}: artifact {digest[:16]} does not match its digest "
                           f"(got sha256 {h.hexdigest()[:16]}, {got} bytes); rebuilding")
                return False
            os.chmod(tmp, 0o444)
            os.replace(tmp, final)
            return True
        finally:
            if fd >= 0:
                os.close(fd)
            tmp.unlink(missing_ok=True)

    def fetch_object_quietly(self, digest: str, size: int, store: Store) -> bool:
        try:
            return self.fetch_object(digest, size, store)
        except Exception as exc:
            self.warn(f"build cache {self.location}: artifact {digest[:16]}: {_short(exc)}")
            return False

    def push(self, job: Job, record: BuildRecord, artifact: Path, *, log_it: bool = True) -> bool:
        """Share a build: the artifact first, then the entry naming it, then (batched) the index log.

        Overwrites whatever was there: a push follows a miss or a corrupt entry. Returns False (after
        a warning) if the cache could not be written; the local build stands either way.
        """
        if record.status != "ok" or not record.artifact_sha256 or record.size is None:
            return False
        entry = {"format": FORMAT, "build_key": record.build_key, "job_id": job.job_id,
                 "artifact": {"sha256": record.artifact_sha256, "size": record.size},
                 "record": {f: getattr(record, f) for f in _RECORD_FIELDS}}
        try:
            with artifact.open("rb") as fh:
                self.client.put_object(Bucket=self.location.bucket, Key=self._cas_key(record.artifact_sha256),
                                       Body=fh, ContentType="application/octet-stream")
            self.client.put_object(Bucket=self.location.bucket,
                                   Key=self._ac_key(job.driver.name, job.driver.version, record.build_key),
                                   Body=json.dumps(entry, sort_keys=True).encode(), ContentType="application/json")
        except Exception as exc:
            self.warn(f"build cache {self.location}: could not push {job.label}: {_short(exc)}")
            return False
        with self._lock:
            self.stats.pushed += 1
        if log_it:
            self.note(job, record.build_key)
        return True

    # -- leases: one machine compiles a key at a time -------------------------------------------------
    def _lease_key(self, job: Job, build_key: str) -> str:
        return self.location.key("lease", job.driver.name, job.driver.version, f"{build_key}.json")

    def claim_or_wait(self, job: Job, build_key: str, store: Store, *, ttl: float,
                      owner: str | None = None) -> BuildRecord | None:
        """Take the lease on ``build_key`` (None: compile it here), or wait while another machine holds
        it and return its result from the cache. A cache that cannot be written is a warning: compile.

        A lease held under our own ``owner`` is ours to take over (a Dask run retrying a job whose
        worker died: every worker of the run shares the run's owner name)."""
        owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        where = self._lease_key(job, build_key)
        deadline = time.monotonic() + ttl + 60
        try:
            while time.monotonic() < deadline:
                body = json.dumps({"owner": owner, "job": job.job_id, "expires": time.time() + ttl}).encode()
                try:
                    self.client.put_object(Bucket=self.location.bucket, Key=where, Body=body, IfNoneMatch="*",
                                           ContentType="application/json")
                    return None  # ours
                except Exception as exc:
                    if s3.error_code(exc) not in s3.PRECONDITION:
                        raise
                holder = self._get(where)
                if holder is not None and _lease_owner(holder) == owner:
                    self.client.put_object(Bucket=self.location.bucket, Key=where, Body=body,
                                           ContentType="application/json")
                    return None  # ours already (retried after a lost worker)
                expires = _lease_expiry(holder)
                if holder is not None and (expires is None or expires < time.time()):
                    # The holder crashed (or wrote garbage): its lease is void; race for a new one.
                    self.warn(f"build cache {self.location}: lease on {job.label} expired; building it here")
                    self.client.delete_object(Bucket=self.location.bucket, Key=where)
                    continue
                while holder is not None and time.monotonic() < deadline:
                    time.sleep(LEASE_POLL_SECONDS)
                    record = self.restore(job, build_key, store)
                    if record is not None:
                        return record
                    holder = self._get(where)
                    if holder is not None and (_lease_expiry(holder) or 0) < time.time():
                        break
        except Exception as exc:
            self.warn(f"build cache {self.location}: lease on {job.label}: {_short(exc)}; building it here")
        return None

    def release(self, job: Job, build_key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.location.bucket, Key=self._lease_key(job, build_key))
        except Exception as exc:  # it expires on its own
            self.warn(f"build cache {self.location}: could not release the lease on {job.label}: {_short(exc)}")

    # -- the index ----------------------------------------------------------------------------------
    def note(self, job: Job, build_key: str) -> None:
        """Queue ``build_key`` for the driver version's index log; written in batches."""
        with self._lock:
            if not self._pending_count:
                self._oldest_pending = time.monotonic()
            self._pending.setdefault((job.driver.name, job.driver.version), []).append(build_key)
            self._pending_count += 1
            due = self._pending_count >= LOG_BATCH or time.monotonic() - self._oldest_pending > LOG_SECONDS
        if due:
            self.flush()

    def flush(self) -> None:
        """Write one log object per driver version with the keys queued since the last flush."""
        with self._lock:
            pending, self._pending, self._pending_count = self._pending, {}, 0
            self._logged |= pending.keys()
        for (name, version), keys in pending.items():
            body = json.dumps({"format": FORMAT, "keys": sorted(set(keys))}).encode()
            where = self._index(name, version, "log", f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}.json")
            try:
                self.client.put_object(Bucket=self.location.bucket, Key=where, Body=body,
                                       ContentType="application/json")
            except Exception as exc:
                # The entries are in ac/ all the same: builds find them; only plan may not, until a
                # listing rebuilds the index.
                self.warn(f"build cache {self.location}: could not write the index log of {name} {version}: "
                           f"{_short(exc)}")

    def close(self) -> None:
        """Flush the log, then compact each driver version whose log has grown long (every version this
        run logged, flushed now or earlier in the run)."""
        self.flush()
        with self._lock:
            touched, self._logged = self._logged, set()
        for name, version in sorted(touched):
            try:
                part = self._read(name, version)
                if part.unreadable or len(set(part.logs) - part.absorbed) > COMPACT_AFTER:
                    self._compact(part)
            except Exception as exc:
                self.warn(f"build cache {self.location}: could not compact the index of {name} {version}: "
                           f"{_short(exc)}")

    def built_keys(self, drivers: Iterable[tuple[str, str]]) -> set[str]:
        """Every build key in the cache for these (name, version) driver versions: one listing per driver
        name (all its versions at once), and downloads only of index objects the home has no copy of."""
        wanted = sorted(set(drivers))
        names = sorted({name for name, _ in wanted})
        keys: set[str] = set()
        try:
            with ThreadPoolExecutor(max_workers=min(8, max(1, len(wanted)))) as pool:
                listings = dict(zip(names, pool.map(lambda n: self._list_objects(self.location.key("index", n) + "/"),
                                                    names), strict=True))
                parts = list(pool.map(lambda d: self._read(*d, listing=listings[d[0]]), wanted))
        except Exception as exc:
            raise s3.explain(exc, self.location, "reading the build cache index") from None
        for part in parts:
            keys |= part.keys
            if part.unreadable or len(set(part.logs) - part.absorbed) > COMPACT_AFTER:
                try:
                    self._compact(part)
                except Exception as exc:  # read-only credentials: answer all the same
                    self.warn(f"build cache {self.location}: could not compact the index of {part.name} "
                               f"{part.version}: {_short(exc)}")
        return keys

    def _read(self, name: str, version: str, *, listing: list[s3.ObjectInfo] | None = None) -> _Partition:
        """One driver version's index, from ``listing`` (of its objects or more) or a listing of its own.

        A log object that vanished between the listing and its GET was absorbed by a newer generation
        and deleted (see :meth:`_compact`): list again and read that generation (at most 3 times)."""
        base = self._index(name, version) + "/"
        part = _Partition(name, version)
        for _ in range(3):
            if listing is None:
                listing = self._list_objects(base)
            part, complete = self._read_listed(name, version, [o for o in listing if o.key.startswith(base)])
            if complete:
                break
            listing = None
        else:
            self.warn(f"build cache {self.location}: the index of {name} {version} kept changing while read; "
                       "rebuilding it from a listing")
            part.unreadable = True
        if part.unreadable:
            # Truth is in ac/: one listing (a page per 1,000 entries) rebuilds the whole index.
            prefix = self._ac_key(name, version, "x")[:-len("x.json")]
            part.keys = {k[len(prefix):-len(".json")] for k in self._list(prefix) if k.endswith(".json")}
            part.keys = {k for k in part.keys if _HEX64.fullmatch(k)}
            if part.generations and not part.generation:
                part.generation = max(_generation_number(g) for g in part.generations)
        return part

    def _read_listed(self, name: str, version: str, listing: list[s3.ObjectInfo]) -> tuple[_Partition, bool]:
        """The partition these objects make (newest readable generation plus the log objects it did not
        absorb), and whether every log object it needed was still there."""
        part = _Partition(name, version)
        base = self._index(name, version)
        generations = sorted((o for o in listing if o.key.startswith(base + "/gen/") and o.key.endswith(".json.gz")),
                             key=lambda o: o.key, reverse=True)
        logs = [o for o in listing if o.key.startswith(base + "/log/")]
        part.generations = [o.key for o in generations]
        part.logs = [o.key for o in logs]
        used: set[Path] = set()
        fetched = False
        complete = True

        def load(obj: s3.ObjectInfo, parse: Callable[[bytes], _IndexObject]) -> _IndexObject | None:
            nonlocal fetched
            parsed = self._copies.load(name, version, obj)
            etag = obj.etag
            if parsed is None:
                got = self._get_tagged(obj.key)
                if got is None:  # removed by a compaction in between
                    return None
                data, etag = got
                parsed = parse(data)  # a ValueError says what is wrong with it
                self._copies.save(name, version, obj.key, etag, parsed)
                fetched = True
            where = self._copies.path(name, version, obj.key, etag)
            if where is not None:
                used.add(where)
            return parsed

        for obj in generations:
            try:
                generation = load(obj, _parse_generation)
            except ValueError as exc:
                self.warn(f"corrupt build cache index s3://{self.location.bucket}/{obj.key}: {exc}; "
                           "rebuilding it from a listing")
                part.unreadable = True
                break
            if generation is None:
                continue
            part.generation, part.keys, part.absorbed = generation.generation, generation.keys, set(generation.absorbed)
            break
        for obj in logs:
            if obj.key in part.absorbed:
                continue
            try:
                entry = load(obj, _parse_log)
            except ValueError as exc:
                self.warn(f"corrupt build cache index log s3://{self.location.bucket}/{obj.key}: {exc}; "
                           "rebuilding the index from a listing")
                part.unreadable = True
                continue
            if entry is None:
                complete = False
            else:
                part.keys |= entry.keys
        if fetched:
            self._copies.prune(name, version, used)
        return part, complete or part.unreadable

    def _compact(self, part: _Partition) -> None:
        """Write generation N+1 (keys and the log objects read); one writer wins a generation."""
        number = part.generation + 1
        absorbed = sorted(set(part.logs) - part.absorbed)
        body = gzip.compress(json.dumps({"format": FORMAT, "generation": number, "keys": sorted(part.keys),
                                         "absorbed": absorbed}, separators=(",", ":")).encode(), 5)
        where = self._index(part.name, part.version, "gen", f"{number:010d}.json.gz")
        try:
            response = self.client.put_object(Bucket=self.location.bucket, Key=where, Body=body, IfNoneMatch="*",
                                              ContentType="application/json", ContentEncoding="gzip")
        except Exception as exc:
            if s3.error_code(exc) in s3.PRECONDITION:
                return  # another reader compacted first; its generation is as good
            raise
        # The next plan here lists it with this ETag and need not download what it just wrote.
        self._copies.save(part.name, part.version, where, str(response.get("ETag", "")),
                          _IndexObject(number, set(part.keys), frozenset(absorbed)))
        # Every log object read is in this generation now (those the previous one absorbed too): delete
        # them, so listings stay short. A reader that listed one before and finds it gone lists again
        # and finds this generation (see _read).
        older = [g for g in part.generations if _generation_number(g) <= number - KEEP_GENERATIONS]
        self._delete(sorted(set(part.logs)) + older)


def _lease_owner(data: bytes) -> str | None:
    try:
        owner = json.loads(data).get("owner")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None
    return owner if isinstance(owner, str) else None


def _lease_expiry(data: bytes | None) -> float | None:
    try:
        value = json.loads(data or b"").get("expires")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _generation_number(key: str) -> int:
    match = re.search(r"(\d+)\.json\.gz$", key)
    return int(match.group(1)) if match else 0


def _parse_entry(data: bytes, build_key: str) -> Entry:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed JSON ({exc})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ValueError("not a repogen build cache entry (or another format)")
    artifact = obj.get("artifact")
    record = obj.get("record")
    if not isinstance(artifact, dict) or not isinstance(record, dict):
        raise ValueError("missing artifact or record")
    digest, size = artifact.get("sha256"), artifact.get("size")
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        raise ValueError("artifact.sha256 is not a sha256")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise ValueError("artifact.size is not a positive integer")
    if obj.get("build_key") != build_key:
        raise ValueError(f"entry is for build key {str(obj.get('build_key'))[:16]}, not {build_key[:16]}")
    for name in _RECORD_FIELDS:
        value = record.get(name)
        if value is not None and not isinstance(value, str | int | float):
            raise ValueError(f"record.{name} has the wrong type")
    return Entry(build_key, str(obj.get("job_id", "")), digest, size, record)


def _parse_generation(data: bytes) -> _IndexObject:
    try:
        obj = json.loads(gzip.decompress(data))
    except (OSError, EOFError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"unreadable ({exc})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ValueError("not a repogen build cache index (or another format)")
    keys, absorbed, number = obj.get("keys"), obj.get("absorbed"), obj.get("generation")
    if not isinstance(keys, list) or not isinstance(absorbed, list) or not isinstance(number, int):
        raise ValueError("missing keys, absorbed or generation")
    checked = _build_keys(keys)
    if checked is None:
        raise ValueError("a key is not a build key")
    return _IndexObject(number, checked, frozenset(str(a) for a in absorbed))


def _parse_log(data: bytes) -> _IndexObject:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed JSON ({exc})") from None
    keys = _build_keys(obj.get("keys")) if isinstance(obj, dict) else None
    if keys is None:
        raise ValueError("not a list of build keys")
    return _IndexObject(0, keys)


def _build_keys(value: object) -> set[str] | None:
    """``value`` as a set of build keys (64 lower-case hex digits each), or None if it is not one."""
    if not isinstance(value, list):
        return None
    try:
        joined = "".join(value)  # a TypeError when one is not text
    except TypeError:
        return None
    if value and (set(map(len, value)) != {64} or not _HEX_DIGITS.fullmatch(joined)):
        return None
    return set(value)


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _restored(remote: RemoteCache, job: Job, key: str, store: Store) -> bool:
    return remote.restore(job, key, store) is not None


def restore_missing(store: Store, planned: list[Any], remote: RemoteCache, *, threads: int = 16) -> int:
    """For publish: bring in from the cache the artifacts this home lacks; returns how many.

    ``planned`` is :func:`repogen.plan.plan`'s answer: a job built here whose artifact file is gone
    is fetched by its recorded digest, a job built elsewhere by its build key (when the index has it).
    """
    good = store.good_keys()
    records = store.builds([k for k in good.values() if k])
    wanted: list[Callable[[], bool]] = []
    remote_keys: set[str] | None = None
    for p in planned:
        record = records.get(good.get(p.job.job_id) or "")
        if record is not None and record.status == "ok" and record.artifact_sha256 and record.size:
            obj = store.object_path(record.artifact_sha256)
            if not (obj.is_file() and obj.stat().st_size == record.size):
                wanted.append(functools.partial(remote.fetch_object_quietly, record.artifact_sha256, record.size,
                                                store))
            continue
        if p.key is None:
            continue
        if remote_keys is None:
            remote_keys = remote.built_keys({(q.job.driver.name, q.job.driver.version) for q in planned})
        if p.key in remote_keys:
            wanted.append(functools.partial(_restored, remote, p.job, p.key, store))
    if not wanted:
        return 0
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return sum(1 for ok in pool.map(lambda fn: fn(), wanted) if ok)
