"""Hostile archives: every trick, in every format repogen unpacks, lands nothing outside the tree.

Each archive is crafted (tarfile for tarballs and a .deb's data member, the real rpmbuild then a
patched payload for .rpm) and unpacked the way a build does (:class:`HeadersCache` for headers, the
source cache for driver tarballs). A sentinel file outside the unpack directory, with known content
and mode, must be unchanged and the failure must be one clean :class:`FetchError` message.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hostile import Entry, make_deb, make_rpm, make_tarball

from repogen.errors import FetchError
from repogen.fetch import Download
from repogen.headers import HeadersCache
from repogen.unpack import UnsafeArchive, extract_cpio, extract_tar

PWNED = b"pwned"


class Sentinel:
    """A directory outside the unpack directory holding one file of known content and mode."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path / "outside"
        self.dir.mkdir()
        self.file = self.dir / "sentinel"
        self.file.write_bytes(b"precious\n")
        self.file.chmod(0o600)

    def assert_untouched(self) -> None:
        assert sorted(p.name for p in self.dir.iterdir()) == ["sentinel"]
        assert not self.file.is_symlink()
        assert self.file.read_bytes() == b"precious\n"
        st = self.file.stat()
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_nlink == 1


def tricks(s: Sentinel) -> dict[str, list[list[Entry]]]:
    """Each trick as the list of archives (unpacked in order into one tree) that plays it."""
    target = str(s.file)
    return {
        "absolute-path": [[Entry("file", target, PWNED)]],
        "dotdot": [[Entry("file", "../" * 40 + target.lstrip("/"), PWNED)]],
        "symlink-then-file-through-it": [[Entry("symlink", "usr/src/lnk", target=str(s.dir)),
                                          Entry("file", "usr/src/lnk/sentinel", PWNED)]],
        "symlink-in-one-package-file-in-the-next": [[Entry("symlink", "usr/src/lnk", target=str(s.dir))],
                                                    [Entry("file", "usr/src/lnk/sentinel", PWNED)]],
        "hardlink-to-absolute-then-file": [[Entry("hardlink", "usr/src/h", target=target),
                                            Entry("file", "usr/src/h", PWNED)]],
        "hardlink-dotdot-then-file": [[Entry("hardlink", "usr/src/h", target="../" * 40 + target.lstrip("/")),
                                       Entry("file", "usr/src/h", PWNED)]],
        "device": [[Entry("chardev", "usr/src/null")]],
        "fifo": [[Entry("fifo", "usr/src/fifo")]],
        "link-out-then-overwritten": [[Entry("symlink", "usr/src/o", target=target),
                                       Entry("file", "usr/src/o", PWNED)]],
        "link-out-then-dir-then-file": [[Entry("symlink", "usr/src/d", target=str(s.dir)), Entry("dir", "usr/src/d"),
                                         Entry("file", "usr/src/d/sentinel", PWNED)]],
    }


TRICKS = [
    "absolute-path", "dotdot", "symlink-then-file-through-it", "symlink-in-one-package-file-in-the-next",
    "hardlink-to-absolute-then-file", "hardlink-dotdot-then-file", "device", "fifo",
    "link-out-then-overwritten", "link-out-then-dir-then-file",
]

FORMATS: dict[str, tuple[str, str, Callable[[Path, list[Entry]], Path]]] = {
    # format: (target whose headers use it, file suffix, maker)
    "deb": ("debian", ".deb", make_deb),
    "rpm": ("centos", ".rpm", make_rpm),
    "tar.gz": ("vanilla", ".tar.gz", lambda p, e: make_tarball(p, e, "gz")),
    "tar.xz": ("vanilla", ".tar.xz", lambda p, e: make_tarball(p, e, "xz")),
}


def _download(path: Path) -> Download:
    data = path.read_bytes()
    return Download(f"http://127.0.0.1:1/{path.name}", path, hashlib.sha256(data).hexdigest(), len(data), False)


@pytest.mark.parametrize("trick", TRICKS)
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_hostile_headers_archive_lands_nothing_outside(tmp_path: Path, fmt: str, trick: str) -> None:
    sentinel = Sentinel(tmp_path)
    archives = tricks(sentinel)[trick]
    if fmt == "rpm" and any(e.kind == "hardlink" for a in archives for e in a):
        pytest.skip("cpio hard links are by inode: a link to a path cannot be written in an .rpm")
    target, suffix, make = FORMATS[fmt]
    files = [_download(make(tmp_path / f"pkg{i}{suffix}", entries)) for i, entries in enumerate(archives)]
    cache = HeadersCache(tmp_path / "headers")
    with pytest.raises(FetchError) as raised:
        cache.tree(target, files)
    sentinel.assert_untouched()
    message = raised.value.message
    assert "Traceback" not in message and "\n" not in message
    if trick == "link-out-then-overwritten":
        # Legal: the link is replaced by the file (not written through); these headers hold no kernel.
        assert message.startswith("the headers hold no kernel build directory"), message
    else:
        assert message.startswith("http://127.0.0.1:1/pkg"), message
        assert "unsafe archive refused: member " in message, message
    assert not list((tmp_path / "headers").iterdir()), "a refused unpack leaves no tree behind"


@pytest.mark.parametrize("trick", TRICKS)
def test_hostile_source_tarball_lands_nothing_outside(tmp_path: Path, trick: str) -> None:
    from repogen.sources import _unpack_source

    sentinel = Sentinel(tmp_path)
    entries = [e for archive in tricks(sentinel)[trick] for e in archive]
    tarball = make_tarball(tmp_path / "driver.tar.gz", [Entry("dir", "driver-1.0"), *entries])
    (tmp_path / "src-parent").mkdir()
    with pytest.raises(FetchError) as raised:
        _unpack_source(tarball, tmp_path / "src-parent" / "src")
    sentinel.assert_untouched()
    assert raised.value.message.startswith("driver.tar.gz: unsafe archive refused"), raised.value.message


