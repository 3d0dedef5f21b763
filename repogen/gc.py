"""Local garbage collection: what nothing references any more, and the space it takes.

References come from the state database and the matrix in kernels.yaml:

- store objects: kept when they are the artifact of some job's current build (``jobs.good_key``,
  whether or not the job is still in the matrix: artifacts are small and a kernel may come back);
  superseded artifacts are removed and their build rows marked ``collected``, so they are rebuilt
  rather than served if their inputs ever come back;
- downloads, unpacked kernels and kernel images, driver sources and prepared driver trees: kept when
  the matrix still names them (its header, kernel image and source URLs, their digests, the recorded
  builder images);
- build logs: kept for each job's last and current build;
- ``work/`` scratch, interrupted downloads and stale staging directories: removed after an hour;
- old generations of ``site``: the live one and the newest ``keep_generations`` others are kept.

``--dry-run`` computes the same list and removes nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from repogen.home import Home
from repogen.model import Config

#: Scratch younger than this may belong to a build running now.
STALE_SECONDS = 3600


@dataclass(frozen=True)
class Removal:
    what: str  # artifact, download, kernel, boot-image, source, prepared, log, work, generation
    path: Path
    size: int


@dataclass
class GcReport:
    removals: list[Removal] = field(default_factory=list)
    dry_run: bool = False

    @property
    def freed(self) -> int:
        return sum(r.size for r in self.removals)

    def by_kind(self) -> dict[str, tuple[int, int]]:
        counts: Counter[str] = Counter()
        sizes: Counter[str] = Counter()
        for r in self.removals:
            counts[r.what] += 1
            sizes[r.what] += r.size
        return {what: (counts[what], sizes[what]) for what in counts}


def size_of(path: Path) -> int:
    """Bytes a file or a tree takes (symbolic links not followed)."""
    try:
        if not path.is_dir() or path.is_symlink():
            return path.lstat().st_size
    except OSError:
        return 0
    total = 0
    for directory, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_size
    return total


def _children(directory: Path) -> list[Path]:
    return sorted(directory.iterdir()) if directory.is_dir() else []


def _stale(path: Path, now: float) -> bool:
    try:
        return now - path.lstat().st_mtime > STALE_SECONDS
    except OSError:
        return False


def _busy(path: Path, now: float) -> bool:
    """A staging or partial entry (``.name``, ``*.tmp*``, ``*.staging``) that may belong to a running
    build: left alone until it is stale."""
    name = path.name
    return (name.startswith(".") or ".tmp" in name or name.endswith(".staging")) and not _stale(path, now)


def find_garbage(home: Home, config: Config, site: Path | None, *, keep_generations: int = 2,
                 now: float | None = None) -> list[Removal]:
    """Everything gc would remove, without removing anything."""
    from repogen import plan
    from repogen.build import prepared_key
    from repogen.headers import HeadersCache

    now = now or time.time()
    out: list[Removal] = []

    def add(what: str, path: Path) -> None:
        out.append(Removal(what, path, size_of(path)))

    store = home.store
    # Store objects: the artifacts of current builds are referenced.
    referenced = store.current_artifacts()
    for prefix in _children(store.objects):
        for obj in _children(prefix):
            if obj.name not in referenced and not _busy(obj, now):
                add("artifact", obj)
    # Downloads: the digests of the URLs the matrix names.
    url_digests = store.url_digests()
    named = [h for k in config.kernels for h in (*k.headers, *([k.image] if k.image else []))]
    urls = {h.url for h in named} | {d.source.url for d in config.drivers if d.source.url}
    wanted_downloads = {url_digests[u] for u in urls if u in url_digests}
    wanted_downloads |= {h.sha256 for h in named if h.sha256}
    wanted_downloads |= {d.source.sha256 for d in config.drivers if d.source.url and d.source.sha256}
    for path in _children(home.downloads.root):
        if path.name not in wanted_downloads and not _busy(path, now):
            add("download", path)
    # Kernel images unpacked for the boot check: one directory per image package digest.
    wanted_images = {k.image.sha256 or url_digests.get(k.image.url) for k in config.kernels if k.image}
    for path in _children(home.path / "cache" / "boot"):
        if path.name not in wanted_images and not _busy(path, now):
            add("boot-image", path)
    # Unpacked kernels: one directory per set of header digests.
    wanted_kernels = set()
    for kernel in config.kernels:
        digests = [h.sha256 or url_digests.get(h.url) for h in kernel.headers]
        if all(digests):
            wanted_kernels.add(HeadersCache.key([d for d in digests if d]))
    for path in _children(home.headers.root):
        if path.name not in wanted_kernels and not _busy(path, now):
            add("kernel", path)
    # Driver sources and prepared trees.
    source_digests = set()
    for driver in config.drivers:
        digest = plan._known_source_digest(home, driver, {})
        if digest:
            source_digests.add(digest)
    image_ids = set(store.image_ids().values())
    wanted_prepared = {prepared_key(digest, d.recipe, d, image)
                       for d in config.drivers for image in image_ids
                       for digest in [plan._known_source_digest(home, d, {})] if digest}
    for path in _children(home.sources.root):
        if path.name not in source_digests and not _busy(path, now):
            add("source", path)
    for path in _children(home.prepared):
        if path.name not in wanted_prepared and not _busy(path, now) and not (
                "." in path.name and not _stale(path, now)):
            add("prepared", path)
    # Build logs: those of each job's last and current build.
    wanted_logs = store.current_logs()
    for driver_dir in _children(home.logs):
        if driver_dir.name in ("images", "prepare") or not driver_dir.is_dir():
            continue
        for log in driver_dir.rglob("*.log"):
            if str(log) not in wanted_logs and _stale(log, now):
                add("log", log)
    for path in _children(home.work):
        if _stale(path, now):
            add("work", path)
    # Generations of the published tree.
    if site is not None:
        from repogen.generations import generations
        from repogen.publish import generations_dir

        kept = [g for g in generations(site) if not g.live]
        for old in kept[:max(0, len(kept) - keep_generations)]:
            add("generation", old.path)
        for stale in generations_dir(site.absolute()).glob("*.staging"):
            if _stale(stale, now):
                add("generation", stale)
    return out


def collect(home: Home, config: Config, site: Path | None, *, dry_run: bool, keep_generations: int = 2) -> GcReport:
    """Remove the garbage (or, with ``dry_run``, only say what it is). With a site, its lock is held
    throughout: no publish or rollback runs while its generations are judged and removed."""
    if site is None or dry_run:
        return _collect(home, config, site, dry_run=dry_run, keep_generations=keep_generations)
    from repogen.publish import site_lock

    with site_lock(site, "collecting garbage in"):
        return _collect(home, config, site, dry_run=dry_run, keep_generations=keep_generations)


def _collect(home: Home, config: Config, site: Path | None, *, dry_run: bool, keep_generations: int) -> GcReport:
    report = GcReport(find_garbage(home, config, site, keep_generations=keep_generations), dry_run=dry_run)
    if dry_run:
        return report
    artifacts = [r.path.name for r in report.removals if r.what == "artifact"]
    # The database first: a build whose object is gone must never count as done.
    home.store.mark_collected(artifacts)
    downloads = {r.path.name for r in report.removals if r.what == "download"}
    home.store.forget_downloads(downloads)
    for removal in report.removals:
        if removal.path.is_dir() and not removal.path.is_symlink():
            shutil.rmtree(removal.path, ignore_errors=True)
        else:
            removal.path.unlink(missing_ok=True)
    return report
