"""Downloads against a faulty HTTP server on 127.0.0.1: what is retried, what is refused, how often.

The server plays a script, one behaviour per request, and counts the requests it got.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from repogen import locks
from repogen.errors import FetchError
from repogen.fetch import RETRY_STATUSES, DownloadCache, UrlIndex

BODY = os.urandom(64 * 1024)
DIGEST = hashlib.sha256(BODY).hexdigest()


class MemoryIndex(UrlIndex):
    def __init__(self) -> None:
        self.urls: dict[str, str] = {}

    def get(self, url: str) -> str | None:
        return self.urls.get(url)

    def put(self, url: str, sha256: str, size: int) -> None:
        self.urls[url] = sha256

    def drop(self, url: str) -> None:
        self.urls.pop(url, None)


class FaultyServer:
    def __init__(self) -> None:
        self.script: list[str] = []
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # http.server's name
                with lock:
                    server.requests += 1
                    step = server.script.pop(0) if server.script else "ok"
                if step == "404":
                    self._respond(404, b"not here")
                elif step == "503":
                    self._respond(503, b"busy", {"Retry-After": "1"})
                elif step == "hang":
                    time.sleep(2)  # longer than the client's timeout; bounded
                    self.close_connection = True
                elif step in ("reset", "short"):
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(BODY)))
                    self.end_headers()
                    self.wfile.write(BODY[:1000])
                    self.wfile.flush()
                    if step == "reset":  # RST instead of FIN
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                else:
                    self._respond(200, BODY)

            def _respond(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/file.bin"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server() -> Iterator[FaultyServer]:
    faulty = FaultyServer()
    yield faulty
    faulty.httpd.shutdown()
    faulty.httpd.server_close()


def _cache(tmp_path: Path, retries: int = 2, timeout: float = 0.5) -> DownloadCache:
    return DownloadCache(tmp_path / "downloads", MemoryIndex(), timeout=timeout, retries=retries, backoff=0.01)


def _leftovers(cache: DownloadCache) -> list[str]:
    return sorted(p.name for p in cache.root.iterdir() if p.name.startswith(".part"))


def test_503_is_retried_honouring_retry_after(tmp_path: Path, server: FaultyServer) -> None:
    server.script = ["503", "503"]
    started = time.monotonic()
    download = _cache(tmp_path).get(server.url, DIGEST)
    assert download.path.read_bytes() == BODY and server.requests == 3
    assert time.monotonic() - started >= 2, "Retry-After: 1 was not honoured"


def test_503_until_the_budget_is_spent(tmp_path: Path, server: FaultyServer) -> None:
    server.script = ["503"] * 5
    cache = _cache(tmp_path, retries=1)
    with pytest.raises(FetchError, match=r"HTTP 503 Service Unavailable \(2 attempts\)"):
        cache.get(server.url)
    assert server.requests == 2 and _leftovers(cache) == []


def test_reset_mid_body_is_retried(tmp_path: Path, server: FaultyServer) -> None:
    server.script = ["reset"]
    assert _cache(tmp_path).get(server.url).sha256 == DIGEST
    assert server.requests == 2


def test_short_body_is_never_stored(tmp_path: Path, server: FaultyServer) -> None:
    server.script = ["short"] * 3
    cache = _cache(tmp_path)
    with pytest.raises(FetchError, match=r"body cut short: 1000 bytes, 65536 expected \(gave up after 3 attempts\)"):
        cache.get(server.url)
    assert server.requests == 3
    assert list(cache.root.iterdir()) == [], "a short body was kept"


def test_hang_times_out_and_is_retried(tmp_path: Path, server: FaultyServer) -> None:
    server.script = ["hang", "hang", "hang"]
    with pytest.raises(FetchError, match=r"timed out after 0.3s \(gave up after 3 attempts\)"):
        _cache(tmp_path, timeout=0.3).get(server.url)
    assert server.requests == 3


def test_hang_then_success(tmp_path: Path, server: FaultyServer) -> None:
    server.script = ["hang"]
    assert _cache(tmp_path, timeout=0.3).get(server.url, DIGEST).size == len(BODY)
    assert server.requests == 2


def test_404_is_not_retried(tmp_path: Path, server: FaultyServer) -> None:
    server.script = ["404"]
    with pytest.raises(FetchError, match=r"file.bin: HTTP 404 Not Found$"):
        _cache(tmp_path).get(server.url)
    assert server.requests == 1


def test_sha_mismatch_is_refused_once(tmp_path: Path, server: FaultyServer) -> None:
    cache = _cache(tmp_path)
    with pytest.raises(FetchError, match="sha256 mismatch"):
        cache.get(server.url, "0" * 64)
    assert server.requests == 1 and list(cache.root.iterdir()) == []


def test_refused_connection(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(FetchError, match="connection refused or unreachable"):
        _cache(tmp_path, retries=1).get(f"http://127.0.0.1:{port}/x")


def test_file_urls_and_stale_parts(tmp_path: Path) -> None:
    source = tmp_path / "a file.bin"
    source.write_bytes(BODY)
    cache = _cache(tmp_path)
    cache.root.mkdir(parents=True)
    # A partial download of a run that died (kill -9) is swept; a live run's, however old, is not.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_owner = locks.token(dead.pid)
    dead.wait()
    stale, live = cache.root / f".part~run{dead_owner}~x", cache.root / f"{locks.owned('.part')}~y"
    stale.write_bytes(b"x")
    live.write_bytes(b"x")
    os.utime(live, (time.time() - 3600, time.time() - 3600))
    assert cache.get(source.as_uri(), DIGEST).path.read_bytes() == BODY
    assert _leftovers(cache) == [live.name], "a dead run's .part was kept, or a live one's removed"
    with pytest.raises(FetchError, match="No such file"):
        cache.get((tmp_path / "missing").as_uri())


def test_retry_after_is_honoured_only_up_to_a_bound() -> None:
    from urllib3.response import HTTPResponse

    from repogen.fetch import MAX_RETRY_AFTER, retry_class

    retry = retry_class()(total=2, status_forcelist=RETRY_STATUSES, respect_retry_after_header=True)
    for header, seconds in (("3600", MAX_RETRY_AFTER), ("2", 2.0), ("0", 0.0)):
        response = HTTPResponse(status=503, headers={"Retry-After": header})
        assert retry.get_retry_after(response) == seconds
        assert retry.is_retry("GET", 503, has_retry_after=True)
    assert not retry.is_retry("GET", 404)
