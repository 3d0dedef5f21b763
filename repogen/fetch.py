"""Download files once per URL into a content-checked cache.

Headers packages and source tarballs are fetched over HTTP(S) (or ``file://``), written to a
temporary name and renamed into place only when complete (as long as its Content-Length) and, where
a sha256 is given, correct. Retries are urllib3's :class:`Retry`: exponential backoff on 5xx,
resets and timeouts, ``Retry-After`` honoured up to a bound, a 4xx never retried.
"""

from __future__ import annotations

import functools
import hashlib
import os
import socket
import tempfile
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from repogen import locks
from repogen.errors import FetchError
from repogen.locks import KeyLocks

if TYPE_CHECKING:  # urllib3 is imported on the first download: `plan` and `validate` never load it
    import urllib3
    from urllib3.response import BaseHTTPResponse
    from urllib3.util.retry import Retry

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Download:
    url: str
    path: Path
    sha256: str
    size: int
    fetched: bool  # False when it came from the cache


#: The most a server's ``Retry-After`` makes a download wait.
MAX_RETRY_AFTER = 30.0


@functools.cache
def retry_class() -> type[Retry]:
    """urllib3's retry policy, with a server's ``Retry-After`` honoured only up to a bound."""
    from urllib3.util.retry import Retry

    class BoundedRetry(Retry):
        def get_retry_after(self, response: BaseHTTPResponse) -> float | None:
            seconds = super().get_retry_after(response)
            return None if seconds is None else min(seconds, MAX_RETRY_AFTER)

    return BoundedRetry


# Worth another try: the server or a proxy in trouble, or asking to wait. A 404 is an answer.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class DownloadCache:
    """``<root>/<sha256>`` files, plus an index from URL to digest (kept in the state database)."""

    def __init__(self, root: Path, index: UrlIndex, timeout: float = 60.0, retries: int = 2,
                 backoff: float = 0.5) -> None:
        self.root = root
        self.index = index
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._locks = KeyLocks.beside(root)
        self._guard = threading.Lock()
        self._pool: urllib3.PoolManager | None = None
        self._swept = False
        self.downloads = 0  # counted by the benchmarks: each URL should be fetched once

    def get(self, url: str, sha256: str | None = None, *, refresh: bool = False) -> Download:
        """The file for ``url``: from the cache, or fetched once even when many threads ask."""
        with self._locks.hold(url, f"downloading {url}"):
            if not refresh:
                digest = sha256 or self.index.get(url)
                if digest and (self.root / digest).exists():
                    path = self.root / digest
                    return Download(url, path, digest, path.stat().st_size, fetched=False)
            return self._fetch(url, sha256)

    def forget(self, url: str, digest: str) -> None:
        """Drop a cached file found to be corrupt, so the next run fetches it again."""
        with self._locks.hold(url):
            (self.root / digest).unlink(missing_ok=True)
            self.index.drop(url)

    def sweep(self) -> int:
        """Remove the partial downloads (``.part~run<owner>~*``) of runs that were killed."""
        return locks.sweep(self.root)

    def _fetch(self, url: str, sha256: str | None) -> Download:
        self.root.mkdir(parents=True, exist_ok=True)
        with self._guard:
            sweep, self._swept = not self._swept, True
        if sweep:
            self.sweep()
        fd, tmp_name = tempfile.mkstemp(dir=self.root, prefix=locks.owned(".part") + "~")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                if url.startswith("file://"):
                    digest, size = self._copy_file(url, out)
                else:
                    digest, size = self._download(url, out)
            if sha256 and digest != sha256:
                raise FetchError(f"{url}: sha256 mismatch: expected {sha256}, got {digest}",
                                 hint="the file changed upstream or the sha256 in the config is wrong", url=url)
            final = self.root / digest
            os.replace(tmp, final)
            self.index.put(url, digest, size)
            self.downloads += 1
            return Download(url, final, digest, size, fetched=True)
        finally:
            tmp.unlink(missing_ok=True)

    @staticmethod
    def _copy_file(url: str, out: BinaryIO) -> tuple[str, int]:
        src_path = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path))
        try:
            src = src_path.open("rb")
        except OSError as exc:
            raise FetchError(f"{url}: {exc.strerror}", url=url) from None
        with src:
            return _copy(src, out)

    def _reason(self, error: BaseException | None) -> str:
        reason = _reason(error)
        return f"timed out after {self.timeout:g}s" if reason == "timed out" else reason

    def _retry(self) -> Retry:
        return retry_class()(total=None, connect=self.retries, read=self.retries, status=self.retries,
                             other=self.retries, redirect=10, backoff_factor=self.backoff, backoff_max=60,
                             status_forcelist=RETRY_STATUSES, allowed_methods=frozenset({"GET"}),
                             raise_on_status=False, respect_retry_after_header=True)

    def _download(self, url: str, out: BinaryIO) -> tuple[str, int]:
        """GET ``url`` into ``out``: 5xx, resets, timeouts and bodies cut short are retried with
        backoff (one :class:`Retry` budget for the request and the body); a 4xx is final."""
        import urllib3
        from urllib3.exceptions import HTTPError, MaxRetryError, ProtocolError

        with self._guard:
            if self._pool is None:
                self._pool = urllib3.PoolManager(headers={"User-Agent": "repogen"})
            pool = self._pool
        retry = self._retry()
        timeout = urllib3.Timeout(connect=self.timeout, read=self.timeout)
        while True:
            attempts = len(retry.history) + 1
            try:
                response = pool.request("GET", url, preload_content=False, retries=retry, timeout=timeout)
            except MaxRetryError as exc:
                raise FetchError(f"{url}: {self._reason(exc.reason)} (gave up after {self.retries + 1} attempts)",
                                 url=url) from None
            except HTTPError as exc:
                raise FetchError(f"{url}: {self._reason(exc)}", url=url) from None
            retry = response.retries or retry
            attempts = len(retry.history) + 1
            if response.status >= 400:
                response.release_conn()
                tries = f" ({attempts} attempts)" if attempts > 1 else ""
                raise FetchError(f"{url}: HTTP {response.status} {response.reason or ''}".rstrip() + tries, url=url)
            expected = response.headers.get("Content-Length")
            try:
                out.seek(0)
                out.truncate()
                digest, size = _copy(response, out)
                if expected is not None and expected.isdigit() and size != int(expected):
                    raise ProtocolError(f"body of {size} bytes, Content-Length says {expected}")
                return digest, size
            except HTTPError as exc:  # read from the network (a failed write to disk is an OSError: not retried)
                response.release_conn()
                try:
                    retry = retry.increment("GET", url, error=exc)
                except MaxRetryError:
                    raise FetchError(f"{url}: {self._reason(exc)} (gave up after {attempts} attempts)",
                                     url=url) from None
                except HTTPError:
                    raise FetchError(f"{url}: {self._reason(exc)}", url=url) from None
                retry.sleep()
            finally:
                response.release_conn()


