"""What APT and RPM repositories share: the pool as the source of truth, conflicts, retention, grace.

A pool file, once published, is never replaced by different bytes: clients and mirrors cache by
name, so a silent replacement is a hash mismatch (or worse, a different package) somewhere else.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from itertools import repeat
from operator import attrgetter, methodcaller
from pathlib import Path
from stat import S_ISREG
from typing import Generic, NamedTuple, TypeVar, cast

from repogen.errors import PublishError
from repogen.repos.pkgcache import DebRecord, RpmRecord

log = logging.getLogger(__name__)

Record = TypeVar("Record", DebRecord, RpmRecord)

STATE_FILE = "repogen-state.json"


class PoolEntry(NamedTuple, Generic[Record]):
    """A package and where its bytes are now: an input file, or the live tree's pool.

    (A named tuple: a publish makes one per package, 10,000 and more, several times cheaper than a
    dataclass.)
    """

    record: Record
    source: str
    published: bool


@dataclass
class RepoStats:
    """What one repository's publish did, for the report and the incremental promise."""

    packages: int = 0
    read: int = 0
    cached: int = 0
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    carried_forward: int = 0
    dropped: list[str] = field(default_factory=list)  # left out on request (`repogen packages remove`)


def pool_entries(records: Iterable[Record], sources: Iterable[str], published: bool) -> list[PoolEntry[Record]]:
    """PoolEntry(record, source, published) for each pair (made without a Python call each: a
    publish makes 10,000 and more)."""
    make = partial(tuple.__new__, PoolEntry)
    return cast("list[PoolEntry[Record]]", list(map(make, zip(records, sources, repeat(published)))))


def check_inputs(paths: Iterable[str | Path], suffix: str,
                 stats: list[os.stat_result] | None = None) -> list[str]:
    """Input files must exist and look like packages; a directory or a typo is reported by name.

    Each file's stat is appended to ``stats`` when given (the cache looks files up by it).
    """
    checked = [os.fspath(path) for path in paths]
    try:  # 10,000 inputs and more: C-level loops, the one-by-one checks below only to name a culprit
        found = list(map(os.stat, checked))
        fine = all(map(S_ISREG, map(attrgetter("st_mode"), found))) and all(
            map(methodcaller("endswith", suffix), checked))
    except (OSError, ValueError):
        fine = False
    if fine:
        # os.path.splitext's rule: the leading dots of a name are no extension (".deb" is no package).
        fine = not any(path[path.rfind("/") + 1:].lstrip(".") == suffix[1:]
                       for path in checked if path.startswith(".") or "/." in path)
    if not fine:
        found = [_check_input(path, suffix) for path in checked]
    if stats is not None:
        stats.extend(found)
    return checked


def _check_input(path: str, suffix: str) -> os.stat_result:
    try:
        found = os.stat(path)
    except (OSError, ValueError):
        found = None
    if found is None or not S_ISREG(found.st_mode):
        raise PublishError(f"{path}: package file does not exist")
    if os.path.splitext(path)[1] != suffix:
        raise PublishError(f"{path}: not a {suffix} package (wrong file name extension)")
    return found


def published_files(pool_root: Path, suffix: str) -> list[str]:
    """Every package file in a live pool (bounded by the tree: os.walk does not follow symlinks)."""
    if not pool_root.is_dir():
        return []
    found: list[str] = []
    for directory, _dirs, files in os.walk(pool_root):
        found.extend(f"{directory}/{name}" for name in files if name.endswith(suffix))
    found.sort()
    return found


