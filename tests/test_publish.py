"""Publishing the static tree: its layout, index.json, SHA256SUMS (signed), HTTP GETs as falcoctl
does them, and atomicity: a full disk or a concurrent reader never sees a half tree.

One module-scoped real build (hello-kbuild, kmod + ebpf, one real Debian kernel) feeds every test.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import HELLO_KBUILD, Repogen, driver_yaml, write_config
from gpgkeys import export_secret_key, make_test_key, stop_agent

from repogen.serve import serve_in_thread

pytestmark = [pytest.mark.timeout(600), pytest.mark.docker]

NAME = "hello_repogen"
VERSION = "0.1.0+driver"  # a '+', as Falco's driver versions have: escaped %2B in URLs


@dataclass
class Built:
    repogen: Repogen
    home: Path
    config: Path
    kernel: dict[str, Any]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, mirror: Any, builder_image: str) -> Built:
    root = tmp_path_factory.mktemp("publish")
    kernel = mirror.kernels[0]
    config = write_config(root, [driver_yaml(NAME, VERSION, HELLO_KBUILD, "kbuild", "[kmod, ebpf]")], [kernel])
    repogen = Repogen(root / "home", config)
    result = repogen("build", "-j", "2", "--json", timeout=600)
    assert result.code == 0, result.out + result.err
    assert result.json["built"] == 2
    return Built(repogen, root / "home", config, kernel)


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under root (following the site link), relative path -> sha256."""
    root = root.resolve()
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def publish(built: Built, site: Path, *args: str) -> Any:
    result = built.repogen("publish", "--site", str(site), "--json", *args, timeout=300)
    assert result.code == 0, result.out + result.err
    return result.json


