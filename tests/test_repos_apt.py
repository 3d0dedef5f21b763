"""The APT repository, checked by the real apt-get over HTTP, plus incremental/retention/bad input."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import lzma
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from debian import deb822

from repogen.errors import PublishError
from repogen.repos import RepoOptions, compress, publish_repositories
from repogen.repos.apt import read_deb
from repogen.repos.compress import XZ_PRESET
from repogen.signing import Signer
from tests.gpgkeys import make_test_key, stop_agent
from tests.pkgfactory import make_deb, truncated_copy

pytestmark = pytest.mark.timeout(180)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Signer]:
    home = tmp_path_factory.mktemp("gnupg")
    fingerprint = make_test_key(home)
    yield Signer(fingerprint, homedir=home)
    stop_agent(home)


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("debs")
    return {
        "foo1": make_deb(out, "foo", "1.0-1", "amd64"),
        "foo2": make_deb(out, "foo", "2.0-1", "amd64", payload="two"),
        "all": make_deb(out, "falco-rules", "1.0", "all"),
        "arm": make_deb(out, "libfalco", "1.0", "arm64", source="falco"),
    }


def publish(site: Path, previous: Path | None, inputs: list[Path], signer: Signer | None, cache: Path,
            now: datetime = NOW, **options: object):  # type: ignore[no-untyped-def]
    return publish_repositories(site, previous, inputs, [], signer, cache, RepoOptions(**options), now=now)


class Apt:
    """apt-get with every directory it touches inside ``root`` (no system state, no lock)."""

    def __init__(self, root: Path, base_url: str, *, signed_by: Path | None, trusted: bool = False) -> None:
        self.root = root
        for directory in ("state/lists/partial", "cache/archives/partial", "etc/sources.list.d",
                          "etc/preferences.d", "etc/apt.conf.d", "etc/trusted.gpg.d", "log", "download"):
            (root / directory).mkdir(parents=True, exist_ok=True)
        (root / "state" / "status").touch()
        source = deb822.Deb822()
        source["Types"] = "deb"
        source["URIs"] = f"{base_url}/deb"
        source["Suites"] = "stable"
        source["Components"] = "main"
        if signed_by is not None:
            source["Signed-By"] = str(signed_by)
        if trusted:
            source["Trusted"] = "yes"
        (root / "etc" / "sources.list.d" / "test.sources").write_text(source.dump())

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        options = {
            "Dir": self.root, "Dir::State": self.root / "state",
            "Dir::State::status": self.root / "state" / "status", "Dir::Cache": self.root / "cache",
            "Dir::Etc": self.root / "etc", "Dir::Etc::SourceList": "/dev/null",
            "Dir::Etc::SourceParts": self.root / "etc" / "sources.list.d",
            "Dir::Etc::Trusted": "/dev/null", "Dir::Etc::TrustedParts": self.root / "etc" / "trusted.gpg.d",
            "Dir::Etc::Parts": self.root / "etc" / "apt.conf.d", "Dir::Etc::Preferences": "/dev/null",
            "Dir::Etc::PreferencesParts": self.root / "etc" / "preferences.d", "Dir::Log": self.root / "log",
            "APT::Architecture": "amd64", "APT::Architectures::": "arm64", "Debug::NoLocking": "1",
            "Acquire::Languages": "none", "APT::Sandbox::User": "root", "Acquire::Retries": "0",
        }
        command = ["apt-get", "-q"]
        for key, value in options.items():
            command += ["-o", f"{key}={value}"]
        # The host's apt.conf.d is read before any -o (its dpkg hooks would run on an install):
        # APT_CONFIG points apt at an empty parts directory first.
        config = self.root / "etc" / "apt.conf"
        config.write_text(f'Dir::Etc::Parts "{self.root / "etc" / "apt.conf.d"}";\n')
        return subprocess.run([*command, *args], capture_output=True, text=True, timeout=120,
                              cwd=self.root / "download", env={**os.environ, "APT_CONFIG": str(config)})

    def install(self, *packages: str) -> subprocess.CompletedProcess[str]:
        """A real ``apt-get install``: dependencies resolved, packages unpacked and configured by
        dpkg into ``root/target`` (its own dpkg database), never into this machine."""
        target = self.root / "target"
        for directory in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers"):
            (target / directory).mkdir(parents=True, exist_ok=True)
        (target / "var/lib/dpkg/status").touch()
        return self("-o", f"Dir::State::status={target}/var/lib/dpkg/status", "-o", f"DPkg::Options::=--root={target}",
                    "-o", "DPkg::Options::=--force-script-chrootless", "-o", "DPkg::Options::=--log=/dev/null",
                    "-o", "Dpkg::Use-Pty=0", "-o", "Dir::Log::Terminal=/dev/null", "install", "-y",
                    "--no-install-recommends", *packages)

    def installed(self) -> dict[str, str]:
        """Package -> version of what :meth:`install` installed."""
        status = (self.root / "target/var/lib/dpkg/status").read_text()
        return {p["Package"]: p["Version"] for p in deb822.Deb822.iter_paragraphs(status)
                if p.get("Status") == "install ok installed"}


def test_apt_get_downloads_from_signed_repository(served: tuple[Path, str], debs: dict[str, Path],
                                                  signer: Signer, tmp_path: Path) -> None:
    site, base_url = served
    report = publish(site, None, list(debs.values()), signer, tmp_path / "cache", base_url=base_url)
    assert report.signed and report.deb is not None and report.deb.packages == 4

    keyring = site / "deb" / "repogen-archive-keyring.gpg"
    apt = Apt(tmp_path / "apt", base_url, signed_by=keyring)
    update = apt("update")
    assert update.returncode == 0, update.stdout + update.stderr
    assert "W:" not in update.stdout + update.stderr, update.stdout + update.stderr
    download = apt("download", "foo", "falco-rules", "libfalco:arm64")
    assert download.returncode == 0, download.stdout + download.stderr
    fetched = sorted(p.name for p in (tmp_path / "apt" / "download").iterdir())
    assert fetched == ["falco-rules_1.0_all.deb", "foo_2.0-1_amd64.deb", "libfalco_1.0_arm64.deb"]

    release = deb822.Release((site / "deb" / "dists" / "stable" / "Release").read_text())
    assert release["Architectures"] == "amd64 arm64"
    assert release["Acquire-By-Hash"] == "yes"
    assert release["Date"] == "Wed, 01 May 2024 12:00:00 GMT"
    names = {entry["name"] for entry in release["SHA256"]}
    assert "main/binary-arm64/Packages.xz" in names
    arm = (site / "deb/dists/stable/main/binary-arm64/Packages").read_text()
    assert "Package: falco-rules" in arm and "Filename: pool/main/f/falco/libfalco_1.0_arm64.deb" in arm
    sources = deb822.Deb822((site / "deb" / "repogen.sources").read_text())
    assert sources["URIs"] == f"{base_url}/deb"
    assert sources["Signed-By"] == "/etc/apt/keyrings/repogen-archive-keyring.gpg"
    assert (site / "deb" / "repogen-archive-keyring.asc").read_bytes().startswith(b"-----BEGIN PGP PUBLIC")


def _tamper_packages(site: Path) -> None:
    """Change one package's checksum in every copy of the amd64 index (plain, compressed, by-hash)."""
    binary = site / "deb" / "dists" / "stable" / "main" / "binary-amd64"
    text = (binary / "Packages").read_bytes()
    at = text.index(b"SHA256: ") + len(b"SHA256: ")
    tampered = text[:at] + (b"0" if text[at:at + 1] != b"0" else b"1") + text[at + 1:]  # same size
    versions = {"Packages": tampered, "Packages.gz": gzip.compress(tampered, 6, mtime=0),
                "Packages.xz": lzma.compress(tampered, preset=XZ_PRESET)}
    for name, data in versions.items():
        original = (binary / name).read_bytes()
        for copy in [binary / name, *binary.glob("by-hash/*/*")]:
            if copy.read_bytes() == original:
                copy.unlink()
                copy.write_bytes(data)


