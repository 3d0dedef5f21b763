"""The RPM repository: ``rpm/packages/<arch>/*.rpm`` and ``rpm/repodata/`` written by createrepo_c.

Each package's primary/filelists/other XML chunks come from createrepo_c (``xml_dump``) once, when
the package is first read, and are cached; repodata is then assembled from the chunks with
createrepo_c's XmlFile writers, which is what makes adding one package to thousands cheap.
"""

from __future__ import annotations

import configparser
import gzip
import io
import logging
import os
import re
import struct
from collections.abc import Container, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import createrepo_c as cr

from repogen.errors import PublishError
from repogen.repos.pkgcache import PackageCache, ReadStats, RpmRecord, file_digest, identify
from repogen.repos.pool import (
    PoolEntry,
    RepoStats,
    carry_forward,
    check_inputs,
    drop,
    merge,
    place,
    place_shared,
    published_with_digests,
    retain,
    write_manifest,
)

if TYPE_CHECKING:
    from repogen.repos import RepoOptions
    from repogen.signing import Signer

log = logging.getLogger(__name__)

REPO_ID = "repogen"
_SIGNATURE_FILES = ("repomd.xml", "repomd.xml.asc", "repomd.xml.key")

# Each must be one safe path component (and a name rpm itself would build).
_NAME = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9_.+~^-]*")
_VERSION = re.compile(r"[A-Za-z0-9_+~^][A-Za-z0-9_.+~^]*")
_ARCH = re.compile(r"[A-Za-z0-9_]+")
_EPOCH = re.compile(r"[0-9]*")

_LEAD_SIZE = 96
_SIGTAG_SIZE, _SIGTAG_LONGSIZE = 1000, 270
_SIGNATURE_READ = 8192

_COMPRESSION = {"gz": cr.GZ_COMPRESSION, "zstd": cr.ZSTD_COMPRESSION}
_WRITERS = (("primary", cr.PrimaryXmlFile), ("filelists", cr.FilelistsXmlFile), ("other", cr.OtherXmlFile))


def read_rpm(path: str | Path, sha256: str | None = None, known: Container[str] = frozenset()) -> RpmRecord | str:
    """Read an .rpm's header with createrepo_c; anything malformed is the named file's fault.

    With ``sha256`` None and the file's digest in ``known``, returns just that digest (the cache
    has the package: no parsing).
    """
    if sha256 is None and known:
        digest = file_digest(path)
        if digest in known:
            return digest
        sha256 = digest  # createrepo_c hashes again: the file must not have changed in between
    try:
        package = cr.package_from_rpm(str(path), checksum_type=cr.SHA256, changelog_limit=10)
    except Exception as error:  # createrepo_c raises OSError / CreaterepoCError for damaged files
        message = str(error).split(":", 1)[-1].strip() or type(error).__name__
        raise PublishError(f"{path}: not a valid .rpm package ({message})") from None
    if sha256 is not None and package.pkgId != sha256:
        raise PublishError(f"{path}: changed while being published")
    expected_size = _signed_size(path, package.rpm_header_start)
    if expected_size is not None and expected_size != package.size_package:
        raise PublishError(f"{path}: not a valid .rpm package (truncated or padded: "
                           f"{package.size_package} bytes, its signature header says {expected_size})")
    values = {}
    for field, pattern in (("name", _NAME), ("version", _VERSION), ("release", _VERSION), ("arch", _ARCH),
                           ("epoch", _EPOCH)):
        value = getattr(package, field) or ""
        if (field != "epoch" and not value) or not pattern.fullmatch(value):
            raise PublishError(f"{path}: invalid {field} {value!r} (it would not be a safe pool path)")
        values[field] = value
    name, version, release, arch = values["name"], values["version"], values["release"], values["arch"]
    package.location_href = f"packages/{arch}/{name}-{version}-{release}.{arch}.rpm"
    package.location_base = None
    primary, filelists, other = cr.xml_dump(package)
    return RpmRecord(package.pkgId, name, values["epoch"] or "0", version, release, arch, package.size_package,
                     package.location_href, primary, filelists, other)


