"""APT index reader: ``dists/<suite>/Release`` and ``<component>/binary-<arch>/Packages.xz``.

The index is checked against the Release file's SHA256 and size before it is read, so a truncated or
garbage index fails loudly instead of yielding fewer kernels. Paragraphs are parsed with python-debian;
only those of packages whose name starts with one of the wanted prefixes are parsed at all (a regular
expression scan of the decompressed bytes, so the 60,000 other paragraphs of a main index cost next to
nothing).
"""

from __future__ import annotations

import hashlib
import lzma
import re
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

from debian import deb822

from repogen.crawl import CrawlContext
from repogen.errors import FetchError
from repogen.mirrors import join


@dataclass(frozen=True, slots=True)
class DebPackage:
    name: str
    version: str
    architecture: str
    filename: str
    sha256: str
    depends: str
    suite: str
    mirror: str  #: the mirror name the filename is relative to


@dataclass(frozen=True)
class Release:
    suite: str
    date: datetime | None
    files: dict[str, tuple[str, int]]  #: path -> (sha256, size)


def read_release(ctx: CrawlContext, mirror: str, suite: str) -> Release:
    url = join(ctx.mirror(mirror), f"dists/{suite}/Release")
    data = ctx.read(url)
    try:
        release = deb822.Release(data.decode("utf-8"))
        files = {entry["name"]: (entry["sha256"], int(entry["size"])) for entry in release.get("SHA256", [])}
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise FetchError(f"{url}: not a Release file ({exc})", url=url) from None
    if not files:
        raise FetchError(f"{url}: not a Release file (no SHA256 list)", url=url)
    date = None
    if "Date" in release:
        try:
            date = parsedate_to_datetime(release["Date"])
        except (TypeError, ValueError):
            date = None
    return Release(suite, date, files)


def parse_packages(data: bytes, prefixes: tuple[str, ...], suite: str, mirror: str) -> list[DebPackage]:
    """The packages of a decompressed ``Packages`` index whose names start with one of ``prefixes``.

    The paragraphs holding a wanted ``Package:`` line are cut out of the bytes first (a regular
    expression scan, whatever the field order), then parsed with python-debian.
    """
    needle = re.compile(b"(?m)^Package: (?:" + b"|".join(re.escape(p.encode()) for p in prefixes) + b")")
    wanted: list[bytes] = []
    for m in needle.finditer(data):
        begin = data.rfind(b"\n\n", 0, m.start())
        end = data.find(b"\n\n", m.end())
        wanted.append(data[begin + 2 if begin >= 0 else 0:end if end >= 0 else len(data)])
    text = b"\n\n".join(wanted).decode("utf-8")
    out: list[DebPackage] = []
    for para in deb822.Packages.iter_paragraphs(text.splitlines(keepends=True), use_apt_pkg=False):
        name = para.get("Package", "")
        if not name.startswith(prefixes):
            continue
        try:
            out.append(DebPackage(name, para["Version"], para["Architecture"], para["Filename"], para["SHA256"],
                                  para.get("Depends", ""), suite, mirror))
        except KeyError as exc:
            raise ValueError(f"package {name} has no {exc.args[0]} field") from None
    return out


def read_packages(ctx: CrawlContext, mirror: str, suite: str, arch: str, prefixes: tuple[str, ...],
                  release: Release | None = None, component: str = "main") -> list[DebPackage]:
    """The wanted packages of one suite's index for ``arch`` (a Debian architecture name)."""
    release = release or read_release(ctx, mirror, suite)
    rel_path = f"{component}/binary-{arch}/Packages.xz"
    url = join(ctx.mirror(mirror), f"dists/{suite}/{rel_path}")
    if rel_path not in release.files:
        raise FetchError(f"{url}: not listed in dists/{suite}/Release (no {arch} index?)", url=url)
    data = ctx.read(url)
    sha256, size = release.files[rel_path]
    if len(data) != size or hashlib.sha256(data).hexdigest() != sha256:
        raise FetchError(f"{url}: does not match its Release entry (size {len(data)}, expected {size}): "
                         "a truncated or corrupt index, or a mirror in the middle of a sync", url=url)
    try:
        text = lzma.decompress(data)
    except lzma.LZMAError as exc:
        raise FetchError(f"{url}: cannot decompress ({exc})", url=url) from None
    try:
        return parse_packages(text, prefixes, suite, mirror)
    except ValueError as exc:  # UnicodeDecodeError included
        raise FetchError(f"{url}: {exc}", url=url) from None