def test_tree_layout_index_and_checksums(tmp_path: Path, built: Built) -> None:
    site = tmp_path / "site"
    report = publish(built, site)
    assert report["artifacts"] == 2 and report["missing"] == 0 and report["signed"] is False
    assert site.is_symlink() and Path(report["generation"]) == site.resolve()
    assert site.resolve().parent == tmp_path / ".site.generations"

    k = built.kernel
    rel, kv = k["kernelrelease"], k["kernelversion"]
    # The kernel config's sha256 names the last v1 directory: the headers' own .config.
    configs = list((built.home / "cache" / "kernels").glob("*/root/usr/src/linux-headers-*-amd64/.config"))
    assert len(configs) == 1
    config_sha = hashlib.sha256(configs[0].read_bytes()).hexdigest()
    store = built.home / "store" / "sha256"
    index = json.loads((site / "index.json").read_text())
    assert index["kinds"] == {"kmod": ".ko", "ebpf": ".o"}
    assert index["generator"].startswith("repogen ") and index["generated_at"]
    by_kind = {a["kind"]: a for a in index["artifacts"]}
    assert set(by_kind) == {"kmod", "ebpf"}
    for kind, ext in (("kmod", ".ko"), ("ebpf", ".o")):
        a = by_kind[kind]
        driver = f"driver/{VERSION}/x86_64/{NAME}_debian_{rel}_{kv}{ext}"
        v1 = f"v1/module/debian/x86_64/{VERSION}/{rel}/{kv}/{config_sha}/{NAME}{ext}"
        assert (a["path"], a["v1_path"]) == (driver, v1)
        assert {"sha256", "size", "name", "driverversion", "kind", "target", "kernelrelease", "kernelversion",
                "architecture", "vermagic", "builder_image", "toolchain", "built_at", "build_key"} <= a.keys()
        assert (a["name"], a["driverversion"], a["target"], a["kernelrelease"], a["kernelversion"],
                a["architecture"]) == (NAME, VERSION, "debian", rel, kv, "x86_64")
        for path in (driver, v1):
            data = (site / path).read_bytes()
            assert hashlib.sha256(data).hexdigest() == a["sha256"] and len(data) == a["size"]
            assert data == (store / a["sha256"][:2] / a["sha256"]).read_bytes()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", a["built_at"])
    assert by_kind["kmod"]["vermagic"].startswith("6.1.0-")
    assert by_kind["ebpf"]["vermagic"] is None  # a probe has no .modinfo
    # Nothing but the artifacts, index.json and SHA256SUMS (no repositories were asked for).
    files = set(tree_digest(site))
    assert files == {a[p] for a in index["artifacts"] for p in ("path", "v1_path")} | {"index.json", "SHA256SUMS"}
    # SHA256SUMS covers every other file and verifies with the standard tool.
    sums = (site / "SHA256SUMS").read_text().splitlines()
    assert {line.split("  ", 1)[1] for line in sums} == files - {"SHA256SUMS"}
    check = subprocess.run(["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=site, capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count(": OK") == len(sums)
    # Files are world-readable, as a web server needs.
    assert all(os.stat(site / f).st_mode & 0o004 for f in files)


def test_sha256sums_detects_a_tampered_file(tmp_path: Path, built: Built) -> None:
    site = tmp_path / "site"
    publish(built, site)
    victim = site / "index.json"
    data = victim.read_bytes()
    victim.unlink()  # a new inode: never write through a hard link into the store
    victim.write_bytes(data.replace(b"repogen", b"REPOGEN", 1))
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=site, capture_output=True, text=True,
                           timeout=60)
    assert check.returncode != 0 and "index.json: FAILED" in check.stdout


@pytest.fixture
def signing_key(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """An exported secret key file and a separate keyring holding only its public half."""
    maker = tmp_path / "gnupg-maker"
    verifier = tmp_path / "gnupg-verifier"
    fingerprint = make_test_key(maker)
    try:
        key_file = export_secret_key(maker, fingerprint, tmp_path / "signing-key.asc")
        public = subprocess.run(["gpg", "--batch", "--homedir", str(maker), "--armor", "--export", fingerprint],
                                check=True, capture_output=True, timeout=60).stdout
        verifier.mkdir(mode=0o700)
        subprocess.run(["gpg", "--batch", "--homedir", str(verifier), "--import"], input=public, check=True,
                       capture_output=True, timeout=60)
        yield key_file, verifier
    finally:
        stop_agent(maker)
        stop_agent(verifier)


def test_signed_sha256sums_verify_with_gpg(tmp_path: Path, built: Built, signing_key: tuple[Path, Path]) -> None:
    key_file, verifier = signing_key
    site = tmp_path / "site"
    report = publish(built, site, "--sign-key-file", str(key_file))
    assert report["signed"] is True
    assert (site / "SHA256SUMS.asc").read_bytes().startswith(b"-----BEGIN PGP SIGNATURE-----")
    verify = subprocess.run(["gpg", "--batch", "--homedir", str(verifier), "--verify", "SHA256SUMS.asc",
                             "SHA256SUMS"], cwd=site, capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stderr
    assert "Good signature" in verify.stderr
    # The signature is over these exact bytes: a changed SHA256SUMS no longer verifies.
    sums = site / "SHA256SUMS"
    data = sums.read_bytes()
    sums.unlink()
    sums.write_bytes(data + b"0" * 64 + b"  extra\n")
    bad = subprocess.run(["gpg", "--batch", "--homedir", str(verifier), "--verify", "SHA256SUMS.asc",
                          "SHA256SUMS"], cwd=site, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "BAD signature" in bad.stderr


def test_unreadable_sign_key_file_fails_and_publishes_nothing(tmp_path: Path, built: Built) -> None:
    site = tmp_path / "site"
    (tmp_path / "garbage.asc").write_text("not a key\n")
    result = built.repogen("publish", "--site", str(site), "--sign-key-file", str(tmp_path / "garbage.asc"),
                           timeout=300)
    assert result.code != 0 and "Traceback" not in result.err, result.err
    assert "error:" in result.err
    assert not site.exists() and not site.is_symlink()
    generations = tmp_path / ".site.generations"
    assert not generations.exists() or not any(generations.iterdir())


def test_falcoctl_style_get_with_plus_escaped(tmp_path: Path, built: Built) -> None:
    site = tmp_path / "site"
    publish(built, site)
    index = json.loads((site / "index.json").read_text())
    kmod = next(a for a in index["artifacts"] if a["kind"] == "kmod")
    server, base = serve_in_thread(site)
    try:
        for key in ("path", "v1_path"):
            # falcoctl escapes each path segment: '+' becomes %2B.
            quoted = "/".join(urllib.parse.quote(part, safe="") for part in kmod[key].split("/"))
            assert "%2B" in quoted
            with urllib.request.urlopen(f"{base}/{quoted}", timeout=30) as response:
                assert response.status == 200
                body = response.read()
            assert hashlib.sha256(body).hexdigest() == kmod["sha256"] and len(body) == kmod["size"]
        with urllib.request.urlopen(f"{base}/index.json", timeout=30) as response:
            assert json.loads(response.read()) == index
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{base}/driver/{urllib.parse.quote(VERSION, safe='')}/x86_64/nope.ko",
                                   timeout=30)
        assert missing.value.code == 404
    finally:
        server.shutdown()
        server.server_close()


def test_republish_is_atomic_and_keeps_a_few_generations(tmp_path: Path, built: Built) -> None:
    site = tmp_path / "site"
    first = publish(built, site)
    seen = {first["generation"]}
    for _ in range(4):
        seen.add(publish(built, site)["generation"])
    assert len(seen) == 5
    generations = tmp_path / ".site.generations"
    kept = sorted(p.name for p in generations.iterdir())
    assert len(kept) == 3 and Path(site.resolve()).name in kept
    assert not list(generations.glob("*.staging")) and not list(tmp_path.glob(".site.link*"))


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs: the site's parent directory, on its own filesystem that can fill up."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(mount_point)],
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], capture_output=True, timeout=30, check=False)


def _fill(disk: Path, leave: int) -> Path:
    """Fill the filesystem but ``leave`` bytes."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    filler = disk / "filler"
    with filler.open("wb") as fh:
        remaining = max(0, free - leave)
        while remaining > 0:  # bounded: at most free/1MiB iterations
            n = min(remaining, 1 << 20)
            fh.write(b"\0" * n)
            remaining -= n
    return filler


def test_disk_full_while_publishing_keeps_the_old_tree(tmp_path: Path, built: Built, small_disk: Path) -> None:
    site = small_disk / "site"
    first = publish(built, site)
    before = tree_digest(site)
    old_generation = site.resolve()
    assert Path(first["generation"]) == old_generation
    _fill(small_disk, leave=16 * 1024)  # far less than the kernel module
    result = built.repogen("publish", "--site", str(site), timeout=300)
    assert result.code == 1, result.out + result.err
    assert "Traceback" not in result.err, result.err
    message = " ".join(result.err.split())
    assert "the disk is full" in message and "the live tree is unchanged" in message, message
    assert site.resolve() == old_generation
    assert tree_digest(site) == before
    generations = small_disk / ".site.generations"
    assert sorted(p.name for p in generations.iterdir()) == [old_generation.name]
    assert not list(generations.glob("*.staging")) and not list(small_disk.glob(".site.link*"))
    check = subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=site, capture_output=True, text=True,
                           timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    # With room again, publishing works and replaces the tree.
    (small_disk / "filler").unlink()
    second = publish(built, site)
    assert site.resolve() == Path(second["generation"]) != old_generation
    assert tree_digest(site).keys() == before.keys()


def test_reader_holding_the_old_tree_reads_complete_files(tmp_path: Path, built: Built) -> None:
    site = tmp_path / "site"
    publish(built, site)
    index = json.loads((site / "index.json").read_text())
    kmod = next(a for a in index["artifacts"] if a["kind"] == "kmod")
    old_generation = site.resolve()
    with (site / kmod["path"]).open("rb") as reader, (site / "SHA256SUMS").open("rb") as sums_reader:
        head = reader.read(100)
        # Publish again, more than KEEP_GENERATIONS times: the old generation is pruned while open.
        for _ in range(4):
            publish(built, site)
        assert site.resolve() != old_generation
        body = head + reader.read()
        sums = sums_reader.read()
    assert hashlib.sha256(body).hexdigest() == kmod["sha256"] and len(body) == kmod["size"]
    assert sums and sums.endswith(b"\n") and f"{kmod['sha256']}  {kmod['path']}".encode() in sums


def test_reader_of_the_previous_generation_by_path_still_finds_it(tmp_path: Path, built: Built) -> None:
    """A client that resolved the link just before a swap (a CDN fetch in flight) finds its files."""
    site = tmp_path / "site"
    publish(built, site)
    old_generation = site.resolve()
    before = tree_digest(old_generation)
    publish(built, site)
    assert site.resolve() != old_generation
    assert tree_digest(old_generation) == before


def test_publish_to_a_path_that_is_a_file_is_refused(tmp_path: Path, built: Built) -> None:
    site = tmp_path / "site"
    site.write_text("precious\n")
    result = built.repogen("publish", "--site", str(site), timeout=300)
    assert result.code == 1 and "Traceback" not in result.err, result.err
    assert "is not a directory" in " ".join(result.err.split())
    assert site.read_text() == "precious\n"
    assert not list((tmp_path / ".site.generations").glob("*"))


def test_kernelconfigdata_names_the_v1_directory_without_a_rebuild(tmp_path: Path, built: Built) -> None:
    """The build service's clients send their kernel config: its sha256 is the last v1 directory."""
    import base64

    config_text = b"CONFIG_X86_64=y\nCONFIG_MODULES=y\n"
    encoded = base64.b64encode(config_text).decode()
    text = built.config.read_text().replace("    architecture: x86_64\n",
                                            f"    architecture: x86_64\n    kernelconfigdata: {encoded}\n", 1)
    config = tmp_path / "kernels.yaml"
    config.write_text(text)
    repogen = Repogen(built.home, config)
    plan = repogen("plan", "--json")
    assert plan.json["counts"] == {"built": 2}  # the config data does not change what is built
    site = tmp_path / "site"
    result = repogen("publish", "--site", str(site), "--json")
    assert result.code == 0, result.err
    index = json.loads((site / "index.json").read_text())
    expected = hashlib.sha256(config_text).hexdigest()
    assert {a["v1_path"].split("/")[-2] for a in index["artifacts"]} == {expected}
    assert all((site / a["v1_path"]).is_file() for a in index["artifacts"])
