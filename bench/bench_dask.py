"""Benchmark: ``repogen build --dask`` on two Dask workers against one, on 8 real builds.

    python3 bench/bench_dask.py [--kernels 2] [--versions 2] [--rounds 2]

The 8 builds: hello-kbuild as 2 driver versions x [kmod, ebpf] x 2 real Debian kernels (headers from
the test mirror on 127.0.0.1). Two clusters run side by side on 127.0.0.1: a scheduler with one
``dask worker`` and a scheduler with two (``--nworkers 1 --nthreads 1`` each, its own REPOGEN_HOME),
all sharing moto's S3 server as the build cache. A warm-up run on each fills the workers' homes
(downloads, unpack); each measured run is then ``repogen build --dask ... --rebuild name=* --json``
(every job compiles again, results pushed to the cache), one worker and two alternating for
``--rounds`` rounds; medians compared. Goal: two workers at least 1.5x faster (the ideal is 2x; all
workers here share one machine's CPUs and Docker engine, so the ratio is bounded by the machine).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import (
    HELLO_KBUILD,
    MIRROR,
    Goals,
    LocalServer,
    docker_ready,
    driver_yaml,
    fmt,
    load_note,
    median,
    mirror_kernels,
    must,
    repogen,
    write_config,
)
from daskcluster import dask_cluster
from s3server import moto_server

GOAL_SPEEDUP = 1.5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernels", type=int, default=2, help="kernels from the mirror (at most 3)")
    parser.add_argument("--versions", type=int, default=2, help="driver versions of the hello-kbuild example")
    parser.add_argument("--rounds", type=int, default=2, help="measured 1-worker / 2-worker pairs")
    args = parser.parse_args()
    docker_ready()
    print(f"start: {load_note()}")
    with LocalServer(MIRROR) as mirror, tempfile.TemporaryDirectory(prefix="bench-dask-") as tmp, \
            moto_server() as s3:
        root = Path(tmp)
        kernels = mirror_kernels(mirror.base_url)[:args.kernels]
        drivers = [driver_yaml("hello_repogen", f"0.{i + 1}.0", HELLO_KBUILD, "kbuild", "[kmod, ebpf]")
                   for i in range(args.versions)]
        config = write_config(root, drivers, kernels)
        jobs = args.versions * len(kernels) * 2
        s3.client().create_bucket(Bucket="bench-dask")
        os.environ.update(s3.env)  # the client (repogen build) reaches the cache like the workers do
        with dask_cluster(root / "one", [root / "one" / "w0"], s3.env) as one, \
                dask_cluster(root / "two", [root / "two" / "w0", root / "two" / "w1"], s3.env) as two:
            clusters = {1: one, 2: two}
            print(f"builds: {args.versions} versions of hello-kbuild x [kmod, ebpf] x {len(kernels)} kernels = "
                  f"{jobs}; clusters of 1 and 2 workers on {os.cpu_count()} CPUs")
            seconds: dict[int, list[float]] = {1: [], 2: []}
            for n, cluster in clusters.items():
                warm = must(repogen(root / f"client{n}", config, "build", "--dask", cluster.address, "--cache",
                                    f"s3://bench-dask/warm{n}", "--json"), f"warm-up on {n} worker(s)")
                print(f"warm-up on {n} worker(s) (downloads, unpack, first builds): {warm.seconds:.1f}s")
            for r in range(args.rounds):
                for n, cluster in clusters.items():
                    run = must(repogen(root / f"client{n}", config, "build", "--dask", cluster.address,
                                       "--cache", f"s3://bench-dask/round{r}-{n}", "--rebuild", "name=*", "--json"),
                               f"build on {n} worker(s)")
                    if run.json["built"] != jobs:
                        print(f"INVALID: {n} worker(s) built {run.json['built']} of {jobs}")
                        return 2
                    seconds[n].append(run.seconds)
    one_s, two_s = median(seconds[1]), median(seconds[2])
    speedup = one_s / two_s
    print(f"1 worker: {fmt(seconds[1])} s (median {one_s:.2f}s); 2 workers: {fmt(seconds[2])} s "
          f"(median {two_s:.2f}s)")
    print(f"ratio: 2 workers vs 1 = {speedup:.2f}x faster")
    print(f"end: {load_note()}")
    goals = Goals()
    goals.check(f"2 Dask workers at least {GOAL_SPEEDUP}x faster than 1 on {jobs} builds", speedup >= GOAL_SPEEDUP,
                f"{speedup:.2f}x ({one_s:.2f}s -> {two_s:.2f}s)")
    return goals.exit_code


if __name__ == "__main__":
    sys.exit(main())
