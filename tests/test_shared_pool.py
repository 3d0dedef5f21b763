"""The shared package pool: generations link to it, a publish writes only new packages, GC after grace.

No Docker (nothing is built: publish writes the APT and RPM repositories alone), the real
``repogen publish`` command, the real apt-get and dnf against a plain ``python -m http.server``
(which follows the symlinks as any static server does).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import HELLO_KBUILD, Repogen, driver_yaml, write_config

from tests.pkgfactory import make_deb, make_rpm
from tests.test_repos_apt import Apt
from tests.test_repos_rpm import dnf

pytestmark = pytest.mark.timeout(300)

KERNEL = {"target": "debian", "kernelrelease": "6.1.0-1-amd64", "kernelversion": "1", "architecture": "x86_64",
          "headers": ["http://127.0.0.1:9/never-fetched.deb"]}


def setup(tmp_path: Path, packages: str) -> Repogen:
    config = write_config(tmp_path, [driver_yaml("hello_repogen", "0.1.0", HELLO_KBUILD, "kbuild")], [KERNEL],
                          extra=f"packages: {{{packages}}}\n")
    return Repogen(tmp_path / "home", config)


def publish(repogen: Repogen, site: Path, inputs: Path) -> dict:  # type: ignore[type-arg]
    result = repogen("publish", "--site", str(site), "--deb", str(inputs / "*.deb"), "--rpm", str(inputs / "*.rpm"),
                     "--json")
    assert result.code == 0, result.err
    return result.json  # type: ignore[no-any-return]


def reachable(site: Path) -> list[Path]:
    """Every path under the live tree, following directory symlinks as a web server does."""
    found = []
    for directory, dirs, files in os.walk(site, followlinks=True):
        found += [Path(directory) / name for name in dirs + files]
    return found


def test_generations_share_one_pool_and_clients_see_a_complete_tree(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    make_deb(inputs, "falco", "0.40.0", "amd64")
    make_rpm(inputs, "falco", "0.40.0")
    repogen = setup(tmp_path, "base-url: http://127.0.0.1:1")
    site = tmp_path / "site"
    publish(repogen, site, inputs)
    pool = tmp_path / ".site.generations" / "pool"
    first_deb = pool / "deb/pool/main/f/falco/falco_0.40.0_amd64.deb"
    inode = first_deb.stat().st_ino

    make_deb(inputs, "falco", "0.41.0", "amd64", payload="new")
    second = publish(repogen, site, inputs)
    assert second["deb_repository"]["added"] == ["pool/main/f/falco/falco_0.41.0_amd64.deb"]
    generation = Path(second["generation"])
    # The generation links to the shared pool; the published file was not touched, only one added.
    assert os.readlink(generation / "deb" / "pool") == "../../pool/deb/pool"
    assert os.readlink(generation / "rpm" / "packages") == "../../pool/rpm/packages"
    assert first_deb.stat().st_ino == inode and first_deb.stat().st_nlink == 1
    # Everything reachable is a regular file or directory, or a relative link staying beside the site.
    for path in reachable(site):
        if path.is_symlink():
            target = os.readlink(path)
            assert not os.path.isabs(target), path
            assert Path(os.path.realpath(path)).is_relative_to(site.parent.resolve()), path
        assert path.is_file() or path.is_dir(), path

    server = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "0",
                               "--directory", str(site)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()  # "Serving HTTP on 127.0.0.1 port N (...)"
        base = f"http://127.0.0.1:{line.split(' port ')[1].split()[0]}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{base}/index.json", timeout=5).read()
                break
            except OSError:
                time.sleep(0.2)
        apt = Apt(tmp_path / "apt", base, signed_by=None, trusted=True)
        update = apt("update")
        assert update.returncode == 0, update.stdout + update.stderr
        for version in ("0.40.0", "0.41.0"):
            got = apt("download", f"falco={version}")
            assert got.returncode == 0, got.stdout + got.stderr
        assert sorted(p.name for p in (tmp_path / "apt/download").iterdir()) == [
            "falco_0.40.0_amd64.deb", "falco_0.41.0_amd64.deb"]
        fetched = dnf(tmp_path / "dnf", base, "install", "--downloadonly", "--downloaddir",
                      str(tmp_path / "dnf/download"), "falco", signed=False)
        assert fetched.returncode == 0, fetched.stdout + fetched.stderr
        assert [p.name for p in (tmp_path / "dnf/download").iterdir()] == ["falco-0.40.0-1.x86_64.rpm"]
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_retention_removes_a_package_from_the_pool_once_no_generation_lists_it(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    make_deb(inputs, "falco", "0.40.0", "amd64")
    make_rpm(inputs, "falco", "0.40.0")
    repogen = setup(tmp_path, "keep-versions: 1, grace-period: 0")
    site = tmp_path / "site"
    publish(repogen, site, inputs)
    old = tmp_path / ".site.generations/pool/deb/pool/main/f/falco/falco_0.40.0_amd64.deb"
    (inputs / "falco_0.40.0_amd64.deb").unlink()
    make_deb(inputs, "falco", "0.41.0", "amd64", payload="new")
    second = publish(repogen, site, inputs)
    assert second["deb_repository"]["removed"] == ["pool/main/f/falco/falco_0.40.0_amd64.deb"]
    # The first generation is still on disk (old readers) and lists it: kept.
    assert old.is_file()
    for _ in range(3):  # a generation is kept for 3 publishes; then nothing lists the file
        publish(repogen, site, inputs)
    assert not old.exists()
    assert (tmp_path / ".site.generations/pool/deb/pool/main/f/falco/falco_0.41.0_amd64.deb").is_file()
    assert (tmp_path / ".site.generations/pool/rpm/packages").is_dir()


def test_unlisted_file_is_kept_for_the_grace_period(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    make_deb(inputs, "falco", "0.40.0", "amd64")
    make_rpm(inputs, "falco", "0.40.0")
    repogen = setup(tmp_path, "grace-period: 1d")
    site = tmp_path / "site"
    publish(repogen, site, inputs)
    stray = tmp_path / ".site.generations/pool/deb/pool/main/f/falco/left-by-a-failed-publish.deb"
    stray.write_bytes(b"x")
    for _ in range(4):
        publish(repogen, site, inputs)
    assert stray.is_file()  # unlisted, but for less than a day
    # An unlisted file is never published: the live index does not name it.
    packages = (site / "deb/dists/stable/main/binary-amd64/Packages").read_text()
    assert "left-by-a-failed-publish" not in packages
