"""Benchmark: repogen's APT indexing vs ``apt-ftparchive packages`` on the same pool.

    python bench/bench_apt_index.py [--count 10000] [--cache-dir DIR]

The synthetic packages are made once (one real ``dpkg-deb --build``, then variants with a rewritten
control member) and kept under the cache dir, so reruns measure only the indexing.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from repogen.repos import RepoOptions, publish_repositories

CONTROL = """Package: {name}
Source: {source}
Version: {version}
Architecture: {arch}
Maintainer: repogen bench <bench@example.invalid>
Installed-Size: 1
Section: misc
Priority: optional
Description: synthetic package {name}
 Made by repogen's APT benchmark.
"""


def _ar_member(name: str, data: bytes) -> bytes:
    header = f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode()
    return header + data + (b"\n" if len(data) % 2 else b"")


def _control_tar(control: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        encoded = control.encode()
        info = tarfile.TarInfo("./control")
        info.size, info.mode = len(encoded), 0o644
        tar.addfile(info, io.BytesIO(encoded))
    return buffer.getvalue()


def _template(work: Path) -> bytes:
    """data.tar.gz of one real package built by dpkg-deb, reused by every variant."""
    root = work / "template"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "usr/share/doc/bench").mkdir(parents=True)
    (root / "usr/share/doc/bench/README").write_text("bench\n")
    (root / "DEBIAN/control").write_text(CONTROL.format(name="bench", version="1.0", arch="amd64", source="bench"))
    deb = work / "template.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(deb)],
                   check=True, capture_output=True)
    data = subprocess.run(["ar", "p", str(deb), "data.tar.gz"], check=True, capture_output=True).stdout
    return data


def make_deb(directory: Path, data_tar: bytes, name: str, version: str, arch: str, source: str) -> Path:
    path = directory / f"{name}_{version}_{arch}.deb"
    control = CONTROL.format(name=name, version=version, arch=arch, source=source)
    body = (b"!<arch>\n" + _ar_member("debian-binary", b"2.0\n")
            + _ar_member("control.tar.gz", _control_tar(control)) + _ar_member("data.tar.gz", data_tar))
    path.write_bytes(body)
    return path


def _source(index: int) -> str:
    """Binary packages share sources (Falco's do), 100 per source: the pool has N/100 directories."""
    return f"src{index // 100:04d}"


def packages(cache: Path, count: int) -> tuple[list[Path], bytes]:
    directory = cache / f"debs-v2-{count}"
    done = directory / ".complete"
    with tempfile.TemporaryDirectory() as work:
        data_tar = _template(Path(work))
    if not done.exists():
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        started = time.perf_counter()
        for index in range(count):
            arch = ("amd64", "arm64", "all")[index % 3]
            make_deb(directory, data_tar, f"bench-{index:05d}", f"1.{index % 7}-1", arch, _source(index))
        done.touch()
        print(f"generated {count} .deb in {time.perf_counter() - started:.1f}s under {directory}")
    return sorted(directory.glob("*.deb")), data_tar


def timed(label: str, action):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    result = action()
    elapsed = time.perf_counter() - started
    print(f"  {label:<52} {elapsed:8.3f} s")
    return elapsed, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--cache-dir", type=Path,
                        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "repogen-bench")
    args = parser.parse_args()
    debs, data_tar = packages(args.cache_dir, args.count)
    options = RepoOptions()
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="work-apt-", dir=args.cache_dir) as tmp:
        work = Path(tmp)
        print(f"{len(debs)} packages, {os.cpu_count()} CPUs (repos unsigned: gpg time is not indexing)")
        first, _ = timed("repogen first publish (copies inputs into the pool)", lambda: publish_repositories(
            work / "site1", None, debs, [], None, work / "cache1", options))
        ours, _ = timed("repogen index of the existing pool, empty cache", lambda: publish_repositories(
            work / "site2", work / "site1", [], [], None, work / "cache2", options))
        theirs, _ = timed("apt-ftparchive packages on the same pool, no --db", lambda: subprocess.run(
            ["apt-ftparchive", "packages", "pool"], cwd=work / "site1/deb", check=True,
            stdout=subprocess.DEVNULL))
        extra = make_deb(work, data_tar, "bench-new", "1.0-1", "amd64", "bench-new")
        added, report = timed("repogen adding one package (warm cache)", lambda: publish_repositories(
            work / "site3", work / "site2", [*debs, extra], [], None, work / "cache2", options))
        assert report.deb is not None and report.deb.read == 1, report.summary()
        db = work / "apt-ftparchive.db"
        subprocess.run(["apt-ftparchive", "--db", str(db), "packages", "pool"], cwd=work / "site1/deb",
                       check=True, stdout=subprocess.DEVNULL)
        shutil.copy(extra, work / "site1/deb/pool")
        theirs_db, _ = timed("apt-ftparchive --db, one package added (warm db)", lambda: subprocess.run(
            ["apt-ftparchive", "--db", str(db), "packages", "pool"], cwd=work / "site1/deb", check=True,
            stdout=subprocess.DEVNULL))
        print(f"\nindex from scratch: repogen / apt-ftparchive = {ours / theirs:.2f} "
              f"({'OK' if ours <= theirs else 'SLOWER'}: goal <= 1.00); first publish incl. pool copy "
              f"= {first / theirs:.2f}")
        print(f"add one package:    repogen {added:.3f} s ({'OK' if added < 1 else 'SLOW'}: goal < 1 s); "
              f"repogen / apt-ftparchive --db = {added / theirs_db:.2f}")

if __name__ == "__main__":
    main()