def _signed_size(path: str | Path, header_start: int) -> int | None:
    """File size the signature header promises (tag SIZE/LONGSIZE: header + payload), if present.

    createrepo_c reads only the headers, so a download cut off in the payload would pass unnoticed.
    """
    descriptor = os.open(path, os.O_RDONLY)
    try:  # one pread usually covers the signature header (a buffered file object costs 3x more)
        head = os.pread(descriptor, _SIGNATURE_READ, _LEAD_SIZE)
        intro = head[:16]
        if len(intro) != 16 or intro[:4] != b"\x8e\xad\xe8\x01":
            return None
        entries, data_size = struct.unpack(">II", intro[8:16])
        wanted = 16 + 16 * entries + data_size
        if wanted > len(head) and len(head) == _SIGNATURE_READ:  # never past the end of the file
            rest = min(wanted - len(head), os.fstat(descriptor).st_size - _LEAD_SIZE - len(head))
            head += os.pread(descriptor, max(rest, 0), _LEAD_SIZE + len(head))
    finally:
        os.close(descriptor)
    index = head[16:16 + 16 * entries]
    store = head[16 + 16 * entries:wanted]
    found: dict[int, int] = {}
    for at in range(0, len(index) - 15, 16):
        tag, kind, offset, _count = struct.unpack(">IIII", index[at:at + 16])
        if tag == _SIGTAG_LONGSIZE and kind == 5 and offset + 8 <= len(store):
            found[tag] = struct.unpack(">Q", store[offset:offset + 8])[0]
        elif tag == _SIGTAG_SIZE and kind == 4 and offset + 4 <= len(store):
            found[tag] = struct.unpack(">I", store[offset:offset + 4])[0]
    size = found.get(_SIGTAG_LONGSIZE, found.get(_SIGTAG_SIZE))
    return None if size is None else header_start + size


def rpmvercmp(a: str, b: str) -> int:
    """rpm's own version-segment comparison (rpmio/rpmvercmp.c, rpm 4.18: ``~`` and ``^`` included).

    Ported because the rpm Python bindings are a distro package tied to the system interpreter.
    """
    if a == b:
        return 0
    i = j = 0
    len_a, len_b = len(a), len(b)

    def separator(c: str) -> bool:
        return not (c.isascii() and c.isalnum()) and c not in "~^"

    while i < len_a or j < len_b:
        while i < len_a and separator(a[i]):
            i += 1
        while j < len_b and separator(b[j]):
            j += 1
        ca = a[i] if i < len_a else ""
        cb = b[j] if j < len_b else ""
        if ca == "~" or cb == "~":
            if ca != "~":
                return 1
            if cb != "~":
                return -1
            i, j = i + 1, j + 1
            continue
        if ca == "^" or cb == "^":
            if not ca:
                return -1
            if not cb:
                return 1
            if ca != "^":
                return 1
            if cb != "^":
                return -1
            i, j = i + 1, j + 1
            continue
        if not (ca and cb):
            break
        numeric = ca.isdigit()
        test = str.isdigit if numeric else (lambda c: c.isascii() and c.isalpha())
        end_a, end_b = i, j
        while end_a < len_a and test(a[end_a]):
            end_a += 1
        while end_b < len_b and test(b[end_b]):
            end_b += 1
        seg_a, seg_b = a[i:end_a], b[j:end_b]
        if not seg_a:
            return -1
        if not seg_b:
            return 1 if numeric else -1
        if numeric:
            seg_a, seg_b = seg_a.lstrip("0"), seg_b.lstrip("0")
            if len(seg_a) != len(seg_b):
                return 1 if len(seg_a) > len(seg_b) else -1
        if seg_a != seg_b:
            return 1 if seg_a > seg_b else -1
        i, j = end_a, end_b
    if i >= len_a and j >= len_b:
        return 0
    return -1 if i >= len_a else 1