def test_apt_refuses_tampered_packages_and_release(served: tuple[Path, str], debs: dict[str, Path],
                                                   signer: Signer, tmp_path: Path) -> None:
    site, base_url = served
    publish(site, None, [debs["foo1"]], signer, tmp_path / "cache")
    _tamper_packages(site)
    apt = Apt(tmp_path / "apt", base_url, signed_by=site / "deb" / "repogen-archive-keyring.gpg")
    update = apt("update")
    assert update.returncode != 0
    output = update.stdout + update.stderr
    assert "Hash Sum mismatch" in output or "unexpected size" in output, output

    shutil.rmtree(site)
    publish(site, None, [debs["foo1"]], signer, tmp_path / "cache")
    in_release = site / "deb" / "dists" / "stable" / "InRelease"
    in_release.write_bytes(in_release.read_bytes().replace(b"Label: repogen", b"Label: evil!!"))
    (site / "deb" / "dists" / "stable" / "Release.gpg").unlink()
    apt2 = Apt(tmp_path / "apt2", base_url, signed_by=site / "deb" / "repogen-archive-keyring.gpg")
    update = apt2("update")
    assert update.returncode != 0
    assert "BADSIG" in update.stdout + update.stderr or "invalid" in update.stdout + update.stderr


def test_unsigned_repository_needs_trusted(served: tuple[Path, str], debs: dict[str, Path],
                                           tmp_path: Path) -> None:
    site, base_url = served
    report = publish(site, None, [debs["foo1"]], None, tmp_path / "cache")
    assert not report.signed and any("UNSIGNED" in note for note in report.notes)
    assert not (site / "deb" / "dists" / "stable" / "InRelease").exists()
    assert deb822.Deb822((site / "deb" / "repogen.sources").read_text())["Trusted"] == "yes"
    refused = Apt(tmp_path / "apt", base_url, signed_by=None)("update")
    assert refused.returncode != 0 and "is not signed" in refused.stdout + refused.stderr
    trusting = Apt(tmp_path / "apt2", base_url, signed_by=None, trusted=True)
    assert trusting("update").returncode == 0
    assert trusting("download", "foo").returncode == 0


