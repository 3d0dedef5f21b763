"""`repogen crawl debian` on the real Debian indexes (bullseye, bookworm, bookworm-security, trixie; amd64 and
arm64), fetched by apt with a private configuration and served from 127.0.0.1 with the matching .debs."""

from __future__ import annotations

import re
import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import debian_dists
import pytest
from conftest import CACHE, HELLO_KBUILD, Repogen

from repogen import config as config_mod
from repogen.distro import Uname, client_name

pytestmark = pytest.mark.timeout(1200)

SUITES = ["bullseye", "bookworm", "bookworm-security", "trixie"]
FLAVOURS = ("amd64", "cloud-amd64", "rt-amd64", "arm64", "cloud-arm64", "rt-arm64")


@pytest.fixture(scope="module")
def dists() -> Iterator[tuple[debian_dists.DistsTree, str]]:
    from repogen.serve import serve_in_thread

    tree = debian_dists.build(CACHE, SUITES, ["amd64", "arm64"])
    server, base_url = serve_in_thread(tree.root)
    yield tree, base_url
    server.shutdown()


def _mirror_args(base_url: str) -> list[str]:
    return ["--mirror", f"debian={base_url}/debian", "--mirror", f"debian-security={base_url}/debian-security"]


def _matrix(tmp_path: Path, base_url: str, kernels: str = "kernels: []\n") -> Path:
    path = tmp_path / "kernels.yaml"
    path.write_text(textwrap.dedent(f"""\
        # hand-written header: kept byte for byte
        mirrors:
          debian: {base_url}/debian
          debian-security: {base_url}/debian-security
        drivers:
          - name: hello_repogen
            version: 0.1.0
            source: {{path: {HELLO_KBUILD}}}
            recipe: kbuild
            kinds: [kmod]
        """) + kernels)
    return path


