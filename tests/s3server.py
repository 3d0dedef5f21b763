"""A real S3 protocol server for tests: moto's server on 127.0.0.1, counting requests at the server.

Every request the server answers is appended to ``requests`` as ``(method, path, query)``, so a test
asserts what a command really sent (a no-op, a bounded plan) rather than what the client meant to.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from moto.server import DomainDispatcherApplication, ThreadedMotoServer, create_backend_app
from werkzeug.serving import make_server

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def _request_bytes(environ: dict[str, Any]) -> int:
    line = len(environ["REQUEST_METHOD"]) + len(environ.get("RAW_URI") or environ.get("PATH_INFO", "")) + 11
    headers = sum(len(k) - 5 + len(str(v)) + 4 for k, v in environ.items() if k.startswith("HTTP_"))
    return line + headers + int(environ.get("CONTENT_LENGTH") or 0) + 2


class CountingMotoServer(ThreadedMotoServer):
    def __init__(self, log_file: Path | None = None) -> None:
        super().__init__(ip_address="127.0.0.1", port=0, verbose=False)
        self.requests: list[tuple[str, str, str]] = []
        self.raw_uris: list[str] = []  # as sent, before the server decodes %2B (parallel to ``requests``)
        self.put_delay = 0.0  # seconds each object PUT waits before it is handled (to kill a client mid-upload)
        self.deny_puts: set[str] = set()  # a PUT whose path contains one of these gets 403 AccessDenied
        self.put_checksums: dict[str, str] = {}  # path -> the x-amz-checksum-sha256 its last PUT carried
        self.bytes_in = 0   # request line, headers and body, as received (approximately the wire bytes)
        self.bytes_out = 0  # status line, headers and body, as sent
        self._lock = threading.Lock()
        self._log = log_file.open("a", buffering=1) if log_file else None  # one line per request

    def _server_entry(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # counted here, not logged per request
        app = DomainDispatcherApplication(create_backend_app)

        def counting(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            request = (environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", ""))
            with self._lock:
                self.requests.append(request)
                if self._log:
                    self._log.write(" ".join(request) + "\n")
                self.raw_uris.append(environ.get("RAW_URI") or environ.get("REQUEST_URI") or "")
                self.bytes_in += _request_bytes(environ)
                if environ["REQUEST_METHOD"] == "PUT" and "HTTP_X_AMZ_CHECKSUM_SHA256" in environ:
                    self.put_checksums[environ.get("PATH_INFO", "")] = environ["HTTP_X_AMZ_CHECKSUM_SHA256"]
            if self.put_delay and environ["REQUEST_METHOD"] == "PUT":
                time.sleep(self.put_delay)
            if environ["REQUEST_METHOD"] == "PUT" and any(d in environ.get("PATH_INFO", "") for d in self.deny_puts):
                environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
                start_response("403 Forbidden", [("Content-Type", "application/xml")])
                return [b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code>"
                        b"<Message>Access Denied</Message></Error>"]

            def counted_start(status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
                with self._lock:
                    self.bytes_out += len(status) + 11 + sum(len(k) + len(v) + 4 for k, v in headers) + 2
                return start_response(status, headers, *args)

            body = list(app(environ, counted_start))
            with self._lock:
                self.bytes_out += sum(len(chunk) for chunk in body)
            return body

        self._server = make_server(self._ip_address, self._port, counting, True)
        self._server_ready_event.set()
        self._server.serve_forever()

    @property
    def url(self) -> str:
        host, port = self.get_host_and_port()
        return f"http://{host}:{port}"

    @property
    def env(self) -> dict[str, str]:
        """Environment for a subprocess that should talk to this server (boto3 reads these)."""
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.url}

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.raw_uris.clear()
            self.bytes_in = self.bytes_out = 0
            self.put_checksums.clear()

    def make_public_bucket(self, name: str) -> None:
        """A bucket anyone may GET from (as behind a CDN), for plain HTTP GETs in tests."""
        s3 = self.client()
        s3.create_bucket(Bucket=name)
        s3.put_bucket_policy(Bucket=name, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{name}/*"}]}))

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id="testing",
                            aws_secret_access_key="testing", region_name="us-east-1")


@contextmanager
def moto_server() -> Iterator[CountingMotoServer]:
    server = CountingMotoServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