def test_replacing_a_link_never_writes_through_it(tmp_path: Path) -> None:
    sentinel = Sentinel(tmp_path)
    with tarfile.open(fileobj=io.BytesIO(_tar([Entry("symlink", "a", target=str(sentinel.file)),
                                                Entry("file", "b", b"inside"), Entry("hardlink", "c", target="b"),
                                                Entry("file", "a", PWNED), Entry("file", "c", b"new")]))) as tar:
        extract_tar(tar, tmp_path / "tree")
    tree = tmp_path / "tree"
    assert not (tree / "a").is_symlink() and (tree / "a").read_bytes() == PWNED
    assert (tree / "b").read_bytes() == b"inside", "a file replaced through a hard link changed its twin"
    assert (tree / "c").read_bytes() == b"new"
    sentinel.assert_untouched()


def test_sources_refuse_links_leaving_the_tree(tmp_path: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(_tar([Entry("symlink", "d/up", target="../../x")]))) as tar, \
            pytest.raises(UnsafeArchive, match="leaves the tree"):
        extract_tar(tar, tmp_path / "tree", contained_links=True)
    with tarfile.open(fileobj=io.BytesIO(_tar([Entry("symlink", "d/in", target="../x"),
                                               Entry("symlink", "build", target="/usr/src/x")]))) as tar:
        extract_tar(tar, tmp_path / "headers")  # headers keep absolute links (build -> /usr/src/...)
    assert os.readlink(tmp_path / "headers" / "build") == "/usr/src/x"


def test_modes_are_sanitised(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, mode in (("suid", 0o4777), ("sgid", 0o2775), ("plain", 0o640)):
            info = tarfile.TarInfo(name)
            info.mode = mode
            tar.addfile(info, io.BytesIO(b""))
        info = tarfile.TarInfo("dir")
        info.type, info.mode = tarfile.DIRTYPE, 0o1777
        tar.addfile(info)
    buffer.seek(0)
    with tarfile.open(fileobj=buffer) as tar:
        extract_tar(tar, tmp_path / "tree")
    modes = {p.name: stat.S_IMODE(p.lstat().st_mode) for p in (tmp_path / "tree").iterdir()}
    assert modes == {"suid": 0o755, "sgid": 0o755, "plain": 0o640, "dir": 0o755}


def test_cpio_hard_links_and_truncation(tmp_path: Path) -> None:
    def entry(name: str, mode: int, data: bytes, ino: int, nlink: int = 1) -> bytes:
        fields = [ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
        head = b"070701" + b"".join(b"%08x" % f for f in fields) + name.encode() + b"\0"
        return head + b"\0" * (-len(head) % 4) + data + b"\0" * (-len(data) % 4)

    stream = (entry("./d", 0o40755, b"", 1) + entry("./d/a", 0o100644, b"", 2, 2)
              + entry("./d/b", 0o100644, b"data", 2, 2) + entry("TRAILER!!!", 0, b"", 0))
    extract_cpio(io.BytesIO(stream), tmp_path / "tree")
    a, b = tmp_path / "tree/d/a", tmp_path / "tree/d/b"
    assert a.read_bytes() == b.read_bytes() == b"data" and a.stat().st_ino == b.stat().st_ino
    with pytest.raises(FetchError, match="cut short"):
        extract_cpio(io.BytesIO(stream[:150]), tmp_path / "tree2")
    with pytest.raises(FetchError, match="not a cpio newc archive"):
        extract_cpio(io.BytesIO(b"x" * 200), tmp_path / "tree3")


def _tar(entries: list[Entry]) -> bytes:
    from hostile import tar_bytes

    return tar_bytes(entries, "")


@pytest.mark.docker
def test_build_reports_hostile_headers_cleanly_and_builds_nothing(tmp_path: Path, builder_image: str) -> None:
    """Through the real CLI: one kernel per format, each with a link planted by one package and a file
    written through it by the next; each job fails with one clean line, the sentinel is untouched."""
    from conftest import HELLO_KBUILD, Repogen, driver_yaml, write_config

    sentinel = Sentinel(tmp_path)
    plant = [Entry("symlink", "usr/src/lnk", target=str(sentinel.dir))]
    write = [Entry("file", "usr/src/lnk/sentinel", PWNED)]
    kernels = []
    for fmt, release in (("deb", "6.1.0-1-amd64"), ("rpm", "6.1.2-1.el9.x86_64"), ("tar.xz", "6.1.1")):
        target, suffix, make = FORMATS[fmt]
        urls = [make(tmp_path / f"{fmt}-{i}{suffix}", entries).as_uri() for i, entries in enumerate((plant, write))]
        kernels.append({"target": target, "kernelrelease": release, "kernelversion": "1",
                        "architecture": "x86_64", "headers": urls})
    config = write_config(tmp_path / "cfg", [driver_yaml("hello_repogen", "0.1.0", HELLO_KBUILD, "kbuild", "[kmod]")],
                          kernels)
    result = Repogen(tmp_path / "home", config)("build", "--json", timeout=300)
    sentinel.assert_untouched()
    assert result.code == 1, result.err + result.out
    assert "Traceback" not in result.err + result.out
    errors = sorted(r["error"] for r in result.json["results"])
    assert len(errors) == 3 and all("unsafe archive refused: member " in e and "usr/src/lnk/sentinel': its parent "
                                    "'usr/src/lnk' is a symbolic link" in e for e in errors), errors