@pytest.fixture(scope="module")
def crawled(dists: tuple[debian_dists.DistsTree, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    _, base_url = dists
    home = tmp_path_factory.mktemp("crawl")
    result = Repogen(home / "home", home / "none.yaml")(
        "crawl", f"debian:{','.join(SUITES)}", *_mirror_args(base_url), "--json", timeout=900)
    assert result.code == 0, result.err
    [target] = result.json["targets"]
    assert target["error"] is None
    return target  # type: ignore[no-any-return]


def _apt_headers(tree: debian_dists.DistsTree) -> set[tuple[str, str, str]]:
    """(package, version, arch) of every flavour headers package apt knows, read by apt itself."""
    out: set[tuple[str, str, str]] = set()
    for archive in tree.archives.values():
        names = [n for n in archive.pkgnames("linux-headers-")
                 if any(re.fullmatch(rf"linux-headers-\d+\.\d+\.\d+[^-]*(-\d+)?-{re.escape(f)}", n) for f in FLAVOURS)]
        lines = archive.cache("madison", *names).splitlines()
        for line in lines:
            name, version, where = (part.strip() for part in line.split("|"))
            out.add((name.split(":")[0], version, where.split()[-2]))  # foreign packages are name:arm64
    return out


def test_every_headers_package_found_with_exactly_its_headers(dists: tuple[debian_dists.DistsTree, str],
                                                              crawled: dict[str, Any]) -> None:
    tree, _ = dists
    expected = _apt_headers(tree)
    assert len(expected) > 40  # four suites, two architectures, three flavours each
    kernels = crawled["kernels"]
    seen = set()
    kbuild_versions: dict[str, set[str]] = {}
    for k in kernels:
        assert k["target"] == "debian" and k["kernelversion"] == "1"
        common, flavour_file, kbuild = (h["path"].rsplit("/", 1)[1] for h in k["headers"])
        name, version, arch = flavour_file.removesuffix(".deb").split("_")
        seen.add((name, version.replace("%3a", ":"), arch))
        m = re.fullmatch(r"linux-headers-(.+?)-((?:rt-|cloud-)?(amd64|arm64))", name)
        assert m, name
        abi, flavour, deb_arch = m.groups()
        assert k["architecture"] == {"amd64": "x86_64", "arm64": "aarch64"}[deb_arch] and arch == deb_arch
        # rt, cloud and plain are never mixed: each with its own -common(-rt) of the same version
        rt = "-rt" if flavour.startswith("rt-") else ""
        assert common == f"linux-headers-{abi}-common{rt}_{version}_all.deb", k
        # kbuild runs on the build host: always the amd64 one; the headers' own version when the archive
        # still has it, else the closest newer one (Depends: linux-kbuild-6.1 (>= version))
        kbuild_name, kbuild_version, kbuild_arch = kbuild.removesuffix(".deb").split("_")
        assert kbuild_arch == "amd64" and re.fullmatch(r"linux-kbuild-[0-9.+a-z]+", kbuild_name), k
        assert subprocess.run(["dpkg", "--compare-versions", kbuild_version, "ge", version]).returncode == 0, k
        kbuild_versions.setdefault(kbuild_name, set()).add(kbuild_version)
        assert k["image"]["path"].rsplit("/", 1)[1].startswith(f"linux-image-{abi}-{flavour}"), k
        assert all(re.fullmatch(r"[0-9a-f]{64}", h["sha256"]) for h in k["headers"])
        assert k["kernelrelease"] == re.match(r"\d+\.\d+\.\d+-\d+", version).group(0) + f"-{flavour}"  # type: ignore[union-attr]
    # Every headers package apt knows is an entry, unless the crawl said why not (name collision).
    missing = expected - seen
    warned = " ".join(crawled["warnings"])
    for name, version, _arch in missing:
        assert name.removeprefix("linux-headers-") in warned, (name, version)
    assert seen <= expected
    assert {k["architecture"] for k in kernels} == {"x86_64", "aarch64"}


def _unpack_uts(deb: Path, dest: Path) -> tuple[str, str]:
    shutil.rmtree(dest, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True, timeout=120)
    generated = next(dest.glob("usr/src/linux-headers-*/include/generated"))
    release = re.search(r'UTS_RELEASE "([^"]+)"', (generated / "utsrelease.h").read_text()).group(1)  # type: ignore[union-attr]
    version = re.search(r'UTS_VERSION "([^"]+)"', (generated / "utsversion.h").read_text()).group(1)  # type: ignore[union-attr]
    return release, version


def test_crawled_names_are_what_clients_on_those_kernels_request(dists: tuple[debian_dists.DistsTree, str],
                                                                  crawled: dict[str, Any], tmp_path: Path) -> None:
    """For one kernel per flavour and release: the name derived from the package in the index equals the
    name falcoctl computes from that kernel's own `uname -r` / `uname -v` (read from its headers)."""
    tree, _ = dists
    picked: dict[tuple[str, str], dict[str, Any]] = {}
    for k in crawled["kernels"]:
        suite = k["note"].rsplit("(", 1)[1].rstrip(")")
        flavour = re.sub(r"^[\d.]+-\d+-", "", k["kernelrelease"])
        if suite in ("bookworm", "trixie") and flavour in ("amd64", "rt-amd64", "cloud-amd64", "arm64"):
            picked.setdefault((suite, flavour), k)
    assert len(picked) == 8
    for k in picked.values():
        header = k["headers"][1]
        name, version, arch = header["path"].rsplit("/", 1)[1].removesuffix(".deb").split("_")
        deb = tree.pool_add(header["mirror"], header["path"], f"{name}:{arch}={version}")
        uname_r, uname_v = _unpack_uts(deb, tmp_path / name)
        assert uname_r == k["note"].split()[2]
        name_by_client = client_name(Uname(uname_r, uname_v, "debian"))
        assert (name_by_client.target, name_by_client.kernelrelease, name_by_client.kernelversion) == \
            ("debian", k["kernelrelease"], "1"), (uname_r, uname_v)


@pytest.mark.docker
def test_a_crawled_kernel_builds(dists: tuple[debian_dists.DistsTree, str], builder_image: str,
                                 tmp_path: Path) -> None:
    tree, base_url = dists
    path = _matrix(tmp_path, base_url)
    repogen = Repogen(tmp_path / "home", path)
    result = repogen("crawl", "debian:bookworm", "--arch", "x86_64", "--write", timeout=600)
    assert result.code == 0, result.err
    config = config_mod.parse(path)
    kernel = next(k for k in config.kernels if re.fullmatch(r"[\d.]+-\d+-amd64", k.kernelrelease))
    for header in kernel.headers:
        relative = header.url.removeprefix(f"{base_url}/debian/")
        name, version, arch = relative.rsplit("/", 1)[1].removesuffix(".deb").split("_")
        tree.pool_add("debian", relative, f"{name}:{arch}={version.replace('%3a', ':')}")
    built = repogen("build", "--only", f"kernelrelease={kernel.kernelrelease},arch=x86_64", "--json", timeout=900)
    assert built.code == 0, built.err + built.out
    assert built.json["built"] == 1, built.out


def test_a_failing_mirror_fails_its_target_loudly_and_keeps_its_entries(
        dists: tuple[debian_dists.DistsTree, str], tmp_path: Path) -> None:
    tree, base_url = dists
    previous = textwrap.dedent("""\
        kernels:
          - target: debian   # found by an earlier crawl
            kernelrelease: 6.1.176-1-amd64
            kernelversion: "1"
            architecture: x86_64
            headers: [{mirror: debian, path: pool/main/l/linux/x.deb}]
        """)
    path = _matrix(tmp_path, base_url, previous)
    before = path.read_bytes()
    repogen = Repogen(tmp_path / "home", path)
    # 1. nothing listening
    dead = repogen("crawl", "debian:bookworm", "--mirror", "debian=http://127.0.0.1:9/debian", "--write",
                   env={"REPOGEN_FETCH_RETRIES": "1", "REPOGEN_FETCH_TIMEOUT": "5"}, timeout=300)
    assert dead.code == 1
    assert "FAILED debian: http://127.0.0.1:9/debian/dists/bookworm/Release" in dead.err
    assert "previous entries" in dead.err and "kept" in dead.err
    assert path.read_bytes() == before
    # 2. garbage: a mirror whose index does not match its Release (truncated in the middle of a sync)
    bad = tmp_path / "bad"
    shutil.copytree(tree.root / "debian" / "dists" / "bookworm", bad / "debian" / "dists" / "bookworm")
    index = bad / "debian/dists/bookworm/main/binary-amd64/Packages.xz"
    index.write_bytes(index.read_bytes()[:5000])
    from repogen.serve import serve_in_thread

    server, bad_url = serve_in_thread(bad)
    try:
        garbage = repogen("crawl", "debian:bookworm", "--arch", "x86_64", "--mirror", f"debian={bad_url}/debian",
                          "--write", "--json", timeout=300)
    finally:
        server.shutdown()
    assert garbage.code == 1
    [target] = garbage.json["targets"]
    assert target["found"] == 0 and "Packages.xz: does not match its Release entry" in target["error"]
    assert f"{bad_url}/debian/dists/bookworm/main/binary-amd64/Packages.xz" in target["error"]
    assert path.read_bytes() == before


def test_release_file_garbage_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad" / "debian" / "dists" / "bookworm"
    bad.mkdir(parents=True)
    (bad / "Release").write_bytes(b"\x00\xff not a release")
    from repogen.serve import serve_in_thread

    server, url = serve_in_thread(tmp_path / "bad")
    try:
        result = Repogen(tmp_path / "home", tmp_path / "none.yaml")(
            "crawl", "debian:bookworm", "--mirror", f"debian={url}/debian", timeout=120)
    finally:
        server.shutdown()
    assert result.code == 1
    assert f"{url}/debian/dists/bookworm/Release: not a Release file" in result.err
    assert "Traceback" not in result.err
