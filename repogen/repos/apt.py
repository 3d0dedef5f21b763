"""The APT repository: ``deb/pool/``, ``deb/dists/<suite>/`` with by-hash indexes, signed Release.

Indexes are written with python-debian's deb822 (each package's Packages stanza is rendered once,
when the package is first read, and cached), the way pulp_deb does, never hand-formatted.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import lzma
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from email.utils import format_datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from debian import deb822
from debian.debfile import DebFile
from debian.debian_support import version_compare

from repogen.errors import PublishError
from repogen.repos.pkgcache import DebRecord, PackageCache, ReadStats, identify
from repogen.repos.pool import (
    PoolEntry,
    RepoStats,
    carry_forward,
    check_inputs,
    merge,
    place,
    published_files,
    retain,
)

if TYPE_CHECKING:
    from repogen.repos import RepoOptions
    from repogen.signing import Signer

log = logging.getLogger(__name__)

KEYRING_NAME = "repogen-archive-keyring"
SOURCES_NAME = "repogen.sources"

# Debian policy 5.6.1 / 5.6.12 / 11.1, narrowed so that each is one safe path component.
_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")
_VERSION = re.compile(r"(?:[0-9]+:)?[0-9A-Za-z][A-Za-z0-9.+~-]*")
_ARCH = re.compile(r"[a-z0-9][a-z0-9-]*")
_SUITE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

_HASHES = (("MD5Sum", "md5", "md5sum"), ("SHA1", "sha1", "sha1"), ("SHA256", "sha256", "sha256"),
           ("SHA512", "sha512", "sha512"))
_BY_HASH = (("SHA256", "sha256"), ("SHA512", "sha512"))
XZ_PRESET = 1  # Packages.xz is rebuilt on every publish: -1 keeps it well under a second at 10k packages


def pool_prefix(source: str) -> str:
    """Debian's pool split: ``libf/libfoo`` for libraries, ``f/foo`` for the rest."""
    return source[:4] if source.startswith("lib") and len(source) > 3 else source[0]


def read_deb(path: Path, sha256: str | None = None, component: str = "main") -> DebRecord:
    """Read a .deb's control data and hashes; anything malformed is the named file's fault."""
    try:
        package = DebFile(str(path))
        control = package.debcontrol()
        members = package.getmembers()
    except Exception as error:  # python-debian raises many types for a damaged archive
        raise PublishError(f"{path}: not a valid .deb package ({error or type(error).__name__})") from None
    # A cut-off download still has a readable control member: its ar members must fill the file.
    expected_size = 8 + sum(60 + member.size + member.size % 2 for member in members)
    hashes = {name: hashlib.new(name) for name in ("md5", "sha1", "sha256")}
    size = 0
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            size += len(block)
            for digest in hashes.values():
                digest.update(block)
    if sha256 is not None and hashes["sha256"].hexdigest() != sha256:
        raise PublishError(f"{path}: changed while being published")
    if size not in (expected_size, expected_size - members[-1].size % 2):
        raise PublishError(f"{path}: not a valid .deb package (truncated: {size} bytes, expected {expected_size})")
    name = _field(path, control, "Package", _NAME)
    version = _field(path, control, "Version", _VERSION)
    arch = _field(path, control, "Architecture", _ARCH)
    source = control.get("Source", name).split(" ")[0].strip()
    if not _NAME.fullmatch(source):
        raise PublishError(f"{path}: invalid Source name {source!r} (it would not be a safe pool path)")
    upstream = version.split(":", 1)[-1]
    pool_path = f"pool/{component}/{pool_prefix(source)}/{source}/{name}_{upstream}_{arch}.deb"
    # The control paragraph becomes the Packages stanza: deb822 keeps its field order and folding.
    control["Filename"] = pool_path
    control["Size"] = str(size)
    control["MD5sum"] = hashes["md5"].hexdigest()
    control["SHA1"] = hashes["sha1"].hexdigest()
    control["SHA256"] = hashes["sha256"].hexdigest()
    return DebRecord(control["SHA256"], name, version, arch, size, pool_path, control.dump())


def _field(path: Path, control: deb822.Deb822, name: str, pattern: re.Pattern[str]) -> str:
    value = control.get(name, "").strip()
    if not value:
        raise PublishError(f"{path}: control data has no {name} field")
    if not pattern.fullmatch(value):
        raise PublishError(f"{path}: invalid {name} {value!r} (it would not be a safe pool path)")
    return value


def _describe(record: DebRecord) -> str:
    return f"{record.name} {record.version} ({record.arch})"


def _compare(a: DebRecord, b: DebRecord) -> int:
    return version_compare(a.version, b.version)


