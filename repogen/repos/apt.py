"""The APT repository: ``deb/pool/``, ``deb/dists/<suite>/`` with by-hash indexes, signed Release.

Indexes are written with python-debian's deb822 (each package's Packages stanza is rendered once,
when the package is first read, and cached), the way pulp_deb does, never hand-formatted.
"""

from __future__ import annotations

import hashlib
import io
import logging
import lzma
import os
import re
import tarfile
import zlib
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from email.utils import format_datetime
from functools import partial
from itertools import compress as compress_by
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from debian import arfile, deb822
from debian.debfile import DebFile
from debian.debian_support import version_compare

from repogen.errors import PublishError
from repogen.repos import compress
from repogen.repos.pkgcache import SCHEMA_VERSION, DebRecord, PackageCache, ReadStats, identify
from repogen.repos.pool import (
    RepoStats,
    carry_forward,
    check_inputs,
    drop,
    link_or_copy,
    merge,
    place,
    place_shared,
    pool_entries,
    published_with_digests,
    retain,
    write_manifest,
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


def pool_prefix(source: str) -> str:
    """Debian's pool split: ``libf/libfoo`` for libraries, ``f/foo`` for the rest."""
    return source[:4] if source.startswith("lib") and len(source) > 3 else source[0]


def read_deb(path: str | Path, sha256: str | None = None, known: Container[str] = frozenset(),
             component: str = "main") -> DebRecord | str:
    """Read a .deb's control data and hashes; anything malformed is the named file's fault.

    One pass: the ar members are indexed (in memory by ``_ar_layout``, else by python-debian's
    ``arfile``) and the control member read, then the file is hashed (md5, sha1, sha256 together).
    With ``sha256`` None and the file's digest in ``known``, returns just that digest (the cache has
    the package: no parsing).
    """
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            # Small packages in one read (seeks on a file cost a syscall each); big ones streamed.
            data = handle.read() if size <= _IN_MEMORY else None
            if sha256 is None and data is not None and known:
                digest = hashlib.sha256(data).hexdigest()
                if digest in known:
                    return digest
            hashes = _hashes(data, handle)
            size = len(data) if data is not None else handle.tell()
            if sha256 is None and hashes[2].hexdigest() in known:
                return hashes[2].hexdigest()
            stream: BinaryIO = io.BytesIO(data) if data is not None else handle
            layout = _ar_layout(data) if data is not None else None
            if layout is not None:
                assert data is not None  # a layout is only read from bytes in memory
                spans = {member: (start, length) for member, start, length in layout}
                names, sizes = [member for member, _, _ in layout], [length for _, _, length in layout]
                member_bytes = partial(_span, data, spans)
            else:  # streamed, or an unusual header: python-debian's arfile (and its errors)
                stream.seek(0)
                archive = arfile.ArFile(fileobj=stream)
                members = archive.getmembers()
                names, sizes = [member.name for member in members], [member.size for member in members]
                member_bytes = partial(_member_read, archive)
            control_text = _control_text(names, member_bytes)
            if control_text is None:  # an unusual layout (zstd, say): python-debian's DebFile reads it
                stream.seek(0)
                control_text = DebFile(fileobj=stream).debcontrol().dump()
    except Exception as error:  # python-debian, tarfile, zlib, lzma raise many types for a damaged archive
        raise PublishError(f"{path}: not a valid .deb package ({error or type(error).__name__})") from None
    md5, sha1, sha = (digest.hexdigest() for digest in hashes)
    if sha256 is not None and sha != sha256:
        raise PublishError(f"{path}: changed while being published")
    # A cut-off download still has a readable control member: its ar members must fill the file.
    expected_size = 8 + sum(60 + length + length % 2 for length in sizes)
    if size not in (expected_size, expected_size - sizes[-1] % 2):
        raise PublishError(f"{path}: not a valid .deb package (truncated: {size} bytes, expected {expected_size})")
    fields = _fast_fields(control_text)
    control = deb822.Deb822(control_text) if fields is None else fields
    name = _field(path, control, "Package", _NAME)
    version = _field(path, control, "Version", _VERSION)
    arch = _field(path, control, "Architecture", _ARCH)
    source = control.get("Source", name).split(" ")[0].strip()
    if not _NAME.fullmatch(source):
        raise PublishError(f"{path}: invalid Source name {source!r} (it would not be a safe pool path)")
    upstream = version.split(":", 1)[-1]
    pool_path = f"pool/{component}/{pool_prefix(source)}/{source}/{name}_{upstream}_{arch}.deb"
    extra = (("Filename", pool_path), ("Size", str(size)), ("MD5sum", md5), ("SHA1", sha1), ("SHA256", sha))
    if fields is not None:
        stanza = control_text + "".join(f"{key}: {value}\n" for key, value in extra)
    else:
        stanza = _render_deb822(cast("deb822.Deb822", control), extra)
    return DebRecord(sha, name, version, arch, size, pool_path, stanza)


_IN_MEMORY = 8 << 20
_CONTROL_NAMES = (b"./control", b"control")


def _hashes(data: bytes | None, handle: BinaryIO) -> tuple[Any, Any, Any]:
    """md5, sha1, sha256 of ``data``, or of the whole file (one read pass, leaving it at the end)."""
    md5, sha1, sha256 = hashlib.md5(), hashlib.sha1(), hashlib.sha256()
    if data is not None:
        blocks: Iterable[bytes] = (data,)
    else:
        handle.seek(0)
        blocks = iter(lambda: handle.read(1 << 20), b"")
    for block in blocks:
        md5.update(block)
        sha1.update(block)
        sha256.update(block)
    return md5, sha1, sha256


def _ar_layout(data: bytes) -> list[tuple[str, int, int]] | None:
    """(name, data offset, size) of each member of an in-memory ar archive, read as python-debian's
    arfile reads them (a name ends at ``/`` or blanks; the member data may run past the end); None
    for anything arfile might treat otherwise, which then goes to arfile itself.

    Ten times cheaper than arfile's per-member objects and seeks on a BytesIO.
    """
    if data[:8] != b"!<arch>\n":
        return None
    layout: list[tuple[str, int, int]] = []
    offset, end = 8, len(data)
    while offset < end:
        header = data[offset:offset + 60]
        if len(header) < 60 or header[58:60] != b"`\n":
            return None
        try:
            int(header[16:28]), int(header[28:34]), int(header[34:40])
            size = int(header[48:58])
        except ValueError:
            return None
        if size < 0:
            return None
        name = header[:16].split(b"/")[0].strip().decode("utf-8", "surrogateescape")
        layout.append((name, offset + 60, size))
        offset += 60 + size + size % 2
    return layout


def _span(data: bytes, spans: Mapping[str, tuple[int, int]], name: str) -> bytes:
    start, length = spans[name]
    return data[start:start + length]


def _member_read(archive: arfile.ArFile, name: str) -> bytes:
    return archive.getmember(name).read()


def _control_text(names: list[str], member_bytes: Callable[[str], bytes]) -> str | None:
    """The ``control`` file of the control.tar member, or None to leave it to DebFile.

    ``member_bytes(name)`` is the (last) ar member of that name's data.
    """
    if len(names) < 3 or names[0] != "debian-binary" or not names[1].startswith("control.tar"):
        raise PublishError(f"unexpected ar members {names[:3]}")
    member = names[1]
    decompress = _DECOMPRESS.get(member[len("control.tar"):])
    if decompress is None:
        return None
    raw = member_bytes(member)
    control = None
    if member.endswith(".gz"):
        # control comes first: its header and text are usually in the first 2 KiB, else 8 KiB
        # (inflating costs by the output byte, and the tar is padded to 10 KiB with zeros).
        inflater = zlib.decompressobj(47)
        head = inflater.decompress(raw, 2048)
        control = _plain_tar_member(head, _CONTROL_NAMES)
        if control is None and inflater.unconsumed_tail:
            head += inflater.decompress(inflater.unconsumed_tail, 6144)
            control = _plain_tar_member(head, _CONTROL_NAMES)
    tar_data = b""
    if control is None:
        tar_data = decompress(raw)
        control = _plain_tar_member(tar_data, _CONTROL_NAMES)
    if control is None:  # pax or GNU headers, long names, ...: the tarfile module's full rules
        tar = tarfile.TarFile(fileobj=io.BytesIO(tar_data))
        for info in tar:
            if info.name in ("./control", "control") and info.isfile():
                extracted = tar.extractfile(info)
                assert extracted is not None
                control = extracted.read()
                break
        else:
            raise PublishError("control.tar has no control file")
    return control.decode("utf-8")


def _plain_tar_member(tar: bytes, names: tuple[bytes, ...]) -> bytes | None:
    """A regular file's bytes from a plain (v7/ustar, checksummed) tar; None for anything else.

    dpkg-deb's control.tar holds a few small files: stepping over 512-byte headers costs a tenth of
    what the tarfile module's generality does. Anything unusual returns None, for the tarfile module.
    """
    offset = 0
    while offset + 512 <= len(tar):
        header = tar[offset:offset + 512]
        kind = header[156:157]
        if kind not in (b"0", b"\0", b"5") or header[345:346] != b"\0" or header[124] & 0x80:
            return None  # links, pax/GNU extensions, ustar name prefixes, base-256 sizes
        try:
            checksum = int(header[148:156].split(b"\0", 1)[0].strip() or b"-1", 8)
            size = int(header[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
        except ValueError:
            return None
        if checksum != sum(header[:148]) + 256 + sum(header[156:]):
            return None
        start = offset + 512
        if kind != b"5" and header[:100].split(b"\0", 1)[0] in names:
            return tar[start:start + size] if start + size <= len(tar) else None
        offset = start + (size + 511) // 512 * 512
    return None


_DECOMPRESS: dict[str, Callable[[bytes], bytes]] = {
    ".gz": lambda data: zlib.decompress(data, 47),  # 32+15: gzip or zlib header, 32K window
    ".xz": lzma.decompress,
    "": bytes,
}

# A control paragraph as dpkg-deb writes it: "Field: value" lines (no trailing space), continuation
# lines starting with one space, nothing else. deb822 renders such a paragraph back byte for byte
# (tests/test_repos_apt.py checks that), so its fields are appended as text instead of a parse + dump.
_TEXT = r"[^\s][^\n\r\t\x0b\x0c]*(?<! )\n"
_PLAIN_PARAGRAPH = re.compile(rf"(?:[A-Za-z0-9][A-Za-z0-9_-]*: {_TEXT}(?: {_TEXT})*)+")
_FIELD = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_-]*): ([^\n]*)", re.MULTILINE)
_INDEX_FIELDS = {"filename", "size", "md5sum", "sha1", "sha256"}
_LOOKED_UP = {name.lower(): name for name in ("Package", "Version", "Architecture", "Source")}


def _fast_fields(text: str) -> dict[str, str] | None:
    """The single-line field values of a plain control paragraph; None when deb822 must handle it."""
    if not _PLAIN_PARAGRAPH.fullmatch(text):
        return None
    pairs = _FIELD.findall(text)
    keys = {key.lower() for key, _value in pairs}
    if len(keys) != len(pairs) or not keys.isdisjoint(_INDEX_FIELDS):
        return None  # duplicates, index fields to replace: deb822's rules apply
    values = dict(pairs)
    if any(name not in values for key, name in _LOOKED_UP.items() if key in keys):
        return None  # an odd spelling (deb822 keys are case-insensitive)
    return values


def _render_deb822(control: deb822.Deb822, extra: tuple[tuple[str, str], ...]) -> str:
    """The Packages stanza with python-debian: deb822 keeps the field order and folding."""
    for key, value in extra:
        control[key] = value
    return control.dump()


def _field(path: str | Path, control: Mapping[str, str], name: str, pattern: re.Pattern[str]) -> str:
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
    debs: Sequence[str | Path],
    signer: Signer | None,
    cache: PackageCache,
    options: RepoOptions,
    now: datetime,
    shared_root: Path | None = None,
) -> RepoStats:
    """Write the whole APT repository under ``repo_root`` (``<site>/deb``)."""
    suite = options.suite
    codename = options.codename or suite
    for what, value in (("suite", suite), ("codename", codename), ("component", options.component)):
        if not _SUITE.fullmatch(value):
            raise PublishError(f"invalid APT {what} {value!r}")
    input_stats: list[os.stat_result] = []
    inputs = check_inputs(debs, ".deb", input_stats)
    published, published_digests = published_with_digests(previous_root, "pool", ".deb")
    read_stats = ReadStats()
    reader = partial(read_deb, component=options.component)
    paths = published + inputs
    records = identify(paths, cache, DebRecord, reader, read_stats, pool_prefix=f"pool/{options.component}/",
                       known_stats=input_stats, known_first=published_digests)
    count = len(published)
    live_shas = set(published_digests) if len(published_digests) == count else {r.sha256 for r in records[:count]}
    entries = pool_entries(records[:count], published, True)
    # An input that is published already (the same bytes) adds nothing: merge would keep the published one.
    is_new = [sha not in live_shas for sha in map(attrgetter("sha256"), records[count:])]
    entries += pool_entries(compress_by(records[count:], is_new), compress_by(inputs, is_new), False)
    entries = merge(entries, attrgetter("name", "version", "arch"), _describe)
    entries, dropped = drop(entries, options.remove, lambda r: (r.version,))
    kept, removed = retain(entries, options.keep_versions, attrgetter("name", "arch"), _compare)
    kept.sort(key=attrgetter("record.pool_path"))
    package_archs = set(map(attrgetter("record.arch"), kept))
    architectures = options.architectures or sorted((package_archs - {"all"}) | {"amd64"})
    for arch in architectures:
        if not _ARCH.fullmatch(arch) or arch == "all":
            raise PublishError(f"invalid APT architecture {arch!r}")

    # The pool is linked (syscalls, GIL released), then the manifest written, while the indexes are
    # rendered, compressed and hashed (zlib, lzma, hashlib release the GIL: two cores at work).
    linker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="place")
    if shared_root is None:
        placing = linker.submit(place, kept, repo_root)
    else:  # only the new packages are written: the rest is in the shared pool already
        placing = linker.submit(place_shared, kept, repo_root, shared_root, "pool", previous_root)
    manifest = linker.submit(write_manifest, repo_root, kept)
    linker.shutdown(wait=False)
    dist = repo_root / "dists" / suite
    try:
        index_files = _write_packages(dist, options.component, architectures, list(map(attrgetter("record"), kept)),
                                      cache, now, previous_root / "dists" / suite if previous_root else None)
    finally:
        copies = placing.result()  # its error first: a pool problem explains an index one
        manifest.result()
    cache.remember_digests(copies)  # after the index: the cache's background write overlapped it
    cache.commit()
    release = _release(options, suite, codename, architectures, index_files, now)
    release_bytes = release.dump().encode()
    (dist / "Release").write_bytes(release_bytes)
    if signer is not None:
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="gpg") as gpg:  # two gpg runs at once
            in_release = gpg.submit(signer.clearsign, release_bytes)
            detached = gpg.submit(signer.detach_sign, release_bytes, armor=True)
            (dist / "InRelease").write_bytes(in_release.result())
            (dist / "Release.gpg").write_bytes(detached.result())
        (repo_root / f"{KEYRING_NAME}.gpg").write_bytes(signer.public_key(armor=False))
        (repo_root / f"{KEYRING_NAME}.asc").write_bytes(signer.public_key(armor=True))
    _write_sources(repo_root, options, suite, signed=signer is not None)

    current = {str(path.relative_to(repo_root)) for path in dist.glob("*/binary-*/by-hash/*/*")}
    candidates = ([str(p.relative_to(previous_root))
                   for p in (previous_root / "dists" / suite).glob("*/binary-*/by-hash/*/*")]
                  if previous_root else [])
    carried = carry_forward(previous_root, repo_root, candidates, current, now, options.grace_seconds)
    return RepoStats(
        packages=len(kept),
        read=read_stats.read,
        cached=read_stats.cached,
        added=[e.record.pool_path for e in kept if e.record.sha256 not in live_shas],
        removed=[e.record.pool_path for e in removed if e.published],
        carried_forward=carried,
        dropped=[e.record.pool_path for e in dropped],
    )


