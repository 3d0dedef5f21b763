"""repogen's own state in a bucket: the manifest of what it uploaded, the publisher lock, and gc.

Both live under ``<prefix>/.repogen/``:

* ``manifest.json.gz`` maps every key repogen wrote to ``(sha256, size)``. The invariant: a key is in
  the manifest only while the bucket holds exactly those bytes under it (a key is dropped from the
  manifest before it is overwritten, and added after its PUT succeeded). So a no-op upload is one GET,
  and a crash at any point leaves a manifest that may know too little, never too much. Keys the
  latest upload no longer has stay in ``retired`` with the time they left, for ``gc``'s grace period.
  The manifest carries a sha256 of its own content: a damaged one is detected and never trusted.
* ``lock.json`` is taken with a conditional write (``If-None-Match: *``), so two publishers never
  interleave. It names its owner and expires (the server's clock decides) unless renewed, so a
  crashed publisher blocks the next one for at most the expiry; a lock left by a dead process on
  this very host is taken over at once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import hashlib
import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from repogen.errors import RepogenError
from repogen.s3 import NOT_FOUND, PRECONDITION, S3Location, error_code, list_prefix, relative, server_time

STATE_DIR = ".repogen"
MANIFEST = f"{STATE_DIR}/manifest.json.gz"  # gzip: what a no-op downloads, at 40,000 keys
LOCK = f"{STATE_DIR}/lock.json"
MANIFEST_FORMAT = "repogen-bucket-manifest/1"
_HEX64 = re.compile(r"[0-9a-f]{64}")


class LockError(RepogenError):
    """Another publisher holds the bucket, or this one lost its lock."""


# -- the manifest -----------------------------------------------------------------------------------

@dataclass
class Manifest:
    files: dict[str, tuple[str, int]] = field(default_factory=dict)          # key -> (sha256, size)
    retired: dict[str, tuple[str, int, float]] = field(default_factory=dict)  # key -> (sha256, size, since)
    generation: str | None = None

    def content_digest(self) -> str:
        return _digest(self.files, self.retired)

    def encode(self) -> bytes:
        body = {"format": MANIFEST_FORMAT, "generation": self.generation,
                "updated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "files": {k: list(v) for k, v in sorted(self.files.items())},
                "retired": {k: list(v) for k, v in sorted(self.retired.items())},
                "sha256": self.content_digest()}
        return gzip.compress(json.dumps(body, separators=(",", ":")).encode(), compresslevel=6, mtime=0)


def _digest(files: dict[str, tuple[str, int]], retired: dict[str, tuple[str, int, float]]) -> str:
    canonical = json.dumps({"files": {k: list(v) for k, v in files.items()},
                            "retired": {k: list(v) for k, v in retired.items()}},
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class CorruptManifest(ValueError):
    pass


def _safe_key(key: object) -> str:
    if not isinstance(key, str) or not key or key.startswith("/") or "\0" in key or \
            any(part in ("", ".", "..") for part in key.split("/")):
        raise CorruptManifest(f"bad key {key!r}")
    return key


def decode_manifest(data: bytes) -> Manifest:
    """Parse and check a manifest; anything off (syntax, types, the self-digest) is CorruptManifest."""
    try:
        body = json.loads(gzip.decompress(data))
    except (OSError, EOFError, ValueError, UnicodeDecodeError) as exc:
        raise CorruptManifest(f"not gzip-compressed JSON ({exc})") from None
    if not isinstance(body, dict) or body.get("format") != MANIFEST_FORMAT:
        raise CorruptManifest("not a repogen bucket manifest")
    files: dict[str, tuple[str, int]] = {}
    retired: dict[str, tuple[str, int, float]] = {}
    try:
        for key, (sha, size) in dict(body["files"]).items():
            if not (isinstance(sha, str) and _HEX64.fullmatch(sha) and isinstance(size, int) and size >= 0):
                raise CorruptManifest(f"bad entry for {key!r}")
            files[_safe_key(key)] = (sha, size)
        for key, (sha, size, since) in dict(body["retired"]).items():
            if not (isinstance(sha, str) and _HEX64.fullmatch(sha) and isinstance(size, int)
                    and isinstance(since, int | float)):
                raise CorruptManifest(f"bad retired entry for {key!r}")
            retired[_safe_key(key)] = (sha, size, float(since))
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, CorruptManifest):
            raise
        raise CorruptManifest(f"malformed ({exc})") from None
    if body.get("sha256") != _digest(files, retired):
        raise CorruptManifest("its content does not match its sha256")
    generation = body.get("generation")
    return Manifest(files, retired, generation if isinstance(generation, str) else None)


@dataclass
class ManifestRead:
    manifest: Manifest
    found: bool          # an object was there
    corrupt: str | None  # why it was not trusted (then ``manifest`` is empty)
    etag: str | None = None  # a validator for re-reading it cheaply (never taken for a digest)


def read_manifest(s3: Any, location: S3Location, previous: ManifestRead | None = None) -> ManifestRead:
    """One GET. A missing manifest is an empty bucket; a corrupt one is reported and not trusted.

    With ``previous`` the GET is conditional: unchanged since, it answers 304 without the body."""
    condition = {"IfNoneMatch": previous.etag} if previous is not None and previous.etag else {}
    try:
        response = s3.get_object(Bucket=location.bucket, Key=location.key(MANIFEST), **condition)
    except Exception as exc:
        if error_code(exc) in NOT_FOUND:
            return ManifestRead(Manifest(), False, None)
        if condition and error_code(exc) in ("304", "NotModified"):
            assert previous is not None
            return previous
        raise
    data = response["Body"].read()
    etag = str(response.get("ETag") or "") or None
    try:
        return ManifestRead(decode_manifest(data), True, None, etag)
    except CorruptManifest as exc:
        return ManifestRead(Manifest(), True, str(exc), etag)


def write_manifest(s3: Any, location: S3Location, manifest: Manifest) -> None:
    s3.put_object(Bucket=location.bucket, Key=location.key(MANIFEST), Body=manifest.encode(),
                  ContentType="application/gzip", CacheControl="no-store")


# -- the lock ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Holder:
    owner: str
    host: str
    pid: int
    taken: dt.datetime | None
    expires: dt.datetime | None
    etag: str

    def describe(self) -> str:
        since = f" since {self.taken:%Y-%m-%d %H:%M:%S}Z" if self.taken else ""
        return f"{self.owner}{since}"


class BucketLock:
    """The publisher lock: ``with BucketLock(...) as lock:``; ``lock.check()`` raises once it is lost."""

    def __init__(self, s3: Any, location: S3Location, *, ttl: float = 300.0, wait: float = 120.0,
                 notify: Callable[[str], None] = lambda message: None, poll: float = 2.0) -> None:
        self.s3 = s3
        self.location = location
        self.key = location.key(LOCK)
        self.ttl = ttl
        self.wait = wait
        self.notify = notify
        self.poll = poll
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.etag: str | None = None
        self.lost: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._guard = threading.Lock()

    def _body(self) -> bytes:
        return json.dumps({"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
                           "ttl": self.ttl, "taken": time.time()}).encode()

    def _put(self, **condition: str) -> str:
        response = self.s3.put_object(Bucket=self.location.bucket, Key=self.key, Body=self._body(),
                                      ContentType="application/json", CacheControl="no-store", **condition)
        return str(response.get("ETag", ""))

    def _holder(self) -> Holder | None:
        try:
            response = self.s3.get_object(Bucket=self.location.bucket, Key=self.key)
        except Exception as exc:
            if error_code(exc) in NOT_FOUND:
                return None
            raise
        now = server_time(response)
        body: dict[str, Any] = {}
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            parsed = json.loads(response["Body"].read())
            body = parsed if isinstance(parsed, dict) else {}
        ttl = body.get("ttl")
        ttl = float(ttl) if isinstance(ttl, int | float) and 0 <= ttl <= 86400 else self.ttl
        modified = response.get("LastModified")
        expires = modified + dt.timedelta(seconds=ttl) if modified else None
        pid = body.get("pid")
        holder = Holder(owner=str(body.get("owner") or "an unknown publisher"), host=str(body.get("host") or ""),
                        pid=pid if isinstance(pid, int) else 0, taken=modified, expires=expires,
                        etag=str(response.get("ETag", "")))
        self._server_now = now
        return holder

    def _stale(self, holder: Holder) -> str | None:
        """Why the holder's lock may be taken over (expired, or its process on this host is gone)."""
        now = getattr(self, "_server_now", None) or dt.datetime.now(dt.UTC)
        if holder.expires is not None and now >= holder.expires:
            return f"it expired at {holder.expires:%H:%M:%S}Z"
        if holder.host == socket.gethostname() and holder.pid > 0 and not _alive(holder.pid):
            return f"its process {holder.pid} on this host is gone"
        return None

    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait
        announced: str | None = None
        for _ in range(1_000_000):  # bounded by the deadline; the count only guards against a stuck clock
            try:
                self.etag = self._put(IfNoneMatch="*")
                break
            except Exception as exc:
                if error_code(exc) not in PRECONDITION:
                    raise
            holder = self._holder()
            if holder is None:
                continue  # released between our PUT and GET: try again at once
            why = self._stale(holder)
            if why:
                try:
                    self.etag = self._put(IfMatch=holder.etag)
                except Exception as exc:
                    if error_code(exc) not in PRECONDITION and error_code(exc) not in NOT_FOUND:
                        raise
                    continue  # someone else took it over first
                self.notify(f"took over the lock of {holder.describe()}: {why}")
                break
            if time.monotonic() >= deadline:
                expiry = f"; it expires at {holder.expires:%H:%M:%S}Z unless renewed" if holder.expires else ""
                raise LockError(f"{self.location} is locked by {holder.describe()}{expiry}; "
                                f"gave up after waiting {self.wait:.0f} s",
                                hint="another publisher is uploading: retry when it is done (--lock-wait SECONDS "
                                     "waits longer)")
            if announced != holder.owner:
                self.notify(f"waiting for the lock held by {holder.describe()} (up to {self.wait:.0f} s)")
                announced = holder.owner
            time.sleep(min(self.poll, max(0.05, deadline - time.monotonic())))
        else:
            raise LockError(f"{self.location}: could not take the lock")
        self._renewer = threading.Thread(target=self._renew_loop, name="bucket-lock", daemon=True)
        self._renewer.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(max(1.0, self.ttl / 3)):
            try:
                with self._guard:
                    self.etag = self._put(IfMatch=self.etag or "")
            except Exception as exc:
                if error_code(exc) in PRECONDITION or error_code(exc) in NOT_FOUND:
                    self.lost = "another publisher took the lock over (this one was too slow to renew it)"
                    return
                # A transient error: the next round retries well before the lock expires.

    def check(self) -> None:
        if self.lost:
            raise LockError(f"{self.location}: lost the lock: {self.lost}; stopped before writing the manifest",
                            hint="run the upload again")

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=30)
        if self.lost or not self.etag:
            return
        with contextlib.suppress(Exception):
            self.s3.delete_object(Bucket=self.location.bucket, Key=self.key, IfMatch=self.etag)

    def __enter__(self) -> BucketLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- gc ---------------------------------------------------------------------------------------------