def merge(
    entries: Sequence[PoolEntry[Record]],
    identity: Callable[[Record], Hashable],
    describe: Callable[[Record], str],
) -> list[PoolEntry[Record]]:
    """One entry per package; the same identity or pool file with different bytes is refused."""
    by_id: dict[Hashable, PoolEntry[Record]] = {}
    by_path: dict[Hashable, PoolEntry[Record]] = {}
    unique: dict[str, PoolEntry[Record]] = {}
    flags = list(map(attrgetter("published"), entries))
    count = flags.index(False) if False in flags else len(flags)  # the live tree's packages come first
    if count > 64:
        # The live tree's packages are one package per sha256, identity and pool path (a publish made
        # them so): indexed in bulk, only the inputs are checked one by one.
        published = entries[:count]
        records = [entry.record for entry in published]
        unique = dict(zip(map(attrgetter("sha256"), records), published, strict=True))
        by_id = dict(zip(map(identity, records), published, strict=True))
        by_path = dict(zip(map(attrgetter("pool_path"), records), published, strict=True))
        if len(unique) == len(by_id) == len(by_path) == count:
            entries = entries[count:]
        else:  # a live tree that is not consistent (never written by a publish): every check, in order
            by_id, by_path, unique = {}, {}, {}
    for entry in entries:
        record = entry.record
        kept = unique.get(record.sha256)
        # The very record object again (an input already in the pool: one cache row for both) has
        # the keys it had the first time, which were checked then: nothing new to check.
        if kept is None or kept.record is not record:
            for index, key in ((by_id, identity(record)), (by_path, record.pool_path)):
                other = index.setdefault(key, entry)
                if other.record.sha256 != record.sha256:
                    _refuse(other, entry, describe)
        if kept is None or (entry.published and not kept.published):
            unique[record.sha256] = entry
    return list(unique.values())


def _refuse(first: PoolEntry[Record], second: PoolEntry[Record], describe: Callable[[Record], str]) -> None:
    published, other = (first, second) if first.published else (second, first)
    if published.published:
        raise PublishError(
            f"{other.source}: {describe(other.record)} is already published "
            f"({published.record.pool_path}) with different contents; a published package is never "
            "replaced",
            hint="give the new build a new version (or release) number",
        )
    raise PublishError(
        f"{first.source} and {second.source} are both {describe(first.record)} but differ; "
        "refusing to pick one",
        hint="remove one of them from the inputs",
    )


def drop(
    entries: list[PoolEntry[Record]],
    remove: Sequence[tuple[str, str | None]],
    versions: Callable[[Record], Sequence[str]],
) -> tuple[list[PoolEntry[Record]], list[PoolEntry[Record]]]:
    """(kept, dropped): leave out the packages named ``(name, version)``; version None means all of them.

    ``versions`` gives the spellings a package's version may be asked by (rpm: ``1.2``, ``1.2-3``,
    ``0:1.2-3``).
    """
    if not remove:
        return entries, []
    kept: list[PoolEntry[Record]] = []
    dropped: list[PoolEntry[Record]] = []
    for entry in entries:
        record = entry.record
        hit = any(record.name == name and (version is None or version in versions(record))
                  for name, version in remove)
        (dropped if hit else kept).append(entry)
    return kept, dropped


def retain(
    entries: list[PoolEntry[Record]],
    keep_versions: int | None,
    group: Callable[[Record], Hashable],
    compare: Callable[[Record, Record], int],
) -> tuple[list[PoolEntry[Record]], list[PoolEntry[Record]]]:
    """(kept, removed): the newest ``keep_versions`` per group, everything if None."""
    if keep_versions is None:
        return entries, []
    if keep_versions < 1:
        raise PublishError(f"keep_versions must be at least 1 (got {keep_versions})")
    groups: dict[Hashable, list[PoolEntry[Record]]] = defaultdict(list)
    for entry in entries:
        groups[group(entry.record)].append(entry)
    kept: list[PoolEntry[Record]] = []
    removed: list[PoolEntry[Record]] = []
    key = functools.cmp_to_key(compare)
    for members in groups.values():
        if len(members) > keep_versions:
            members.sort(key=lambda entry: key(entry.record))
            removed.extend(members[:-keep_versions])
            members = members[-keep_versions:]
        kept.extend(members)
    return kept, removed