def test_adding_one_package_reads_only_that_one(debs: dict[str, Path], signer: Signer, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = publish(tmp_path / "s1", None, [debs["foo1"], debs["all"]], signer, cache)
    assert first.deb is not None and (first.deb.read, first.deb.cached) == (2, 0)
    # The inputs no longer list foo1 and falco-rules: the pool keeps them published.
    second = publish(tmp_path / "s2", tmp_path / "s1", [debs["arm"]], signer, cache)
    assert second.deb is not None
    assert (second.deb.read, second.deb.cached, second.deb.packages) == (1, 2, 3)
    assert second.deb.added == ["pool/main/f/falco/libfalco_1.0_arm64.deb"]
    pool_file = tmp_path / "s2/deb/pool/main/f/foo/foo_1.0-1_amd64.deb"
    assert pool_file.stat().st_ino == (tmp_path / "s1/deb/pool/main/f/foo/foo_1.0-1_amd64.deb").stat().st_ino
    # A fresh cache (lost state dir) still works, reading everything again.
    third = publish(tmp_path / "s3", tmp_path / "s2", [], signer, tmp_path / "other-cache")
    assert third.deb is not None and (third.deb.read, third.deb.packages) == (3, 3)


def test_retention_keeps_newest_by_debian_version_order(signer: Signer, tmp_path: Path) -> None:
    versions = ["1.0~rc1", "1.0", "1.10", "1.9", "2:0.1"]
    inputs = [make_deb(tmp_path / "in", "falco", version, "amd64", payload=version) for version in versions]
    inputs.append(make_deb(tmp_path / "in", "falco", "0.1", "arm64"))
    report = publish(tmp_path / "s1", None, inputs[:4], signer, tmp_path / "cache", keep_versions=2)
    assert report.deb is not None and report.deb.packages == 2
    report = publish(tmp_path / "s2", tmp_path / "s1", inputs[4:], signer, tmp_path / "cache", keep_versions=2)
    assert report.deb is not None
    assert report.deb.removed == ["pool/main/f/falco/falco_1.9_amd64.deb"]
    pool = sorted(p.name for p in (tmp_path / "s2/deb/pool").rglob("*.deb"))
    assert pool == ["falco_0.1_amd64.deb", "falco_0.1_arm64.deb", "falco_1.10_amd64.deb"]
    packages = (tmp_path / "s2/deb/dists/stable/main/binary-amd64/Packages").read_text()
    assert "Version: 2:0.1" in packages and "Version: 1.9" not in packages


def test_superseded_by_hash_files_survive_the_grace_period(debs: dict[str, Path], signer: Signer,
                                                           tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    by_hash = "deb/dists/stable/main/binary-amd64/by-hash/SHA256"

    def hashes(site: str) -> set[str]:
        return {p.name for p in (tmp_path / site / by_hash).iterdir()}

    publish(tmp_path / "s1", None, [debs["foo1"]], signer, cache, now=NOW)
    publish(tmp_path / "s2", tmp_path / "s1", [debs["foo2"]], signer, cache, now=NOW + timedelta(hours=1))
    assert hashes("s1") < hashes("s2") and len(hashes("s2")) == 6
    third = publish(tmp_path / "s3", tmp_path / "s2", [debs["all"]], signer, cache,
                    now=NOW + timedelta(days=2))
    assert third.deb is not None and third.deb.carried_forward == 12  # 6 files x SHA256+SHA512, both older
    fourth = publish(tmp_path / "s4", tmp_path / "s3", [], signer, cache, now=NOW + timedelta(days=3, hours=1))
    assert hashes("s1").isdisjoint(hashes("s4"))  # superseded 3 days ago: gone
    assert hashes("s2") - hashes("s1") <= hashes("s4")  # superseded 1 day ago: kept
    assert fourth.deb is not None and fourth.deb.carried_forward == 6


def test_valid_until_and_codename(debs: dict[str, Path], signer: Signer, tmp_path: Path) -> None:
    publish(tmp_path / "s", None, [debs["foo1"]], signer, tmp_path / "c", valid_until_days=7,
            codename="falco", architectures=["amd64", "arm64", "s390x"])
    release = deb822.Release((tmp_path / "s/deb/dists/stable/Release").read_text())
    assert release["Valid-Until"] == "Wed, 08 May 2024 12:00:00 GMT"
    assert release["Codename"] == "falco" and release["Architectures"] == "amd64 arm64 s390x"


# -- bad input: a clear PublishError naming the file, the live tree untouched ----------------------


def _snapshot(tree: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in tree.rglob("*")}


def test_file_that_is_not_a_package(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.deb"
    bogus.write_text("this is not a package\n")
    with pytest.raises(PublishError, match=r"notes\.deb: not a valid \.deb package"):
        publish(tmp_path / "s", None, [bogus], None, tmp_path / "c")
    text = tmp_path / "notes.txt"
    text.write_text("x")
    with pytest.raises(PublishError, match=r"notes\.txt: not a \.deb package"):
        publish(tmp_path / "s", None, [text], None, tmp_path / "c")
    with pytest.raises(PublishError, match=r"missing\.deb: package file does not exist"):
        publish(tmp_path / "s", None, [tmp_path / "missing.deb"], None, tmp_path / "c")


def test_truncated_deb(debs: dict[str, Path], tmp_path: Path) -> None:
    for keep in (100, os.path.getsize(debs["foo1"]) - 200):
        broken = truncated_copy(debs["foo1"], tmp_path / f"broken{keep}.deb", keep)
        with pytest.raises(PublishError, match=rf"broken{keep}\.deb: not a valid \.deb package"):
            publish(tmp_path / "s", None, [broken], None, tmp_path / "c")


def test_same_version_different_contents_is_refused(debs: dict[str, Path], signer: Signer,
                                                    tmp_path: Path) -> None:
    rebuilt = make_deb(tmp_path / "rebuilt", "foo", "1.0-1", "amd64", payload="a rebuild")
    with pytest.raises(PublishError, match=r"are both foo 1\.0-1 \(amd64\) but differ"):
        publish(tmp_path / "s0", None, [debs["foo1"], rebuilt], None, tmp_path / "c")

    publish(tmp_path / "live", None, [debs["foo1"]], signer, tmp_path / "c")
    before = _snapshot(tmp_path / "live")
    with pytest.raises(PublishError, match=r"rebuilt/foo_1\.0-1_amd64\.deb: foo 1\.0-1 \(amd64\) is already "
                                           r"published .* never replaced"):
        publish(tmp_path / "s1", tmp_path / "live", [rebuilt], signer, tmp_path / "c")
    assert _snapshot(tmp_path / "live") == before
    # The very same file again is fine (re-running a publish is idempotent).
    report = publish(tmp_path / "s2", tmp_path / "live", [debs["foo1"]], signer, tmp_path / "c")
    assert report.deb is not None and report.deb.packages == 1


def test_name_that_would_escape_the_pool(tmp_path: Path) -> None:
    for field, value in (("name", "../../../etc"), ("source", "../evil")):
        kwargs = {"source": value} if field == "source" else {}
        name = value if field == "name" else "fine"
        evil = make_deb(tmp_path / field, name, "1.0", "amd64", file_name="evil.deb", nocheck=True, **kwargs)
        with pytest.raises(PublishError, match=r"evil\.deb: invalid (Package|Source name) '\.\./"):
            publish(tmp_path / "s", None, [evil], None, tmp_path / "c")
        assert not (tmp_path / "etc").exists()


# -- the fast paths agree with python-debian, and republishing reuses what did not change ------------


@pytest.mark.parametrize("compression", ["gzip", "xz", "zstd", "none"])
def test_read_deb_matches_debfile(compression: str, tmp_path: Path) -> None:
    """Whatever path reads the control member, the record is what DebFile + deb822 make of it."""
    from debian.debfile import DebFile

    from repogen.repos.apt import read_deb

    deb = make_deb(tmp_path, "foo", "1.0-1", "amd64", source="falco")
    rebuilt = tmp_path / f"foo-{compression}.deb"
    unpacked = tmp_path / "unpacked"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(unpacked)], check=True, capture_output=True)
    built = subprocess.run(["dpkg-deb", "--root-owner-group", f"-Z{compression}", "--build", str(unpacked),
                            str(rebuilt)], capture_output=True)
    if built.returncode != 0:
        pytest.skip(f"dpkg-deb cannot build {compression}: {built.stderr.decode()}")
    record = read_deb(rebuilt)
    assert not isinstance(record, str)
    control = DebFile(str(rebuilt)).debcontrol()
    data = rebuilt.read_bytes()
    import hashlib
    control["Filename"] = "pool/main/f/falco/foo_1.0-1_amd64.deb"
    control["Size"] = str(len(data))
    control["MD5sum"] = hashlib.md5(data).hexdigest()
    control["SHA1"] = hashlib.sha1(data).hexdigest()
    control["SHA256"] = hashlib.sha256(data).hexdigest()
    assert record.stanza == control.dump()
    assert (record.name, record.version, record.arch, record.size) == ("foo", "1.0-1", "amd64", len(data))
    # Given a set of known digests, it only hashes.
    assert read_deb(rebuilt, None, {record.sha256}) == record.sha256


@pytest.mark.parametrize("text", [
    "Package: foo\nVersion: 1\nArchitecture: all\nDescription: x\n y\n .\n z\n",
    "Package: foo\nVersion: 1\nArchitecture: all\nDepends: a (>= 1), b | c\nX-Custom_Field: v\n",
    "Package: foo\nVersion: 1\nArchitecture: all\nDescription: naïve ünïcode\n",
])
def test_plain_control_paragraph_renders_like_deb822(text: str) -> None:
    from repogen.repos.apt import _fast_fields, _render_deb822

    extra = (("Filename", "pool/x.deb"), ("Size", "1"), ("MD5sum", "m"), ("SHA1", "s"), ("SHA256", "h"))
    assert _fast_fields(text) is not None
    fast = text + "".join(f"{key}: {value}\n" for key, value in extra)
    assert fast == _render_deb822(deb822.Deb822(text), extra)


@pytest.mark.parametrize("text", [
    "Package: foo\nVersion: 1 \nArchitecture: all\n",  # trailing space
    "Package: foo\nPackage: bar\nVersion: 1\nArchitecture: all\n",  # duplicate
    "package: foo\nVersion: 1\nArchitecture: all\n",  # odd spelling
    "Package: foo\nVersion: 1\nArchitecture: all\nSize: 3\n",  # an index field
    "Package: foo\nDescription:\n x\nVersion: 1\nArchitecture: all\n",  # empty first line
    "Package: foo\nVersion: 1\nArchitecture: all\n\n",  # blank line
    "Package: foo\nVersion:\t1\nArchitecture: all\n",  # tab
    "Package: foo\nVersion: 1\nArchitecture: all",  # no final newline
])
def test_unusual_control_paragraph_is_left_to_deb822(text: str) -> None:
    from repogen.repos.apt import _fast_fields

    assert _fast_fields(text) is None


def test_republish_counts_each_package_once_and_reuses_unchanged_indexes(debs: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    publish(tmp_path / "s1", None, [debs["foo1"], debs["arm"]], None, cache)
    again = publish(tmp_path / "s2", tmp_path / "s1", [debs["foo1"], debs["arm"]], None, cache)
    assert again.deb is not None
    assert (again.deb.read, again.deb.cached, again.deb.packages) == (0, 2, 2)
    assert "2 packages (0 read, 2 from cache" in again.summary()
    binary = "deb/dists/stable/main/binary-{}/Packages{}"
    for arch in ("amd64", "arm64"):
        for suffix in ("", ".gz", ".xz"):
            before, after = (tmp_path / site / binary.format(arch, suffix) for site in ("s1", "s2"))
            assert before.read_bytes() == after.read_bytes()

    # A live compressed index that does not hold what it should is not reused.
    (tmp_path / "s2" / binary.format("arm64", ".xz")).unlink()
    (tmp_path / "s2" / binary.format("arm64", ".xz")).write_bytes(lzma.compress(b"Package: evil\n"))
    third = publish(tmp_path / "s3", tmp_path / "s2", [debs["foo2"]], None, cache)  # amd64 only
    assert third.deb is not None and (third.deb.read, third.deb.cached) == (1, 2)
    release = deb822.Release((tmp_path / "s3/deb/dists/stable/Release").read_text())
    sizes = {entry["name"]: int(entry["size"]) for entry in release["SHA256"]}
    for arch in ("amd64", "arm64"):
        plain = (tmp_path / "s3" / binary.format(arch, "")).read_bytes()
        assert gzip.decompress((tmp_path / "s3" / binary.format(arch, ".gz")).read_bytes()) == plain
        assert lzma.decompress((tmp_path / "s3" / binary.format(arch, ".xz")).read_bytes()) == plain
        for suffix in ("", ".gz", ".xz"):
            data = (tmp_path / "s3" / binary.format(arch, suffix)).read_bytes()
            assert sizes[f"main/binary-{arch}/Packages{suffix}"] == len(data)
    assert b"Version: 2.0-1" in (tmp_path / "s3" / binary.format("amd64", "")).read_bytes()
    assert (tmp_path / "s3" / binary.format("arm64", "")).read_bytes() == \
        (tmp_path / "s1" / binary.format("arm64", "")).read_bytes()


@pytest.mark.parametrize("lines", [3, 60, 400])  # control text within 2 KiB, within 8 KiB, beyond
def test_read_deb_long_control_matches_debfile(lines: int, tmp_path: Path) -> None:
    """The control member is inflated a little at a time: a long one is still read whole."""
    from debian.debfile import DebFile

    from repogen.repos.apt import read_deb

    deb = make_deb(tmp_path, "foo", "1.0-1", "amd64")
    unpacked = tmp_path / "unpacked"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(unpacked)], check=True, capture_output=True)
    control = unpacked / "DEBIAN/control"
    control.write_text(control.read_text() + "".join(f" line {i} of a long description\n" for i in range(lines)))
    rebuilt = tmp_path / "long.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(unpacked), str(rebuilt)],
                   check=True, capture_output=True)
    record = read_deb(rebuilt)
    assert not isinstance(record, str)
    assert record.stanza.startswith(DebFile(str(rebuilt)).debcontrol().dump())
    assert record.stanza.count(" of a long description\n") == lines