@dataclass
class GcReport:
    location: str
    deleted: list[str] = field(default_factory=list)
    waiting: int = 0        # unreferenced, still inside the grace period
    referenced: int = 0
    bytes_deleted: int = 0
    dry_run: bool = False
    requests: int = 0


@contextlib.contextmanager
def counted(s3: Any) -> Iterator[list[int]]:
    """Count the HTTP requests a client sends (retries included) while the block runs."""
    count = [0]

    def hook(**_: Any) -> None:
        count[0] += 1

    s3.meta.events.register("before-send.s3", hook)
    try:
        yield count
    finally:
        s3.meta.events.unregister("before-send.s3", hook)


def collect_garbage(s3: Any, location: S3Location, *, grace_seconds: float, dry_run: bool = False,
                    lock_wait: float = 120.0, notify: Callable[[str], None] = lambda message: None) -> GcReport:
    """Delete objects under the prefix that the last upload's tree does not reference, once they have
    been unreferenced for ``grace_seconds`` (for objects the manifest never knew, e.g. left by a killed
    upload: unmodified for that long). Needs a valid manifest: without one nothing is deleted."""
    report = GcReport(str(location), dry_run=dry_run)
    with counted(s3) as requests, BucketLock(s3, location, wait=lock_wait, notify=notify) as lock:
        read = read_manifest(s3, location)
        if not read.found or read.corrupt:
            why = f"is corrupt ({read.corrupt})" if read.corrupt else "does not exist"
            raise RepogenError(f"{location}: the manifest {location.key(MANIFEST)} {why}: nothing deleted",
                               hint="run `repogen upload` first; gc only deletes what a valid manifest "
                                    "says is no longer referenced")
        manifest = read.manifest
        doomed: list[tuple[str, int]] = []
        seen: set[str] = set()
        now: dt.datetime | None = None
        paginator = s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=location.bucket, Prefix=list_prefix(location)):
            now = now or server_time(page) or dt.datetime.now(dt.UTC)
            for obj in page.get("Contents", []):
                rel = relative(location, obj["Key"])
                if rel is None or rel.startswith(STATE_DIR + "/"):
                    continue
                seen.add(rel)
                if rel in manifest.files:
                    report.referenced += 1
                    continue
                retired = manifest.retired.get(rel)
                since = dt.datetime.fromtimestamp(retired[2], dt.UTC) if retired else obj["LastModified"]
                if (now - since).total_seconds() >= grace_seconds:
                    doomed.append((obj["Key"], int(obj.get("Size", 0))))
                else:
                    report.waiting += 1
        report.deleted = [relative(location, key) or key for key, _ in doomed]
        report.bytes_deleted = sum(size for _, size in doomed)
        if not dry_run and doomed:
            lock.check()
            for i in range(0, len(doomed), 1000):
                batch = doomed[i:i + 1000]
                response = s3.delete_objects(Bucket=location.bucket, Delete={
                    "Objects": [{"Key": key} for key, _ in batch], "Quiet": True})
                failed = response.get("Errors") or []
                if failed:
                    first = failed[0]
                    raise RepogenError(f"{location}: {len(failed)} object(s) could not be deleted "
                                       f"(first: {first.get('Key')}: {first.get('Code')} {first.get('Message')})")
            gone = set(report.deleted)
            manifest.retired = {k: v for k, v in manifest.retired.items() if k not in gone and k in seen}
            lock.check()
            write_manifest(s3, location, manifest)
    report.requests = requests[0]
    return report
