"""The ``.rpm`` and tarball headers paths, with REAL kernel headers: built, verified and published.

One real Debian kernel of the test mirror (its ``-common``, ``-amd64`` and ``linux-kbuild`` .debs)
is turned into a self-contained kernel build directory like a ``kernel-devel`` package holds: the
``-common`` tree overlaid by the flavour tree, the flavour Makefile (which only includes the
``-common`` one by an absolute ``/usr/src`` path) replaced by the real one, and ``scripts``/``tools``
(links into ``/usr/lib/linux-kbuild-X.Y``) replaced by real copies. That tree is packaged once per
module as a real ``.rpm`` (rpmbuild, ``/usr/src/kernels/<release>``: targets ``centos`` & co.) and as
a tarball whose single top directory is the build dir (target ``vanilla``), served on 127.0.0.1,
and built with the real CLI in the real builder image.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import sqlite3
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import HELLO_KBUILD, Repogen, driver_yaml
from elftools.elf.elffile import ELFFile

from repogen.verify import modinfo

pytestmark = [pytest.mark.timeout(900), pytest.mark.docker]

NAME = "hello_repogen"
VERSION = "0.1.0"
_UTS = re.compile(rb'#define\s+UTS_RELEASE\s+"([^"]+)"')


@dataclass(frozen=True)
class Formats:
    release: str  # UTS_RELEASE of the real headers, e.g. 6.1.0-56-amd64
    tree: Path  # the self-contained kernel build directory
    rpm: Path
    tarball: Path
    base_url: str  # where rpm and tarball are served


def _unpack_debs(mirror: Any, root: Path) -> dict[str, Path]:
    """dpkg-deb -x the newest mirror kernel's header .debs; their paths by role."""
    kernel = mirror.kernels[0]
    names = [h["url"].rsplit("/", 1)[1] for h in kernel["headers"]]
    for name in names:
        subprocess.run(["dpkg-deb", "-x", str(mirror.directory / name), str(root)], check=True, timeout=300)
    src = root / "usr" / "src"
    common = [p for p in src.glob("linux-headers-*-common") if p.is_dir() and not p.is_symlink()]
    flavour = [p for p in src.glob("linux-headers-*") if p.is_dir() and not p.is_symlink() and p not in common]
    kbuild = [p for p in (root / "usr" / "lib").glob("linux-kbuild-*") if p.is_dir() and not p.is_symlink()]
    assert len(common) == len(flavour) == len(kbuild) == 1, (names, common, flavour, kbuild)
    return {"common": common[0], "flavour": flavour[0], "kbuild": kbuild[0]}


def _absolute_references(tree: Path) -> list[str]:
    """What in the tree still points outside it: absolute symlinks, links leaving it, and text files
    naming the Debian header/kbuild directories by absolute path."""
    found = []
    top = tree.resolve()
    for path in tree.rglob("*"):
        if path.is_symlink():
            target = path.readlink()
            if target.is_absolute() or not path.resolve().is_relative_to(top):
                found.append(f"{path.relative_to(tree)} -> {target}")
        elif path.is_file() and path.stat().st_size < (1 << 20):
            data = path.read_bytes()
            if b"\0" not in data and re.search(rb"/usr/(src/linux-headers|lib/linux-kbuild|src/linux-kbuild)", data):
                found.append(str(path.relative_to(tree)))
    return found


def _make_kernel_dir(parts: dict[str, Path], dest: Path) -> None:
    common, flavour, kbuild = parts["common"], parts["flavour"], parts["kbuild"]
    # The flavour Makefile is one line including the common one by absolute path; scripts and tools
    # are links into /usr/lib/linux-kbuild-X.Y: those are replaced, the rest of the flavour overlays.
    assert re.fullmatch(r"include /usr/src/linux-headers-[^/\s]+-common/Makefile\s*",
                        (flavour / "Makefile").read_text()), (flavour / "Makefile").read_text()
    replaced = {"Makefile", "scripts", "tools"}
    shutil.copytree(common, dest, symlinks=True,
                    ignore=lambda d, names: [n for n in names if d == str(common) and n in {"scripts", "tools"}])
    shutil.copytree(flavour, dest, symlinks=True, dirs_exist_ok=True,
                    ignore=lambda d, names: [n for n in names if d == str(flavour) and n in replaced])
    for name in ("scripts", "tools"):
        shutil.copytree(kbuild / name, dest / name, symlinks=True)
    assert (dest / "Makefile").read_bytes() == (common / "Makefile").read_bytes()
    leftover = _absolute_references(dest)
    assert leftover == [], leftover


