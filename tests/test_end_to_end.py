"""The whole product as a user meets it: build, publish drivers and signed repositories with the CLI,
serve them with `repogen serve`, and fetch with falcoctl-style GETs, the real apt-get and the real dnf."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import HELLO_KBUILD, Repogen, driver_yaml, write_config

from tests.gpgkeys import export_secret_key, make_test_key, stop_agent
from tests.pkgfactory import make_deb, make_rpm
from tests.test_repos_apt import Apt
from tests.test_repos_rpm import download as dnf_download

pytestmark = [pytest.mark.timeout(900), pytest.mark.docker]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str) -> None:
    for _ in range(100):
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"no answer from {url}")


def test_build_publish_serve_and_install_with_real_clients(tmp_path: Path, mirror, builder_image: str) -> None:
    gnupg = tmp_path / "gnupg"
    fingerprint = make_test_key(gnupg)
    key_file = export_secret_key(gnupg, fingerprint, tmp_path / "signing-key.asc")
    packages = tmp_path / "packages"
    make_deb(packages, "falco", "0.40.0", "amd64")
    make_rpm(packages, "falco", "0.40.0", sign_with=(gnupg, fingerprint))

    config = write_config(tmp_path, [driver_yaml("falco", "8.0.0+driver", HELLO_KBUILD, "kbuild")],
                          mirror.kernels[:1])
    # The kbuild example's module is hello_repogen: name the driver after it.
    config.write_text(config.read_text().replace("name: falco", "name: hello_repogen"))
    repogen = Repogen(tmp_path / "home", config)
    assert repogen("build").code == 0

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    site = tmp_path / "site"
    published = repogen("publish", "--site", str(site), "--sign-key-file", str(key_file), "--base-url", base,
                        "--deb", str(packages / "*.deb"), "--rpm", str(packages / "*.rpm"), "--json")
    assert published.code == 0, published.err
    assert published.json["signed"] and published.json["artifacts"] == 2
    server = subprocess.Popen([sys.executable, "-m", "repogen", "serve", "--site", str(site), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(f"{base}/index.json")
        # falcoctl: <repo>/<driverversion>/<arch>/<name>_<target>_<kernelrelease>_<kernelversion>.ko, '+' as %2B.
        index = json.load(urllib.request.urlopen(f"{base}/index.json"))
        kmod = next(a for a in index["artifacts"] if a["kind"] == "kmod")
        kernel = mirror.kernels[0]
        url = (f"{base}/driver/8.0.0%2Bdriver/x86_64/"
               f"hello_repogen_debian_{urllib.parse.quote(kernel['kernelrelease'])}_1.ko")
        assert hashlib.sha256(urllib.request.urlopen(url).read()).hexdigest() == kmod["sha256"]

        apt = Apt(tmp_path / "apt", base, signed_by=site / "deb" / "repogen-archive-keyring.gpg")
        update = apt("update")
        assert update.returncode == 0 and "W:" not in update.stdout + update.stderr, update.stdout + update.stderr
        got = apt("download", "falco")
        assert got.returncode == 0, got.stdout + got.stderr
        assert [p.name for p in (tmp_path / "apt" / "download").iterdir()] == ["falco_0.40.0_amd64.deb"]

        fetched = dnf_download(tmp_path / "dnf", base, "falco")
        assert fetched.returncode == 0, fetched.stdout + fetched.stderr
        assert [p.name for p in (tmp_path / "dnf" / "download").iterdir()] == ["falco-0.40.0-1.x86_64.rpm"]

        # A new release published while the server runs: clients see it at once, whole.
        make_deb(packages, "falco", "0.41.0", "amd64", payload="new")
        again = repogen("publish", "--site", str(site), "--sign-key-file", str(key_file), "--base-url", base,
                        "--deb", str(packages / "*.deb"), "--rpm", str(packages / "*.rpm"))
        assert again.code == 0, again.err
        assert apt("update").returncode == 0
        newer = apt("download", "falco")
        assert newer.returncode == 0, newer.stdout + newer.stderr
        assert (tmp_path / "apt" / "download" / "falco_0.41.0_amd64.deb").is_file()
    finally:
        server.terminate()
        server.wait(timeout=30)
        stop_agent(gnupg)


def test_packages_and_signing_from_kernels_yaml(tmp_path: Path, mirror) -> None:
    """Maintainers name the packages and the key in kernels.yaml (paths relative to it), no flags."""
    gnupg = tmp_path / "gnupg"
    fingerprint = make_test_key(gnupg)
    try:
        export_secret_key(gnupg, fingerprint, tmp_path / "release-key.asc")
        make_deb(tmp_path / "dist", "falco", "0.40.0", "amd64")
        make_rpm(tmp_path / "dist", "falco", "0.40.0")
        extra = ("packages: {deb: [dist/*.deb], rpm: [dist/*.rpm], suite: falco, keep-versions: 2,"
                 " grace-period: 1d, base-url: 'https://download.example/packages'}\n"
                 "signing: {key-file: release-key.asc}\n")
        config = write_config(tmp_path, [driver_yaml("hello_repogen", "0.1.0", HELLO_KBUILD, "kbuild")],
                              mirror.kernels[:1], extra)
        result = Repogen(tmp_path / "home", config)("publish", "--site", str(tmp_path / "site"), "--json")
        assert result.code == 0, result.err
        report = result.json
        assert report["signed"] and report["debs"] == 1 and report["rpms"] == 1
        assert report["missing"] == 2  # nothing built yet: the repositories publish all the same
        site = tmp_path / "site"
        assert (site / "deb" / "dists" / "falco" / "InRelease").is_file()
        assert (site / "rpm" / "repodata" / "repomd.xml.asc").is_file()
        assert "URIs: https://download.example/packages/deb" in (site / "deb" / "repogen.sources").read_text()
        verify = subprocess.run(["gpg", "--batch", "--homedir", str(gnupg), "--verify", "SHA256SUMS.asc",
                                 "SHA256SUMS"], cwd=site, capture_output=True, text=True, timeout=60)
        assert verify.returncode == 0, verify.stderr
    finally:
        stop_agent(gnupg)
