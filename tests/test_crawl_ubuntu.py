"""`repogen crawl ubuntu` on an APT repository made here (dpkg-deb + apt-ftparchive) with Ubuntu's
package layout: a flavour headers package depending on its source's shared headers package."""

from __future__ import annotations

import lzma
import subprocess
from pathlib import Path

import pytest
from conftest import Repogen
from pkgfactory import make_deb

pytestmark = pytest.mark.timeout(300)

PACKAGES = [  # (name, version, arch, depends)
    ("linux-hwe-6.8-headers-6.8.0-45", "6.8.0-45.45~22.04.1", "all", None),
    ("linux-headers-6.8.0-45-generic", "6.8.0-45.45~22.04.1", "amd64", "linux-hwe-6.8-headers-6.8.0-45, libc6"),
    ("linux-image-6.8.0-45-generic", "6.8.0-45.45~22.04.1", "amd64", None),
    ("linux-aws-headers-6.8.0-1015", "6.8.0-1015.16", "all", None),
    ("linux-headers-6.8.0-1015-aws", "6.8.0-1015.16", "amd64", "linux-aws-headers-6.8.0-1015"),
    ("linux-headers-generic-hwe-22.04", "6.8.0.45.45~22.04.1", "amd64", "linux-headers-6.8.0-45-generic"),  # meta
]


def _repository(root: Path) -> None:
    pool = root / "pool" / "main" / "l"
    for name, version, arch, depends in PACKAGES:
        make_deb(pool, name, version, arch, depends=depends)
    binary = root / "dists" / "jammy" / "main" / "binary-amd64"
    binary.mkdir(parents=True)
    index = subprocess.run(["apt-ftparchive", "packages", "pool"], cwd=root, check=True, capture_output=True,
                           timeout=120).stdout
    (binary / "Packages.xz").write_bytes(lzma.compress(index))
    release = subprocess.run(["apt-ftparchive", "release", "dists/jammy"], cwd=root, check=True,
                             capture_output=True, timeout=120).stdout
    (root / "dists" / "jammy" / "Release").write_bytes(release)


def test_ubuntu_flavours_found_with_their_shared_headers(tmp_path: Path) -> None:
    from repogen.serve import serve_in_thread

    root = tmp_path / "ubuntu"
    _repository(root)
    server, url = serve_in_thread(root)
    try:
        result = Repogen(tmp_path / "home", tmp_path / "none.yaml")(
            "crawl", "ubuntu:jammy", "--arch", "x86_64", "--mirror", f"ubuntu={url}", "--json")
    finally:
        server.shutdown()
    assert result.code == 0, result.err
    kernels = {k["target"]: k for k in result.json["targets"][0]["kernels"]}
    assert set(kernels) == {"ubuntu-generic", "ubuntu-aws"}
    generic, aws = kernels["ubuntu-generic"], kernels["ubuntu-aws"]
    # HWE: `uname -v` is "#45~22.04.1-Ubuntu SMP ...", so clients request 45~22.04.1
    assert (generic["kernelrelease"], generic["kernelversion"]) == ("6.8.0-45-generic", "45~22.04.1")
    assert [h["path"].rsplit("/", 1)[1] for h in generic["headers"]] == [
        "linux-hwe-6.8-headers-6.8.0-45_6.8.0-45.45~22.04.1_all.deb",
        "linux-headers-6.8.0-45-generic_6.8.0-45.45~22.04.1_amd64.deb"]
    assert generic["image"]["path"].endswith("linux-image-6.8.0-45-generic_6.8.0-45.45~22.04.1_amd64.deb")
    assert (aws["kernelrelease"], aws["kernelversion"]) == ("6.8.0-1015-aws", "16")
    assert aws["headers"][0]["path"].endswith("linux-aws-headers-6.8.0-1015_6.8.0-1015.16_all.deb")
    assert all(h["mirror"] == "ubuntu" and len(h["sha256"]) == 64 for h in aws["headers"])


def test_hostile_index_entries_never_reach_kernels_yaml(tmp_path: Path) -> None:
    """An index repogen did not make may name files outside the mirror or versions that would become
    paths: those entries are left out with a warning, the rest is written."""
    from repogen.serve import serve_in_thread

    root = tmp_path / "ubuntu"
    _repository(root)
    index_path = root / "dists/jammy/main/binary-amd64/Packages.xz"
    index = lzma.decompress(index_path.read_bytes()).decode()
    index = index.replace("Filename: pool/main/l/linux-headers-6.8.0-1015-aws_",
                          "Filename: pool/../../../etc/linux-headers-6.8.0-1015-aws_")
    index_path.write_bytes(lzma.compress(index.encode()))
    release = subprocess.run(["apt-ftparchive", "release", "dists/jammy"], cwd=root, check=True,
                             capture_output=True, timeout=120).stdout
    (root / "dists" / "jammy" / "Release").write_bytes(release)
    config = tmp_path / "kernels.yaml"
    config.write_text("drivers:\n  - {name: falco, version: '1', source: {url: 'http://127.0.0.1:9/x.tgz'}}\n"
                      "kernels: []\nmirrors: {ubuntu: 'http://127.0.0.1:9/ubuntu'}\n")
    server, url = serve_in_thread(root)
    try:
        result = Repogen(tmp_path / "home", config)(
            "crawl", "ubuntu:jammy", "--arch", "x86_64", "--mirror", f"ubuntu={url}", "--write", "--json")
    finally:
        server.shutdown()
    assert result.code == 0, result.err
    [target] = result.json["targets"]
    assert [k["target"] for k in target["kernels"]] == ["ubuntu-generic"]
    assert any("not a plain path inside the mirror" in w for w in target["warnings"])
    assert "etc/" not in config.read_text() and "ubuntu-generic" in config.read_text()