def test_ar_layout_agrees_with_arfile(debs: dict[str, Path]) -> None:
    """The in-memory ar reader sees the members python-debian's arfile sees, or defers to it."""
    import io

    from debian import arfile

    from repogen.repos.apt import _ar_layout

    def member(name: bytes, data: bytes) -> bytes:
        header = name.ljust(16) + b"0".ljust(12) + b"0".ljust(6) + b"0".ljust(6) + b"100644".ljust(8)
        return header + str(len(data)).encode().ljust(10) + b"`\n" + data + b"\n" * (len(data) % 2)

    real = next(iter(debs.values())).read_bytes()
    odd = b"!<arch>\n" + member(b"debian-binary/", b"2.0\n") + member(b"control.tar.gz/", b"abc")
    odd += member(b"data.tar.xz", b"12345")
    for data in (real, odd, odd[:-1], odd[:-4]):
        layout = _ar_layout(data)
        assert layout is not None
        members = arfile.ArFile(fileobj=io.BytesIO(data)).getmembers()
        assert [(name, data[start:start + size], size) for name, start, size in layout] == \
            [(m.name, arfile.ArFile(fileobj=io.BytesIO(data)).getmember(m.name).read(), m.size) for m in members]
    for broken in (b"", real[:100], b"!<arch>\n" + b"x" * 59, real[:8] + real[8:68].replace(b"`\n", b"??"),
                   b"!<arch>\n" + member(b"a", b"1").replace(b"1         `", b"zz        `")):
        assert _ar_layout(broken) is None  # read_deb leaves these to arfile, which refuses them
        with pytest.raises((OSError, ValueError, arfile.ArError)):
            arfile.ArFile(fileobj=io.BytesIO(broken))


