"""The state directory (``.repogen/`` or ``$REPOGEN_HOME``): database, artifact store, caches, logs."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from repogen import locks
from repogen.store import Store

if TYPE_CHECKING:  # the caches are made on first use: `plan` reads the database only
    from repogen.fetch import DownloadCache
    from repogen.headers import HeadersCache
    from repogen.sources import SourceCache

T = TypeVar("T")

KEEP_MARK = ".keep"  # a work directory kept on purpose (--keep-work), not a leftover


class Home:
    """The state directory (``.repogen/`` or ``$REPOGEN_HOME``): database, store, caches, logs."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        """``create=False`` (read-only commands): a home that does not exist is not created."""
        self.path = path.absolute()
        self.store = Store(self.path, create=create)
        self._caches: dict[str, Any] = {}
        self._caches_lock = threading.RLock()
        self.prepared = self.path / "cache" / "prepared"
        self.logs = self.path / "logs"
        self.work = self.path / "work"
        self.config_cache = self.path / "cache" / "config"
        self.remote_index = self.path / "cache" / "remote-index"  # copies of the remote build cache's index

    def _cache(self, name: str, make: Callable[[], T]) -> T:
        """One instance per home, made on first use (build threads may ask at once)."""
        with self._caches_lock:
            if name not in self._caches:
                self._caches[name] = make()
            made: T = self._caches[name]
            return made

    @property
    def downloads(self) -> DownloadCache:
        from repogen.fetch import DownloadCache

        return self._cache("downloads", lambda: DownloadCache(
            self.path / "cache" / "downloads", self.store,
            timeout=float(os.environ.get("REPOGEN_FETCH_TIMEOUT", "60")),
            retries=int(os.environ.get("REPOGEN_FETCH_RETRIES", "2"))))

    @property
    def headers(self) -> HeadersCache:
        from repogen.headers import HeadersCache

        return self._cache("headers", lambda: HeadersCache(self.path / "cache" / "kernels"))

    @property
    def sources(self) -> SourceCache:
        from repogen.sources import SourceCache

        return self._cache("sources", lambda: SourceCache(self.path / "cache" / "sources", self.downloads))

    def sweep(self) -> int:
        """Remove what runs killed mid-way left (partial downloads, staging and work directories);
        a live run's scratch is never touched. Returns how many entries were removed."""
        scratch_dirs = [self.downloads.root, self.headers.root, self.sources.root, self.prepared, self.work,
                        self.path / "cache" / "recipes", self.remote_index, self.store.objects]
        removed = sum(locks.sweep(d, keep=lambda entry: (entry / KEEP_MARK).exists()) for d in scratch_dirs)
        if self.store.objects.is_dir():
            removed += sum(locks.sweep(d) for d in self.store.objects.iterdir() if d.is_dir())
        return removed