def _copy(src: BinaryIO | BaseHTTPResponse, out: BinaryIO) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    while chunk := src.read(_CHUNK):
        h.update(chunk)
        size += len(chunk)
        out.write(chunk)
    return h.hexdigest(), size


def _reason(error: BaseException | None) -> str:
    """What failed, in words: "timed out", "connection reset", "body cut short"..."""
    from urllib3.exceptions import (
        ConnectTimeoutError,
        IncompleteRead,
        NewConnectionError,
        ProtocolError,
        ReadTimeoutError,
        ResponseError,
    )

    if isinstance(error, NewConnectionError):  # a ConnectTimeoutError subclass in urllib3 2
        return "connection refused or unreachable"
    if isinstance(error, (ReadTimeoutError, ConnectTimeoutError, TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(error, IncompleteRead):
        return f"body cut short: {error.partial} bytes, {error.partial + (error.expected or 0)} expected"
    if isinstance(error, ProtocolError) and error.args:
        inner = error.args[-1]
        if isinstance(inner, BaseException):
            return _reason(inner)
        return str(error.args[0])
    if isinstance(error, ConnectionResetError):
        return "connection reset by the server"
    if isinstance(error, ResponseError) and error.args:
        return str(error.args[0])
    return str(error) or type(error).__name__


class UrlIndex:
    """URL -> sha256 memory, persisted by the store (an interface so the cache stays small)."""

    def get(self, url: str) -> str | None:  # pragma: no cover - interface
        raise NotImplementedError

    def put(self, url: str, sha256: str, size: int) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def drop(self, url: str) -> None:  # pragma: no cover - interface
        raise NotImplementedError