def place(entries: Sequence[PoolEntry[Record]], repo_root: Path) -> list[tuple[os.stat_result, str]]:
    """Put every package at its pool path: hard links from the live pool, copies of inputs.

    Inputs are copied, not linked: a later in-place rewrite of an input must not change a
    published file. Returns (stat, sha256) of the copies, so the cache knows them next time.
    """
    root = os.fspath(repo_root)
    for parent in sorted({os.path.dirname(entry.record.pool_path) for entry in entries}):
        os.makedirs(f"{root}/{parent}", exist_ok=True)

    copies: list[PoolEntry[Record]] = [entry for entry in entries if not entry.published]
    linked = [entry for entry in entries if entry.published]
    if len(linked) < _LINK_PARALLEL_FROM:
        copies += _link_all(linked, root)
    else:
        # Each link is one syscall (GIL released), but on a busy journal a link can wait for the
        # inode it changes: a few threads, each a plain loop over its share, keep the disk busy.
        step = -(-len(linked) // _LINKERS)
        with ThreadPoolExecutor(max_workers=_LINKERS, thread_name_prefix="link") as pool:
            for failed in pool.map(_link_all, [linked[i:i + step] for i in range(0, len(linked), step)],
                                   [root] * _LINKERS):
                copies += failed

    def copy(entry: PoolEntry[Record]) -> tuple[os.stat_result, str]:
        dest = f"{root}/{entry.record.pool_path}"
        if not os.path.exists(dest):
            shutil.copyfile(entry.source, dest)
        return os.stat(dest), entry.record.sha256

    if len(copies) < 16:
        return [copy(entry) for entry in copies]
    with ThreadPoolExecutor(max_workers=4) as pool:  # copying releases the GIL: overlap the I/O
        return list(pool.map(copy, copies))


_NO_LINK = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP)
_LINKERS = 4
_LINK_PARALLEL_FROM = 2000


def _link_all(entries: Sequence[PoolEntry[Record]], root: str) -> list[PoolEntry[Record]]:
    """Hard-link each published entry at its pool path; returns those that must be copied instead."""
    failed: list[PoolEntry[Record]] = []
    link = os.link
    for entry in entries:
        # A plain loop over strings: Path objects here cost as much again as the links themselves.
        try:
            link(entry.source, f"{root}/{entry.record.pool_path}")
        except OSError as error:
            if error.errno not in _NO_LINK:
                raise
            failed.append(entry)
    return failed


def link_or_copy(source: str | Path, dest: str | Path) -> bool:
    """Hard-link (cheap, keeps the inode the cache knows); copy across file systems. True if linked."""
    try:
        os.link(source, dest)
        return True
    except OSError as error:
        if error.errno not in _NO_LINK:
            raise
    shutil.copy2(source, dest)
    return False


def carry_forward(
    previous_root: Path | None,
    repo_root: Path,
    candidates: Iterable[str],
    current: set[str],
    now: datetime,
    grace_seconds: int,
) -> int:
    """Keep superseded metadata files for ``grace_seconds`` so clients mid-update still find them.

    ``candidates`` are paths (relative to the repo root) of metadata files in the live tree; the
    time each stopped being current is remembered in ``repogen-state.json``. Returns how many
    files were carried forward.
    """
    previous_state: dict[str, str] = {}
    if previous_root is not None:
        state_path = previous_root / STATE_FILE
        try:
            previous_state = json.loads(state_path.read_text()).get("superseded", {})
        except FileNotFoundError:
            pass
        except (ValueError, AttributeError, OSError) as error:
            log.warning("%s: unreadable (%s); superseded metadata is kept for a full grace period",
                        state_path, error)
    superseded: dict[str, str] = {}
    carried = 0
    for relative in sorted(set(candidates) - current):
        assert previous_root is not None
        since = _parse_time(previous_state.get(relative)) or now
        if now - since >= timedelta(seconds=grace_seconds):
            continue
        dest = repo_root / relative
        dest.parent.mkdir(parents=True, exist_ok=True)
        link_or_copy(previous_root / relative, dest)
        superseded[relative] = since.isoformat()
        carried += 1
    (repo_root / STATE_FILE).write_text(json.dumps({"version": 1, "superseded": superseded}, indent=1) + "\n")
    return carried


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