def _write_packages(dist: Path, component: str, architectures: list[str], records: list[DebRecord],
                    cache: PackageCache, now: datetime, previous_dist: Path | None
                    ) -> dict[str, dict[str, str | int]]:
    """Packages, .gz, .xz per architecture (``all`` packages in every one), plus by-hash links.

    The compressed files are put together from pieces compressed once and cached (repos.compress):
    adding a package compresses again only the piece its stanza lands in. Without those pieces (a new
    cache) the live tree's files are used when their Release lists the same text. Returns each file's
    size and hashes, for Release.
    """
    # A piece is named by what it is made of: its packages (sha256), the component and the cache's
    # schema (a stanza, its pool path included, is made from these alone): a piece that did not
    # change is neither rendered nor hashed again.
    made_of = f"{SCHEMA_VERSION} {component}"
    pieces: dict[str, list[tuple[bytes, list[DebRecord]]]] = {}
    archs, all_shas = list(map(attrgetter("arch"), records)), list(map(attrgetter("sha256"), records))
    for arch in architectures:
        flags = list(map({arch, "all"}.__contains__, archs))
        chosen, shas = list(compress_by(records, flags)), list(compress_by(all_shas, flags))
        pieces[arch] = [(hashlib.sha256(" ".join([made_of, *shas[start:end]]).encode()).digest(),
                         chosen[start:end]) for start, end in compress.spans(shas)]
    keys = [key for arch_pieces in pieces.values() for key, _member in arch_pieces]
    known = cache.pieces(keys)
    texts = {key: piece.text for key, piece in known.items()}
    texts.update({key: compress.text([record.stanza for record in member])
                  for arch_pieces in pieces.values() for key, member in arch_pieces if key not in texts})
    outputs: dict[str, bytes] = {}
    live = _live_sha256(previous_dist) if 2 * len(known) < len(texts) else {}
    to_compress: dict[bytes, bytes] = {}
    for arch, arch_pieces in pieces.items():
        base = f"{component}/binary-{arch}/Packages"
        outputs[base] = b"".join([texts[key] for key, _member in arch_pieces])
        missing = {key: texts[key] for key, _member in arch_pieces if key not in known}
        # Pieces not cached (a new cache): the live tree's .gz and .xz do, when they hold this text.
        if 2 * len(missing) > len(arch_pieces) and live and (
                reused := _live_compressed(previous_dist, base, outputs[base], live)):
            outputs.update(reused)
        else:
            to_compress.update(missing)
    files: dict[str, dict[str, str | int]] = {}
    with ThreadPoolExecutor(max_workers=2) as pool:  # zlib, lzma and hashlib release the GIL
        new = list(pool.map(compress.compress_piece, to_compress, to_compress.values()))
        known.update((piece.key, piece) for piece in new)
        for arch, arch_pieces in pieces.items():
            base = f"{component}/binary-{arch}/Packages"
            if f"{base}.gz" not in outputs:
                compressed = [known[key] for key, _member in arch_pieces]
                outputs[f"{base}.gz"] = compress.gzip_file(compressed, outputs[base])
                outputs[f"{base}.xz"] = compress.xz_file(compressed)
        # Every hash Release lists, remembered by sha256: an architecture the publish did not change
        # costs one sha256 per file, not four hashes.
        digests = dict(zip(outputs, pool.map(_sha256, outputs.values()), strict=True))
        remembered = cache.index_files(digests.values())
        infos = {relative: info for relative, digest in digests.items()
                 if (info := remembered.get(digest)) is not None and info.get("size") == len(outputs[relative])
                 and info.get("sha256") == digest.hex()}
        todo = [(relative, name) for relative in outputs if relative not in infos
                for _field, name, _key in _HASHES if name != "sha256"]
        for relative in {relative for relative, _name in todo}:
            infos[relative] = {"size": len(outputs[relative]), "sha256": digests[relative].hex()}
        hashed = pool.map(lambda task: hashlib.new(task[1], outputs[task[0]]).hexdigest(), todo)
        for (relative, name), hexdigest in zip(todo, hashed, strict=True):
            infos[relative][name] = hexdigest
    cache.keep_pieces(new, keys, {digests[relative]: info for relative, info in infos.items()},
                      int(now.timestamp()))
    for relative, output in outputs.items():
        info = infos[relative]
        path = dist / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(output)
        for algorithm, hashlib_name in _BY_HASH:
            by_hash = path.parent / "by-hash" / algorithm / str(info[hashlib_name])
            by_hash.parent.mkdir(parents=True, exist_ok=True)
            if not by_hash.exists():
                link_or_copy(path, by_hash)
        files[relative] = info
    return files