def _rpmbuild(tree: Path, release: str, work: Path) -> Path:
    spec = work / "kernel-devel.spec"
    spec.write_text(textwrap.dedent(f"""\
        %define debug_package %{{nil}}
        %define __os_install_post %{{nil}}
        %define __arch_install_post %{{nil}}
        %define __spec_install_post %{{nil}}
        %define _build_id_links none
        %define _binary_payload w2.gzdio
        Name: kernel-devel
        Version: {release.split('-')[0]}
        Release: 1
        Summary: Kernel build directory for {release} (test)
        License: GPL-2.0-only
        BuildArch: x86_64
        AutoReqProv: no

        %description
        A prepared kernel build directory, as a kernel-devel package ships it.

        %install
        mkdir -p %{{buildroot}}/usr/src/kernels
        cp -a {tree} %{{buildroot}}/usr/src/kernels/{release}

        %files
        %defattr(-,root,root,-)
        /usr/src/kernels/{release}
        """))
    topdir = work / "rpmbuild"
    proc = subprocess.run(["rpmbuild", "-bb", "--define", f"_topdir {topdir}", "--nodeps", str(spec)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rpms = sorted((topdir / "RPMS").rglob("*.rpm"))
    assert len(rpms) == 1, rpms
    listing = subprocess.run(["rpm", "-qlp", str(rpms[0])], capture_output=True, text=True, timeout=120)
    assert f"/usr/src/kernels/{release}/Makefile" in listing.stdout.splitlines(), listing.stdout[:2000]
    return rpms[0]


@pytest.fixture(scope="module")
def formats(tmp_path_factory: pytest.TempPathFactory, mirror: Any) -> Iterator[Formats]:
    """The prepared tree, its .rpm and its tarball, made once and served for this module."""
    import tarfile

    from repogen.serve import serve_in_thread

    for tool in ("dpkg-deb", "rpmbuild", "rpm", "rpm2cpio", "cpio"):
        assert shutil.which(tool), f"{tool} is missing (apt-get install rpm rpm2cpio cpio)"
    work = tmp_path_factory.mktemp("formats")
    parts = _unpack_debs(mirror, work / "debs")
    m = _UTS.search((parts["flavour"] / "include/generated/utsrelease.h").read_bytes())
    assert m
    release = m.group(1).decode()
    tree = work / "tree" / release
    _make_kernel_dir(parts, tree)
    shutil.rmtree(work / "debs")

    served = work / "served"
    served.mkdir()
    rpm = _rpmbuild(tree, release, work)
    rpm = Path(shutil.copy(rpm, served / rpm.name))
    tarball = served / f"linux-{release}.tar.gz"
    with tarfile.open(tarball, "w:gz", compresslevel=1) as tar:
        tar.add(tree, arcname=release)
    server, base_url = serve_in_thread(served)
    try:
        yield Formats(release, tree, rpm, tarball, base_url)
    finally:
        server.shutdown()


def _config(directory: Path, kernels: list[tuple[str, str, str]], kinds: str = "[kmod, ebpf]") -> Path:
    """kernels.yaml for hello-kbuild over (target, kernelrelease, headers URL), builder pinned to gcc12."""
    directory.mkdir(parents=True, exist_ok=True)
    body = "drivers:\n" + textwrap.indent(driver_yaml(NAME, VERSION, HELLO_KBUILD, "kbuild", kinds), "  ")
    body += "kernels:\n"
    for target, release, url in kernels:
        body += (f"  - target: {target}\n    kernelrelease: {release}\n    kernelversion: \"1\"\n"
                 f"    architecture: x86_64\n    builder: gcc12\n    headers:\n      - {url}\n")
    path = directory / "kernels.yaml"
    path.write_text(body)
    return path


def _build_publish_and_check(tmp_path: Path, formats: Formats, target: str, kernelrelease: str, url: str,
                             kernel_subdir: str) -> None:
    repogen = Repogen(tmp_path / "home", _config(tmp_path, [(target, kernelrelease, url)]))
    result = repogen("build", "-j", "2", "--json")
    assert result.code == 0, result.out + result.err
    report = result.json
    assert report["built"] == 2 and report["failed"] == 0, report
    assert report["counters"]["header_downloads"] == 1 and report["counters"]["kernels_unpacked"] == 1, report

    # The headers were unpacked where the distribution says the build directory lies.
    kernels = tmp_path / "home" / "cache" / "kernels"
    unpacked = [p for p in kernels.glob(f"*/root/{kernel_subdir}") if p.is_dir()]
    assert len(unpacked) == 1, list(kernels.rglob("Makefile"))[:5]
    assert (unpacked[0] / "Makefile").read_bytes() == (formats.tree / "Makefile").read_bytes()

    store = tmp_path / "home" / "store" / "sha256"
    by_kind = {r["kind"]: r for r in report["results"]}
    assert set(by_kind) == {"kmod", "ebpf"}
    for kind, r in by_kind.items():
        assert r["status"] == "built", r
        path = store / r["sha256"][:2] / r["sha256"]
        with path.open("rb") as fh:
            elf = ELFFile(fh)
            if kind == "ebpf":
                assert elf["e_machine"] == "EM_BPF"
            else:
                assert elf["e_machine"] == "EM_X86_64"
                info = modinfo(elf)
                assert info["name"] == NAME
                # vermagic carries the headers' own release, not the config label.
                assert info["vermagic"].split()[0] == formats.release, info["vermagic"]
    log = Path(by_kind["kmod"]["log"]).read_text()
    assert f"verified {NAME}.ko" in log

    site = tmp_path / "site"
    published = repogen("publish", "--site", str(site), "--json")
    assert published.code == 0, published.out + published.err
    assert published.json["artifacts"] == 2, published.json
    for kind, ext in (("kmod", "ko"), ("ebpf", "o")):
        artifact = site / "driver" / VERSION / "x86_64" / f"{NAME}_{target}_{kernelrelease}_1.{ext}"
        assert artifact.is_file(), sorted(str(p.relative_to(site)) for p in (site / "driver").rglob("*"))
        assert hashlib.sha256(artifact.read_bytes()).hexdigest() == by_kind[kind]["sha256"]

    again = repogen("build", "--json")
    assert again.code == 0 and again.json["built"] == 0, again.out + again.err


def test_kernel_dir_builds_with_only_itself_mounted(formats: Formats, tmp_path: Path, builder_image: str) -> None:
    """The prepared tree is self-contained: make M=... in the builder image with nothing else mounted."""
    work = tmp_path / "work"
    shutil.copytree(HELLO_KBUILD, work)
    for p in [work, *work.rglob("*")]:
        p.chmod(0o777 if p.is_dir() else 0o666)
    proc = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--user", "1000:1000",
         "-v", f"{formats.tree}:/opt/kdir:ro", "-v", f"{work}:/work", "-w", "/work", builder_image,
         "make", "-C", "/opt/kdir", "M=/work", "modules"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with (work / f"{NAME}.ko").open("rb") as fh:
        assert modinfo(ELFFile(fh))["vermagic"].split()[0] == formats.release


def test_rpm_kernel_devel_headers_build_verified_published_drivers(
        tmp_path: Path, formats: Formats, builder_image: str) -> None:
    _build_publish_and_check(tmp_path, formats, "centos", f"{formats.release}.el9", f"{formats.base_url}/"
                             f"{formats.rpm.name}", f"usr/src/kernels/{formats.release}")


def test_tarball_headers_build_verified_published_drivers(
        tmp_path: Path, formats: Formats, builder_image: str) -> None:
    _build_publish_and_check(tmp_path, formats, "vanilla", f"{formats.release}-vanilla",
                             f"{formats.base_url}/{formats.tarball.name}", formats.release)


def test_truncated_rpm_fails_that_kernel_only_and_is_forgotten(
        tmp_path: Path, formats: Formats, builder_image: str) -> None:
    data = formats.rpm.read_bytes()
    bad_name = "truncated-" + formats.rpm.name
    truncated = data[: len(data) * 2 // 3]
    (formats.rpm.parent / bad_name).write_bytes(truncated)
    bad_sha = hashlib.sha256(truncated).hexdigest()
    bad_url = f"{formats.base_url}/{bad_name}"
    good, bad = f"{formats.release}.el9", f"{formats.release}.el9_bad"
    config = _config(tmp_path, [("centos", good, f"{formats.base_url}/{formats.rpm.name}"),
                                ("centos", bad, bad_url)], kinds="[kmod]")
    home = tmp_path / "home"
    repogen = Repogen(home, config)
    try:
        result = repogen("build", "-j", "2", "--json")
        assert result.code == 1, result.out + result.err
        assert "Traceback" not in result.err, result.err
        by_release = {r["kernelrelease"]: r for r in result.json["results"]}
        assert by_release[good]["status"] == "built", by_release[good]
        failed = by_release[bad]
        assert failed["status"] == "failed"
        error = " ".join(failed["error"].split())
        assert "corrupt or truncated .rpm" in error and bad_url in error, error

        # The bad file is forgotten: neither the file nor the URL's digest is kept, no half tree.
        assert not (home / "cache" / "downloads" / bad_sha).exists()
        with sqlite3.connect(home / "state.db") as db:
            assert db.execute("SELECT sha256 FROM downloads WHERE url=?", (bad_url,)).fetchall() == []
        assert [p.name for p in (home / "cache" / "kernels").iterdir() if ".tmp" in p.name] == []
        plan = repogen("plan", "--json", "--all")
        states = {j["kernelrelease"]: j for j in plan.json["jobs"]}
        assert states[bad]["state"] == "failed" and "corrupt or truncated .rpm" in (states[bad]["error"] or "")
        assert states[good]["state"] == "built"

        # A rerun fetches it again (and fails the same way, not from a cache).
        again = repogen("build", "--json")
        assert again.code == 1 and again.json["counters"]["header_downloads"] == 1, again.json
        assert "corrupt or truncated .rpm" in " ".join(again.out.split())
    finally:
        (formats.rpm.parent / bad_name).unlink(missing_ok=True)


# -- the unpackers themselves, on the same real packages (no Docker) -------------------------------

def _download(path: Path) -> Any:
    from repogen.fetch import Download

    data = path.read_bytes()
    return Download(url=f"http://127.0.0.1:9/{path.name}", path=path, sha256=hashlib.sha256(data).hexdigest(),
                    size=len(data), fetched=True)


def test_headers_cache_lays_out_rpm_and_tarball_trees(tmp_path: Path, formats: Formats) -> None:
    from repogen.headers import HeadersCache

    cache = HeadersCache(tmp_path / "kernels")
    rpm = cache.tree("centos", [_download(formats.rpm)])
    assert rpm.release == formats.release
    assert rpm.container_kernel_dir == f"/usr/src/kernels/{formats.release}"
    assert rpm.mounts() == [(rpm.root / "usr/src", "/usr/src")]
    tar = cache.tree("vanilla", [_download(formats.tarball)])
    assert tar.release == formats.release
    assert tar.container_kernel_dir == f"/{formats.release}"
    assert tar.mounts() == [(tar.kernel_dir, f"/{formats.release}")]
    assert rpm.config_sha256 == tar.config_sha256 == hashlib.sha256((formats.tree / ".config").read_bytes()).hexdigest()
    assert cache.unpacked == 2


def test_rpm_truncated_in_its_payload_trailer_is_rejected(tmp_path: Path, formats: Formats) -> None:
    from repogen.errors import FetchError
    from repogen.headers import HeadersCache

    cut = tmp_path / formats.rpm.name
    cut.write_bytes(formats.rpm.read_bytes()[:-4])
    cache = HeadersCache(tmp_path / "kernels")
    with pytest.raises(FetchError, match=r"corrupt or truncated \.rpm"):
        cache.tree("centos", [_download(cut)])


def test_rpm_unpacking_without_rpm2cpio_names_the_missing_tool(
        tmp_path: Path, formats: Formats, monkeypatch: pytest.MonkeyPatch) -> None:
    from repogen.errors import FetchError
    from repogen.headers import HeadersCache

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("rpmkeys", "cpio"):  # cpio itself is not needed: repogen reads rpm2cpio's stream
        found = shutil.which(tool)
        assert found
        (bin_dir / tool).symlink_to(found)
    monkeypatch.setenv("PATH", str(bin_dir))
    cache = HeadersCache(tmp_path / "kernels")
    with pytest.raises(FetchError, match=r"needs rpm2cpio \(Debian package 'rpm2cpio'\)"):
        cache.tree("centos", [_download(formats.rpm)])
