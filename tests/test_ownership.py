"""Handing a work tree to the build container's user, and sealing a prepared cache, never follow a link."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from repogen import ownership


def _host_file(tmp_path: Path) -> Path:
    host = tmp_path / "host" / "secret"
    host.parent.mkdir()
    host.write_text("secret\n")
    host.chmod(0o600)
    return host


def _tree(tmp_path: Path, host: Path) -> Path:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "code.c").write_text("int x;\n")
    (tree / "run.sh").write_text("#!/bin/sh\n")
    (tree / "run.sh").chmod(0o4775)
    (tree / "to-file").symlink_to(host)
    (tree / "to-dir").symlink_to(host.parent)
    return tree


def _unchanged(host: Path, before: os.stat_result) -> None:
    after = host.stat()
    assert (stat.S_IMODE(after.st_mode), after.st_uid, after.st_gid) == \
        (stat.S_IMODE(before.st_mode), before.st_uid, before.st_gid)
    assert (stat.S_IMODE(host.parent.stat().st_mode), host.parent.stat().st_uid) == (0o755, before.st_uid)


def test_hand_over_never_follows_links(tmp_path: Path) -> None:
    host = _host_file(tmp_path)
    host.parent.chmod(0o755)
    before = host.stat()
    tree = _tree(tmp_path, host)
    uid, gid = (1000, 1000) if os.getuid() == 0 else (os.getuid(), os.getgid())
    ownership.hand_over(tree, uid, gid)
    _unchanged(host, before)
    for path in (tree, tree / "sub", tree / "sub" / "code.c", tree / "run.sh", tree / "to-file"):
        assert path.lstat().st_uid == uid
    assert stat.S_IMODE((tree / "run.sh").stat().st_mode) == 0o755  # no setuid, no group write
    assert stat.S_IMODE((tree / "sub").stat().st_mode) == 0o755
    assert stat.S_IMODE((tree / "sub" / "code.c").stat().st_mode) & 0o022 == 0


def test_seal_makes_a_read_only_cache_and_never_follows_links(tmp_path: Path) -> None:
    host = _host_file(tmp_path)
    host.parent.chmod(0o755)
    before = host.stat()
    tree = _tree(tmp_path, host)
    (tree / "sub").chmod(0o777)
    (tree / "sub" / "code.c").chmod(0o666)
    if os.getuid() == 0:
        ownership.hand_over(tree, 1000, 1000)  # as a prepare container leaves it
    ownership.seal(tree)
    _unchanged(host, before)
    for path in tree.rglob("*"):
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            continue
        assert st.st_uid == os.getuid(), path
        assert stat.S_IMODE(st.st_mode) in (0o444, 0o555), (path, oct(st.st_mode))
    ownership.unseal(tree)
    assert stat.S_IMODE((tree / "sub").stat().st_mode) == 0o755


@pytest.mark.skipif(os.getuid() != 0, reason="the container user differs only for root")
def test_container_user_is_the_images_builder_for_root() -> None:
    assert ownership.container_user() == (1000, 1000)