def _live_sha256(previous_dist: Path | None) -> dict[str, str]:
    """name -> sha256 of the index files the live Release lists (empty if there is none)."""
    if previous_dist is None:
        return {}
    try:
        release = deb822.Release((previous_dist / "Release").read_text())
        return {entry["name"]: entry["sha256"] for entry in release.get("SHA256", [])}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _live_compressed(previous_dist: Path | None, base: str, plain: bytes, live: Mapping[str, str]
                     ) -> dict[str, bytes] | None:
    """The live tree's ``base``.gz and .xz, if its Release lists ``plain`` as ``base`` and them as read."""
    if previous_dist is None or live.get(base) != hashlib.sha256(plain).hexdigest():
        return None
    found: dict[str, bytes] = {}
    for suffix in (".gz", ".xz"):
        try:
            data = (previous_dist / f"{base}{suffix}").read_bytes()
        except OSError:
            return None
        if hashlib.sha256(data).hexdigest() != live.get(f"{base}{suffix}"):
            return None
        found[f"{base}{suffix}"] = data
    return found


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _release(options: RepoOptions, suite: str, codename: str, architectures: list[str],
             index_files: dict[str, dict[str, str | int]], now: datetime) -> deb822.Release:
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
        release[field] = [  # type: ignore[assignment]  # deb822.Release takes lists of dicts here
            {key: str(info[hashlib_name]), "size": str(info["size"]), "name": name}
            for name, info in sorted(index_files.items())
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

