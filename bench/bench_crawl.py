#!/usr/bin/env python3
"""Crawl of the real bookworm main index vs just decompressing and parsing it with python-debian.

    python3 bench/bench_crawl.py [--runs 3]

The index (Debian 12 ``main/binary-amd64/Packages.xz``, tens of thousands of packages) comes from this
machine's mirror through the private apt configuration the tests use (tests/debian_dists.py) and is
served from 127.0.0.1. Crawl: ``repogen.crawl.crawl_target("debian", bookworm, x86_64)`` in process:
GET Release and the index, check its SHA256, decompress, pick and parse the kernel packages, pair them.
Baseline, same file from disk in the same run: ``lzma.decompress`` + ``deb822.Packages.iter_paragraphs``
over every paragraph. Goal: crawl <= 1.2x baseline.
"""

from __future__ import annotations

import argparse
import lzma
import sys
import time

from _common import CACHE, ROOT, Goals, LocalServer, fmt, load_note, median

sys.path.insert(0, str(ROOT / "tests"))

import debian_dists
from debian import deb822

from repogen.crawl import CrawlContext, crawl_target

# The same suites and architectures as tests/test_crawl_debian.py, so both share one apt cache.
SUITES = ["bullseye", "bookworm", "bookworm-security", "trixie"]


def baseline(index: bytes) -> tuple[float, int]:
    started = time.perf_counter()
    text = lzma.decompress(index).decode("utf-8")
    count = sum(1 for _ in deb822.Packages.iter_paragraphs(text.splitlines(keepends=True), use_apt_pkg=False))
    return time.perf_counter() - started, count


def crawl(base_url: str) -> tuple[float, int]:
    context = CrawlContext({"debian": f"{base_url}/debian"}, ("x86_64",), releases=("bookworm",))
    started = time.perf_counter()
    result = crawl_target("debian", context)
    elapsed = time.perf_counter() - started
    if result.error:
        raise SystemExit(f"crawl failed: {result.error}")
    return elapsed, len(result.found)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    tree = debian_dists.build(CACHE, SUITES, ["amd64", "arm64"])
    index_path = tree.root / "debian/dists/bookworm/main/binary-amd64/Packages.xz"
    index = index_path.read_bytes()
    server = LocalServer(tree.root)
    print(load_note())
    base_times, crawl_times = [], []
    packages = kernels = 0
    for _ in range(args.runs):  # alternate, so drift in machine load hits both alike
        seconds, packages = baseline(index)
        base_times.append(seconds)
        seconds, kernels = crawl(server.base_url)
        crawl_times.append(seconds)
    server.server.shutdown()
    if packages < 10_000 or kernels == 0:
        print(f"invalid run: {packages} packages in the index, {kernels} kernels found")
        return 2
    ratio = median(crawl_times) / median(base_times)
    print(f"index: {index_path.name} of bookworm main amd64, {len(index) / 1e6:.1f} MB, {packages} packages")
    print(f"baseline (decompress + parse every paragraph): {fmt(base_times)} s, median {median(base_times):.3f} s")
    print(f"crawl (GET + sha256 + decompress + {kernels} kernels): {fmt(crawl_times)} s, "
          f"median {median(crawl_times):.3f} s")
    print(load_note())
    goals = Goals()
    goals.check("crawl vs baseline", ratio <= 1.2, f"{ratio:.2f}x (goal <= 1.2x)")
    return goals.exit_code


if __name__ == "__main__":
    sys.exit(main())
