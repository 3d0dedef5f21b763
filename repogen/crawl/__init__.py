"""Kernel discovery: read distributions' package indexes and name each kernel as Falco's clients do.

Each distribution module (``repogen/distro/``) says which indexes to read and how its packages pair up;
the readers here (``deb.py`` for APT ``Packages``, ``rpm.py`` for ``repodata/``) say how. Every crawl
yields the same record, :class:`Found` (kernel-crawler's record: target, kernelrelease, kernelversion,
headers, optional kernelconfigdata), with its files written relative to a named mirror.

A mirror that fails, times out or returns garbage fails its target loudly (the URL in the message);
the other targets still complete, and ``--write`` never removes an entry, so a target's previous
kernels stay in kernels.yaml.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from repogen import mirrors
from repogen.config import PATH_SAFE
from repogen.errors import FetchError, RepogenError
from repogen.fetch import DownloadCache, UrlIndex

#: Per target: at most this many requests, and this many seconds in all.
MAX_REQUESTS = int(os.environ.get("REPOGEN_CRAWL_MAX_REQUESTS", "200"))
DEADLINE_SECONDS = float(os.environ.get("REPOGEN_CRAWL_DEADLINE", "900"))


@dataclass(frozen=True)
class MirrorFile:
    """A file on a named mirror, as kernels.yaml writes it: ``{mirror: NAME, path: PATH, sha256: ...}``."""

    mirror: str
    path: str
    sha256: str | None = None

    def as_dict(self) -> dict[str, str]:
        out = {"mirror": self.mirror, "path": self.path}
        if self.sha256:
            out["sha256"] = self.sha256
        return out


@dataclass(frozen=True)
class Found:
    """One kernel a crawl found, in the identifiers Falco's clients request."""

    target: str
    kernelrelease: str
    kernelversion: str
    architecture: str
    headers: tuple[MirrorFile | str, ...]
    image: MirrorFile | str | None = None
    kernelconfigdata: str | None = None
    #: Where it came from, for the reader of the diff (``uname -r``, suite or repository).
    note: str = ""

    @property
    def ident(self) -> tuple[str, str, str, str]:
        return (self.target, self.kernelrelease, self.kernelversion, self.architecture)

    def problem(self) -> str | None:
        """Why this record, read from an index repogen did not make, must not reach kernels.yaml."""
        for field_name in ("target", "kernelrelease", "kernelversion"):
            value = getattr(self, field_name)
            if not PATH_SAFE.fullmatch(value) or ".." in value:
                return f"{field_name} {value!r} is not a safe path component"
        for f in (*self.headers, *((self.image,) if self.image else ())):
            path = f.path if isinstance(f, MirrorFile) else f
            sha256 = f.sha256 if isinstance(f, MirrorFile) else None
            if (path.startswith("/") or ".." in path.split("/") or not path.isprintable() or " " in path
                    or (sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", sha256))):
                return f"file {path!r} is not a plain path inside the mirror (or its sha256 is malformed)"
        return None

    def as_dict(self) -> dict[str, object]:
        def one(f: MirrorFile | str) -> object:
            return f.as_dict() if isinstance(f, MirrorFile) else f

        out: dict[str, object] = {"target": self.target, "kernelrelease": self.kernelrelease,
                                  "kernelversion": self.kernelversion, "architecture": self.architecture,
                                  "headers": [one(h) for h in self.headers]}
        if self.image is not None:
            out["image"] = one(self.image)
        if self.kernelconfigdata:
            out["kernelconfigdata"] = self.kernelconfigdata
        if self.note:
            out["note"] = self.note
        return out


class _NoIndex(UrlIndex):
    """Index files are always fetched fresh: nothing to remember between runs."""

    def get(self, url: str) -> str | None:
        return None

    def put(self, url: str, sha256: str, size: int) -> None:
        pass

    def drop(self, url: str) -> None:
        pass


@dataclass
class CrawlContext:
    """What a distribution's crawl may use: mirrors, architectures, a bounded downloader."""

    mirrors: dict[str, str]
    architectures: tuple[str, ...]
    since: datetime | None = None
    #: Suites/releases asked for on the command line (``debian:bookworm,trixie``), or () for the defaults.
    releases: tuple[str, ...] = ()
    on_progress: Callable[[str], None] = lambda message: None
    warnings: list[str] = field(default_factory=list)
    requests: int = 0
    started: float = field(default_factory=time.monotonic)
    _cache: DownloadCache | None = None
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    def mirror(self, name: str) -> str:
        url = mirrors.resolve(name, self.mirrors)
        if not url:
            raise RepogenError(f"no URL for mirror {name!r}",
                               hint=f"give one with --mirror {name}=URL or in kernels.yaml's mirrors:")
        return url

    def download(self, url: str) -> Path:
        """A fresh copy of ``url`` on disk (retried on transient errors), within this target's budget."""
        self.requests += 1
        if self.requests > MAX_REQUESTS:
            raise FetchError(f"{url}: more than {MAX_REQUESTS} requests for one target "
                             "(REPOGEN_CRAWL_MAX_REQUESTS)", url=url)
        if time.monotonic() - self.started > DEADLINE_SECONDS:
            raise FetchError(f"{url}: the crawl of this target took more than {DEADLINE_SECONDS:g}s "
                             "(REPOGEN_CRAWL_DEADLINE)", url=url)
        if self._cache is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="repogen-crawl-")
            self._cache = DownloadCache(Path(self._tmp.name), _NoIndex(),
                                        timeout=float(os.environ.get("REPOGEN_FETCH_TIMEOUT", "60")),
                                        retries=int(os.environ.get("REPOGEN_FETCH_RETRIES", "2")))
        self.on_progress(f"GET {url}")
        return self._cache.get(url, refresh=True).path

    def read(self, url: str) -> bytes:
        return self.download(url).read_bytes()

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
            self._cache = None

    def warn(self, message: str) -> None:
        self.warnings.append(message)


@dataclass
class TargetResult:
    name: str
    found: list[Found]
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    requests: int = 0
    seconds: float = 0.0


def crawl_target(name: str, context: CrawlContext) -> TargetResult:
    """Crawl one target; any failure is caught here and reported with the URL, never a traceback."""
    from repogen import distro

    crawlers = distro.crawlable()
    if name not in crawlers:
        raise RepogenError(f"unknown crawl target {name!r} (known: {', '.join(sorted(crawlers))})")
    started = time.monotonic()
    try:
        found = crawlers[name].crawl(context)
        error = None
    except RepogenError as exc:
        found, error = [], exc.message
    except (OSError, ValueError, LookupError, EOFError) as exc:  # garbage from a mirror
        found, error = [], f"{type(exc).__name__}: {exc}"
    finally:
        context.close()
    if context.architectures:
        found = [f for f in found if f.architecture in context.architectures]
    unique: dict[tuple[str, str, str, str], Found] = {}
    for f in found:
        problem = f.problem()
        if problem:
            context.warn(f"{f.kernelrelease!r} ({f.note}): {problem}: left out")
            continue
        unique.setdefault(f.ident, f)
    return TargetResult(name, list(unique.values()), error, context.warnings, context.requests,
                        time.monotonic() - started)
