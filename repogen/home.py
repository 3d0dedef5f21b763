"""The state directory (``.repogen/`` or ``$REPOGEN_HOME``): database, artifact store, caches, logs."""

from __future__ import annotations

import os
from pathlib import Path

from repogen import locks
from repogen.fetch import DownloadCache
from repogen.headers import HeadersCache
from repogen.sources import SourceCache
from repogen.store import Store

KEEP_MARK = ".keep"  # a work directory kept on purpose (--keep-work), not a leftover


class Home:
    """The state directory (``.repogen/`` or ``$REPOGEN_HOME``): database, store, caches, logs."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        """``create=False`` (read-only commands): a home that does not exist is not created."""
        self.path = path.absolute()
        self.store = Store(self.path, create=create)
        self.downloads = DownloadCache(self.path / "cache" / "downloads", self.store,
                                       timeout=float(os.environ.get("REPOGEN_FETCH_TIMEOUT", "60")),
                                       retries=int(os.environ.get("REPOGEN_FETCH_RETRIES", "2")))
        self.headers = HeadersCache(self.path / "cache" / "kernels")
        self.sources = SourceCache(self.path / "cache" / "sources", self.downloads)
        self.prepared = self.path / "cache" / "prepared"
        self.logs = self.path / "logs"
        self.work = self.path / "work"
        self.config_cache = self.path / "cache" / "config"

    def sweep(self) -> int:
        """Remove what runs killed mid-way left (partial downloads, staging and work directories);
        a live run's scratch is never touched. Returns how many entries were removed."""
        scratch_dirs = [self.downloads.root, self.headers.root, self.sources.root, self.prepared, self.work,
                        self.path / "cache" / "recipes", self.store.objects]
        removed = sum(locks.sweep(d, keep=lambda entry: (entry / KEEP_MARK).exists()) for d in scratch_dirs)
        if self.store.objects.is_dir():
            removed += sum(locks.sweep(d) for d in self.store.objects.iterdir() if d.is_dir())
        return removed
