"""The RPM repository, checked by the real dnf over HTTP, plus incremental/retention/bad input."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import createrepo_c as cr
import pytest

from repogen.errors import PublishError
from repogen.repos import RepoOptions, publish_repositories
from repogen.repos.pkgcache import RpmRecord
from repogen.repos.rpm import compare_evr, rpmvercmp
from repogen.signing import Signer
from tests.gpgkeys import make_test_key, stop_agent
from tests.pkgfactory import make_rpm, truncated_copy

pytestmark = pytest.mark.timeout(180)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def keyring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    home = tmp_path_factory.mktemp("gnupg")
    yield home, make_test_key(home)
    stop_agent(home)


@pytest.fixture(scope="module")
def signer(keyring: tuple[Path, str]) -> Signer:
    return Signer(keyring[1], homedir=keyring[0])


@pytest.fixture(scope="module")
def rpms(tmp_path_factory: pytest.TempPathFactory, keyring: tuple[Path, str]) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("rpms")
    return {
        "foo1": make_rpm(out, "foo", "1.0", sign_with=keyring),
        "foo2": make_rpm(out, "foo", "2.0", payload="two", sign_with=keyring),
        "noarch": make_rpm(out, "falco-rules", "1.0", arch="noarch", sign_with=keyring),
        "arm": make_rpm(out, "falco", "1.0", arch="aarch64", sign_with=keyring),
    }


def publish(site: Path, previous: Path | None, inputs: list[Path], signer: Signer | None, cache: Path,
            now: datetime = NOW, **options: object):  # type: ignore[no-untyped-def]
    return publish_repositories(site, previous, [], inputs, signer, cache, RepoOptions(**options), now=now)


def dnf(root: Path, base_url: str, *args: str, signed: bool = True) -> subprocess.CompletedProcess[str]:
    """dnf against only our repository, with its cache, logs and rpmdb inside ``root``."""
    for directory in ("installroot", "cache", "log", "persist", "download"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    check = "1" if signed else "0"
    command = [
        "dnf", "-y", "-q", "--installroot", str(root / "installroot"), "--releasever", "1",
        "--forcearch", "x86_64", "--setopt=reposdir=/dev/null", f"--setopt=cachedir={root / 'cache'}",
        f"--setopt=logdir={root / 'log'}", f"--setopt=persistdir={root / 'persist'}",
        "--disablerepo=*", f"--repofrompath=rg,{base_url}/rpm", "--enablerepo=rg",
        f"--setopt=rg.gpgcheck={check}", f"--setopt=rg.repo_gpgcheck={check}",
        f"--setopt=rg.gpgkey={base_url}/rpm/repodata/repomd.xml.key", "--setopt=rg.retries=1",
    ]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=150)


def download(root: Path, base_url: str, *packages: str) -> subprocess.CompletedProcess[str]:
    return dnf(root, base_url, "install", "--downloadonly", "--downloaddir", str(root / "download"), *packages)


def test_dnf_downloads_with_gpgcheck_and_repo_gpgcheck(served: tuple[Path, str], rpms: dict[str, Path],
                                                       signer: Signer, tmp_path: Path) -> None:
    site, base_url = served
    report = publish(site, None, list(rpms.values()), signer, tmp_path / "cache", base_url=base_url)
    assert report.rpm is not None and report.rpm.packages == 4 and report.signed
    result = download(tmp_path / "dnf", base_url, "foo", "falco-rules")
    assert result.returncode == 0, result.stdout + result.stderr
    fetched = sorted(p.name for p in (tmp_path / "dnf" / "download").iterdir())
    assert fetched == ["falco-rules-1.0-1.noarch.rpm", "foo-2.0-1.x86_64.rpm"]

    repodata = site / "rpm" / "repodata"
    assert (repodata / "repomd.xml.asc").read_bytes().startswith(b"-----BEGIN PGP SIGNATURE-----")
    assert (repodata / "repomd.xml.key").read_bytes().startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert (site / "rpm" / "packages" / "aarch64" / "falco-1.0-1.aarch64.rpm").is_file()
    repo_file = (site / "rpm" / "repogen.repo").read_text()
    assert f"baseurl={base_url}/rpm\n" in repo_file and "repo_gpgcheck=1\n" in repo_file
    assert f"gpgkey={base_url}/rpm/repodata/repomd.xml.key\n" in repo_file
    assert sorted(p.name.split("-", 1)[1] for p in repodata.glob("*.xml.gz")) == [
        "filelists.xml.gz", "other.xml.gz", "primary.xml.gz"]


def test_dnf_refuses_tampered_repomd(served: tuple[Path, str], rpms: dict[str, Path], signer: Signer,
                                     tmp_path: Path) -> None:
    site, base_url = served
    publish(site, None, [rpms["foo1"]], signer, tmp_path / "cache")
    repomd = site / "rpm" / "repodata" / "repomd.xml"
    text = repomd.read_text()
    repomd.write_text(text.replace("<revision>", "<revision>1"))
    result = download(tmp_path / "dnf", base_url, "foo")
    assert result.returncode != 0
    assert "GPG" in result.stdout + result.stderr or "signature" in (result.stdout + result.stderr).lower()
    assert not any((tmp_path / "dnf" / "download").iterdir())
    # Unsigned-but-trusted (gpgcheck off) reads the same tree: the refusal was the signature.
    repomd.write_text(text)
    assert download(tmp_path / "dnf2", base_url, "foo").returncode == 0


def test_unsigned_repository(served: tuple[Path, str], rpms: dict[str, Path], tmp_path: Path) -> None:
    site, base_url = served
    report = publish(site, None, [rpms["noarch"]], None, tmp_path / "cache")
    assert not report.signed and any("UNSIGNED" in note for note in report.notes)
    assert not (site / "rpm" / "repodata" / "repomd.xml.asc").exists()
    assert "gpgcheck=0\n" in (site / "rpm" / "repogen.repo").read_text()
    assert download(tmp_path / "dnf", base_url, "falco-rules").returncode != 0
    ok = dnf(tmp_path / "dnf2", base_url, "install", "--downloadonly", "--downloaddir",
             str(tmp_path / "dnf2" / "download"), "falco-rules", signed=False)
    assert ok.returncode == 0, ok.stderr


def test_zstd_repodata(rpms: dict[str, Path], signer: Signer, tmp_path: Path) -> None:
    site = tmp_path / "site"
    publish(site, None, [rpms["foo1"]], signer, tmp_path / "cache", rpm_compression="zstd")
    repodata = site / "rpm" / "repodata"
    assert len(list(repodata.glob("*-primary.xml.zst"))) == 1
    packages: list[str] = []
    reader = cr.RepositoryReader.from_metadata_files(
        str(next(repodata.glob("*-primary.xml.zst"))), str(next(repodata.glob("*-filelists.xml.zst"))),
        str(next(repodata.glob("*-other.xml.zst"))))
    packages = [package.name for package in reader.iter_packages()]
    assert packages == ["foo"]


def test_adding_one_package_reads_only_that_one(rpms: dict[str, Path], signer: Signer, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = publish(tmp_path / "s1", None, [rpms["foo1"], rpms["noarch"]], signer, cache)
    assert first.rpm is not None and (first.rpm.read, first.rpm.cached) == (2, 0)
    second = publish(tmp_path / "s2", tmp_path / "s1", [rpms["arm"]], signer, cache)
    assert second.rpm is not None
    assert (second.rpm.read, second.rpm.cached, second.rpm.packages) == (1, 2, 3)
    assert second.rpm.added == ["packages/aarch64/falco-1.0-1.aarch64.rpm"]
    # The repodata from cached chunks is what createrepo_c itself makes of the same pool.
    reference = tmp_path / "reference"
    reference.mkdir()
    subprocess.run(["createrepo_c", "--quiet", "--no-database", "-o", str(reference), str(tmp_path / "s2/rpm")],
                   check=True, timeout=120)
    ours = _primary(tmp_path / "s2/rpm/repodata")
    theirs = _primary(reference / "repodata")
    assert ours == theirs


def _primary(repodata: Path) -> list[tuple[str, str, str, str]]:
    """The packages of the primary that repomd.xml names (superseded ones may sit next to it)."""
    repomd = cr.Repomd(str(repodata / "repomd.xml"))
    href = next(record.location_href for record in repomd.records if record.type == "primary")
    packages: list[tuple[str, str, str, str]] = []
    cr.xml_parse_primary(str(repodata.parent / href),
                         pkgcb=lambda p: packages.append((p.name, p.arch, p.location_href, p.pkgId)) or True,
                         do_files=False)
    return sorted(packages)


@pytest.mark.parametrize(("a", "b"), [
    ("1.0", "1.0"), ("1.0", "1.1"), ("1.10", "1.9"), ("1.0~rc1", "1.0"), ("1.0^git1", "1.0"),
    ("1.0^git1", "1.0.1"), ("2.0a", "2.0"), ("1.001", "1.1"), ("1.0.fc38", "1.0.el9"), ("a", "1"),
    ("1_0", "1.0"), ("1.0~~", "1.0~"), ("10", "9a"), ("1.0+b", "1.0b"), ("1.0", "1.0.0"),
])
def test_rpmvercmp_agrees_with_rpm(a: str, b: str) -> None:
    expected = subprocess.run(["rpm", "--eval", f"%{{lua: print(rpm.vercmp('{a}', '{b}'))}}"],
                              capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    assert rpmvercmp(a, b) == int(expected)
    assert rpmvercmp(b, a) == -int(expected)


def test_retention_keeps_newest_by_rpm_version_order(keyring: tuple[Path, str], signer: Signer,
                                                     tmp_path: Path) -> None:
    built = [make_rpm(tmp_path / "in", "falco", version, release, payload=f"{version}-{release}")
             for version, release in [("0.9", "1"), ("0.10", "1"), ("0.10", "2"), ("0.10~rc1", "5")]]
    epoch = make_rpm(tmp_path / "in", "falco", "0.1", epoch=1)
    report = publish(tmp_path / "s1", None, built, signer, tmp_path / "cache", keep_versions=2)
    assert report.rpm is not None and report.rpm.packages == 2
    names = sorted(p.name for p in (tmp_path / "s1/rpm/packages").rglob("*.rpm"))
    assert names == ["falco-0.10-1.x86_64.rpm", "falco-0.10-2.x86_64.rpm"]
    report = publish(tmp_path / "s2", tmp_path / "s1", [epoch], signer, tmp_path / "cache", keep_versions=2)
    assert report.rpm is not None and report.rpm.removed == ["packages/x86_64/falco-0.10-1.x86_64.rpm"]
    records = {p.name for p in (tmp_path / "s2/rpm/packages").rglob("*.rpm")}
    assert records == {"falco-0.10-2.x86_64.rpm", "falco-0.1-1.x86_64.rpm"}


def test_compare_evr_epoch_wins() -> None:
    def record(epoch: str, version: str, release: str) -> RpmRecord:
        return RpmRecord("", "n", epoch, version, release, "x86_64", 0, "", "", "", "")

    assert compare_evr(record("1", "0.1", "1"), record("0", "9.9", "9")) == 1
    assert compare_evr(record("0", "1.0", "10"), record("0", "1.0", "9")) == 1


def test_superseded_repodata_survives_the_grace_period(rpms: dict[str, Path], signer: Signer,
                                                       tmp_path: Path) -> None:
    cache = tmp_path / "cache"

    def metadata(site: str) -> set[str]:
        return {p.name for p in (tmp_path / site / "rpm/repodata").glob("*.xml.gz")}

    publish(tmp_path / "s1", None, [rpms["foo1"]], signer, cache, now=NOW)
    publish(tmp_path / "s2", tmp_path / "s1", [rpms["foo2"]], signer, cache, now=NOW + timedelta(hours=1))
    assert metadata("s1") < metadata("s2") and len(metadata("s2")) == 6
    publish(tmp_path / "s3", tmp_path / "s2", [rpms["noarch"]], signer, cache, now=NOW + timedelta(days=2))
    fourth = publish(tmp_path / "s4", tmp_path / "s3", [], signer, cache, now=NOW + timedelta(days=3, hours=1))
    assert metadata("s1").isdisjoint(metadata("s4"))
    assert metadata("s2") - metadata("s1") <= metadata("s4")
    assert fourth.rpm is not None and fourth.rpm.carried_forward == 3


# -- bad input -------------------------------------------------------------------------------------


def _snapshot(tree: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in tree.rglob("*")}


def test_file_that_is_not_a_package(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.rpm"
    bogus.write_text("this is not a package\n")
    with pytest.raises(PublishError, match=r"notes\.rpm: not a valid \.rpm package"):
        publish(tmp_path / "s", None, [bogus], None, tmp_path / "c")


def test_truncated_rpm(rpms: dict[str, Path], tmp_path: Path) -> None:
    size = rpms["foo1"].stat().st_size
    for keep in (200, size - 100):
        broken = truncated_copy(rpms["foo1"], tmp_path / f"broken{keep}.rpm", keep)
        with pytest.raises(PublishError, match=rf"broken{keep}\.rpm: not a valid \.rpm package"):
            publish(tmp_path / "s", None, [broken], None, tmp_path / "c")


def test_same_version_different_contents_is_refused(rpms: dict[str, Path], signer: Signer,
                                                    tmp_path: Path) -> None:
    rebuilt = make_rpm(tmp_path / "rebuilt", "foo", "1.0", payload="a rebuild")
    with pytest.raises(PublishError, match=r"are both foo-1\.0-1\.x86_64 but differ"):
        publish(tmp_path / "s0", None, [rpms["foo1"], rebuilt], None, tmp_path / "c")
    publish(tmp_path / "live", None, [rpms["foo1"]], signer, tmp_path / "c")
    before = _snapshot(tmp_path / "live")
    with pytest.raises(PublishError, match=r"rebuilt/foo-1\.0-1\.x86_64\.rpm: foo-1\.0-1\.x86_64 is already "
                                           r"published .* never replaced"):
        publish(tmp_path / "s1", tmp_path / "live", [rebuilt], signer, tmp_path / "c")
    assert _snapshot(tmp_path / "live") == before


def test_gzip_repodata_is_what_createrepo_c_writers_make(rpms: dict[str, Path], tmp_path: Path) -> None:
    """repodata compressed in threads holds, byte for byte, what createrepo_c's XmlFile writers write."""
    import gzip

    from repogen.repos.rpm import _WRITERS, read_rpm

    site = tmp_path / "site"
    inputs = [rpms["foo1"], rpms["noarch"], rpms["arm"]]
    publish(site, None, inputs, None, tmp_path / "cache")
    records = sorted((read_rpm(path) for path in inputs), key=lambda r: r.pool_path)  # type: ignore[union-attr]
    repomd = cr.Repomd(str(site / "rpm/repodata/repomd.xml"))
    for index, (kind, writer_class) in enumerate(_WRITERS):
        record = next(r for r in repomd.records if r.type == kind)
        ours = gzip.decompress((site / "rpm" / record.location_href).read_bytes())
        reference = tmp_path / f"{kind}.xml"
        writer = writer_class(str(reference), compressiontype=cr.NO_COMPRESSION)
        writer.set_num_of_pkgs(len(records))
        for package in records:
            assert not isinstance(package, str)
            writer.add_chunk((package.primary, package.filelists, package.other)[index])
        writer.close()
        assert ours == reference.read_bytes()
        assert record.size_open == len(ours)
    assert not list((site / "rpm/repodata").glob(".*"))
