"""Benchmark (counted, not timed): shared build inputs are fetched and prepared once.

    python3 bench/bench_dedup.py [--kernels 3] [--kinds kmod,ebpf] [-j 2]

2 driver versions (the libs-shaped example, recipe falcosecurity-libs) x 3 real Debian kernels,
``repogen build -j 2 --json`` into a fresh home, headers served by a counting HTTP server on
127.0.0.1 in front of the mirror. Goals: every headers URL is GET exactly once, each driver version
is prepared once (``counters.prepares == 2``), each kernel is unpacked once (``kernels_unpacked == 3``).
Baseline: what a per-job pipeline (the driverkit grid: every job fetches its own headers and runs its
own cmake) would do for the same matrix, computed from the job count.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    LIBS_MINI,
    MIRROR,
    Goals,
    LocalServer,
    docker_ready,
    driver_yaml,
    mirror_kernels,
    must,
    repogen,
    write_config,
)

VERSIONS = ("1.0.0+driver", "2.0.0+driver")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernels", type=int, default=3, help="kernels from the mirror (at most 3)")
    parser.add_argument("--kinds", default="kmod,ebpf", help="comma-separated kinds to build")
    parser.add_argument("-j", "--jobs", type=int, default=2)
    args = parser.parse_args()
    docker_ready()
    kinds = "[" + ", ".join(k.strip() for k in args.kinds.split(",") if k.strip()) + "]"
    n_kinds = kinds.count(",") + 1
    with LocalServer(MIRROR) as server, tempfile.TemporaryDirectory(prefix="bench-dedup-") as tmp:
        kernels = mirror_kernels(server.base_url)[:args.kernels]
        drivers = [driver_yaml("falco", v, LIBS_MINI, "falcosecurity-libs", kinds) for v in VERSIONS]
        config = write_config(Path(tmp), drivers, kernels)
        jobs = len(VERSIONS) * len(kernels) * n_kinds
        print(f"matrix: {len(VERSIONS)} driver versions x {len(kernels)} kernels x {kinds} = {jobs} jobs, "
              f"-j {args.jobs}, fresh home")
        started = time.perf_counter()
        run = must(repogen(Path(tmp) / "home", config, "build", "-j", str(args.jobs), "--json"), "repogen build")
        elapsed = time.perf_counter() - started
        report = run.json
        counters = report["counters"]
        gets = server.gets()
        urls = {h["url"].removeprefix(server.base_url): h for k in kernels for h in k["headers"]}
        prepare_logs = sorted(p.name for p in (Path(tmp) / "home" / "logs" / "prepare").glob("*.log"))

    print(f"build: {report['built']} built, {report['failed']} failed in {elapsed:.1f}s")
    print(f"counters: {counters}")
    print("GETs per headers URL (server side):")
    for path in sorted(urls):
        print(f"  {gets.get(path, 0)}  {path}")
    other = {p: n for p, n in gets.items() if p not in urls}
    if other:
        print(f"other GETs: {other}")
    print(f"prepare logs: {len(prepare_logs)} ({', '.join(prepare_logs)})")
    # A per-job pipeline fetches every headers file and runs cmake for every job.
    naive_gets = sum(len(k["headers"]) for k in kernels) * len(VERSIONS) * n_kinds
    total_gets = sum(gets.get(p, 0) for p in urls)
    print(f"baseline (per-job fetch + prepare, as the driverkit grid): {naive_gets} headers GETs, {jobs} prepares, "
          f"{jobs} unpacks; repogen: {total_gets} GETs ({total_gets / naive_gets:.2f}x), "
          f"{counters['prepares']} prepares, {counters['kernels_unpacked']} unpacks")

    goals = Goals()
    goals.check("all jobs built", report["built"] == jobs and report["failed"] == 0,
                f"{report['built']}/{jobs} built, {report['failed']} failed")
    once = all(gets.get(p, 0) == 1 for p in urls)
    goals.check("each headers URL GET exactly once", once and not other,
                f"{len(urls)} URLs, GETs per URL {sorted({gets.get(p, 0) for p in urls})}, "
                f"header_downloads={counters['header_downloads']}")
    goals.check("each driver version prepared once", counters["prepares"] == len(VERSIONS)
                and len(prepare_logs) == len(VERSIONS),
                f"prepares={counters['prepares']} (goal {len(VERSIONS)}), prepare logs={len(prepare_logs)}")
    goals.check("each kernel unpacked once", counters["kernels_unpacked"] == len(kernels),
                f"kernels_unpacked={counters['kernels_unpacked']} (goal {len(kernels)})")
    return goals.exit_code


if __name__ == "__main__":
    sys.exit(main())