def compare_evr(a: RpmRecord, b: RpmRecord) -> int:
    """Epoch, then version, then release: the order dnf uses to pick the newest."""
    return (int(a.epoch or 0) > int(b.epoch or 0)) - (int(a.epoch or 0) < int(b.epoch or 0)) \
        or rpmvercmp(a.version, b.version) or rpmvercmp(a.release, b.release)


def _version_spellings(record: RpmRecord) -> tuple[str, ...]:
    """How `packages remove NAME=VERSION` may name an rpm's version: 1.2, 1.2-3 or 0:1.2-3."""
    evr = f"{record.version}-{record.release}"
    return record.version, evr, f"{record.epoch or 0}:{evr}"


def _describe(record: RpmRecord) -> str:
    epoch = "" if record.epoch in ("", "0") else f"{record.epoch}:"
    return f"{record.name}-{epoch}{record.version}-{record.release}.{record.arch}"


def publish_rpm(
    repo_root: Path,
    previous_root: Path | None,
    rpms: Sequence[str | Path],
    signer: Signer | None,
    cache: PackageCache,
    options: RepoOptions,
    now: datetime,
    shared_root: Path | None = None,
) -> RepoStats:
    """Write the whole RPM repository under ``repo_root`` (``<site>/rpm``)."""
    if options.rpm_compression not in _COMPRESSION:
        raise PublishError(f"invalid rpm_compression {options.rpm_compression!r} (use gz or zstd)")
    input_stats: list[os.stat_result] = []
    inputs = check_inputs(rpms, ".rpm", input_stats)
    published, published_digests = published_with_digests(previous_root, "packages", ".rpm")
    read_stats = ReadStats()
    paths = published + inputs
    records = identify(paths, cache, RpmRecord, read_rpm, read_stats, known_stats=input_stats,
                       known_first=published_digests)
    count = len(published)
    live_shas = {record.sha256 for record in records[:count]}
    # An input that is published already (the same bytes) adds nothing: merge would keep the published one.
    entries = [PoolEntry(record, path, index < count)
               for index, (path, record) in enumerate(zip(paths, records, strict=True))
               if index < count or record.sha256 not in live_shas]
    entries = merge(entries, lambda r: (r.name, r.epoch, r.version, r.release, r.arch), _describe)
    entries, dropped = drop(entries, options.remove, _version_spellings)
    kept, removed = retain(entries, options.keep_versions, lambda r: (r.name, r.arch), compare_evr)
    kept.sort(key=lambda entry: entry.record.pool_path)
    # The pool is linked (syscalls, GIL released) while repodata is assembled and compressed.
    linker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="place")
    if shared_root is None:
        placing = linker.submit(place, kept, repo_root)
    else:  # only the new packages are written: the rest is in the shared pool already
        placing = linker.submit(place_shared, kept, repo_root, shared_root, "packages", previous_root)
    linker.shutdown(wait=False)
    try:
        repomd = _write_repodata(repo_root / "repodata", [e.record for e in kept],
                                 _COMPRESSION[options.rpm_compression], now)
    finally:
        copies = placing.result()  # its error first: a pool problem explains an index one
    write_manifest(repo_root, kept)
    cache.remember_digests(copies)  # after the index: the cache's background write overlapped it
    cache.commit()
    repodata = repo_root / "repodata"
    (repodata / "repomd.xml").write_bytes(repomd)
    if signer is not None:
        (repodata / "repomd.xml.asc").write_bytes(signer.detach_sign(repomd, armor=True))
        (repodata / "repomd.xml.key").write_bytes(signer.public_key(armor=True))
    _write_repo_file(repo_root, options, signed=signer is not None)

    current = {f"repodata/{path.name}" for path in repodata.iterdir()}
    candidates = ([f"repodata/{path.name}" for path in (previous_root / "repodata").glob("*")
                   if path.is_file() and path.name not in _SIGNATURE_FILES]
                  if previous_root and (previous_root / "repodata").is_dir() else [])
    carried = carry_forward(previous_root, repo_root, candidates, current, now, options.grace_seconds)
    published_shas = {entry.record.sha256 for entry in entries if entry.published}
    return RepoStats(
        packages=len(kept),
        read=read_stats.read,
        cached=read_stats.cached,
        added=[e.record.pool_path for e in kept if e.record.sha256 not in published_shas],
        removed=[e.record.pool_path for e in removed if e.published],
        carried_forward=carried,
        dropped=[e.record.pool_path for e in dropped],
    )


