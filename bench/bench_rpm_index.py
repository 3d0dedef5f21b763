"""Benchmark: repogen's RPM indexing vs the ``createrepo_c`` command on the same packages.

    python bench/bench_rpm_index.py [--count 10000] [--cache-dir DIR]

The synthetic packages are built once with rpmbuild (one spec with 500 subpackages per run, runs in
parallel) and kept under the cache dir, so reruns measure only the indexing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from repogen.repos import RepoOptions, publish_repositories
from repogen.repos.pool import collect_garbage

BATCH = 500


def _build_batch(args: tuple[Path, int, int]) -> None:
    """One rpmbuild producing packages bench-<start>..bench-<start+count-1>."""
    out, start, count = args
    top = out / f".top-{start}"
    (top / "SPECS").mkdir(parents=True, exist_ok=True)
    lines = ["Name: bench-base", "Version: 1.0", "Release: 1", "Summary: bench", "License: MIT",
             "%description", "bench", ""]
    install = ["%install"]
    files: list[str] = []
    for index in range(start, start + count):
        name = f"bench-{index:05d}"
        lines += [f"%package -n {name}", f"Summary: synthetic package {name}",
                  f"Version: 1.{index % 7}", "BuildArch: noarch" if index % 3 == 2 else "",
                  f"%description -n {name}", "Made by repogen's RPM benchmark.", ""]
        install.append(f"mkdir -p %{{buildroot}}/usr/share/{name} && echo {index} > %{{buildroot}}/usr/share/{name}/x")
        files += [f"%files -n {name}", f"/usr/share/{name}/x", ""]
    spec = top / "SPECS" / "bench.spec"
    spec.write_text("\n".join(lines + install + [""] + files) + "\n")
    subprocess.run(["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {top}", "--define", "_build_id_links none",
                    "--define", "_binary_payload w1.gzdio", str(spec)], check=True, capture_output=True)
    for rpm in (top / "RPMS").rglob("bench-[0-9]*.rpm"):
        rpm.replace(out / rpm.name)
    shutil.rmtree(top)


def packages(cache: Path, count: int) -> list[Path]:
    directory = cache / f"rpms-{count}"
    done = directory / ".complete"
    if not done.exists():
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        started = time.perf_counter()
        batches = [(directory, start, min(BATCH, count - start)) for start in range(0, count, BATCH)]
        with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            list(pool.map(_build_batch, batches))
        done.touch()
        print(f"generated {count} .rpm in {time.perf_counter() - started:.1f}s under {directory}")
    return sorted(directory.glob("*.rpm"))


def timed(label: str, action):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    result = action()
    elapsed = time.perf_counter() - started
    print(f"  {label:<56} {elapsed:8.3f} s")
    return elapsed, result


def createrepo(*args: str) -> None:
    subprocess.run(["createrepo_c", "--quiet", "--no-database", *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--cache-dir", type=Path,
                        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "repogen-bench")
    args = parser.parse_args()
    rpms = packages(args.cache_dir, args.count)
    options = RepoOptions()
    with tempfile.TemporaryDirectory(prefix="work-rpm-", dir=args.cache_dir) as tmp:
        work = Path(tmp)
        print(f"{len(rpms)} packages, {os.cpu_count()} CPUs; createrepo_c runs with --no-database "
              "(repogen writes no sqlite either)")
        gens = work / "gens"
        shared = gens / "pool"  # laid out as `repogen publish` lays out generations (see bench_apt_index.py)
        first, _ = timed("repogen first publish (copies inputs into the pool)", lambda: publish_repositories(
            gens / "g1", None, [], rpms, None, work / "cache1", options, shared_pool=shared))
        ours, _ = timed("repogen index of the existing pool, empty cache", lambda: publish_repositories(
            gens / "g2", gens / "g1", [], [], None, work / "cache2", options, shared_pool=shared))
        reference = work / "reference"  # createrepo_c's own copy of the pool (hard links)
        subprocess.run(["cp", "-al", str(shared / "rpm"), str(reference)], check=True)
        theirs, _ = timed("createrepo_c on the same pool (default workers)", lambda: createrepo(
            "-o", str(work / "c1"), str(reference)) if (work / "c1").mkdir() is None else None)
        extra_dir = work / "extra"
        extra_dir.mkdir()
        _build_batch((extra_dir, 99_999, 1))
        extra = next(extra_dir.glob("*.rpm"))
        every = min(options.grace_seconds / 10, 3600)
        collect_garbage(shared, [gens / "g1", gens / "g2"], datetime.now(UTC), options.grace_seconds,
                        every_seconds=every)  # as the publish of g2 would have

        def add_one():  # type: ignore[no-untyped-def]
            report = publish_repositories(gens / "g3", gens / "g2", [], [*rpms, extra], None, work / "cache2",
                                          options, shared_pool=shared)
            collect_garbage(shared, [gens / "g1", gens / "g2", gens / "g3"], datetime.now(UTC),
                            options.grace_seconds, every_seconds=every)
            return report

        added, report = timed("repogen adding one package (warm cache)", add_one)
        assert report.rpm is not None and report.rpm.read == 1, report.summary()
        shutil.copy(extra, reference / "packages")
        theirs_update, _ = timed("createrepo_c --update, one package added", lambda: createrepo(
            "--update", "-o", str(work / "c1"), str(reference)))
        print(f"\nindex from scratch: repogen / createrepo_c = {ours / theirs:.2f} "
              f"({'OK' if ours <= theirs else 'SLOWER'}: goal <= 1.00); first publish incl. pool copy "
              f"= {first / theirs:.2f}")
        print(f"add one package:    repogen {added:.3f} s ({'OK' if added < 1 else 'SLOW'}: goal < 1 s); "
              f"repogen / createrepo_c --update = {added / theirs_update:.2f}")


if __name__ == "__main__":
    main()
