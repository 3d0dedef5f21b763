"""Serve the published static tree over HTTP, the way a CDN or plain web server would."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Static files only; ``site`` is resolved on every request so an atomic swap is seen at once."""

    extensions_map = {  # noqa: RUF012 - the base class declares it an instance variable
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".json": "application/json",
        ".asc": "text/plain",
        ".gpg": "application/pgp-keys",
        ".deb": "application/vnd.debian.binary-package",
        ".rpm": "application/x-rpm",
        ".ko": "application/octet-stream",
        ".o": "application/octet-stream",
    }

    def __init__(self, *args: object, site: Path, quiet: bool, **kwargs: object) -> None:
        self._quiet = quiet
        self._site = site
        super().__init__(*args, directory=str(site), **kwargs)  # type: ignore[arg-type]

    def translate_path(self, path: str) -> str:
        # Resolve the symlink that publish swaps, once per request, so one request reads one tree.
        self.directory = str(self._site.resolve())
        return super().translate_path(path)

    def log_message(self, format: str, *args: object) -> None:
        if not self._quiet:
            super().log_message(format, *args)


def make_server(
    site: Path, host: str = "127.0.0.1", port: int = 0, *, quiet: bool = True
) -> http.server.ThreadingHTTPServer:
    """An HTTP server for ``site`` (port 0 picks a free port: read ``server.server_address``)."""
    handler = functools.partial(_QuietHandler, site=Path(site).absolute(), quiet=quiet)
    server = http.server.ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve_in_thread(site: Path, host: str = "127.0.0.1", port: int = 0) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Start a server in a daemon thread; returns it and its base URL (tests, the demo)."""
    server = make_server(site, host, port)
    thread = threading.Thread(target=server.serve_forever, name="repogen-serve", daemon=True)
    thread.start()
    bound_host, bound_port = server.server_address[:2]
    host_text = bound_host.decode() if isinstance(bound_host, bytes) else bound_host
    return server, f"http://{host_text}:{bound_port}"
