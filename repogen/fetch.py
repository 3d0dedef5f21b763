"""Download files once per URL into a content-checked cache.

Headers packages and source tarballs are fetched over HTTP(S) (or ``file://``), written to a
temporary name and renamed into place only when complete and, where a sha256 is given, correct.
"""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from repogen.errors import FetchError

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Download:
    url: str
    path: Path
    sha256: str
    size: int
    fetched: bool  # False when it came from the cache


class DownloadCache:
    """``<root>/<sha256>`` files, plus an index from URL to digest (kept in the state database)."""

    def __init__(self, root: Path, index: UrlIndex, timeout: float = 60.0, retries: int = 2) -> None:
        self.root = root
        self.index = index
        self.timeout = timeout
        self.retries = retries
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.downloads = 0  # counted by the benchmarks: each URL should be fetched once

    def _lock(self, url: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(url, threading.Lock())

    def get(self, url: str, sha256: str | None = None, *, refresh: bool = False) -> Download:
        """The file for ``url``: from the cache, or fetched once even when many threads ask."""
        with self._lock(url):
            if not refresh:
                digest = sha256 or self.index.get(url)
                if digest and (self.root / digest).exists():
                    path = self.root / digest
                    return Download(url, path, digest, path.stat().st_size, fetched=False)
            return self._fetch(url, sha256)

    def forget(self, url: str, digest: str) -> None:
        """Drop a cached file found to be corrupt, so the next run fetches it again."""
        with self._lock(url):
            (self.root / digest).unlink(missing_ok=True)
            self.index.drop(url)

    def _fetch(self, url: str, sha256: str | None) -> Download:
        self.root.mkdir(parents=True, exist_ok=True)
        last_error: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                return self._fetch_once(url, sha256)
            except FetchError:
                raise
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                last_error = exc
                if attempt < self.retries:
                    time.sleep(0.5 * (attempt + 1))
        reason = getattr(last_error, "reason", last_error)
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise FetchError(f"{url}: timed out after {self.timeout:g}s ({self.retries + 1} attempts)")
        raise FetchError(f"{url}: {reason} ({self.retries + 1} attempts)")

    def _fetch_once(self, url: str, sha256: str | None) -> Download:
        fd, tmp_name = tempfile.mkstemp(dir=self.root, prefix=".part-")
        tmp = Path(tmp_name)
        h = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                if url.startswith("file://"):
                    src_path = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path))
                    try:
                        src = src_path.open("rb")
                    except OSError as exc:
                        raise FetchError(f"{url}: {exc.strerror}") from None
                else:
                    request = urllib.request.Request(url, headers={"User-Agent": "repogen"})
                    try:
                        src = urllib.request.urlopen(request, timeout=self.timeout)
                    except urllib.error.HTTPError as exc:
                        raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}") from None
                with src:
                    while chunk := src.read(_CHUNK):
                        h.update(chunk)
                        size += len(chunk)
                        out.write(chunk)
            digest = h.hexdigest()
            if sha256 and digest != sha256:
                raise FetchError(f"{url}: sha256 mismatch: expected {sha256}, got {digest}",
                                 hint="the file changed upstream or the sha256 in the config is wrong")
            final = self.root / digest
            os.replace(tmp, final)
            self.index.put(url, digest, size)
            self.downloads += 1
            return Download(url, final, digest, size, fetched=True)
        finally:
            tmp.unlink(missing_ok=True)


class UrlIndex:
    """URL -> sha256 memory, persisted by the store (an interface so the cache stays small)."""

    def get(self, url: str) -> str | None:  # pragma: no cover - interface
        raise NotImplementedError

    def put(self, url: str, sha256: str, size: int) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def drop(self, url: str) -> None:  # pragma: no cover - interface
        raise NotImplementedError