def publish_apt(
    repo_root: Path,
    previous_root: Path | None,
    debs: list[Path],
    signer: Signer | None,
    cache: PackageCache,
    options: RepoOptions,
    now: datetime,
) -> RepoStats:
    """Write the whole APT repository under ``repo_root`` (``<site>/deb``)."""
    suite = options.suite
    codename = options.codename or suite
    for what, value in (("suite", suite), ("codename", codename), ("component", options.component)):
        if not _SUITE.fullmatch(value):
            raise PublishError(f"invalid APT {what} {value!r}")
    inputs = check_inputs(debs, ".deb")
    published = published_files(previous_root / "pool", ".deb") if previous_root else []
    read_stats = ReadStats()
    reader = partial(read_deb, component=options.component)
    paths = published + inputs
    records = identify(paths, cache, DebRecord, reader, read_stats,
                       valid=lambda r: r.pool_path.startswith(f"pool/{options.component}/"))
    entries = [PoolEntry(record, path, index < len(published))
               for index, (path, record) in enumerate(zip(paths, records, strict=True))]
    entries = merge(entries, lambda r: (r.name, r.version, r.arch), _describe)
    kept, removed = retain(entries, options.keep_versions, lambda r: (r.name, r.arch), _compare)
    kept.sort(key=lambda entry: entry.record.pool_path)
    cache.remember_digests(place(kept, repo_root))
    cache.commit()

    package_archs = {entry.record.arch for entry in kept}
    architectures = options.architectures or sorted((package_archs - {"all"}) | {"amd64"})
    for arch in architectures:
        if not _ARCH.fullmatch(arch) or arch == "all":
            raise PublishError(f"invalid APT architecture {arch!r}")
    dist = repo_root / "dists" / suite
    index_files = _write_packages(dist, options.component, architectures, [e.record for e in kept])
    release = _release(options, suite, codename, architectures, index_files, now)
    release_bytes = release.dump().encode()
    (dist / "Release").write_bytes(release_bytes)
    if signer is not None:
        (dist / "InRelease").write_bytes(signer.clearsign(release_bytes))
        (dist / "Release.gpg").write_bytes(signer.detach_sign(release_bytes, armor=True))
        (repo_root / f"{KEYRING_NAME}.gpg").write_bytes(signer.public_key(armor=False))
        (repo_root / f"{KEYRING_NAME}.asc").write_bytes(signer.public_key(armor=True))
    _write_sources(repo_root, options, suite, signed=signer is not None)

    current = {str(path.relative_to(repo_root)) for path in dist.glob("*/binary-*/by-hash/*/*")}
    candidates = ([str(p.relative_to(previous_root))
                   for p in (previous_root / "dists" / suite).glob("*/binary-*/by-hash/*/*")]
                  if previous_root else [])
    carried = carry_forward(previous_root, repo_root, candidates, current, now, options.grace_seconds)
    published_shas = {entry.record.sha256 for entry in entries if entry.published}
    return RepoStats(
        packages=len(kept),
        read=read_stats.read,
        cached=read_stats.cached,
        added=[e.record.pool_path for e in kept if e.record.sha256 not in published_shas],
        removed=[e.record.pool_path for e in removed if e.published],
        carried_forward=carried,
    )


def _write_packages(dist: Path, component: str, architectures: list[str],
                    records: list[DebRecord]) -> dict[str, bytes]:
    """Packages, .gz, .xz per architecture (``all`` packages in every one), plus by-hash copies."""
    files: dict[str, bytes] = {}
    by_arch = {arch: "".join(r.stanza + "\n" for r in records if r.arch in (arch, "all")).encode()
               for arch in architectures}
    with ThreadPoolExecutor(max_workers=2) as pool:  # zlib and lzma release the GIL
        compressed = {
            arch: (pool.submit(gzip.compress, data, 6, mtime=0), pool.submit(lzma.compress, data,
                                                                             preset=XZ_PRESET))
            for arch, data in by_arch.items()
        }
        for arch, data in by_arch.items():
            base = f"{component}/binary-{arch}/Packages"
            files[base] = data
            files[base + ".gz"] = compressed[arch][0].result()
            files[base + ".xz"] = compressed[arch][1].result()
    for relative, data in files.items():
        path = dist / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        for algorithm, hashlib_name in _BY_HASH:
            by_hash = path.parent / "by-hash" / algorithm / hashlib.new(hashlib_name, data).hexdigest()
            by_hash.parent.mkdir(parents=True, exist_ok=True)
            if not by_hash.exists():
                by_hash.write_bytes(data)
    return files


def _release(options: RepoOptions, suite: str, codename: str, architectures: list[str],
             index_files: dict[str, bytes], now: datetime) -> deb822.Release:
    release = deb822.Release()
    release["Origin"] = options.origin
    release["Label"] = options.label
    release["Suite"] = suite
    release["Codename"] = codename
    release["Date"] = format_datetime(now, usegmt=True)
    if options.valid_until_days is not None:
        release["Valid-Until"] = format_datetime(now + timedelta(days=options.valid_until_days), usegmt=True)
    release["Architectures"] = " ".join(architectures)
    release["Components"] = options.component
    release["Acquire-By-Hash"] = "yes"
    for field, hashlib_name, key in _HASHES:
        release[field] = [
            {key: hashlib.new(hashlib_name, data).hexdigest(), "size": str(len(data)), "name": name}
            for name, data in sorted(index_files.items())
        ]
    return release


def _write_sources(repo_root: Path, options: RepoOptions, suite: str, *, signed: bool) -> None:
    """A ready ``/etc/apt/sources.list.d/`` file; unsigned repos need (and say) ``Trusted: yes``."""
    sources = deb822.Deb822()
    sources["Types"] = "deb"
    sources["URIs"] = f"{options.base_url.rstrip('/')}/deb"
    sources["Suites"] = suite
    sources["Components"] = options.component
    if signed:
        sources["Signed-By"] = f"/etc/apt/keyrings/{KEYRING_NAME}.gpg"
    else:
        sources["Trusted"] = "yes"
    (repo_root / SOURCES_NAME).write_text(sources.dump())

