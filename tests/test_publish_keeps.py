"""A publish never drops data: the live APT and RPM repositories survive a publish that brings no
package (only retention and an explicit removal take one out), and a --site directory repogen did
not make is refused (or adopted when asked, and then never pruned). Real apt-get and dnf over HTTP;
no Docker (nothing is built: the tree holds the repositories only)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import HELLO_KBUILD, Repogen, driver_yaml, write_config
from test_repos_apt import Apt
from test_repos_rpm import dnf

from tests.pkgfactory import make_deb, make_rpm

pytestmark = pytest.mark.timeout(300)

KERNEL = {"target": "debian", "kernelrelease": "6.1.1-1-amd64", "kernelversion": "1", "architecture": "x86_64",
          "headers": ["http://127.0.0.1:9/linux-headers-6.1.1-1-amd64_6.1.1-1_amd64.deb"]}


def setup(tmp_path: Path) -> tuple[Repogen, Path]:
    config = write_config(tmp_path / "conf", [driver_yaml("hello_repogen", "0.1.0", HELLO_KBUILD, "kbuild")],
                          [KERNEL])
    return Repogen(tmp_path / "home", config), tmp_path / "packages"


def apt_can_get(tmp_path: Path, base_url: str, *packages: str) -> str:
    apt = Apt(tmp_path / f"apt-{len(list(tmp_path.glob('apt-*')))}", base_url, signed_by=None, trusted=True)
    update = apt("update")
    assert update.returncode == 0, update.stdout + update.stderr
    fetched = apt("download", *packages)
    return fetched.stdout + fetched.stderr if fetched.returncode else ""


def test_publish_without_packages_keeps_the_live_repositories(served: tuple[Path, str], tmp_path: Path) -> None:
    site, base_url = served
    repogen, packages = setup(tmp_path)
    deb = make_deb(packages, "falco", "0.40.0", "amd64")
    rpm = make_rpm(packages, "falco", "0.40.0")
    first = repogen("publish", "--site", str(site), "--deb", str(deb), "--rpm", str(rpm), "--json")
    assert first.code == 0, first.err
    # Published again with no package at all, then with a new .deb only: both repositories stay whole.
    again = repogen("publish", "--site", str(site), "--json")
    assert again.code == 0, again.err
    assert again.json["deb_repository"]["packages"] == 1 and again.json["rpm_repository"]["packages"] == 1
    assert apt_can_get(tmp_path, base_url, "falco") == ""
    newer = make_deb(packages, "falco", "0.41.0", "amd64", payload="newer")
    third = repogen("publish", "--site", str(site), "--deb", str(newer), "--json")
    assert third.code == 0, third.err
    assert third.json["deb_repository"]["packages"] == 2 and third.json["rpm_repository"]["packages"] == 1
    assert apt_can_get(tmp_path, base_url, "falco=0.40.0", "falco=0.41.0") == ""
    root = tmp_path / "dnf"
    fetched = dnf(root, base_url, "install", "--downloadonly", "--downloaddir", str(root / "download"), "falco",
                  signed=False)
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    assert [p.name for p in (tmp_path / "dnf" / "download").iterdir()] == ["falco-0.40.0-1.x86_64.rpm"]


def test_only_an_explicit_removal_takes_a_package_out(served: tuple[Path, str], tmp_path: Path) -> None:
    site, base_url = served
    repogen, packages = setup(tmp_path)
    debs = [make_deb(packages, "falco", v, "amd64", payload=v) for v in ("0.40.0", "0.41.0")]
    assert repogen("publish", "--site", str(site), "--deb", str(debs[0]), "--deb", str(debs[1])).code == 0
    removed = repogen("packages", "remove", "falco=0.40.0", "--site", str(site))
    assert removed.code == 0, removed.out + removed.err
    assert "Version '0.40.0' for 'falco' was not found" in apt_can_get(tmp_path, base_url, "falco=0.40.0")
    assert apt_can_get(tmp_path, base_url, "falco=0.41.0") == ""  # only the one named is gone
    # And the next plain publish does not bring it back, nor drop the other.
    assert repogen("publish", "--site", str(site)).code == 0
    assert "Version '0.40.0' for 'falco' was not found" in apt_can_get(tmp_path, base_url, "falco=0.40.0")
    assert apt_can_get(tmp_path, base_url, "falco=0.41.0") == ""


def test_a_directory_repogen_did_not_make_is_refused_or_adopted_for_good(tmp_path: Path) -> None:
    repogen, _ = setup(tmp_path)
    site = tmp_path / "www"
    site.mkdir()
    (site / "keep.txt").write_text("the user's own file")
    refused = repogen("publish", "--site", str(site))
    assert refused.code == 1, refused.out + refused.err
    assert "Traceback" not in refused.err
    message = " ".join(refused.err.split())
    assert f"{site} is a directory repogen did not make (1 entries: keep.txt); refusing to replace it" in message
    assert "--adopt" in message
    assert not site.is_symlink() and (site / "keep.txt").read_text() == "the user's own file"
    assert not (tmp_path / ".www.generations").exists()
    # Asked to adopt: the content is moved aside and kept through any number of publishes.
    adopted = repogen("publish", "--site", str(site), "--adopt")
    assert adopted.code == 0, adopted.err
    for _ in range(4):
        assert repogen("publish", "--site", str(site)).code == 0
    assert site.is_symlink() and (site / "index.json").is_file()
    kept = list((tmp_path / ".www.generations").glob("adopted-*/keep.txt"))
    assert len(kept) == 1 and kept[0].read_text() == "the user's own file"
