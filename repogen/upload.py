"""Upload a published tree to S3 (behind a CDN), incrementally, in an order no client can notice.

``site`` is a symlink to one complete generation; that generation is read (once resolved, a
concurrent ``publish`` cannot mix two generations into one upload) and its files are compared with the
bucket's manifest (``repogen.bucket``): a no-op upload is that one GET. Otherwise, under the bucket
lock, only the changed keys are PUT, stage after stage, so that every index a client can fetch names
only objects that are already there:

1. content: driver files, ``pool/``, ``by-hash/``, checksum-named ``repodata/`` files
2. indexes: ``index.json``, ``Packages*``, the ready ``.sources``/``.repo`` files, keyrings
3. ``SHA256SUMS`` (it covers ``index.json``)
4. ``Release``, ``Release.gpg``, ``SHA256SUMS.asc``
5. entry points: ``InRelease``, ``repomd.xml``, ``repomd.xml.asc``

then the manifest. Nothing is ever deleted here (``repogen gc s3://...`` does that after a grace
period). Each PUT carries the file's sha256 (``x-amz-checksum-sha256``, which S3 verifies, and
``x-amz-meta-sha256``): ETags are never read as digests.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import hashlib
import json
import mimetypes
import os
import re
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repogen.bucket import BucketLock, Manifest, counted, read_manifest, write_manifest
from repogen.errors import RepogenError
from repogen.s3 import S3Location, list_prefix

IMMUTABLE = "public, max-age=31536000, immutable"
LONG = "public, max-age=86400"  # driver files: stable names, but `build --rebuild` may replace one
SHORT = "public, max-age=60"
CHECKPOINT_FILES = 500
CHECKPOINT_SECONDS = 20.0
INVALIDATION_MAX_PATHS = 1000


class Stage(enum.IntEnum):
    content = 1
    indexes = 2
    checksums = 3
    release = 4
    entry = 5


@dataclass(frozen=True)
class Rule:
    stage: Stage
    cache_control: str

    @property
    def mutable(self) -> bool:
        return self.cache_control != IMMUTABLE


_CHECKSUM_NAMED = re.compile(r"[0-9a-f]{32,128}-[^/]+")
_ENTRY = {"InRelease", "repomd.xml", "repomd.xml.asc"}
_RELEASE = {"Release", "Release.gpg", "SHA256SUMS.asc"}


def classify(relative: str) -> Rule:
    """Where a file of the published tree goes in the upload order, and how long it may be cached."""
    parts = relative.split("/")
    name = parts[-1]
    if name in _ENTRY:
        return Rule(Stage.entry, SHORT)
    if name in _RELEASE:
        return Rule(Stage.release, SHORT)
    if name == "SHA256SUMS":
        return Rule(Stage.checksums, SHORT)
    if "by-hash" in parts[:-1]:
        return Rule(Stage.content, IMMUTABLE)
    if parts[0] in ("deb", "rpm") and ("pool" in parts[:-1] or name.endswith((".deb", ".udeb", ".rpm"))):
        return Rule(Stage.content, IMMUTABLE)  # a published package is never replaced (repos/pool.py)
    if "repodata" in parts[:-1] and _CHECKSUM_NAMED.fullmatch(name):
        return Rule(Stage.content, IMMUTABLE)
    if parts[0] in ("driver", "v1") and len(parts) > 1:
        return Rule(Stage.content, LONG)
    return Rule(Stage.indexes, SHORT)


_TYPES = {
    ".ko": "application/octet-stream", ".o": "application/octet-stream",
    ".deb": "application/vnd.debian.binary-package", ".udeb": "application/vnd.debian.binary-package",
    ".rpm": "application/x-rpm", ".json": "application/json", ".xml": "application/xml",
    ".gz": "application/gzip", ".xz": "application/x-xz", ".bz2": "application/x-bzip2",
    ".zst": "application/zstd", ".sqlite": "application/vnd.sqlite3", ".gpg": "application/pgp-keys",
    ".sources": "text/plain; charset=utf-8", ".repo": "text/plain; charset=utf-8",
}
_TEXT_NAMES = {"Release", "InRelease", "Packages", "Sources", "SHA256SUMS", "Contents"}
_MAGIC = ((b"\x1f\x8b", "application/gzip"), (b"\xfd7zXZ\x00", "application/x-xz"),
          (b"\x28\xb5\x2f\xfd", "application/zstd"), (b"BZh", "application/x-bzip2"))


def content_type(relative: str, head: bytes = b"") -> str:
    """The Content-Type of a published file (by name; by-hash files, which have none, by their magic)."""
    name = relative.rsplit("/", 1)[-1]
    if name == "Release.gpg" or name.endswith(".asc"):
        return "application/pgp-keys" if "keyring" in name else "application/pgp-signature"
    if name in _TEXT_NAMES:
        return "text/plain; charset=utf-8"
    suffix = os.path.splitext(name)[1]
    if suffix in _TYPES:
        return _TYPES[suffix]
    if "/by-hash/" in f"/{relative}":
        for magic, kind in _MAGIC:
            if head.startswith(magic):
                return kind
        return "text/plain; charset=utf-8"
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


# -- the local tree ---------------------------------------------------------------------------------

class NotATree(RepogenError):
    exit_code = 2


@dataclass(frozen=True)
class LocalFile:
    relative: str
    path: Path
    sha256: str
    size: int


def _tree_files(root: Path, boundary: Path) -> dict[str, Path]:
    """Every file of the tree by its relative path, following the symbolic links publish makes.

    A generation's ``deb/pool`` and ``rpm/packages`` are relative links to the shared package pool
    beside the generations (see ``repogen.publish``); a link that is absolute, leaves ``boundary``
    (the directory holding the site) or loops is refused: repogen never makes one.
    """
    found: dict[str, Path] = {}
    pending = [(root, "")]
    walked = {root}
    while pending:
        top, prefix = pending.pop()
        for directory, dirs, files in os.walk(top):
            for name in [*files, *(d for d in dirs if os.path.islink(os.path.join(directory, d)))]:
                path = Path(directory, name)
                relative = prefix + path.relative_to(top).as_posix()
                if path.is_symlink():
                    target = os.readlink(path)
                    real = Path(os.path.realpath(path))
                    if os.path.isabs(target) or not real.is_relative_to(boundary):
                        raise NotATree(f"{path}: a symbolic link leaving the published tree (to {target}); "
                                       "repogen publish makes only relative links to its shared package pool")
                    if real.is_dir():
                        if real in walked or any(real.is_relative_to(w) or w.is_relative_to(real) for w in walked):
                            raise NotATree(f"{path}: a symbolic link into a directory walked already (a loop?)")
                        walked.add(real)
                        pending.append((real, f"{relative}/"))
                        continue
                    path = real
                if not path.is_file():
                    raise NotATree(f"{path}: not a regular file")
                found[relative] = path
    return found


def read_tree(site: Path) -> tuple[Path, dict[str, LocalFile]]:
    """The generation ``site`` points at and its files with their digests.

    Digests of the files SHA256SUMS lists come from it (their bytes are checked against it by S3 on
    upload, through the checksum header); the APT/RPM files are hashed here.
    """
    hint = f"run `repogen publish --site {site}` first, and upload the directory (or link) it wrote"
    if not site.exists():
        raise NotATree(f"{site} does not exist", hint=hint)
    root = site.resolve()
    if not root.is_dir():
        raise NotATree(f"{site} is not a directory", hint=hint)
    try:
        index = json.loads((root / "index.json").read_bytes())
        generator = index.get("generator", "") if isinstance(index, dict) else ""
    except FileNotFoundError:
        raise NotATree(f"{site} is not a published repogen tree: it has no index.json", hint=hint) from None
    except (OSError, ValueError) as exc:
        raise NotATree(f"{site}/index.json: not a repogen index ({exc})", hint=hint) from None
    if not isinstance(generator, str) or not generator.startswith("repogen"):
        raise NotATree(f"{site}/index.json: not written by repogen (generator {generator!r})", hint=hint)
    sums_path = root / "SHA256SUMS"
    if not sums_path.is_file():
        raise NotATree(f"{site} is not a published repogen tree: it has no SHA256SUMS", hint=hint)
    listed: dict[str, str] = {}
    for number, line in enumerate(sums_path.read_text(errors="replace").splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise NotATree(f"{sums_path}:{number}: not a sha256sum line")
        listed[name] = digest
    found = _tree_files(root, site.absolute().parent.resolve())
    missing = sorted(set(listed) - set(found))
    if missing:
        raise NotATree(f"{sums_path}: lists {missing[0]}, which is not in the tree"
                       + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))

    def describe(item: tuple[str, Path]) -> LocalFile:
        relative, path = item
        size = path.stat().st_size
        digest = listed.get(relative)
        if digest is None:
            with path.open("rb") as fh:
                digest = hashlib.file_digest(fh, "sha256").hexdigest()
        return LocalFile(relative, path, digest, size)

    with ThreadPoolExecutor(max_workers=4) as pool:  # hashing releases the GIL
        local = {f.relative: f for f in pool.map(describe, sorted(found.items()))}
    return root, local


# -- the upload -------------------------------------------------------------------------------------

@dataclass
class UploadReport:
    location: str
    generation: str
    files: int = 0
    uploaded: list[str] = field(default_factory=list)
    bytes_uploaded: int = 0
    unchanged: int = 0
    overwritten: list[str] = field(default_factory=list)
    retired: int = 0
    invalidation: dict[str, Any] | None = None
    requests: int = 0
    noop: bool = False
    dry_run: bool = False
    notes: list[str] = field(default_factory=list)
    stages: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["uploaded"] = len(self.uploaded)
        data["uploaded_keys"] = self.uploaded
        return data


def changed_keys(local: dict[str, LocalFile], manifest: Manifest) -> list[str]:
    return sorted(k for k, f in local.items() if manifest.files.get(k) != (f.sha256, f.size))


def _put(s3: Any, location: S3Location, item: LocalFile) -> None:
    rule = classify(item.relative)
    with item.path.open("rb") as fh:
        head = fh.read(8)
        fh.seek(0)
        s3.put_object(Bucket=location.bucket, Key=location.key(item.relative), Body=fh,
                      ContentLength=item.size, ContentType=content_type(item.relative, head),
                      CacheControl=rule.cache_control, Metadata={"sha256": item.sha256},
                      ChecksumSHA256=base64.b64encode(bytes.fromhex(item.sha256)).decode())


def upload(
    site: Path,
    location: S3Location,
    s3: Any,
    *,
    dry_run: bool = False,
    lock_wait: float = 120.0,
    lock_ttl: float = 300.0,
    threads: int = 8,
    cloudfront: Callable[[], Any] | None = None,
    distribution: str | None = None,
    notify: Callable[[str], None] = lambda message: None,
    progress: Callable[[int, int], None] = lambda done, total: None,
    on_stage: Callable[[str, int], None] = lambda stage, files: None,
) -> UploadReport:
    root, local = read_tree(site)
    report = UploadReport(str(location), root.name, files=len(local), dry_run=dry_run)
    with counted(s3) as requests:
        try:
            _upload(root, local, location, s3, report, dry_run=dry_run, lock_wait=lock_wait, lock_ttl=lock_ttl,
                    threads=threads, notify=notify, progress=progress, on_stage=on_stage)
        finally:
            report.requests = requests[0]
    if distribution and report.uploaded and not dry_run:
        assert cloudfront is not None
        report.invalidation = invalidate(cloudfront(), distribution, location, report)
    return report


def _upload(root: Path, local: dict[str, LocalFile], location: S3Location, s3: Any, report: UploadReport, *,
            dry_run: bool, lock_wait: float, lock_ttl: float, threads: int, notify: Callable[[str], None],
            progress: Callable[[int, int], None], on_stage: Callable[[str, int], None]) -> None:
    read = read_manifest(s3, location)
    if read.corrupt:
        report.notes.append(f"the manifest in the bucket is corrupt ({read.corrupt}): not trusted, "
                            "every file is uploaded again")
        notify(report.notes[-1])
    todo = changed_keys(local, read.manifest)
    if not todo:
        report.noop = True
        report.unchanged = len(local)
        return
    if dry_run:
        _plan(report, local, todo, read.manifest, trusted=not read.corrupt)
        return
    with BucketLock(s3, location, ttl=lock_ttl, wait=lock_wait, notify=notify) as lock:
        read = read_manifest(s3, location, read)  # the authoritative one, now that nobody else writes
        previous = read.manifest
        todo = changed_keys(local, previous)
        _plan(report, local, todo, previous, trusted=not read.corrupt)
        if not todo:
            report.noop = True
            return
        # The invariant (bucket.py): forget the keys about to be overwritten before touching them.
        current = Manifest(dict(previous.files), dict(previous.retired), previous.generation)
        # Kept as retired meanwhile: if this run dies, the next one still knows they were there (CDN
        # invalidation) and gc still knows them.
        stale = [k for k in todo if k in current.files]
        if stale:
            now = time.time()
            for key in stale:
                sha, size = current.files.pop(key)
                current.retired[key] = (sha, size, now)
            write_manifest(s3, location, current)
        done = 0
        guard = threading.Lock()
        last_checkpoint = [time.monotonic(), 0]
        by_stage: dict[Stage, list[LocalFile]] = {}
        for key in todo:
            by_stage.setdefault(classify(key).stage, []).append(local[key])

        def one(item: LocalFile) -> None:
            nonlocal done
            lock.check()
            _put(s3, location, item)
            with guard:
                current.files[item.relative] = (item.sha256, item.size)
                current.retired.pop(item.relative, None)
                done += 1
                progress(done, len(todo))

        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="upload") as pool:
            for stage in Stage:
                items = by_stage.get(stage, [])
                if not items:
                    continue
                report.stages[stage.name] = len(items)
                on_stage(stage.name, len(items))
                pending = {pool.submit(one, item) for item in items}
                while pending:
                    finished, pending = wait(pending, timeout=CHECKPOINT_SECONDS, return_when=FIRST_EXCEPTION)
                    failed = next((f for f in finished if f.exception() is not None), None)
                    if failed is not None:  # the first failure stops the upload; the manifest stays true
                        for future in pending:
                            future.cancel()
                        failed.result()
                    if pending and (done - last_checkpoint[1] >= CHECKPOINT_FILES
                                    or time.monotonic() - last_checkpoint[0] >= CHECKPOINT_SECONDS):
                        with guard:
                            snapshot = Manifest(dict(current.files), dict(current.retired), current.generation)
                        lock.check()
                        write_manifest(s3, location, snapshot)
                        last_checkpoint[:] = [time.monotonic(), done]
        now = time.time()
        retired = {k: v for k, v in current.retired.items() if k not in local}
        retired.update({k: (sha, size, now) for k, (sha, size) in current.files.items() if k not in local})
        final = Manifest({k: (f.sha256, f.size) for k, f in local.items()}, retired, root.name)
        report.retired = len(retired)
        lock.check()
        write_manifest(s3, location, final)


def _plan(report: UploadReport, local: dict[str, LocalFile], todo: list[str], previous: Manifest,
          trusted: bool) -> None:
    report.uploaded = todo
    report.bytes_uploaded = sum(local[k].size for k in todo)
    report.unchanged = len(local) - len(todo)
    if trusted:
        report.overwritten = [k for k in todo if k in previous.files or k in previous.retired]
    else:  # what the bucket held is unknown: any mutable name may have been there before
        report.overwritten = [k for k in todo if classify(k).mutable]


# -- CDN --------------------------------------------------------------------------------------------

def invalidation_paths(location: S3Location, keys: Iterable[str]) -> list[str]:
    """CloudFront paths for overwritten keys: each as the key is stored and as clients escape it
    (falcoctl and falco-driver-loader send '+' as %2B, which a CDN may cache separately)."""
    paths: set[str] = set()
    for relative in keys:
        key = location.key(relative)
        paths.add("/" + urllib.parse.quote(key, safe="/-_.~+"))
        if "+" in key:
            paths.add("/" + urllib.parse.quote(key, safe="/-_.~"))
    if len(paths) > INVALIDATION_MAX_PATHS:
        return [f"/{list_prefix(location)}*"]
    return sorted(paths)


def invalidate(cloudfront: Any, distribution: str, location: S3Location, report: UploadReport) -> dict[str, Any]:
    paths = invalidation_paths(location, report.overwritten)
    if not paths:
        return {"distribution": distribution, "paths": [], "id": None}
    response = cloudfront.create_invalidation(DistributionId=distribution, InvalidationBatch={
        "Paths": {"Quantity": len(paths), "Items": paths}, "CallerReference": f"repogen-{uuid.uuid4().hex}"})
    return {"distribution": distribution, "paths": paths, "id": response["Invalidation"]["Id"]}