# -- the shared pool --------------------------------------------------------------------------------
#
# Package files live once, in a pool shared by every generation of the site
# (``.<site>.generations/pool/deb/pool/...``, ``.../pool/rpm/packages/...``); a generation's
# ``deb/pool`` and ``rpm/packages`` are relative symbolic links to it. A publish adds the new files
# (each written to a temporary name and renamed: a reader never sees half a package) and links,
# instead of re-linking every published package into the new generation. What a generation
# publishes is its manifest (``repogen-pool.json``: the pool paths its indexes list), not what
# happens to lie in the shared directory. Files no generation lists any more are deleted by
# :func:`collect_garbage` once they have been unlisted for the grace period.

MANIFEST_FILE = "repogen-pool.json"
GC_STATE_FILE = "repogen-gc.json"
REPOSITORY_KINDS = ("deb", "rpm")


def published_in(previous_root: Path | None, top: str, suffix: str) -> list[str]:
    """The package files the live repository publishes: its manifest, else (older trees) its pool."""
    return published_with_digests(previous_root, top, suffix)[0]


def published_with_digests(previous_root: Path | None, top: str, suffix: str) -> tuple[list[str], list[str]]:
    """(paths, sha256s) of what the live repository publishes; sha256s empty for trees before manifests."""
    if previous_root is None:
        return [], []
    manifest = previous_root / MANIFEST_FILE
    try:
        listed = read_manifest(manifest)
    except FileNotFoundError:
        return published_files(previous_root / top, suffix), []
    root = os.fspath(previous_root)
    prefix = f"{top}/"
    chosen = [(path, sha) for path, sha in listed.items() if path.startswith(prefix)]
    return [f"{root}/{path}" for path, _sha in chosen], [sha for _path, sha in chosen]


def read_manifest(manifest: Path) -> dict[str, str]:
    """Pool path -> sha256 of what a generation lists; a damaged manifest is an error, never an empty
    repository."""
    try:
        data = json.loads(manifest.read_text())
        files = data["files"]
        if (not isinstance(files, dict) or not _safe_paths(list(files))
                or not _SHA256_LINES.fullmatch("\n".join(files.values()))):
            raise ValueError("unexpected content")
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise PublishError(f"{manifest}: unreadable ({error}); the live repository is left as it is",
                           hint="restore the file from the generation before, or republish every package") from None
    return files


_SHA256_LINES = re.compile(r"(?:[0-9a-f]{64}(?:\n[0-9a-f]{64})*)?")
def _safe_paths(paths: list[str]) -> bool:
    """No empty, absolute or '..' path, no NUL or newline: checked on all of them joined at once."""
    if not paths:
        return True
    joined = "\n" + "\n".join(paths) + "\n"  # (TypeError for a path that is not text)
    return joined.count("\n") == len(paths) + 1 and not any(
        bad in joined for bad in ("\n\n", "\n/", "\0", "/../", "\n../", "/..\n", "\n..\n"))


def write_manifest(repo_root: Path, entries: Sequence[PoolEntry[Record]]) -> None:
    files = dict(sorted([(entry.record.pool_path, entry.record.sha256) for entry in entries]))
    # Sorted (entries usually are: sorting them again costs less than sort_keys), no indent: json's C
    # encoder (an indent makes it the pure-Python one).
    (repo_root / MANIFEST_FILE).write_text(json.dumps({"version": 1, "files": files}) + "\n")