def _write_repodata(repodata: Path, records: list[RpmRecord], compression: int, now: datetime) -> bytes:
    """primary/filelists/other from cached chunks, checksum-named as createrepo_c names them.

    gzip (the default): createrepo_c's XmlFile writes each file's framing (header, footer) and the
    three files are compressed at once in threads with Python's zlib, which releases the GIL where
    createrepo_c's writers hold it (three files one after the other took twice as long). zstd: the
    writers do it all.
    """
    repodata.mkdir(parents=True, exist_ok=True)
    suffix = cr.compression_suffix(compression) or ""
    repomd = cr.Repomd()
    repomd.set_revision(str(int(now.timestamp())))
    paths = [repodata / f"{kind}.xml{suffix}" for kind, _writer in _WRITERS]
    if compression == cr.GZ_COMPRESSION:
        frames = [_framing(repodata, index, len(records)) for index in range(len(_WRITERS))]
        with ThreadPoolExecutor(max_workers=len(_WRITERS)) as pool:
            done = [pool.submit(_write_gz, paths[index], frames[index],
                                [(record.primary, record.filelists, record.other)[index] for record in records])
                    for index in range(len(_WRITERS))]
            for future in done:
                future.result()
    else:
        for index, (_kind, writer_class) in enumerate(_WRITERS):
            writer = writer_class(str(paths[index]), compressiontype=compression)
            writer.set_num_of_pkgs(len(records))
            for record in records:
                writer.add_chunk((record.primary, record.filelists, record.other)[index])
            writer.close()
    for (kind, _writer), path in zip(_WRITERS, paths, strict=True):
        record_md = cr.RepomdRecord(kind, str(path))
        record_md.fill(cr.SHA256)
        record_md.rename_file()
        repomd.set_record(record_md)
    return repomd.xml_dump().encode()


_MARK = "<!--repogen-chunks-->"


def _framing(repodata: Path, index: int, count: int) -> tuple[str, str]:
    """(header, footer) createrepo_c's XmlFile writes around a file's package chunks."""
    kind, writer_class = _WRITERS[index]
    path = repodata / f".{kind}-framing.xml"
    writer = writer_class(str(path), compressiontype=cr.NO_COMPRESSION)
    writer.set_num_of_pkgs(count)
    writer.add_chunk(_MARK)
    writer.close()
    try:
        header, footer = path.read_text(encoding="utf-8").split(_MARK)
    finally:
        path.unlink()
    return header, footer


def _write_gz(path: Path, frame: tuple[str, str], chunks: list[str]) -> None:
    data = "".join([frame[0], *chunks, frame[1]]).encode("utf-8")
    path.write_bytes(gzip.compress(data, compresslevel=6, mtime=0))


def _write_repo_file(repo_root: Path, options: RepoOptions, *, signed: bool) -> None:
    """A ready ``/etc/yum.repos.d/`` file; unsigned repos say ``gpgcheck=0`` (nothing to check)."""
    base = f"{options.base_url.rstrip('/')}/rpm"
    config = configparser.ConfigParser(interpolation=None)
    config[REPO_ID] = {
        "name": f"{options.label} packages",
        "baseurl": base,
        "enabled": "1",
        "gpgcheck": "1" if signed else "0",
        "repo_gpgcheck": "1" if signed else "0",
    }
    if signed:
        config[REPO_ID]["gpgkey"] = f"{base}/repodata/repomd.xml.key"
    text = io.StringIO()
    config.write(text, space_around_delimiters=False)
    (repo_root / f"{REPO_ID}.repo").write_text(text.getvalue())