def _pieces_in_cache(cache: Path) -> set[bytes]:
    with contextlib.closing(sqlite3.connect(cache / "packages.sqlite3")) as db:
        return {key for (key,) in db.execute("SELECT key FROM index_parts")}


def test_piecewise_indexes_after_adds_and_a_removal_work_with_apt(
        served: tuple[Path, str], signer: Signer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Packages.gz/.xz put together from cached pieces, after add-one publishes and a removal: the
    real gzip and xz decompress them to exactly Packages, and the real apt-get updates from the
    signed, by-hash repository and installs (with a dependency) into its own root."""
    # Nearly every stanza ends a piece: a handful of packages make many pieces (10,000 are needed
    # at the real rate of 1 in 128).
    monkeypatch.setattr(compress, "PIECE_ENDS", tuple("0123456789abcde"))
    site, base_url = served
    inputs = tmp_path / "in"
    debs = [make_deb(inputs, f"tool{i}", "1.0", "amd64", depends="common") for i in range(6)]
    debs += [make_deb(inputs, "common", "1.0", "all"), make_deb(inputs, "armtool", "1.0", "arm64")]
    cache = tmp_path / "cache"
    trees = [tmp_path / "g1"]
    publish(trees[0], None, debs, signer, cache, base_url=base_url)
    added = [make_deb(inputs, f"new{i}", "1.0", "amd64", depends="common") for i in range(3)]
    for deb in added:  # add-one publishes: only the piece the new stanza lands in is compressed
        before = _pieces_in_cache(cache)
        trees.append(tmp_path / f"g{len(trees) + 1}")
        report = publish(trees[-1], trees[-2], [deb], signer, cache, base_url=base_url)
        assert report.deb is not None and report.deb.added == [f"pool/main/n/{deb.name.split('_')[0]}/{deb.name}"]
        # amd64 only: the piece it joins, or the two it splits (arm64's are all cached).
        assert 1 <= len(_pieces_in_cache(cache) - before) <= 2
    trees.append(tmp_path / f"g{len(trees) + 1}")
    removal = publish(trees[-1], trees[-2], [], signer, cache, base_url=base_url, remove=[("tool2", None)])
    assert removal.deb is not None and removal.deb.dropped == ["pool/main/t/tool2/tool2_1.0_amd64.deb"]

    for tree in trees:
        dist = tree / "deb/dists/stable"
        release = deb822.Release((dist / "Release").read_text())
        listed = {entry["name"]: entry for entry in release["SHA256"]}
        for arch in ("amd64", "arm64"):
            binary = dist / f"main/binary-{arch}"
            plain = (binary / "Packages").read_bytes()
            for tool, suffix in (("gzip", ".gz"), ("xz", ".xz")):
                unpacked = subprocess.run([tool, "-dc", binary / f"Packages{suffix}"], capture_output=True, check=True)
                assert unpacked.stdout == plain
            # The text put together from cached pieces is the packages' own stanzas, in pool order.
            files = sorted((tree / "deb/pool").rglob("*.deb"), key=lambda path: str(path.relative_to(tree / "deb")))
            stanzas = [record.stanza for path in files
                       if not isinstance(record := read_deb(path), str) and record.arch in (arch, "all")]
            listed_in_manifest = (tree / "deb/repogen-pool.json").read_text()
            assert plain == "".join(stanza + "\n" for stanza in stanzas
                                    if stanza.split("Filename: ")[1].split("\n")[0] in listed_in_manifest).encode()
            listing = subprocess.run(["xz", "--robot", "--list", binary / "Packages.xz"], capture_output=True,
                                     text=True, check=True).stdout
            totals = next(line.split("\t") for line in listing.splitlines() if line.startswith("totals"))
            assert totals[1] == "1" and (arch == "arm64" or int(totals[2]) > 1), listing  # 1 stream, blocks
            for suffix in ("", ".gz", ".xz"):
                data = (binary / f"Packages{suffix}").read_bytes()
                entry = listed[f"main/binary-{arch}/Packages{suffix}"]
                assert (entry["sha256"], int(entry["size"])) == (hashlib.sha256(data).hexdigest(), len(data))
                assert (binary / "by-hash/SHA256" / entry["sha256"]).read_bytes() == data

    # Served: the generation before the removal, then (as publish swaps the link) the last one.
    os.symlink(trees[-2], site)
    apt = Apt(tmp_path / "apt", base_url, signed_by=trees[-1] / "deb" / "repogen-archive-keyring.gpg")
    update = apt("update")
    assert update.returncode == 0 and "W:" not in update.stdout + update.stderr, update.stdout + update.stderr
    install = apt.install("tool3", "new2")
    assert install.returncode == 0, install.stdout + install.stderr
    assert apt.installed() == {"tool3": "1.0", "new2": "1.0", "common": "1.0"}
    assert apt("download", "armtool:arm64").returncode == 0  # (the private dpkg is amd64 only)
    assert list((tmp_path / "apt/target/usr/share/repogen-test").rglob("README"))
    assert apt("download", "tool2").returncode == 0
    os.symlink(trees[-1], tmp_path / "next")
    os.replace(tmp_path / "next", site)
    update = apt("update")
    assert update.returncode == 0 and "W:" not in update.stdout + update.stderr, update.stdout + update.stderr
    gone = apt.install("tool2")
    assert gone.returncode != 0 and "tool2" in gone.stdout + gone.stderr
    again = apt.install("new1")
    assert again.returncode == 0, again.stdout + again.stderr
    assert apt.installed()["new1"] == "1.0"