def place_shared(entries: Sequence[PoolEntry[Record]], repo_root: Path, shared_root: Path, top: str,
                 previous_root: Path | None) -> list[tuple[os.stat_result, str]]:
    """Make every entry present in the shared pool and link ``repo_root/top`` to it.

    Published entries of a live tree that already uses this shared pool are there: nothing to do for
    them, which is the point. Inputs are copied (a later rewrite of an input must not change a
    published file) to a temporary name and renamed into place; a file left at that path by a failed
    or retention-removed publish with other bytes is replaced the same way (no live index lists it:
    ``merge`` refused any conflict with the live tree). Returns (stat, sha256) of the copies.
    """
    shared = os.fspath(shared_root)
    os.makedirs(f"{shared}/{top}", exist_ok=True)
    already = previous_root is not None and os.path.realpath(previous_root / top) == os.path.realpath(f"{shared}/{top}")
    todo = [entry for entry in entries if not (entry.published and already)]
    for parent in sorted({os.path.dirname(entry.record.pool_path) for entry in todo}):
        os.makedirs(f"{shared}/{parent}", exist_ok=True)

    def put(entry: PoolEntry[Record]) -> tuple[os.stat_result, str] | None:
        dest = f"{shared}/{entry.record.pool_path}"
        try:
            found = os.stat(dest)
        except FileNotFoundError:
            found = None
        if found is not None and found.st_size == entry.record.size and _file_sha256(dest) == entry.record.sha256:
            return (found, entry.record.sha256) if not entry.published else None
        directory, name = os.path.split(dest)
        temporary = f"{directory}/.{name}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            if entry.published:
                link_or_copy(entry.source, temporary)
            else:
                shutil.copyfile(entry.source, temporary)
            os.replace(temporary, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        return None if entry.published else (os.stat(dest), entry.record.sha256)

    if len(todo) < 16:
        placed = [put(entry) for entry in todo]
    else:
        with ThreadPoolExecutor(max_workers=4) as pool:  # copying releases the GIL: overlap the I/O
            placed = list(pool.map(put, todo))
    if entries:
        link = repo_root / top
        os.makedirs(repo_root, exist_ok=True)
        os.symlink(os.path.relpath(f"{shared}/{top}", repo_root), link)
    return [copy for copy in placed if copy is not None]


def _file_sha256(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def collect_garbage(pool_base: Path, generations: Iterable[Path], now: datetime, grace_seconds: int,
                    *, every_seconds: float = 0) -> list[str]:
    """Delete shared-pool files that no generation's manifest has listed for ``grace_seconds``.

    ``generations`` are every generation (and staging tree) still on disk. The time each file was
    first seen unlisted is kept in ``repogen-gc.json``; with ``every_seconds``, nothing is done when
    that file was written less than that long ago (a publish need not walk the pool each time: a
    file is then deleted at most that much later). Nothing is deleted when a manifest cannot be
    read. Returns the deleted paths, relative to ``pool_base``.
    """
    if not pool_base.is_dir():
        return []
    with contextlib.suppress(OSError):
        if every_seconds > 0 and time.time() - (pool_base / GC_STATE_FILE).stat().st_mtime < every_seconds:
            return []
    listed: set[str] = set()
    for generation in generations:
        for kind in REPOSITORY_KINDS:
            try:
                listed.update(f"{kind}/{path}" for path in read_manifest(generation / kind / MANIFEST_FILE))
            except FileNotFoundError:
                continue
            except PublishError as error:
                log.warning("%s; the shared pool is not garbage-collected this time", error)
                return []
    state_path = pool_base / GC_STATE_FILE
    try:
        unlisted_since = json.loads(state_path.read_text()).get("unlisted", {})
    except (OSError, ValueError, AttributeError):
        unlisted_since = {}
    base = os.fspath(pool_base)
    still: dict[str, str] = {}
    deleted: list[str] = []
    for kind in REPOSITORY_KINDS:
        for directory, _dirs, files in os.walk(f"{base}/{kind}"):
            for name in files:
                path = f"{directory}/{name}"
                relative = path[len(base) + 1:]
                if relative in listed:
                    continue
                since = _parse_time(unlisted_since.get(relative)) or now
                if now - since >= timedelta(seconds=grace_seconds):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                    deleted.append(relative)
                else:
                    still[relative] = since.isoformat()
    temporary = state_path.with_name(f".{GC_STATE_FILE}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps({"version": 1, "unlisted": still}, indent=1) + "\n")
    os.replace(temporary, state_path)
    return sorted(deleted)
